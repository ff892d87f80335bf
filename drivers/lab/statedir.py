"""Trust in the lab's state directory (``/var/tmp/livemig-lab`` by default).

``lab down`` and the fault primitives signal the pids recorded there, and ``lab down``
removes the directories ``machine.json`` lists: as root. ``/var/tmp`` is writable by
everyone, so anyone could have made ``livemig-lab`` first and put pid files of their
choice in it. Before a file there is believed, the path to it must be one only root
could have written:

* the file or directory itself (``strict``): owned by root, not a symbolic link, not
  writable by group or others;
* every directory above it: owned by root, and writable by group or others only with
  the sticky bit (``/tmp``, ``/var/tmp``: nobody may rename or remove what root put there).

"Root" is root or the user livemig runs as (:func:`trusted_owners`): the lab runs as
root, where that is root alone; a user's own files can only mislead that user.

The lab makes its directories 0755 and its files 0644 whatever the umask.

>>> writable_by_others(0o40777), writable_by_others(0o41777), writable_by_others(0o40755)
(True, True, False)
>>> ancestor_ok(0o41777), ancestor_ok(0o40777), ancestor_ok(0o40755)
(True, False, True)
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from livemig.drivers.lab.errors import LabError

DIR_MODE = 0o755
FILE_MODE = 0o644


def writable_by_others(mode: int) -> bool:
    """Whether group or others may write (``mode`` as in ``st_mode``)."""
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))


def ancestor_ok(mode: int) -> bool:
    """A directory above the state: not writable by others, or sticky (like ``/tmp``)."""
    return not writable_by_others(mode) or bool(mode & stat.S_ISVTX)


def trusted_owners() -> frozenset[int]:
    """The uids whose files the lab believes: root, and the user livemig runs as."""
    return frozenset({0, os.geteuid()})


def _refuse(path: Path, why: str) -> LabError:
    return LabError(f"refusing to trust the lab's state at {path}: {why} (only root may "
                    f"have written it; remove it or choose another --base-dir)")


def require_trusted(path: Path | str, *, strict_levels: int = 1) -> None:
    """Raise :class:`LabError` unless only root can have written ``path`` (if it exists).

    ``strict_levels``: how many components, counting ``path`` itself, must be private
    (root's, no symbolic link, not writable by group or others); the directories above
    follow the ancestor rule. Components that do not exist yet are skipped.
    """
    path = Path(os.path.abspath(path))
    chain = [path, *path.parents]
    for depth, component in enumerate(chain):
        try:
            st = os.lstat(component)
        except FileNotFoundError:
            continue
        strict = depth < strict_levels
        if stat.S_ISLNK(st.st_mode):
            if strict:
                raise _refuse(component, "it is a symbolic link")
            st = os.stat(component)
        if st.st_uid not in trusted_owners():
            raise _refuse(component, f"it is owned by uid {st.st_uid}, not root")
        if strict and writable_by_others(st.st_mode):
            raise _refuse(component, f"mode {stat.S_IMODE(st.st_mode):04o} lets group or "
                          f"others write")
        if not strict and not ancestor_ok(st.st_mode):
            raise _refuse(component, f"mode {stat.S_IMODE(st.st_mode):04o} lets group or "
                          f"others write and is not sticky")


def make_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each mode 0755 (umask notwithstanding)."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for p in reversed(missing):
        with contextlib.suppress(FileExistsError):
            p.mkdir(mode=DIR_MODE)
            os.chmod(p, DIR_MODE)


def write_file(path: Path, text: str) -> None:
    """Write ``path`` (mode 0644, created exclusively: the caller picks a fresh name)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), FILE_MODE)
        fh.write(text)
