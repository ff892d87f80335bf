"""``livemig calibrate`` on a real namespace lab: a small matrix, a fitted profile, and its
predictions on cases the fit did not see; then ``livemig compare`` against the simulator.

The lab's guests are on huge pages (``lab up --hugepages``), as the README recommends for
calibrating on a virtual machine: on ordinary memory the destination QEMU writes every page
it receives into fresh memory, and a hypervisor that takes back free memory (free page
reporting) makes that speed change by the minute (``docs/lab-memory-backing.md``: the same
uncapped case took 0.64 to 2.37 s on this machine). On huge pages QEMU sets the pace.

Seven real migrations (TCG guests, 20-30 s each with the boot): the fit sees two uncapped
guests of 128 and 512 MiB (so the start-up's growth with the RAM, the destination
preallocating it, can be fitted) and a capped one; held out are two capped cases with
other RAM, working set, dirty rate and limit, an uncapped one with a dirtying guest, and a
case that cannot converge (aborted by its completion timeout).

Tolerances, from the spread measured on this 2-core machine. A capped case is paced by its
cap: the same one took 4.60-5.53 s under load 1.5-5.8, and held-out capped predictions
were off by -8.5 to +6.1 % over four calibrations: within 25 % of the real
``time_elapsed``. An uncapped one on huge pages takes 0.3-0.7 s, most of it start-up, and
its spread is the machine's and one-sided: in the two huge-page recordings (48 uncapped
runs) a run came in at most 14 % faster than its case's median but up to 68 % slower (one
start-up of 0.47 s against 0.25 and 0.27 s); a busy machine slows a migration, it never
speeds one up. So the uncapped held-out case must take between 0.75 and 2 times its
predicted ``time_elapsed`` (0.97 times when this was written: 0.378 s against 0.391
s); a profile fitted on ordinary memory predicts 84 % too long and fails.
Every outcome (converges or not) must be right. The guest's reported
write rate is what it really wrote: a CPU-starved vCPU loses ticks (7.27 of 8 MiB/s at
load 5.4), so it must be at most the asked rate and more than half of it. The predictions
are the closed form of :mod:`livemig.calibration.fit` (the simulator's qemu model, which
agrees with it within 0.1 %): the test checks that the estimators measure what the cases
need; then the simulator replays every case and ``livemig compare`` sets it against the
real runs.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from labcheck import virsh
from lablock import running_lab

from livemig.calibration.fit import Profile, completion_timeout, predict
from livemig.calibration.matrix import load_matrix
from livemig.calibration.run import HiddenMemory
from livemig.core.cli import main
from livemig.core.units import parse_duration, parse_rate
from livemig.drivers.lab.inventory import Inventory, load_inventory
from livemig.drivers.lab.lab import lab_status

pytestmark = pytest.mark.lab

LAB = "tcalib"
MiB = 2**20
MATRIX = """\
cases:
  - {name: fit-u128-idle, ram: 128MiB, working_set: 16MiB, dirty_rate: 0MiB/s,
     max_downtime: 300ms}
  - {name: fit-u512-r16, ram: 512MiB, working_set: 128MiB, dirty_rate: 16MiB/s,
     max_downtime: 300ms}
  - {name: fit-c20-128-r4, ram: 128MiB, working_set: 16MiB, dirty_rate: 4MiB/s,
     bandwidth: 20MiB/s, max_downtime: 300ms}
  - {name: held-c20-192-r8, ram: 192MiB, working_set: 32MiB, dirty_rate: 8MiB/s,
     bandwidth: 20MiB/s, max_downtime: 100ms}
  - {name: held-c20-256-idle, ram: 256MiB, working_set: 64MiB, dirty_rate: 0MiB/s,
     bandwidth: 20MiB/s, max_downtime: 300ms}
  - {name: held-u256-r8, ram: 256MiB, working_set: 64MiB, dirty_rate: 8MiB/s,
     max_downtime: 100ms}
  - {name: held-no-converge, ram: 192MiB, working_set: 32MiB, dirty_rate: 24MiB/s,
     bandwidth: 8MiB/s, max_downtime: 100ms, completion_timeout: 4s}
