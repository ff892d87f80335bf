"""``livemig calibrate --repeat`` and the lab's noise floor (sim lane: no lab, no libvirt).

The repeat bookkeeping (round-robin order, the ``repeat`` column, old cases.csv files),
the noise floor's arithmetic, a model's error against every run and against the case
median, pooling recordings (``models --also``), and ``calibrate --repeat 2`` end to end
with a fake runner in place of the lab.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import sys
from pathlib import Path

import pytest
import yaml
from test_calibration import TRUE, case_result, fake_inventory

from livemig.calibration import models, repeats
from livemig.calibration import run as run_mod
from livemig.calibration.matrix import DEFAULT_MATRIX, case_scenario_text
from livemig.calibration.run import (
    CASE_COLUMNS,
    HiddenMemory,
    fit_and_write,
    load_results,
    profile_document,
    write_cases,
)
from livemig.core.cli import main
from livemig.core.results import write_results
from livemig.core.runner import run_scenario
from livemig.core.scenario import load_scenario, parse_scenario
from livemig.core.units import parse_rate

MiB = 2**20
IDLE, CAPPED = DEFAULT_MATRIX[0], DEFAULT_MATRIX[4]  # uncapped u128-idle; capped at 20 MiB/s


def run_of(case, repeat: int, *, elapsed: int = 2000, downtime: int = 40,
           bps: int = 100 * MiB, nonzero: float = 40.0, normal: int = 75 * MiB):
    return dataclasses.replace(case_result(case, nonzero=nonzero, normal=normal,
                                           elapsed=elapsed, downtime=downtime, bps=bps),
                               repeat=repeat)


# -- bookkeeping -------------------------------------------------------------------------------


def test_round_robin_runs_every_case_before_any_case_again() -> None:
    order = repeats.round_robin(["a", "b", "c"], 3)
    assert [c for _, c in order] == ["a", "b", "c"] * 3
    assert [r for r, _ in order] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert repeats.round_robin(["a", "b"], 1) == [(1, "a"), (1, "b")]


def test_cases_csv_has_a_repeat_column_and_round_trips(tmp_path: Path) -> None:
    done = [run_of(IDLE, 1), run_of(CAPPED, 1), run_of(IDLE, 2, elapsed=2500)]
    write_cases(tmp_path / "cases.csv", done)
    with (tmp_path / "cases.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0])[:2] == ("case", "repeat") and "repeat" in CASE_COLUMNS
    assert [(r["case"], r["repeat"]) for r in rows] == [
        ("u128-idle", "1"), ("c20-128-w16-r4", "1"), ("u128-idle", "2")]
    back = load_results(tmp_path / "cases.csv", DEFAULT_MATRIX)
    assert [(r.case.name, r.repeat, r.stats["time_elapsed"]) for r in back] == [
        ("u128-idle", 1, 2000), ("c20-128-w16-r4", 1, 2000), ("u128-idle", 2, 2500)]


def test_a_cases_csv_from_before_repeats_loads_as_repeat_1(tmp_path: Path) -> None:
    """The recordings of /var/tmp/trust-cal and quiet-cal have no repeat column."""
    write_cases(tmp_path / "new.csv", [run_of(IDLE, 1), run_of(CAPPED, 1)])
    with (tmp_path / "new.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    with (tmp_path / "cases.csv").open("w", newline="") as fh:
        old_columns = [c for c in CASE_COLUMNS if c != "repeat"]
        writer = csv.DictWriter(fh, fieldnames=old_columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert "repeat" not in (tmp_path / "cases.csv").read_text().splitlines()[0]
    back = load_results(tmp_path / "cases.csv", DEFAULT_MATRIX)
    assert [(r.case.name, r.repeat) for r in back] == [("u128-idle", 1), ("c20-128-w16-r4", 1)]


def test_a_bad_repeat_names_the_file_and_line(tmp_path: Path) -> None:
    write_cases(tmp_path / "cases.csv", [run_of(IDLE, 1), run_of(IDLE, 2)])
    text = (tmp_path / "cases.csv").read_text().splitlines()
    text[2] = text[2].replace("u128-idle,2,", "u128-idle,two,", 1)
    (tmp_path / "cases.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"cases.csv:3: repeat 'two': expected a whole number"):
        load_results(tmp_path / "cases.csv", DEFAULT_MATRIX)


def test_pooled_recordings_number_the_later_runs_after_the_earlier() -> None:
    first = [run_of(IDLE, 1), run_of(IDLE, 2), run_of(CAPPED, 1)]
    second = [run_of(IDLE, 1), run_of(CAPPED, 1)]
    pooled = repeats.pool_recordings([first, second])
    assert [(r.case.name, r.repeat) for r in pooled] == [
        ("u128-idle", 1), ("u128-idle", 2), ("c20-128-w16-r4", 1),
        ("u128-idle", 3), ("c20-128-w16-r4", 3)]


# -- the noise floor and the errors ------------------------------------------------------------


def test_noise_floor_is_each_run_against_its_case_median() -> None:
    """Three runs of the idle case (1.0, 1.2, 1.5 s; median 1.2 s): 1/6, 0 and 1/4; its
    downtime (20, 40, 50 ms; median 40): 1/2, 0, 1/4. The capped case has one run: no
    noise to measure, no rows."""
    runs = [run_of(IDLE, 1, elapsed=1000, downtime=20), run_of(IDLE, 2, elapsed=1200,
            downtime=40), run_of(IDLE, 3, elapsed=1500, downtime=50), run_of(CAPPED, 1)]
    by_case = repeats.run_rows(runs)
    assert [r["repeat"] for r in by_case["u128-idle"]] == [1, 2, 3]
    assert repeats.most_runs(by_case) == 3
    noise = repeats.noise_rows(by_case)
    assert [r["total_time_s_err"] for r in noise] == [0.166667, 0.0, 0.25]  # 6 places
    assert [r["downtime_ms_err"] for r in noise] == [0.5, 0.0, 0.25]
    assert [r["data_transferred_bytes_err"] for r in noise] == [0.0, 0.0, 0.0]
    assert all(r["outcome_match"] for r in noise)
    assert {r["instance"] for r in noise} == {"u128-idle"}


def test_a_model_is_judged_against_every_run_and_against_the_case_median() -> None:
    """The model says 1.2 s. Against the runs 1.0, 1.2, 1.5 s it is +20 %, 0, -20 %;
    against their median (1.2 s) it is exact. A run that failed does not move the median
    time but is an outcome the model missed."""
    runs = [run_of(IDLE, 1, elapsed=1000), run_of(IDLE, 2, elapsed=1200),
            run_of(IDLE, 3, elapsed=1500)]
    failed = dataclasses.replace(run_of(IDLE, 4), status="error", error="timeout", stats={},
                                 record={"total_time_s": None, "downtime_ms": None,
                                         "iterations": None, "data_transferred_bytes": None})
    by_case = repeats.run_rows([*runs, failed])
    sim = {"u128-idle": {"instance": "u128-idle", "status": "completed", "error": "",
                         "total_time_s": "1.2", "downtime_ms": "40.0",
                         "data_transferred_bytes": str(75 * MiB), "iterations": "3"}}
    every = repeats.error_rows(by_case, sim, against_median=False)
    assert [r["total_time_s_err"] for r in every] == [
        pytest.approx(0.2), 0.0, pytest.approx(-0.2), None]
    assert [r["outcome_match"] for r in every] == [True, True, True, False]
    (typical,) = repeats.error_rows(by_case, sim, against_median=True)
    assert typical["real_total_time_s"] == 1.2 and typical["total_time_s_err"] == 0.0
    assert typical["outcome_match"]
    assert repeats.error_rows(by_case, {}, against_median=True) == []  # not simulated


def test_repeats_table_has_the_noise_floor_and_both_errors_per_model() -> None:
    runs = [run_of(IDLE, 1, elapsed=1000), run_of(IDLE, 2, elapsed=1500),
            run_of(CAPPED, 1, elapsed=9000), run_of(CAPPED, 2, elapsed=11000)]
    sim = {name: {"instance": name, "status": "completed", "error": "", "total_time_s": t,
                  "downtime_ms": "40.0", "data_transferred_bytes": str(75 * MiB)}
           for name, t in (("u128-idle", "1.25"), ("c20-128-w16-r4", "10.0"))}
    table = models.repeats_table(repeats.run_rows(runs), {"qemu": sim}, {CAPPED.name})
    lines = table.splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| lab noise floor (each run vs its case median)", "| qemu vs every run",
        "| qemu vs case medians"]
    # capped 9 / 11 s around 10 s: 10 %; uncapped 1.0 / 1.5 s around 1.25 s: 20 %
    assert lines[2].split(" | ")[1:3] == ["10.0 % / 10.0 %", "20.0 % / 20.0 %"]
    # the model said each median: 11.1 % / 9.1 % (capped) against the runs, 0 against medians
    assert lines[3].split(" | ")[1] == "10.1 % / 10.9 %"
    assert lines[4].split(" | ")[1:3] == ["0.0 % / 0.0 %", "0.0 % / 0.0 %"]
    assert lines[3].endswith("| 4/4 |") and lines[4].endswith("| 2/2 |")


# -- the fit and the replay with repeats ----------------------------------------------------------


def test_the_fit_uses_every_run_and_the_replay_the_median_truth(tmp_path: Path) -> None:
    """Three runs of the idle uncapped case at 100, 150 and 400 MiB/s: the link speed is
    their median, 150 MiB/s (the first run alone would say 100). The replay scenario carries
    the median of the guest's non-zero memory (40, 44, 60 MiB: 44) plus the hidden memory
    (75 MiB normal bytes - 40, 44, 60: median 31 MiB)."""
    done = [run_of(IDLE, 1, bps=100 * MiB, nonzero=40.0),
            run_of(IDLE, 2, bps=150 * MiB, nonzero=44.0),
            run_of(IDLE, 3, bps=400 * MiB, nonzero=60.0)]
    profile = fit_and_write(done, tmp_path, tmp_path / "profile.yaml", name="p",
                            fit_names=None, hosts=("lab1", "lab2"), provenance={})
    assert profile.link_speed == 150 * MiB
    doc = yaml.safe_load((tmp_path / "profile.yaml").read_text())
    assert parse_rate(doc["link_speed"]) == pytest.approx(150 * MiB, rel=1e-3)
    measured = doc["measured"]
    assert (measured["cases"], measured["runs"], measured["fitted_on"]) == (1, 3, ["u128-idle"])
    assert [r.get("repeat", 1) for r in measured["residuals"]] == [1, 2, 3]
    (vm,) = load_scenario(tmp_path / "scenarios" / "u128-idle.yaml").vms
    assert vm.used_memory == (44 + 31) * MiB


# -- end to end: calibrate --repeat 2 with a fake lab, models --also ----------------------------


def fake_run(case, inventory_path, out_dir: Path, repeat: int = 1):
    """A stand-in for the lab: the case on the simulator (results into the repeat's
    directory), recorded as libvirt would report it, each repeat a little slower."""
    result = run_scenario(parse_scenario(case_scenario_text(case, "lab1", "lab2"),
                                         source=case.name), "sim")
    write_results(result, out_dir / repeats.real_dir_name(repeat) / case.name, force=True)
    (m,) = result.store.migrations()
    elapsed = round(m.total_time * 1000 * (1 + 0.1 * (repeat - 1)))
    return dataclasses.replace(
        run_of(case, repeat, elapsed=elapsed, downtime=round(m.downtime * 1000),
               normal=int(m.data_transferred), bps=int(case.bandwidth or 150 * MiB)),
        record={"total_time_s": elapsed / 1000, "downtime_ms": m.downtime * 1000,
                "iterations": m.iterations, "data_transferred_bytes": m.data_transferred})


def test_calibrate_repeat_2_end_to_end_with_a_fake_lab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = fake_inventory(tmp_path)
    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        "cases:\n"
        "  - {name: u128-idle, ram: 128MiB, working_set: 16MiB, dirty_rate: 0MiB/s,"
        " max_downtime: 300ms}\n"
        "  - {name: c20-128-w16-r4, ram: 128MiB, working_set: 16MiB, dirty_rate: 4MiB/s,"
        " bandwidth: 20MiB/s, max_downtime: 300ms}\n")
    calls: list[tuple[str, int]] = []

    def recording_run(case, inventory_path, out_dir, repeat=1):
        calls.append((case.name, repeat))
        return fake_run(case, inventory_path, out_dir, repeat)

    bars: list[int] = []

    class Bar:
        def __init__(self, total: int, stream, **kw) -> None:
            bars.append(total)

        def draw(self) -> None: ...
        def advance(self, ok: bool = True) -> None: bars.append(-1)
        def close(self) -> None: ...

    monkeypatch.setattr(run_mod, "run_case", recording_run)
    monkeypatch.setattr(run_mod, "versions", lambda inv: {"qemu": "x", "libvirt": "y"})
    monkeypatch.setattr("livemig.core.progress.ProgressBar", Bar)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    out = tmp_path / "cal"
    out.mkdir()
    code = main(["calibrate", "--inventory", str(inv), "--out", str(out / "profile.yaml"),
                 "--matrix", str(matrix), "--repeat", "2", "--replay"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert calls == [("u128-idle", 1), ("c20-128-w16-r4", 1), ("u128-idle", 2),
                     ("c20-128-w16-r4", 2)]
    assert bars == [4, -1, -1, -1, -1]  # the bar counts all runs
    with (out / "cases.csv").open() as fh:
        assert [(r["case"], r["repeat"]) for r in csv.DictReader(fh)] == [
            ("u128-idle", "1"), ("c20-128-w16-r4", "1"), ("u128-idle", "2"),
            ("c20-128-w16-r4", "2")]
    assert sorted(p.name for p in (out / "real").iterdir()) == ["c20-128-w16-r4", "u128-idle"]
    assert sorted(p.name for p in (out / "real-r2").iterdir()) == [
        "c20-128-w16-r4", "u128-idle"]
    assert "u128-idle r2" in printed.out
    # the second run is 10 % slower: each run is 4.76 % from the case median
    noise = next(line for line in printed.out.splitlines() if "lab noise floor" in line)
    assert noise.split(" | ")[1:3] == ["4.8 % / 4.8 %", "4.8 % / 4.8 %"]
    assert "| qemu vs every run |" in printed.out and "| qemu vs case medians |" in printed.out
    doc = yaml.safe_load((out / "profile.yaml").read_text())
    assert (doc["measured"]["cases"], doc["measured"]["runs"]) == (2, 4)
    # a second calibrate into the same place is refused without --force (real-r2/ too)
    for name in ("profile.yaml", "cases.csv"):
        (out / name).unlink()
    for name in ("real", "scenarios", "sim", "compare"):
        (out / name).rename(tmp_path / f"moved-{name}")
    assert main(["calibrate", "--inventory", str(inv), "--out", str(out / "profile.yaml"),
                 "--matrix", str(matrix), "--repeat", "2"]) == 2
    assert "real-r2 already exists" in capsys.readouterr().err
    # without --replay: the noise floor alone
    assert main(["calibrate", "--inventory", str(inv), "--out", str(out / "profile.yaml"),
                 "--matrix", str(matrix), "--repeat", "2", "--force"]) == 0
    printed = capsys.readouterr().out
    assert "lab noise floor" in printed and "qemu vs" not in printed


def test_calibrate_refuses_a_repeat_below_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = fake_inventory(tmp_path)
    assert main(["calibrate", "--inventory", str(inv), "--out", str(tmp_path / "p.yaml"),
                 "--repeat", "0"]) == 2
    err = capsys.readouterr().err
    assert "--repeat 0: expected a whole number >= 1" in err and err.count("\n") == 1
    assert not (tmp_path / "p.yaml").exists()


def recording(path: Path, elapsed_factor: float) -> Path:
    """A calibration directory of the idle and the capped case (stand-in real runs: the
    simulator; recorded with their total time times ``elapsed_factor``)."""
    (path / "scenarios").mkdir(parents=True)
    doc = profile_document("p", TRUE, [], [], HiddenMemory(0.0), {})
    (path / "profile.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    done = []
    for case in (IDLE, CAPPED):
        text = case_scenario_text(case, "lab1", "lab2", profile="../profile.yaml")
        (path / "scenarios" / f"{case.name}.yaml").write_text(text)
        result = run_scenario(load_scenario(path / "scenarios" / f"{case.name}.yaml"), "sim")
        write_results(result, path / "real" / case.name)
        (m,) = result.store.migrations()
        t = m.total_time * elapsed_factor
        done.append(dataclasses.replace(
            run_of(case, 1, elapsed=round(t * 1000)),
            record={"total_time_s": t, "downtime_ms": m.downtime * 1000,
                    "iterations": m.iterations, "data_transferred_bytes": m.data_transferred}))
    write_cases(path / "cases.csv", done)
    return path


def test_models_also_pools_recordings_into_a_noise_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two recordings, one 1.0x and one 1.5x the simulator's time: each run is 20 % from
    its case's median (1.25x); the qemu model (which is the simulator) is 0 % / 33.3 % from
    the runs and 20 % from the medians. Without --also: today's table."""
    a, b = recording(tmp_path / "a", 1.0), recording(tmp_path / "b", 1.5)
    assert models.main([str(a)]) == 0
    single = capsys.readouterr().out
    assert "noise floor" not in single and "| qemu |" in single
    before = (b / "cases.csv").read_text()
    assert models.main([str(a), "--also", str(b)]) == 0
    out = capsys.readouterr().out
    assert (b / "cases.csv").read_text() == before and not (b / "models").exists()
    row = {line.split(" | ")[0].lstrip("| "): line.split(" | ")
           for line in out.splitlines() if line.startswith("| ")}
    assert row["lab noise floor (each run vs its case median)"][1:3] == [
        "20.0 % / 20.0 %", "20.0 % / 20.0 %"]
    assert row["qemu vs every run"][1] == "16.7 % / 30.0 %"
    assert row["qemu vs case medians"][1:3] == ["20.0 % / 20.0 %", "20.0 % / 20.0 %"]
    assert re.search(r"4 real runs of 2 cases \(2 with two runs or more\)", out)


def test_models_also_refuses_a_directory_without_cases_csv_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = recording(tmp_path / "a", 1.0)
    (tmp_path / "empty").mkdir()
    assert models.main([str(a), "--also", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "--also" in err and "no cases.csv in it" in err and err.count("\n") == 1
    assert not (a / "models").exists()  # refused before replaying anything
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "cases.csv").write_text((a / "cases.csv").read_text().replace(
        "u128-idle,", "nope,", 1))
    assert models.main([str(a), "--also", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "cases.csv:2: case 'nope' is not in the matrix" in err and err.count("\n") == 1
