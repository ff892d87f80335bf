"""QEMU's migration trace read back (``calibration/qemu_trace.py``, used by
``scripts/qemu-trace-migration``): the real traces shipped in
``docs/uncapped-switchover-traces`` decode to the figures the script wrote beside them
when they were taken, and the script itself starts."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from livemig.calibration.qemu_trace import MiB, decode, parse

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO / "docs" / "uncapped-switchover-traces"
RUNS = [(summary.parent, row) for summary in sorted(TRACES.glob("run*/summary.csv"))
        for row in csv.DictReader(summary.open())]


def test_the_shipped_traces_are_there() -> None:
    assert len(RUNS) >= 20


@pytest.mark.parametrize(("run_dir", "row"), RUNS,
                         ids=[f"{d.name}-{r['case']}-r{r['repeat']}" for d, r in RUNS])
def test_a_real_trace_decodes_to_what_the_script_recorded(run_dir: Path, row: dict) -> None:
    log = run_dir / "traces" / f"{row['case']}-r{row['repeat']}.log"
    rows, key = decode(parse(log.read_text().splitlines()))
    assert (key["windows"], key["checks"], key["exact_checks"]) == (
        int(row["windows"]), int(row["checks"]), int(row["exact_checks"]))
    assert key["pause_ms"] == float(row["pause_ms"])
    assert round(key["pause_pending"] / MiB, 2) == float(row["pause_pending_mib"])
    assert round(key["pause_threshold"] / MiB, 2) == float(row["pause_threshold_mib"])
    assert " ".join(f"{s / MiB:.1f}/{t / MiB:.1f}" for _, s, t in key["exact"]) == (
        row["exact_checks_mib"])
    assert sum("PAUSE" in r for r in rows) == 1


def test_lines_that_are_not_trace_events_are_skipped() -> None:
    assert parse(["2026-12-05 qemu-system-x86_64: terminating on signal 15",
                  "123@1.5:some_other_event x=1"]) == []
    assert decode([]) == ([], {"windows": 0, "checks": 0, "exact_checks": 0})


def test_the_script_starts() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "qemu-trace-migration"),
                           "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "INVENTORY" in proc.stdout.upper() and "--repeat" in proc.stdout