"""
FIT = ("fit-u128-idle", "fit-u512-r16", "fit-c20-128-r4")
CAPPED_TOLERANCE = 0.25  # relative error of time_elapsed (module docstring)
UNCAPPED_BOUNDS = (0.75, 2.0)  # real / predicted time_elapsed, huge pages (module docstring)
HUGEPAGES_MIB = 1536  # a 512 MiB guest on both hosts during its migration, and room


@pytest.fixture(scope="module")
def lab() -> Iterator[Inventory]:
    with running_lab(LAB, hosts=2, storage="shared", hugepages_mib=HUGEPAGES_MIB) as path:
        yield load_inventory(path)
    assert lab_status(LAB)["state"] == "down"


@pytest.fixture(scope="module")
def calibrated(lab: Inventory, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("calibration")
    (out / "matrix.yaml").write_text(MATRIX)
    inventory = Path(lab.lab_dir) / "inventory.yaml"
    code = main(["calibrate", "--inventory", str(inventory), "--out", str(out / "profile.yaml"),
                 "--matrix", str(out / "matrix.yaml"), "--fit", ",".join(FIT),
                 "--no-progress"])
    assert code == 0
    with (out / "cases.csv").open() as fh:
        rows = {r["case"]: r for r in csv.DictReader(fh)}
    return {"dir": out, "rows": rows, "profile": yaml.safe_load((out / "profile.yaml").read_text()),
            "cases": {c.name: c for c in load_matrix(out / "matrix.yaml")}}


def test_every_case_ran_and_left_nothing_behind(lab: Inventory, calibrated: dict) -> None:
    rows = calibrated["rows"]
    assert list(rows) == [c for c in calibrated["cases"]]
    for name, row in rows.items():
        expected = "cancelled" if name == "held-no-converge" else "completed"
        assert row["status"] == expected, row
        assert (calibrated["dir"] / "real" / name / "migrations.csv").is_file()
    for host in lab.hosts:  # every case's domain was removed after its figures were read
        assert not set(virsh(host.uri, "list", "--all", "--name").split()) & set(rows)


def test_the_guest_reports_its_truth(calibrated: dict) -> None:
    for name, row in calibrated["rows"].items():
        case = calibrated["cases"][name]
        assert int(row["guest_ticks"]) >= 3, row
        asked, rate = case.dirty_rate / MiB, float(row["guest_rate_mibps"])
        # the median over whole seconds of what it wrote: never more than asked, and a
        # starved vCPU loses ticks (module docstring)
        assert (rate == 0) if asked == 0 else (asked / 2 < rate <= asked * 1.01), row
        nonzero = float(row["guest_nonzero_mib"])
        assert case.working_set / MiB < nonzero < case.ram / MiB, row
        assert float(row["guest_memfree_mib"]) > 0
        # the non-zero pages of its RAM, read through /proc/kcore before the first tick
        scanned = float(row["guest_scan_nonzero_mib"])
        assert case.working_set / MiB < scanned < case.ram / MiB, row
        # and where they lie: 32 equal slices of RAM whose shares add up to the same figure
        # (each slice ~RAM / 32; the RAM the kernel does not list is not in any slice)
        layout = [float(v) for v in row["guest_layout"].split()]
        assert len(layout) == 32 and all(0 <= v <= 1 for v in layout), row
        assert sum(layout) * case.ram / MiB / 32 == pytest.approx(scanned, rel=0.03), row


def guest_nonzero_mib(row: dict[str, str]) -> float:
    """The guest's figure the calibration uses: its RAM scan (MemTotal - MemFree without)."""
    return float(row["guest_scan_nonzero_mib"] or row["guest_nonzero_mib"])


def profile_of(doc: dict[str, Any]) -> Profile:
    return Profile(startup_cost=parse_duration(doc["startup_cost"]),
                   startup_cost_per_gib=parse_duration(doc.get("startup_cost_per_gib", "0s")),
                   switchover_cost=parse_duration(doc["switchover_cost"]),
                   link_speed=parse_rate(doc["link_speed"]),
                   bandwidth_window=parse_duration(doc["bandwidth_window"]),
                   check_period=parse_duration(doc["check_period"]),
                   flush_speed=parse_rate(doc["flush_speed"]) if "flush_speed" in doc else None)


def test_the_profile_file_has_the_agreed_keys_and_its_provenance(calibrated: dict) -> None:
    doc = calibrated["profile"]
    p = profile_of(doc)
    assert 0.05 < p.startup_cost < 3.0 and 0 <= p.switchover_cost < 0.5
    assert 10 * MiB < p.link_speed < 2000 * MiB
    measured = doc["measured"]
    assert measured["fitted_on"] == list(FIT) and measured["cases"] == 7
    assert measured["lab_hugepages"] is True
    assert measured["qemu"] and measured["libvirt"] and measured["date"]
    assert 0 < HiddenMemory.parse(measured["hidden_memory"]).of(128 * MiB) < 128 * MiB


def test_held_out_predictions_are_within_the_measured_spread(calibrated: dict) -> None:
    profile = profile_of(calibrated["profile"])
    hidden = HiddenMemory.parse(calibrated["profile"]["measured"]["hidden_memory"])
    report = []
    checked = 0
    for name, row in calibrated["rows"].items():
        if name in FIT:
            continue
        case = calibrated["cases"][name]
        pred = predict(
            profile, non_zero=min(case.ram,
                                  guest_nonzero_mib(row) * MiB + hidden.of(case.ram)),
            ram=case.ram, layout=tuple(float(v) for v in row["guest_layout"].split()),
            working_set=case.working_set, dirty_rate=float(row["guest_rate_mibps"]) * MiB,
            bandwidth=case.bandwidth, max_downtime=case.max_downtime,
            timeout=completion_timeout(case.completion_timeout, case.ram),
        )
        converged = row["status"] == "completed"
        assert pred.converges == converged, (name, pred, row)
        if not converged:
            continue
        real = float(row["time_elapsed_ms"]) / 1000.0
        error = (pred.total_time - real) / real
        report.append(f"{name}: real {real:.3f} s, predicted {pred.total_time:.3f} s "
                      f"({error:+.1%})")
        if case.capped:
            assert abs(error) <= CAPPED_TOLERANCE, report
        else:
            assert UNCAPPED_BOUNDS[0] <= real / pred.total_time <= UNCAPPED_BOUNDS[1], report
        checked += 1
    print("\n".join(report))
    assert checked == 3  # the test never passes on outcomes alone


def test_compare_against_the_simulator_replaying_the_cases(calibrated: dict) -> None:
    out = calibrated["dir"]
    for name in calibrated["rows"]:
        assert main(["run", str(out / "scenarios" / f"{name}.yaml"), "--out",
                     str(out / "sim" / name), "--no-progress"]) == 0
    assert main(["compare", str(out / "real"), str(out / "sim"), "--out",
                 str(out / "compare")]) == 0
    with (out / "compare" / "compare.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["instance"] for r in rows) == sorted(calibrated["rows"])
    assert all(r["outcome_match"] == "True" for r in rows), rows
    assert (out / "compare" / "compare.png").stat().st_size > 0
