"""An exclusive, crash-safe lock on a test lab's name, shared by every real-lab fixture.

Two test runs in one checkout (or CI beside a developer) would otherwise bring the same
lab up and down under each other. ``flock`` is released by the kernel if the holder dies.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

LOCK_TIMEOUT = 900.0  # seconds to wait for another test run's lab of the same name


@contextmanager
def lab_lock(name: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold lab ``name`` exclusively against other processes (released if we die)."""
    path = Path("/tmp") / f"livemig-test-lab-{name}.lock"
    with path.open("a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"lab {name!r} stayed locked by another run ({path})")
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
