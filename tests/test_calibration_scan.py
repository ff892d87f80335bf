"""The lab guest's RAM scan (non-zero pages read through /proc/kcore) in the calibration:
the dirtier's scan line, its parsing, ``cases.csv``'s ``guest_scan_nonzero_mib`` column and
its use as the case's non-zero memory (old files without the column behave as before)."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from livemig.calibration.matrix import DEFAULT_MATRIX, Case
from livemig.calibration.run import (
    CASE_COLUMNS,
    CaseResult,
    HiddenMemory,
    guest_nonzero_mib,
    hidden_memory,
    load_results,
    non_zero,
    write_cases,
)
from livemig.calibration.truth import GuestTruth, guest_truth

MiB = 2**20
DIRTIER = Path(__file__).resolve().parents[1] / "drivers" / "lab" / "guest" / "dirtier.c"
IDLE_128 = DEFAULT_MATRIX[0]  # u128-idle


def result(case: Case, *, nonzero: float | None, scan: float | None,
           normal: int) -> CaseResult:
    stats = {"time_elapsed": 1300, "downtime": 40, "memory_processed": normal,
             "memory_normal_bytes": normal, "memory_bps": 100 * MiB, "setup_time": 2}
    return CaseResult(
        case=case, status="completed", error=None,
        record={"total_time_s": 1.3, "downtime_ms": 40.0, "iterations": 3,
                "data_transferred_bytes": normal},
        stats=stats,
        truth=GuestTruth(ticks=5, rate_mibps=case.dirty_rate / MiB, nonzero_mib=nonzero,
                         memfree_mib=80.0, scan_nonzero_mib=scan),
        wall_s=15.0, load1=1.0,
    )


# -- the guest's scan line ---------------------------------------------------------------------


def _printf_formats(source: str, prefix: str) -> list[str]:
    """The format strings of the dirtier's printf calls that start with ``prefix``."""
    return [m.group(1).removesuffix("\\n")
            for m in re.finditer(r'printf\("(' + re.escape(prefix) + r'[^"]*)"', source)]


def test_the_dirtier_prints_a_scan_line_that_the_parser_reads() -> None:
    source = DIRTIER.read_text()
    (fmt,) = _printf_formats(source, "scan nonzero_mib=")
    line = fmt.replace("%.1f", "101.5").replace("%d", "2").replace("%.2f", "0.51")
    assert "tick" not in line  # the lab's boot wait looks for "tick"
    assert guest_truth(line + "\n").scan_nonzero_mib == 101.5
    errors = _printf_formats(source, "scan error=")
    assert len(errors) >= 4
    for fmt in errors:
        line = fmt.replace("%d", "2").replace("%llx", "ffff888000000000")
        truth = guest_truth(line + "\n")
        assert truth.scan_nonzero_mib is None and truth.scan_error, line
        assert "tick" not in line


def test_the_dirtier_scans_before_its_first_tick_line() -> None:
    """The lab migrates once the guest ticks (LabGuests.booted): the scan must come first."""
    main = DIRTIER.read_text().split("int main(void)", 1)[1]
    assert 0 < main.index("scan_nonzero();") < main.index('printf("tick %llu')


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc on this machine")
def test_the_dirtier_compiles_without_warnings(tmp_path: Path) -> None:
    """The image build compiles it with ``gcc -static -O2 -Wall`` (drivers/lab/image.py)."""
    proc = subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-fsyntax-only", str(DIRTIER)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_truth_reads_the_scan_line_or_its_error() -> None:
    ticks = ("tick 1 uptime=1.00 dirtied_mib=0 behind_ms=0 rate_mibps=0 nonzero_mib=44.2 "
             "memfree_mib=413.3\n")
    scan = "scan nonzero_mib=91.9 scanned_mib=511.5 segments=2 took_s=0.51\n"
    truth = guest_truth("livemig-dirtier: ready ws_mib=16\n" + scan + ticks)
    assert (truth.scan_nonzero_mib, truth.scan_error, truth.nonzero_mib) == (91.9, None, 44.2)
    failed = guest_truth("scan error=open-proc-kcore errno=2\n" + ticks)
    assert (failed.scan_nonzero_mib, failed.scan_error) == (None, "open-proc-kcore")
    assert failed.nonzero_mib == 44.2  # the old figure still there
    old = guest_truth(ticks)  # an image from before the scan
    assert (old.scan_nonzero_mib, old.scan_error) == (None, None)


# -- the scanned figure in the calibration -----------------------------------------------------


