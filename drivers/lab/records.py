"""What the lab records of its processes, kept true when daemons stop and start again.

Each host's ``pids.json`` (role -> [pid, start time]) is what ``lab down`` relies on; the
inventory's ``pids`` (role -> pid) is what a driver or test reads. Both are rewritten
atomically (a temporary file renamed over the old one), the inventory under an exclusive
``flock`` so two updates never lose each other's change. A role whose process is gone
(a host powered off) is removed rather than left pointing at a dead pid. A ``pids.json``
that someone other than root could have written is refused, never believed
(:mod:`livemig.drivers.lab.statedir`).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from livemig.drivers.lab import statedir
from livemig.drivers.lab.inventory import load_inventory, write_inventory
from livemig.drivers.lab.layout import HostLayout
from livemig.drivers.lab.proc import Tracked


def load_pids(host: HostLayout) -> dict[str, Tracked]:
    """The host's recorded processes by role (``holder``, ``virtlogd``, ``libvirtd``);
    :class:`LabError` if the file or its directory is not root's alone."""
    statedir.require_trusted(host.pids_file, strict_levels=2)
    try:
        data = json.loads(host.pids_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {k: Tracked.from_json(v) for k, v in data.items()}


def _write_atomic(path: Path, text: str) -> None:
    statedir.make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    statedir.write_file(tmp, text)
    tmp.replace(path)


def save_pids(host: HostLayout, pids: dict[str, Tracked]) -> None:
    """Replace the host's recorded processes."""
    _write_atomic(host.pids_file, json.dumps({k: v.to_json() for k, v in pids.items()}) + "\n")


def save_pid(host: HostLayout, role: str, proc: Tracked | None) -> dict[str, Tracked]:
    """Record (or, with None, forget) the process of one role; return all of them."""
    pids = load_pids(host)
    if proc is None:
        pids.pop(role, None)
    else:
        pids[role] = proc
    save_pids(host, pids)
    return pids


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.with_name(path.name + ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def sync_inventory(inventory_path: Path, host: HostLayout) -> None:
    """Copy the host's recorded pids into the inventory file (if there is one)."""
    if not inventory_path.exists():
        return
    with _locked(inventory_path):
        inv = load_inventory(inventory_path)
        pids = {k: v.pid for k, v in load_pids(host).items()}
        hosts = [dataclasses.replace(h, pids=pids) if h.name == host.name else h
                 for h in inv.hosts]  # fmt: skip
        write_inventory(dataclasses.replace(inv, hosts=hosts), inventory_path)
