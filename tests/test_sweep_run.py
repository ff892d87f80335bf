"""Sweeps run on dask.distributed: a real LocalCluster of 2 worker processes, the table,
resumption (finished cells skipped, crashed cells recorded and retried) and a sweep
killed with SIGKILL that resumes with no duplicate rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import dask
import pandas as pd
import pyarrow.parquet as pq
import pytest
import sweep_cells
from distributed import LocalCluster

import livemig
from livemig.core import cli, results
from livemig.core.runner import run_scenario
from livemig.sweep import cells as cells_mod
from livemig.sweep import execute
from livemig.sweep.spec import load_sweep

REPO = Path(__file__).resolve().parents[1]
SWEEP = f"""\
name: tiny-sweep
scenarios: [{REPO / 'scenarios' / 'quickstart.yaml'}]
axes:
  policy.scheduler.heuristic: [weighed, first_fit]
seeds: [1, 2, 3]
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A LocalCluster of 2 worker processes (1 thread each) shared by this module's tests;
    a task fails once it has killed 2 workers (dask's default: 4)."""
    cloudpickle.register_pickle_by_value(sweep_cells)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         dashboard_address=":0") as local:
        yield local.scheduler_address
    cloudpickle.unregister_pickle_by_value(sweep_cells)


def sweep_file(tmp_path: Path, text: str = SWEEP) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def run(path: Path, out: Path, scheduler: str, **kwargs: object) -> execute.SweepOutcome:
    sweep = load_sweep(path)
    return execute.run_sweep(sweep, cells_mod.resolve(sweep), out, scheduler=scheduler,
                             **kwargs)  # type: ignore[arg-type]


def records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}


def test_a_sweep_lands_in_parquet_one_row_per_cell(cluster: str, tmp_path: Path) -> None:
    path, out = sweep_file(tmp_path), tmp_path / "out"
    outcome = run(path, out, cluster)
    assert (outcome.total, outcome.ok, outcome.earlier, outcome.failed) == (6, 6, 0, [])
    df = pd.read_parquet(out / "cells.parquet")
    cells = cells_mod.resolve(load_sweep(path))
    assert list(df["cell"]) == [c.key for c in cells]  # the sweep's order
    assert list(df.columns[:6]) == ["cell", "status", "error", "scenario", "seed",
                                    "axis.policy.scheduler.heuristic"]
    assert list(df.columns[-4:]) == ["wall_s", "worker", "finished_at", "run_dir"]
    assert list(df["axis.policy.scheduler.heuristic"]) == ["weighed"] * 3 + ["first_fit"] * 3
    assert list(df["seed"]) == [1, 2, 3] * 2 and df["seed"].dtype == "int64"
    assert set(df["status"]) == {"ok"} and df["error"].isna().all()
    # all null, yet text as documented (not Arrow's null type)
    schema = pq.read_schema(out / "cells.parquet")
    assert [str(schema.field(c).type) for c in ("error", "run_dir", "seed", "wall_s")] == [
        "string", "string", "int64", "double"]
    assert len(set(df["worker"])) == 2  # both workers ran cells
    # every metric of summary.json, flattened: the same numbers as a run of that cell alone
    for cell, (_, row) in zip(cells, df.iterrows(), strict=True):
        result = run_scenario(cell.scenario, seed=cell.seed)
        summary = results.summarize(result)
        result.store.close()
        assert row["metric.outcomes.completed"] == summary["outcomes"]["completed"]
        assert row["metric.completed_total_time_s.p95"] == summary["completed_total_time_s"][
            "p95"]
        assert row["metric.data_transferred_bytes"] == summary["data_transferred_bytes"]
        assert row["metric.seed"] == cell.seed
        assert json.loads(row["metric.drains"]) == summary["drains"]
    info = json.loads((out / "sweep.json").read_text())
    assert info["axes"] == ["policy.scheduler.heuristic"] and info["cells"] == list(df["cell"])


def test_metrics_keep_only_the_keys_asked_for(cluster: str, tmp_path: Path) -> None:
    text = SWEEP.replace("seeds: [1, 2, 3]", "seeds: [1]\nmetrics: [outcomes, nonsense.key]")
    outcome = run(sweep_file(tmp_path, text), tmp_path / "out", cluster)
    df = pd.read_parquet(tmp_path / "out" / "cells.parquet")
    metrics = [c for c in df.columns if c.startswith("metric.")]
    assert metrics and all(c.startswith("metric.outcomes.") for c in metrics)
    assert outcome.missing_metrics == ["nonsense.key"]


