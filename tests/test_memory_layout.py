"""Where a guest's non-zero memory lies (``memory_layout``): the lab guest's layout line,
its parsing and recording by ``livemig calibrate``, the scenario field."""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from pathlib import Path

import pytest

from livemig.calibration.matrix import DEFAULT_MATRIX, case_scenario_text
from livemig.calibration.run import (
    CaseResult,
    load_results,
    median_layout,
    typical_runs,
    write_cases,
)
from livemig.calibration.truth import GuestTruth, guest_truth
from livemig.core.scenario import ScenarioError, parse_scenario

MiB = 2**20
DIRTIER = Path(__file__).resolve().parents[1] / "drivers" / "lab" / "guest" / "dirtier.c"
IDLE_128 = DEFAULT_MATRIX[0]  # u128-idle

SCENARIO = """\
hosts:
  - {name: a, ram: 16GiB, vcpus: 4}
  - {name: b, ram: 16GiB, vcpus: 4}
vms:
  - {name: v, host: a, ram: 2GiB, used_memory: 1GiB,
     memory_layout: %s}
"""


# -- the guest's layout line -------------------------------------------------------------------


def test_the_dirtier_prints_a_layout_line_that_the_parser_reads() -> None:
    source = DIRTIER.read_text()
    (slices,) = re.findall(r"#define LAYOUT_SLICES (\d+)", source)
    assert 'printf("layout slices=%d nonzero=", LAYOUT_SLICES)' in source
    shares = [f"{(i % 7) / 6:.3f}" for i in range(int(slices))]  # the "%.3f" of each slice
    line = f"layout slices={slices} nonzero={','.join(shares)}"
    assert "tick" not in line  # the lab's boot wait looks for "tick"
    truth = guest_truth("scan nonzero_mib=76.8 scanned_mib=127.9 segments=2 took_s=0.3\n"
                        + line + "\n")
    assert truth.scan_layout == tuple(float(v) for v in shares)
    assert len(truth.scan_layout) == int(slices) == 32


@pytest.mark.parametrize("line", [
    "layout slices=3 nonzero=0.5,0.25",  # fewer shares than slices
    "layout slices=2 nonzero=0.5,1.5",  # a share over 1
    "layout slices=2 nonzero=0.5,,",  # not numbers
])
def test_a_damaged_layout_line_gives_no_layout(line: str) -> None:
    assert guest_truth(line + "\n").scan_layout == ()


# -- recorded by livemig calibrate -------------------------------------------------------------


def run(layout: tuple[float, ...], repeat: int = 1) -> CaseResult:
    return CaseResult(
        case=IDLE_128, status="completed", error=None,
        record={"total_time_s": 0.4, "downtime_ms": 12.0, "iterations": 2,
                "data_transferred_bytes": 80 * MiB},
        stats={"time_elapsed": 400, "downtime": 12, "memory_processed": 80 * MiB,
               "memory_normal_bytes": 80 * MiB, "memory_bps": 900 * MiB, "setup_time": 2},
        truth=GuestTruth(ticks=4, rate_mibps=0.0, nonzero_mib=44.0, memfree_mib=80.0,
                         scan_nonzero_mib=76.8, scan_layout=layout),
        wall_s=10.0, load1=0.5, repeat=repeat,
    )


def test_cases_csv_records_the_layout_and_reads_it_back(tmp_path: Path) -> None:
    runs = [run((0.75, 0.58, 0.65, 0.42)), run((), repeat=2)]
    write_cases(tmp_path / "cases.csv", runs)
    with (tmp_path / "cases.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["guest_layout"] for r in rows] == ["0.75 0.58 0.65 0.42", ""]
    back = load_results(tmp_path / "cases.csv", DEFAULT_MATRIX)
    assert [b.truth.scan_layout for b in back] == [(0.75, 0.58, 0.65, 0.42), ()]


def test_a_damaged_layout_cell_names_the_file_and_row(tmp_path: Path) -> None:
    write_cases(tmp_path / "cases.csv", [run((0.5, 0.5))])
    text = (tmp_path / "cases.csv").read_text().replace("0.5 0.5", "0.5 x")
    (tmp_path / "cases.csv").write_text(text)
    with pytest.raises(ValueError, match=r"cases\.csv:2: guest_layout '0\.5 x': expected"):
        load_results(tmp_path / "cases.csv", DEFAULT_MATRIX)


def test_the_replay_uses_the_median_layout_of_the_runs() -> None:
    assert median_layout([(0.5, 0.1), (0.7, 0.0), (0.6, 0.2)]) == (0.6, 0.1)
    assert median_layout([(0.5, 0.1), (0.7,), (0.6, 0.3)]) == (0.55, 0.2)  # the usual length
    assert median_layout([(), ()]) == ()
    (typical,) = typical_runs([run((0.5, 0.1)), run((0.7, 0.0), 2), run((0.6, 0.2), 3)])
    assert typical.truth.scan_layout == (0.6, 0.1)


def test_the_replay_scenario_carries_the_layout() -> None:
    text = case_scenario_text(IDLE_128, "lab1", "lab2", non_zero=77 * MiB,
                              layout=(0.75, 0.58, 0.65, 0.42))
    (vm,) = parse_scenario(text, "case").vms
    assert vm.memory_layout == (0.75, 0.58, 0.65, 0.42) and vm.used_memory == 77 * MiB
    (plain,) = parse_scenario(case_scenario_text(IDLE_128, "lab1", "lab2"), "case").vms
    assert plain.memory_layout == ()


# -- the scenario field ------------------------------------------------------------------------


def test_the_scenario_field_reads_shares() -> None:
    (vm,) = parse_scenario(SCENARIO % "[0.7, 1, 0.4, 0]", "t.yaml").vms
    assert vm.memory_layout == (0.7, 1.0, 0.4, 0.0)
    (vm,) = parse_scenario(SCENARIO.replace(",\n     memory_layout: %s", ""), "t.yaml").vms
    assert vm.memory_layout == ()
    assert replace(vm, memory_layout=(1.0,)).memory_layout == (1.0,)


@pytest.mark.parametrize(("value", "where", "fragment"), [
    ("[0.5, 1.2]", "vms[0].memory_layout[1]", "1.2 is out of range; expected a share from 0 to 1"),
    ("[]", "vms[0].memory_layout", "0 slices; expected a list of non-zero shares"),
    ("[0, 0]", "vms[0].memory_layout", "every slice is 0; expected at least one share above 0"),
    ("half", "vms[0].memory_layout", "expected a list of non-zero shares from 0 to 1"),
    ("[a]", "vms[0].memory_layout[0]", "expected a number"),
])
def test_a_bad_layout_is_a_clear_error(value: str, where: str, fragment: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(SCENARIO % value, "t.yaml")
    message = str(info.value)
    assert message.startswith(f"t.yaml:6: {where}: "), message
    assert fragment in message, message
