"""The lab's pid-file stop and start of libvirtd (the commands Ansible runs on an
``--unconfigured`` lab host), run for real against a stand-in daemon that takes its time to
exit after SIGTERM, as libvirtd did on a busy machine (CI: more than the 10 s the stop used
to wait, and the start then failed with "Unable to obtain pidfile")."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from livemig.drivers.lab.ansible_inventory import pidfile_fault_commands

SLOW_EXIT_S = 1.5


def _slow_daemon(pidfile: Path) -> subprocess.Popen[bytes]:
    """A process that exits SLOW_EXIT_S after SIGTERM, its pid in ``pidfile``."""
    proc = subprocess.Popen(
        ["sh", "-c", f'trap "sleep {SLOW_EXIT_S}; exit 0" TERM; while :; do sleep 0.05; done'])
    pidfile.write_text(f"{proc.pid}\n")
    # reaped as soon as it exits (as init reaps a real daemon): a zombie answers kill -0
    threading.Thread(target=proc.wait, daemon=True).start()
    time.sleep(0.2)  # the trap is set before the first sleep returns
    return proc


def _sh(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)


def test_stop_waits_for_a_slow_exit_within_its_bound(tmp_path: Path) -> None:
    pidfile = tmp_path / "d.pid"
    proc = _slow_daemon(pidfile)
    try:
        stop = pidfile_fault_commands(str(pidfile), "true", wait_s=5)["livemig_fault_service_down"]
        t0 = time.monotonic()
        assert _sh(stop).returncode == 0
        assert time.monotonic() - t0 >= SLOW_EXIT_S * 0.9  # it waited for the exit
        proc.wait(timeout=1)  # and the process is gone
    finally:
        proc.kill()
        proc.wait()


def test_stop_reports_a_process_that_outlives_the_bound(tmp_path: Path) -> None:
    pidfile = tmp_path / "d.pid"
    proc = _slow_daemon(pidfile)
    try:
        stop = pidfile_fault_commands(str(pidfile), "true", wait_s=1)["livemig_fault_service_down"]
        assert _sh(stop).returncode == 1
    finally:
        proc.kill()
        proc.wait()


def test_start_waits_for_the_old_process_to_exit_before_starting(tmp_path: Path) -> None:
    pidfile, started = tmp_path / "d.pid", tmp_path / "started"
    proc = _slow_daemon(pidfile)
    try:
        commands = pidfile_fault_commands(str(pidfile), f"echo new > {started}", wait_s=5)
        # a stop that gave up too early: the old process is still exiting
        _sh(pidfile_fault_commands(str(pidfile), "true", wait_s=0)["livemig_fault_service_down"])
        assert proc.poll() is None
        assert _sh(commands["livemig_fault_service_up"]).returncode == 0
        assert proc.poll() is not None, "started while the old process was still running"
        assert started.read_text() == "new\n"
    finally:
        proc.kill()
        proc.wait()


def test_start_without_a_pidfile_starts_at_once(tmp_path: Path) -> None:
    started = tmp_path / "started"
    up = pidfile_fault_commands(str(tmp_path / "none.pid"), f"echo new > {started}")
    t0 = time.monotonic()
    assert _sh(up["livemig_fault_service_up"]).returncode == 0
    assert started.read_text() == "new\n" and time.monotonic() - t0 < 5