def test_finished_cells_are_skipped_and_a_missing_one_runs_again(cluster: str,
                                                                 tmp_path: Path) -> None:
    path, out = sweep_file(tmp_path), tmp_path / "out"
    run(path, out, cluster)
    before = records(out)
    lost = sorted(before)[0]
    (out / "cells" / f"{lost}.json").unlink()  # as if the sweep was killed running it
    kept = {p: os.stat(out / "cells" / f"{p}.json").st_mtime_ns for p in before if p != lost}
    outcome = run(path, out, cluster)
    assert (outcome.earlier, outcome.ok) == (5, 1)
    assert {p: os.stat(out / "cells" / f"{p}.json").st_mtime_ns for p in kept} == kept
    after = records(out)
    assert after[lost]["summary"]["outcomes"] == before[lost]["summary"]["outcomes"]
    df = pd.read_parquet(out / "cells.parquet")
    assert len(df) == 6 and df["cell"].is_unique
    outcome = run(path, out, cluster)  # nothing left: no cluster needed, the table rewritten
    assert (outcome.earlier, outcome.ok, outcome.setup_s) == (6, 0, 0.0)


def test_a_crashed_cell_is_recorded_and_the_sweep_goes_on(cluster: str,
                                                           tmp_path: Path) -> None:
    path, out = sweep_file(tmp_path), tmp_path / "out"
    outcome = run(path, out, cluster, cell_function=sweep_cells.crash_on_seed_2)
    assert outcome.ok == 4 and len(outcome.failed) == 2
    df = pd.read_parquet(out / "cells.parquet")
    failed = df[df["status"] == "failed"]
    assert list(failed["seed"]) == [2, 2]
    for error in failed["error"]:
        assert error.startswith("AttributeError: 'NoneType' object has no attribute"), error
    assert failed["metric.outcomes.completed"].isna().all()
    assert (df[df["status"] == "ok"]["metric.outcomes.completed"] > 0).all()
    assert "Traceback" in records(out)[failed["cell"].iloc[0]]["traceback"]
    # the next run retries the failed cells only
    outcome = run(path, out, cluster)
    assert (outcome.earlier, outcome.ok, outcome.failed) == (4, 2, [])
    assert set(pd.read_parquet(out / "cells.parquet")["status"]) == {"ok"}


