"""Commands and processes: run a command, track a pid safely, find and stop processes.

A tracked process is a ``(pid, start_time)`` pair: the start time (from /proc/PID/stat)
guards against a recycled pid, so nothing that is not the lab's is ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from livemig.drivers.lab.errors import LabError


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    timeout: float = 60.0,
    input: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` and capture its output; raise :class:`LabError` (with stderr) on failure."""
    argv = [os.fspath(c) for c in cmd]
    try:
        cp = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            cwd=cwd,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]}: command not found (run scripts/setup-lab)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)}: no answer within {timeout:g} s") from exc
    if check and cp.returncode != 0:
        detail = (cp.stderr or cp.stdout).strip()
        raise LabError(f"{' '.join(argv)}: exit {cp.returncode}: {detail}")
    return cp


@dataclass(frozen=True)
class Tracked:
    """A process the lab started, identified by pid and kernel start time."""

    pid: int
    start_time: int

    def alive(self) -> bool:
        return start_time(self.pid) == self.start_time

    def to_json(self) -> list[int]:
        return [self.pid, self.start_time]

    @classmethod
    def from_json(cls, value: Sequence[int]) -> Tracked:
        return cls(int(value[0]), int(value[1]))


def start_time(pid: int) -> int | None:
    """Start time (clock ticks after boot) of a live, non-zombie ``pid``; None otherwise."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def track(pid: int) -> Tracked:
    """Track a live pid; raise if it is gone."""
    st = start_time(pid)
    if st is None:
        raise LabError(f"process {pid} exited right after it was started")
    return Tracked(pid, st)


def read_pidfile(path: Path) -> int | None:
    """The pid in a daemon's pidfile, or None if the file is missing or empty."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def ns_id(path: str | Path) -> tuple[int, int] | None:
    """Identity (device, inode) of a namespace file such as /proc/PID/ns/net."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    return (st.st_dev, st.st_ino)


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def pids_in_namespaces(kind: str, ids: Iterable[tuple[int, int]]) -> list[int]:
    """Pids whose namespace of ``kind`` ("net", "mnt", ...) is one of ``ids``."""
    wanted = set(ids)
    if not wanted:
        return []
    me = os.getpid()
    return [
        pid
        for pid in all_pids()
        if pid != me and ns_id(f"/proc/{pid}/ns/{kind}") in wanted
    ]


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our own child (holders started by this process are)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def terminate(procs: Iterable[Tracked], timeout: float = 5.0) -> None:
    """SIGTERM the live ones, wait up to ``timeout`` s, then SIGKILL what is left."""
    live = [p for p in set(procs) if p.alive()]
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for p in live:
            if p.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, sig)
        deadline = time.monotonic() + wait
        while True:
            for p in live:
                _reap(p.pid)
            live = [p for p in live if p.alive()]
            if not live or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not live:
            return
    raise LabError(f"processes survived SIGKILL: {sorted(p.pid for p in live)}")


def wait_for(
    what: str, predicate: Callable[[], object], timeout: float, interval: float = 0.1
) -> None:
    """Poll ``predicate()`` until true; raise :class:`LabError` naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