def test_the_scan_is_the_guest_figure_when_present() -> None:
    assert guest_nonzero_mib(result(IDLE_128, nonzero=44.0, scan=92.0, normal=1).truth) == 92.0
    assert guest_nonzero_mib(result(IDLE_128, nonzero=44.0, scan=None, normal=1).truth) == 44.0


def test_hidden_memory_is_what_the_scan_misses_and_non_zero_adds_it() -> None:
    """Idle 128 and 512 MiB guests whose scans found 60 and 92 MiB and QEMU sent 61 and
    92.5 MiB: the scan misses 1 and 0.5 MiB, a line that falls is not believed, so the
    hidden memory is their median, 0.75 MiB."""
    big = Case(name="u512-idle", ram=512 * MiB, working_set=16 * MiB, dirty_rate=0.0,
               bandwidth=0.0, max_downtime=0.3)
    scanned = [result(IDLE_128, nonzero=30.0, scan=60.0, normal=61 * MiB),
               result(big, nonzero=44.0, scan=92.0, normal=int(92.5 * MiB))]
    hidden = hidden_memory(scanned)
    assert hidden == HiddenMemory(0.75 * MiB)
    assert non_zero(scanned[1], hidden) == pytest.approx(92.75 * MiB)
    # the same cases without their scans: MemTotal - MemFree, as before
    unscanned = [result(IDLE_128, nonzero=30.0, scan=None, normal=61 * MiB),
                 result(big, nonzero=44.0, scan=None, normal=int(92.5 * MiB))]
    old = hidden_memory(unscanned)
    assert old.base == pytest.approx(31 * MiB - 128 * MiB * old.per_ram)
    assert old.per_ram == pytest.approx(17.5 / 384)
    assert non_zero(unscanned[1], old) == pytest.approx(92.5 * MiB)


def test_cases_csv_records_the_scan_and_reads_it_back(tmp_path: Path) -> None:
    results = [result(IDLE_128, nonzero=44.2, scan=91.9, normal=92 * MiB)]
    write_cases(tmp_path / "cases.csv", results)
    with (tmp_path / "cases.csv").open() as fh:
        (row,) = csv.DictReader(fh)
    assert row["guest_scan_nonzero_mib"] == "91.9" and "guest_scan_nonzero_mib" in CASE_COLUMNS
    (back,) = load_results(tmp_path / "cases.csv", DEFAULT_MATRIX)
    assert back.truth.scan_nonzero_mib == 91.9 and back.row() == results[0].row()


def test_an_old_cases_csv_without_the_scan_column_loads_and_behaves_as_before(
    tmp_path: Path,
) -> None:
    results = [result(IDLE_128, nonzero=40.0, scan=None, normal=75 * MiB),
               result(DEFAULT_MATRIX[4], nonzero=50.0, scan=None, normal=90 * MiB)]
    write_cases(tmp_path / "full.csv", results)
    with (tmp_path / "full.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    old_columns = [c for c in CASE_COLUMNS if c != "guest_scan_nonzero_mib"]
    with (tmp_path / "cases.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=old_columns, extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    back = load_results(tmp_path / "cases.csv", DEFAULT_MATRIX)
    assert [r.truth for r in back] == [r.truth for r in results]
    assert all(r.truth.scan_nonzero_mib is None for r in back)
    hidden = hidden_memory(back)
    assert hidden == HiddenMemory(35 * MiB)  # 75 - 40 MiB, from the idle case
    assert non_zero(back[1], hidden) == 85 * MiB  # 50 MiB + 35 MiB


def test_the_lab_waits_for_a_tick_line_not_any_mention_of_tick(tmp_path: Path) -> None:
    """The migration starts once the guest is up (LabGuests.booted): after its first tick
    line, so after the scan; a kernel message with "tick" in it must not start it early."""
    from types import SimpleNamespace

    from livemig.drivers.lab.target import LabGuests

    guests = LabGuests(SimpleNamespace(console_dir=str(tmp_path)))  # type: ignore[arg-type]
    vm = SimpleNamespace(name="vm1")
    log = tmp_path / "vm1.log"
    assert not guests.booted(vm)  # type: ignore[arg-type]  # no console yet
    log.write_text("[    0.5] NOHZ tick-stop error: local softirq work is pending\n"
                   "livemig-dirtier: ready ws_mib=16 rate_mib=0 pages=4096\n")
    assert not guests.booted(vm)  # type: ignore[arg-type]
    log.write_text(log.read_text() + "scan nonzero_mib=76.7 scanned_mib=127.5 segments=2 "
                   "took_s=0.13\ntick 1 uptime=1.00 dirtied_mib=0.0 behind_ms=0\n")
    assert guests.booted(vm)  # type: ignore[arg-type]