def test_a_cell_whose_worker_dies_is_recorded_as_failed(cluster: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(sweep_file(tmp_path, SWEEP.replace("[1, 2, 3]", "[1, 3]")), out, cluster)
    # seeds 1 and 3 are done: only seed 2 runs, and kills each worker that tries (dask gives
    # up after allowed-failures + 1 deaths; cells running beside it would be retried)
    path = sweep_file(tmp_path)
    outcome = run(path, out, cluster, cell_function=sweep_cells.die_on_seed_2)
    assert (outcome.earlier, outcome.ok, len(outcome.failed)) == (4, 0, 2)
    df = pd.read_parquet(out / "cells.parquet")
    assert len(df) == 6 and list(df[df["status"] == "failed"]["seed"]) == [2, 2]
    for error in df[df["status"] == "failed"]["error"]:
        assert error.startswith("dask: KilledWorker"), error


def test_keep_runs_writes_each_cells_run_directory(cluster: str, tmp_path: Path) -> None:
    path, out = sweep_file(tmp_path, SWEEP.replace("[1, 2, 3]", "[1]")), tmp_path / "out"
    run(path, out, cluster)
    outcome = run(path, out, cluster, keep_runs=True)  # done, but without run dirs: rerun
    assert outcome.ok == 2
    df = pd.read_parquet(out / "cells.parquet")
    for cell, run_dir in zip(df["cell"], df["run_dir"], strict=True):
        assert run_dir == f"runs/{cell}"
        summary = results.read_summary(out / run_dir / "summary.json")
        assert summary["outcomes"] == records(out)[cell]["summary"]["outcomes"]
        assert (out / run_dir / "migrations.csv").is_file()
    assert not list((out / "runs").glob(".*"))  # no temporary directory left


def test_a_directory_that_is_not_a_sweeps_is_refused(cluster: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(execute.SweepSetupError, match="is not empty and holds no sweep.json"):
        run(sweep_file(tmp_path), out, cluster)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_an_unreachable_scheduler_is_an_error_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(execute, "CONNECT_TIMEOUT", 1.0)
    out = tmp_path / "out"
    code = cli.main(["sweep", str(sweep_file(tmp_path)), "--out", str(out),
                     "--scheduler", "tcp://127.0.0.1:9"])
    assert code == 2
    assert "livemig: error: cannot reach the dask scheduler tcp://127.0.0.1:9" in \
        capsys.readouterr().err
    assert not out.exists()


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_a_killed_sweep_resumes_and_completes_without_duplicates(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = f"""\
scenarios: [{REPO / 'scenarios' / 'rack-drain.yaml'}]
axes:
  policy.scheduler.heuristic: [weighed, first_fit, best_fit, worst_fit]
seeds: {{from: 1, to: 8}}
"""
    path, out = sweep_file(tmp_path, text), tmp_path / "out"
    total = 32
    command = [sys.executable, "-m", "livemig.core.cli", "sweep", str(path), "--out", str(out),
               "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # its workers in its process group
    try:
        cells_dir = out / "cells"
        wait_for(lambda: cells_dir.is_dir() and len(list(cells_dir.glob("*.json"))) >= 4
                 or proc.poll() is not None, 120, "4 finished cells")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
        finished = {p.name: p.read_bytes() for p in cells_dir.glob("*.json")}
        assert 4 <= len(finished) < total  # killed mid-sweep

        def group_gone() -> bool:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_for(group_gone, 60, "the killed sweep's workers to exit")  # no orphans
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert cli.main(["sweep", str(path), "--out", str(out), "--workers", "2"]) == 0
    stdout = capsys.readouterr().out
    assert f"{total} cells: {total} ok ({len(finished)} from an earlier run), 0 failed" in stdout
    for name, data in finished.items():  # the cells done before the kill were not redone
        assert (cells_dir / name).read_bytes() == data
    df = pd.read_parquet(out / "cells.parquet")
    assert len(df) == total and df["cell"].is_unique and set(df["status"]) == {"ok"}
    assert len(list(cells_dir.glob("*.json"))) == total
    assert not list(cells_dir.glob(".*"))


def test_a_summary_that_is_not_json_is_recorded_as_a_failed_cell(tmp_path: Path) -> None:
    path = sweep_file(tmp_path, SWEEP.replace("[1, 2, 3]", "[1]"))
    cell = cells_mod.resolve(load_sweep(path))[0]
    out = tmp_path / "out"
    (out / "cells").mkdir(parents=True)
    result = {"status": "ok", "error": None, "summary": {"x": float("nan")}, "files": None,
              "wall_s": 0.1, "worker": "w:1"}
    assert execute._record(out, cell, result) is False
    record = records(out)[cell.key]
    assert record["status"] == "failed" and record["summary"] is None
    assert record["error"].startswith("the summary is not valid JSON: ValueError: Out of range")


def test_a_record_that_cannot_be_written_is_one_line_and_exit_2(
        cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def full(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(execute, "write_atomic", full)
    out = tmp_path / "out"
    assert cli.main(["sweep", str(sweep_file(tmp_path)), "--out", str(out),
                     "--scheduler", cluster]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"livemig: error: {out}: ") and "No space left on device" in err
    assert err.count("\n") == 1


def test_workers_with_another_livemig_version_are_refused(
        cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(livemig, "__version__", "0.0.0-here")
    out = tmp_path / "out"
    with pytest.raises(execute.SweepSetupError, match=r"the dask worker tcp://.* has livemig "
                       r"\S+; expected 0.0.0-here, as here"):
        run(sweep_file(tmp_path), out, cluster)
    assert not out.exists()


def test_an_interrupted_sweep_keeps_its_finished_cells_in_the_table(tmp_path: Path) -> None:
    text = f"""\
scenarios: [{REPO / 'scenarios' / 'rack-drain.yaml'}]
axes:
  policy.scheduler.heuristic: [weighed, first_fit, best_fit, worst_fit]
seeds: {{from: 1, to: 8}}
"""
    path, out = sweep_file(tmp_path, text), tmp_path / "out"
    command = [sys.executable, "-m", "livemig.core.cli", "sweep", str(path), "--out", str(out),
               "--workers", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cells_dir = out / "cells"
    try:
        wait_for(lambda: cells_dir.is_dir() and len(list(cells_dir.glob("*.json"))) >= 2
                 or proc.poll() is not None, 120, "2 finished cells")
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert err == "livemig: error: interrupted\n"
    df = pd.read_parquet(out / "cells.parquet")
    assert 2 <= len(df) < 32 and set(df["status"]) == {"ok"}
    assert sorted(df["cell"]) == sorted(p.stem for p in cells_dir.glob("*.json"))


def test_a_consolidation_sweep_lands_in_the_table(cluster: str, tmp_path: Path) -> None:
    from livemig.consolidation.run import run_spec

    base = REPO / "scenarios" / "planetlab-sample-lr-mmt-cloudsim.yaml"
    text = f"""\
scenarios: [{base}]
axes:
  consolidation.policy:
    - {{overload: lr, parameter: 1.2, selection: mmt}}
    - {{overload: thr, parameter: 0.8, selection: mmt}}
seeds: [1, 2]
"""
    path, out = sweep_file(tmp_path, text), tmp_path / "out"
    outcome = run(path, out, cluster, keep_runs=True)
    assert (outcome.ok, outcome.failed) == (4, [])
    df = pd.read_parquet(out / "cells.parquet")
    assert list(df["metric.kind"]) == ["consolidation"] * 4
    assert list(df["metric.seed"]) == [1, 2, 1, 2]  # written into each cell's scenario
    assert list(df["axis.consolidation.policy"].map(lambda v: json.loads(v)["overload"])) == [
        "lr", "lr", "thr", "thr"]
    cells = cells_mod.resolve(load_sweep(path))
    for cell, (_, row) in zip(cells, df.iterrows(), strict=True):
        alone, _ = run_spec(cell.scenario)  # what livemig run computes for that scenario
        assert row["metric.metrics.energy_kwh"] == alone.metrics["energy_kwh"]
        assert row["metric.metrics.migrations"] == alone.metrics["migrations"]
        assert (out / row["run_dir"] / "hosts.csv").is_file()
    assert df["metric.metrics.energy_kwh"].iloc[0] != df["metric.metrics.energy_kwh"].iloc[2]


def test_the_optimality_gap_is_a_sweep_metric(cluster: str, tmp_path: Path) -> None:
    base = tmp_path / "gap.yaml"
    base.write_text((REPO / "scenarios" / "planetlab-sample-lr-mmt-cloudsim.yaml").read_text()
                    .replace("traces/", f"{REPO}/scenarios/traces/")
                    .replace("  policy:", "  optimality_gap: {time_limit: 1s, every: 4}\n"
                                          "  policy:"))
    text = f"""\
scenarios: [{base}]
axes:
  consolidation.policy.placement: [pabfd, ff]
seeds: [1]
"""
    path, out = sweep_file(tmp_path, text), tmp_path / "out"
    outcome = run(path, out, cluster)
    assert (outcome.ok, outcome.failed) == (2, [])
    df = pd.read_parquet(out / "cells.parquet")
    assert list(df["metric.policy"]) == ["LR 1.2-MMT", "LR 1.2-MMT-FF"]
    assert list(df["metric.metrics.optimality_steps"]) == [12, 12]  # steps 0, 4, ..., 44
    assert (df["metric.metrics.optimality_gap_max"] >= df["metric.metrics.optimality_gap_mean"]
            ).all()
    assert (df["metric.metrics.optimality_gap_mean"] >= 0).all()
    assert df["metric.optimality_gap.every"].tolist() == [4, 4]


def test_ctrl_c_is_held_for_the_sweeps_loop_and_the_handler_restored() -> None:
    """Inside the sweep's loop a Ctrl-C only marks itself; the loop raises it between two
    dask calls (``_CtrlC.take``), never inside one. The previous handler comes back."""
    before = signal.getsignal(signal.SIGINT)
    with execute._ctrl_c_held() as ctrl_c:
        ctrl_c.take()  # nothing pressed yet
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 5
        while not ctrl_c.pressed and time.monotonic() < deadline:
            time.sleep(0.01)  # the handler runs between two bytecodes of this thread
        assert ctrl_c.pressed
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.take()
    assert signal.getsignal(signal.SIGINT) is before
