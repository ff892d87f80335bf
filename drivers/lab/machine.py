"""Machine-level changes that several labs share, undone when the last lab goes down.

``ip netns add`` turns /run/netns into a mount, ``ip netns exec`` reads /etc/netns, and
each host bind-mounts over /run/libvirt (in a TLS lab over /etc/pki too), which must
exist. Whatever of these did not exist before the first lab came up is noted in
``<base_dir>/machine.json`` and put back as found by :func:`undo_if_last`. The base
directory is created 0755 and must be root's alone (:mod:`livemig.drivers.lab.statedir`):
``machine.json`` names directories that ``lab down`` removes.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from livemig.drivers.lab import statedir
from livemig.drivers.lab.layout import ETC_PKI
from livemig.drivers.lab.proc import run

RUN_NETNS = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
RUN_LIBVIRT = Path("/run/libvirt")


def _marks_path(base_dir: Path) -> Path:
    return base_dir / "machine.json"


def _load(base_dir: Path) -> tuple[list[str], bool]:
    """(directories the lab created, whether it made /run/netns a mount point)."""
    statedir.require_trusted(_marks_path(base_dir), strict_levels=2)
    try:
        data = json.loads(_marks_path(base_dir).read_text())
        return [str(d) for d in data["created_dirs"]], bool(data["run_netns_mount"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return [], False


def _save(base_dir: Path, created: list[str], run_netns_mount: bool) -> None:
    data = {"created_dirs": created, "run_netns_mount": run_netns_mount}
    marks = _marks_path(base_dir)
    tmp = marks.with_name(f".{marks.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    statedir.write_file(tmp, json.dumps(data, indent=1) + "\n")
    tmp.replace(marks)


def is_mountpoint(path: Path) -> bool:
    """Whether ``path`` is a mount point in this process's mount namespace."""
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace."""
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == str(path) or p.startswith(prefix)]


def prepare(base_dir: Path, tls: bool = False) -> None:
    """Create what the lab needs outside its own directory, noting what was not there."""
    statedir.make_dirs(base_dir)
    statedir.require_trusted(base_dir)
    created, run_netns_mount = _load(base_dir)
    for d in (ETC_NETNS, RUN_LIBVIRT, RUN_NETNS, *([ETC_PKI] if tls else [])):
        if not d.exists():
            d.mkdir(parents=True)
            created.append(str(d))
    if not is_mountpoint(RUN_NETNS):
        run_netns_mount = True  # `ip netns add` is about to make it one
    _save(base_dir, created, run_netns_mount)


def other_labs(base_dir: Path, name: str) -> list[str]:
    """Names of other labs that have a directory under ``base_dir``."""
    if not base_dir.is_dir():
        return []
    return sorted(p.name for p in base_dir.iterdir() if p.is_dir() and p.name != name)


def undo_if_last(base_dir: Path, name: str) -> None:
    """Put back what :func:`prepare` changed, unless another lab still uses it."""
    if other_labs(base_dir, name) or not _marks_path(base_dir).exists():
        _rmdir_quiet(base_dir)
        return
    created, run_netns_mount = _load(base_dir)
    if run_netns_mount and is_mountpoint(RUN_NETNS) and not any(RUN_NETNS.iterdir()):
        run(["umount", "-n", str(RUN_NETNS)], check=False)  # -n: no /run/mount/utab
    for d in reversed(created):
        _rmdir_quiet(Path(d))
    _marks_path(base_dir).unlink(missing_ok=True)
    _rmdir_quiet(base_dir)


def _rmdir_quiet(path: Path) -> None:
    """Remove ``path`` if it is an empty directory that is not a mount point."""
    with contextlib.suppress(OSError):
        if not is_mountpoint(path):
            path.rmdir()
