"""An exclusive, crash-safe lock on a test lab's name, shared by every real-lab fixture, and
:func:`running_lab`, the lab a module's fixture brings up under that lock.

Two test runs in one checkout (or CI beside a developer) would otherwise bring the same
lab up and down under each other. ``flock`` is released by the kernel if the holder dies.
"""

from __future__ import annotations

import fcntl
import os
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


@contextmanager
def running_lab(name: str, **options: object) -> Iterator[Path]:
    """Lab ``name`` up (``lab_up(name, **options)``) under :func:`lab_lock`, after taking down
    whatever an earlier run left; its record path while it runs; down afterwards. Not root,
    or a lab that cannot start, FAILS the test (never a skip)."""
    from livemig.drivers.lab.lab import lab_down, lab_status, lab_up

    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (run them as root after scripts/setup-lab)")
    with lab_lock(name):
        if lab_status(name)["state"] != "down":
            lab_down(name)
        try:
            record = lab_up(name, **options)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - any failure to start is a test failure
            pytest.fail(f"lab {name!r} could not start: {exc}")
        try:
            yield record
        finally:
            lab_down(name)
