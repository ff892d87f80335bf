"""livemig.analysis.load: run and sweep directories as DataFrames."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from livemig import analysis
from livemig.core.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_scenario(name: str, out: Path) -> Path:
    assert main(["run", str(REPO / "scenarios" / name), "--out", str(out),
                 "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_scenario("quickstart.yaml", tmp_path_factory.mktemp("qs") / "run")


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_run_loads_with_every_row_and_typed_columns(quickstart: Path) -> None:
    run = analysis.load_run(quickstart)
    rows = csv_rows(quickstart / "migrations.csv")
    assert len(run.migrations) == len(rows) == 9
    assert run.migrations["instance"].tolist() == [r["instance"] for r in rows]
    assert run.migrations["total_time_s"].tolist() == [float(r["total_time_s"]) for r in rows]
    assert run.migrations["block_migration"].dtype == "boolean"
    assert not run.migrations["block_migration"].any()
    assert len(run.instances) == len(csv_rows(quickstart / "instances.csv")) == 41
    assert len(run.events) == len(csv_rows(quickstart / "events.csv"))
    assert run.events["state_change"].dtype == "boolean"
    assert run.summary == json.loads((quickstart / "summary.json").read_text())
    assert run.name == "quickstart"
    assert run.scenario_text is not None and "name: quickstart" in run.scenario_text


def test_the_outcome_table_and_the_slowest_migrations(quickstart: Path) -> None:
    run = analysis.load_run(quickstart)
    table = analysis.outcome_table(run)
    assert table.to_dict("list")["status"] == ["completed"]
    assert table["count"].tolist() == [9]
    slow = analysis.slowest(run, 3)
    times = sorted((float(r["total_time_s"]) for r in csv_rows(quickstart / "migrations.csv")),
                   reverse=True)
    assert slow["total_time_s"].tolist() == times[:3]


def test_a_failed_migration_keeps_its_error_and_empty_cells_are_missing(tmp_path: Path) -> None:
    run = analysis.load_run(run_scenario("seed-no-valid-host.yaml", tmp_path / "r"))
    (row,) = run.migrations.to_dict("records")
    assert row["status"] == "error" and row["error"] == "NoValidHost"
    assert pd.isna(row["total_time_s"]) and pd.isna(row["dest"])
    assert run.completed.empty
    assert analysis.slowest(run).empty


def test_host_names_that_look_like_numbers_stay_text(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "migrations.csv").write_text("id,instance,source,dest,status\n1,007,1,2,queued\n")
    run = analysis.load_run(tmp_path)
    assert run.migrations.loc[0, "instance"] == "007"
    assert run.migrations.loc[0, "source"] == "1"
    assert run.events.empty and run.actions.empty and run.scenario_text is None


@pytest.mark.parametrize(("files", "message"), [
    ({}, "no summary.json and migrations.csv"),
    ({"summary.json": "{", "migrations.csv": "id\n"}, "summary.json: not valid JSON"),
    ({"summary.json": "[]", "migrations.csv": "id\n"}, "expected a JSON object"),
])
def test_a_directory_that_is_not_a_run_is_a_one_line_error(
        tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(analysis.AnalysisError, match=message) as info:
        analysis.load_run(tmp_path)
    assert "\n" not in str(info.value)


def test_a_sweep_loads_from_its_directory_or_its_file(tmp_path: Path) -> None:
    cells = pd.DataFrame({
        "cell": [0, 1, 2], "status": ["done", "done", "failed"],
        "error": [None, None, "ValueError: boom"], "seed": [1, 2, 1],
        "axis.policy.scheduler.heuristic": ["weighed", "weighed", "random"],
        "metric.migrations": [4, 5, None], "metric.scenario": ["a", "a", None],
        "wall_s": [0.5, 0.6, 0.1],
    })
    cells.to_parquet(tmp_path / "cells.parquet")
    loaded = analysis.load_sweep(tmp_path)
    pd.testing.assert_frame_equal(loaded, cells)
    pd.testing.assert_frame_equal(analysis.load_sweep(tmp_path / "cells.parquet"), cells)
    assert analysis.axes(loaded) == ["axis.policy.scheduler.heuristic"]
    assert analysis.metrics(loaded, numeric=True) == ["metric.migrations"]
    assert analysis.failed_cells(loaded)["cell"].tolist() == [2]
    assert analysis.is_sweep_dir(tmp_path) and not analysis.is_run_dir(tmp_path)


def test_a_directory_without_cells_is_not_a_sweep(tmp_path: Path) -> None:
    with pytest.raises(analysis.AnalysisError, match="no cells.parquet"):
        analysis.load_sweep(tmp_path)
    (tmp_path / "cells.parquet").write_text("not parquet")
    with pytest.raises(analysis.AnalysisError, match="cannot read it as Parquet"):
        analysis.load_sweep(tmp_path)


def test_the_pareto_front_keeps_exactly_the_undominated_points() -> None:
    frame = pd.DataFrame({"x": [1, 2, 2, 3, 4, 0.5], "y": [9, 4, 5, 4, 1, 10]})
    front = analysis.pareto_front(frame, "x", "y")
    brute = [i for i, (x, y) in frame.iterrows()
             if not any((x2 <= x and y2 <= y) and (x2 < x or y2 < y)
                        for j, (x2, y2) in frame.iterrows() if j != i)]
    assert sorted(front.index) == sorted(brute) == [0, 1, 4, 5]


def test_the_calibration_table_loads(tmp_path: Path) -> None:
    table = analysis.load_compare(REPO / "tests" / "data" / "calibration")
    assert len(table) > 10
    assert table["outcome_match"].dtype == bool
    with pytest.raises(analysis.AnalysisError, match="no compare.csv"):
        analysis.load_compare(tmp_path)
