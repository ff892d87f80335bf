"""Files of a run: CSV columns and values, summary.json, plots, determinism, atomic output."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from livemig.core import plots, results
from livemig.core.invariants import InvariantReport, Violation
from livemig.core.model import (
    HostSpec,
    LiveMigrateEvent,
    MigrationPolicy,
    MigrationStatus,
    Policy,
    Scenario,
    TimeoutAction,
    VmSpec,
)
from livemig.core.runner import RunResult, run_scenario
from livemig.core.state import StateStore

GiB = 1 << 30
MiB = 1 << 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CSV_FILES = ("migrations.csv", "instances.csv", "events.csv", "actions.csv")
RESULT_FILES = (*CSV_FILES, "summary.json")


def make_scenario(seed: int = 7) -> Scenario:
    """One completed, one cancelled (completion timeout), two rejected requests."""
    hosts = tuple(
        HostSpec(name=f"h{i}", ram=64 * GiB, vcpus=16, disk=500 * GiB) for i in range(3)
    )
    vms = (
        VmSpec(name="vm-ok", host="h0", ram=4 * GiB, used_memory=GiB, working_set=64 * MiB,
               dirty_rate=1e7),
        VmSpec(name="vm-self", host="h0", ram=2 * GiB, used_memory=GiB, working_set=64 * MiB,
               dirty_rate=0.0),
        # dirties faster than any link: never converges, aborted by the completion timeout
        VmSpec(name="vm-slow", host="h2", ram=GiB, used_memory=GiB, working_set=GiB,
               dirty_rate=5e9),
    )
    events = (
        LiveMigrateEvent(at=0.0, instance="vm-ok", dest="h1"),
        LiveMigrateEvent(at=0.0, instance="vm-slow", dest="h1"),
        LiveMigrateEvent(at=1.0, instance="vm-self", dest="h0"),
        LiveMigrateEvent(at=2.0, instance="ghost", dest="h1"),
    )
    policy = Policy(migration=MigrationPolicy(
        completion_timeout=1.0, downtime_steps=3, permit_auto_converge=True,
    ))
    return Scenario(name="unit", seed=seed, hosts=hosts, vms=vms, events=events, policy=policy,
                    source="tests/unit.yaml")


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def result() -> RunResult:
    return run_scenario(make_scenario())


@pytest.fixture(scope="module")
def out(result: RunResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return results.write_results(result, tmp_path_factory.mktemp("run") / "out")


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip the plots (the slow part) where a test is about something else."""
    monkeypatch.setattr(plots, "write_plots", lambda result, directory: [])


def by_instance(result: RunResult, name: str):  # noqa: ANN201
    (record,) = [m for m in result.store.migrations() if m.instance == name]
    return record


def test_output_directory_holds_every_file(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*RESULT_FILES, "timeline.png", "cdf_total_time.png", "cdf_downtime.png"]
    )
    assert [p.name for p in out.parent.iterdir()] == ["out"]  # no temporary sibling left


def test_migrations_csv(result: RunResult, out: Path) -> None:
    columns, rows = read_csv(out / "migrations.csv")
    assert columns == list(results.MIGRATION_COLUMNS)
    assert len(rows) == 4
    row = {r["instance"]: r for r in rows}

    ok, record = row["vm-ok"], by_instance(result, "vm-ok")
    assert record.status is MigrationStatus.COMPLETED
    assert (ok["source"], ok["dest"], ok["status"]) == ("h0", "h1", "completed")
    assert float(ok["total_time_s"]) == record.total_time  # repr: exact round trip
    assert float(ok["downtime_ms"]) == record.downtime * 1000.0
    assert int(ok["iterations"]) == record.iterations
    assert int(ok["data_transferred_bytes"]) == record.data_transferred
    assert ok["started_at"] == "0.0" and float(ok["finished_at"]) == record.finished_at
    assert ok["error"] == ok["error_message"] == "" and ok["block_migration"] == "false"

    rejected = row["vm-self"]
    assert rejected["status"] == "error" and rejected["error"] == "UnableToMigrateToSelf"
    assert "current host" in rejected["error_message"]
    assert rejected["source"] == "h0"
    for empty in ("started_at", "total_time_s", "downtime_ms", "iterations",
                  "data_transferred_bytes", "attempted_hosts"):
        assert rejected[empty] == "", empty

    assert row["ghost"]["error"] == "InstanceNotFound" and row["ghost"]["source"] == ""
    slow = row["vm-slow"]
    assert slow["status"] == "cancelled" and slow["error"] == "LiveMigrationFailed"
    assert slow["downtime_ms"] == "" and float(slow["total_time_s"]) > 0
    assert [int(r["id"]) for r in rows] == [1, 2, 3, 4]


def test_migrations_csv_has_the_convergence_fields(tmp_path: Path) -> None:
    run = synthetic([{"instance": "vm1"}, {"instance": "vm2"}])
    run.store.update_migration(
        1, flags=0x8000 | 0x2, max_downtime=0.075, progress=97.5, postcopy_at=4.25,
        paused_guest=True, auto_converge_throttle=40, timeout_action="force_complete",
    )
    out = results.write_results(run, tmp_path / "out")
    columns, rows = read_csv(out / "migrations.csv")
    assert columns[-7:] == ["flags", "max_downtime_ms", "progress", "postcopy_at",
                            "paused_guest", "auto_converge_throttle", "timeout_action"]
    first, second = rows
    assert (first["flags"], first["max_downtime_ms"]) == ("32770", "75.0")
    assert first["progress"] == "97.5"
    assert (first["postcopy_at"], first["paused_guest"]) == ("4.25", "true")
    assert (first["auto_converge_throttle"], first["timeout_action"]) == ("40", "force_complete")
    assert (second["flags"], second["paused_guest"]) == ("0", "false")
    assert all(second[c] == "" for c in ("max_downtime_ms", "progress", "postcopy_at",
                                         "auto_converge_throttle", "timeout_action"))


def test_instances_csv(result: RunResult, out: Path) -> None:
    columns, rows = read_csv(out / "instances.csv")
    assert columns == ["instance", "host", "vm_state", "task_state", "driver_host"]
    hosts = {r["instance"]: (r["host"], r["driver_host"]) for r in rows}
    assert hosts == {"vm-ok": ("h1", "h1"), "vm-self": ("h0", "h0"), "vm-slow": ("h2", "h2")}
    assert all(r["vm_state"] == "active" and r["task_state"] == "" for r in rows)


def test_events_csv_has_the_state_changes(result: RunResult, out: Path) -> None:
    columns, rows = read_csv(out / "events.csv")
    assert columns == list(results.EVENT_COLUMNS)
    assert len(rows) == len(result.store.notifications)
    ok = [r for r in rows if r["instance"] == "vm-ok" and r["state_change"] == "true"]
    assert [(r["old_task_state"], r["new_task_state"]) for r in ok] == [
        ("", "migrating"), ("migrating", "")
    ]
    assert float(ok[0]["time"]) == 0.0 and float(ok[1]["time"]) > 0.0
    assert {r["state_change"] for r in rows} == {"true", "false"}
    assert any(r["event"] == "compute.instance.live_migration._post.end" for r in rows)
    times = [float(r["time"]) for r in rows]
    assert times == sorted(times)


def test_summary_json(result: RunResult, out: Path) -> None:
    text = (out / "summary.json").read_text()
    summary = json.loads(text)
    assert list(summary) == sorted(summary)  # keys sorted in the file
    assert summary["status_counts"] == {"cancelled": 1, "completed": 1, "error": 2, "failed": 0}
    assert summary["error_counts"] == {
        "InstanceNotFound": 1, "LiveMigrationFailed": 1, "UnableToMigrateToSelf": 1,
    }
    record = by_instance(result, "vm-ok")
    total = summary["completed_total_time_s"]
    assert total["count"] == 1 and total["max"] == total["mean"] == record.total_time
    assert summary["completed_downtime_ms"]["p95"] == record.downtime * 1000.0
    assert summary["data_transferred_bytes"] == sum(
        m.data_transferred or 0 for m in result.store.migrations()
    )
    assert summary["host_mismatches"] == 0
    assert (summary["scenario"], summary["scenario_source"]) == ("unit", "tests/unit.yaml")
    assert (summary["driver"], summary["seed"], summary["migrations"]) == ("sim", 7, 4)
    assert summary["sim_time_s"] == result.sim_time and summary["sim_events"] > 0
    assert summary["wall_time_s"] >= 0 and summary["livemig_version"]


def test_summary_outcomes_policy_invariants_actions(result: RunResult, out: Path) -> None:
    summary = results.read_summary(out / "summary.json")
    assert summary["outcomes"] == {
        "accepted": 0, "queued": 0, "preparing": 0, "running": 0, "running (post-copy)": 0,
        "completed": 1, "failed": 0, "error": 2, "cancelled": 1,
    }
    assert summary["policy"] == {
        "downtime_steps": 3, "downtime_delay": 75.0, "timeout_action": "abort",
        "permit_post_copy": False, "permit_auto_converge": True, "completion_timeout": 1.0,
        "max_concurrent_per_host": 1,
    }
    report = getattr(result, "invariants", None)
    expected = None if report is None else json.loads(json.dumps(report.as_dict()))
    assert summary["invariants"] == expected
    assert summary["actions"] == len(result.store.actions())


def test_actions_csv(tmp_path: Path) -> None:
    clock = [0.0]
    run = synthetic([{"instance": "vm1"}], clock=lambda: clock[0])
    clock[0] = 2.5
    run.store.record_action("abort", "vm1", "ok")
    clock[0] = 0.1 + 0.2
    run.store.record_action("controller_restart", "", "reconciled 1, a line, \"quoted\"")
    out = results.write_results(run, tmp_path / "out")
    assert (out / "actions.csv").read_text() == (
        "time,kind,target,outcome\n"
        "2.5,abort,vm1,ok\n"
        '0.30000000000000004,controller_restart,,"reconciled 1, a line, ""quoted"""\n'
    )
    assert results.read_summary(out / "summary.json")["actions"] == 2


def test_summary_with_an_invariant_report(tmp_path: Path) -> None:
    report = InvariantReport(
        violations=(Violation(rule="placement", subject="vm1", detail="record h00, runs on h01"),),
        unverifiable=(Violation(rule="leftover", subject="h02", detail="libvirtd down"),) * 2,
        checked={"placement": 1, "leftover": 3},
    )
    run = dataclasses.replace(synthetic([{"instance": "vm1"}]), invariants=report)
    out = results.write_results(run, tmp_path / "out")
    block = results.read_summary(out / "summary.json")["invariants"]
    assert block["violations"] == 1 and block["unverifiable"] == 2
    assert block["details"] == ["placement: vm1: record h00, runs on h01"]
    assert block["checked"] == {"leftover": 3, "placement": 1}
    text = results.summary_table(run)
    assert "invariants: 1 violation(s), 2 unverifiable" in text
    assert "  placement: vm1: record h00, runs on h01" in text.splitlines()
    clean = dataclasses.replace(run, invariants=InvariantReport())
    assert "invariants: 0 violation(s)" in results.summary_table(clean).splitlines()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("name", ["timeline.png", "cdf_total_time.png", "cdf_downtime.png"])
def test_plots_are_png(out: Path, name: str) -> None:
    width, height = png_size(out / name)
    assert width >= 400 and height >= 250
    assert (out / name).stat().st_size > 10_000


@pytest.mark.usefixtures("no_plots")
def test_same_seed_same_files(result: RunResult, out: Path, tmp_path: Path) -> None:
    again = results.write_results(run_scenario(make_scenario()), tmp_path / "again")
    for name in CSV_FILES:
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    first = results.read_summary(out / "summary.json")
    second = results.read_summary(again / "summary.json")
    assert results.same_summary(first, second)
    assert not results.same_summary(first, {**second, "sim_events": -1})


def test_failure_while_writing_leaves_nothing(
    result: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(plots, "plot_timeline", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        results.write_results(result, tmp_path / "new" / "parents" / "out")
    assert list(tmp_path.iterdir()) == []  # no output, no temporary dir, no created parents


@pytest.mark.usefixtures("no_plots")
def test_existing_directory_refused_then_replaced(result: RunResult, tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(results.OutputExistsError, match="--force"):
        results.write_results(result, target)
    assert (target / "old.txt").exists()

    with pytest.raises(FileExistsError, match="did not write"):
        results.write_results(result, target, force=True)  # not a results directory
    (target / "old.txt").unlink()
    (target / "summary.json").write_text("{}")  # earlier results: those may be replaced
    (target / "timeline.png").write_text("old plot")
    results.write_results(result, target, force=True)
    assert json.loads((target / "summary.json").read_text())["migrations"] == 4
    assert not (target / "timeline.png").exists()  # no_plots: the old one went with the rest
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("foreign", ["notes.txt", "sub/", "summary.json/"])
def test_force_never_deletes_files_livemig_did_not_write(
    result: RunResult, tmp_path: Path, foreign: str
) -> None:
    """Earlier results plus a user's file (or folder): --force refuses, nothing changes."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "migrations.csv").write_text("old")
    if foreign.endswith("/"):
        (target / foreign).mkdir()
    else:
        (target / foreign).write_text("mine")
    if foreign != "summary.json/":
        (target / "summary.json").write_text("{}")
    before = sorted((p.name, p.is_dir()) for p in target.iterdir())
    with pytest.raises(FileExistsError, match=f"did not write .*{foreign.rstrip('/')}"):
        results.write_results(result, target, force=True)
    assert sorted((p.name, p.is_dir()) for p in target.iterdir()) == before
    assert (target / "migrations.csv").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failed_forced_write_keeps_the_old_directory(
    result: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "migrations.csv").write_text("old")
    (target / "summary.json").write_text("{}")

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "plot_cdf", broken)
    with pytest.raises(KeyboardInterrupt):
        results.write_results(result, target, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (target / "migrations.csv").read_text() == "old"


def test_file_in_the_way_is_not_replaced(result: RunResult, tmp_path: Path) -> None:
    (tmp_path / "out").write_text("not a directory")
    with pytest.raises(FileExistsError, match="not a directory"):
        results.write_results(result, tmp_path / "out", force=True)


def test_summary_table(result: RunResult) -> None:
    text = results.summary_table(result)
    lines = text.splitlines()
    assert any(line.split()[:2] == ["cancelled", "1"] for line in lines)
    assert lines[0].startswith("scenario unit (driver sim, seed 7): 4 migrations")
    assert any(line.split()[:2] == ["completed", "1"] for line in lines)
    assert any(line.split()[:2] == ["error", "2"] for line in lines)
    assert any(line.split()[:2] == ["total", "4"] for line in lines)
    assert "not completed (3):" in text
    assert any("vm-self" in line and "UnableToMigrateToSelf" in line for line in lines)
    assert "more" not in lines[-1]


# -- synthetic results (no run needed) -------------------------------------------
def run_result(**fields: Any) -> RunResult:
    """A RunResult from ``fields`` (with an empty invariant report if RunResult has one)."""
    if "invariants" in {f.name for f in dataclasses.fields(RunResult)}:
        fields.setdefault("invariants", InvariantReport())
    return RunResult(**fields)


def synthetic(
    migrations: list[dict[str, object]], hosts: int = 3, *, name: str = "synthetic",
    clock: Any = lambda: 0.0, store: StateStore | None = None,
) -> RunResult:
    """A RunResult over a hand-filled store."""
    scenario = Scenario(
        name=name,
        hosts=tuple(HostSpec(name=f"h{i:02d}", ram=GiB, vcpus=1, disk=0) for i in range(hosts)),
        vms=(),
        policy=Policy(migration=MigrationPolicy(timeout_action=TimeoutAction.FORCE_COMPLETE)),
    )
    store = StateStore(clock) if store is None else store
    for fields in migrations:
        base: dict[str, object] = {
            "instance": "vm", "source": "h00", "dest": "h01", "block_migration": False,
            "disk_over_commit": False, "requested_at": 0.0,
        }
        status = fields.pop("status", MigrationStatus.ERROR)
        record = store.add_migration(**{**base, **fields})
        store.update_migration(record.id, status=status, finished_at=1.0, error="NoValidHost")
    return run_result(scenario=scenario, driver="sim", seed=0, store=store, final_hosts={},
                      sim_time=10.0, wall_time=0.0, sim_events=0)


def test_summary_table_limits_problem_lines() -> None:
    run = synthetic([{"instance": f"vm{i}"} for i in range(25)])
    lines = results.summary_table(run).splitlines()
    listed = [line for line in lines if line.startswith("  #")]
    assert len(listed) == results.TABLE_PROBLEM_LINES
    assert lines[lines.index(listed[-1]) + 1] == "  ... and 5 more"


def test_no_completed_migrations_still_plots(tmp_path: Path) -> None:
    run = synthetic([{"instance": "vm1"}])
    out = results.write_results(run, tmp_path / "out")
    summary = results.read_summary(out / "summary.json")
    assert summary["completed_downtime_ms"]["count"] == 0
    assert summary["completed_downtime_ms"]["mean"] is None
    assert png_size(out / "cdf_downtime.png")[0] > 0


def test_timeline_shows_the_busiest_hosts() -> None:
    migrations: list[dict[str, object]] = [
        {"source": f"h{i:02d}", "started_at": 1.0} for i in range(60)
    ]
    migrations += [{"source": "h59", "started_at": 2.0}, {"source": "h58", "started_at": 3.0}]
    hosts, total = plots.timeline_hosts(synthetic(migrations, hosts=60), max_hosts=50)
    assert total == 60 and len(hosts) == 50
    assert hosts[-2:] == ["h58", "h59"] and hosts[0] == "h00"  # busiest kept, scenario order


def test_timeline_with_many_hosts_renders(tmp_path: Path) -> None:
    migrations: list[dict[str, object]] = [
        {"source": f"h{i:02d}", "started_at": float(i % 5), "status": MigrationStatus.COMPLETED}
        for i in range(55)
    ]
    plots.plot_timeline(synthetic(migrations, hosts=55), tmp_path / "t.png")
    width, height = png_size(tmp_path / "t.png")
    assert height > 1000  # one readable row per host


# -- a real run's directory: its records are kept --------------------------------
RUN_JSON = '{"driver": "libvirt", "scenario": "s.yaml"}\n'


def run_directory(path: Path) -> StateStore:
    """A run directory as a real run leaves it: an open store file and run.json."""
    path.mkdir()
    (path / "run.json").write_text(RUN_JSON)
    store = StateStore(lambda: 1.0, path / "state.sqlite")
    store.add_instances([VmSpec(name="vm1", host="h00", ram=GiB, used_memory=GiB,
                                working_set=0, dirty_rate=0.0)])
    store.add_migration(instance="vm1", source="h00", dest="h01", block_migration=False,
                        disk_over_commit=False, requested_at=0.0)
    store.record_action("abort", "vm1", "ok")
    return store


@pytest.mark.usefixtures("no_plots")
def test_results_keep_the_run_records(tmp_path: Path) -> None:
    out = tmp_path / "run"
    store = run_directory(out)
    inode = (out / "state.sqlite").stat().st_ino
    run = synthetic([], store=store)
    (out / "instances.csv").write_text("from an older write\n")
    (out / "timeline.png").write_text("from an older write\n")
    results.write_results(run, out, force=True)
    names = {p.name for p in out.iterdir()}
    assert set(RESULT_FILES) | {"run.json", "state.sqlite"} <= names
    assert "timeline.png" not in names and [p.name for p in tmp_path.iterdir()] == ["run"]
    assert (out / "instances.csv").read_text().startswith("instance,")
    assert (out / "run.json").read_text() == RUN_JSON
    assert (out / "state.sqlite").stat().st_ino == inode  # the same file, not a copy
    # the open store goes on writing to the file in the run directory
    store.record_action("host_down", "h01", "ok")
    results.write_results(run, out, force=True)  # a second write (after a resume)
    store.close()
    assert not {"state.sqlite-wal", "state.sqlite-shm"} & {p.name for p in out.iterdir()}
    again = StateStore.open(out / "state.sqlite", lambda: 0.0)
    assert [a.kind for a in again.actions()] == ["abort", "host_down"]
    assert again.instance("vm1").host == "h00" and again.migration(1).dest == "h01"
    again.close()
    assert results.read_summary(out / "summary.json")["actions"] == 2


CRASH_STEPS = ("write_files", "link", "swap", "after_swap")


def crash_writer(out: str, step: str, name: str) -> None:
    """(In a child process) write results named ``name`` into ``out``, SIGKILLed at ``step``."""
    def die(*args: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    plots.write_plots = lambda result, directory: []  # type: ignore[assignment]
    if step == "write_files":
        write_files = results.write_files
        results.write_files = lambda r, d: (write_files(r, d), die())  # type: ignore[assignment]
    elif step == "link":
        results._link_run_state = die  # type: ignore[assignment]
    elif step == "swap":
        results._swap = die  # type: ignore[assignment]
    elif step == "after_swap":
        swap = results._swap
        results._swap = lambda new, o: (swap(new, o), die())[0]  # type: ignore[assignment]
    store = StateStore.open(Path(out) / "state.sqlite", lambda: 0.0)
    results.write_results(synthetic([], name=name, store=store), out, force=True)


def reference(store: StateStore, name: str, directory: Path) -> Path:
    directory.mkdir()
    plots_off = plots.write_plots
    plots.write_plots = lambda result, d: []  # type: ignore[assignment]
    try:
        results.write_files(synthetic([], name=name, store=store), directory)
    finally:
        plots.write_plots = plots_off  # type: ignore[assignment]
    return directory


@pytest.mark.parametrize("step", CRASH_STEPS)
def test_a_crash_while_writing_leaves_the_old_or_the_new_results(
    tmp_path: Path, step: str
) -> None:
    out = tmp_path / "run"
    store = run_directory(out)
    old = reference(store, "old", tmp_path / "ref-old")
    new = reference(store, "new", tmp_path / "ref-new")
    store.close()
    child = [sys.executable, "-c",
             f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
             "from test_results import crash_writer; crash_writer(*sys.argv[1:])"]
    subprocess.run([*child, str(out), "none", "old"], check=True, timeout=120)
    killed = subprocess.run([*child, str(out), step, "new"], timeout=120)
    assert killed.returncode == -signal.SIGKILL

    summary = results.read_summary(out / "summary.json")
    expected = {"write_files": old, "link": old, "swap": old, "after_swap": new}[step]
    assert summary["scenario"] == expected.name.removeprefix("ref-")
    assert results.same_summary(summary, results.read_summary(expected / "summary.json"))
    for name in CSV_FILES:
        assert (out / name).read_bytes() == (expected / name).read_bytes(), name
    assert (out / "run.json").read_text() == RUN_JSON
    again = StateStore.open(out / "state.sqlite", lambda: 0.0)
    assert [a.kind for a in again.actions()] == ["abort"] and again.migration(1).dest == "h01"
    again.close()
    # what a crash may leave besides: hidden siblings only
    assert all(p.name == "run" or p.name.startswith(".run.") for p in out.parent.iterdir()
               if not p.name.startswith("ref-"))


def test_timeline_marks_the_switch_to_post_copy(tmp_path: Path) -> None:
    run = synthetic([{"instance": "vm1", "started_at": 1.0}, {"instance": "vm2"}])
    run.store.update_migration(1, status=MigrationStatus.COMPLETED, postcopy_at=3.0,
                               total_time=4.0, downtime=0.01)
    plots.plot_timeline(run, tmp_path / "with.png")
    run.store.update_migration(1, postcopy_at=None)
    plots.plot_timeline(run, tmp_path / "without.png")
    assert png_size(tmp_path / "with.png") == png_size(tmp_path / "without.png")
    assert (tmp_path / "with.png").read_bytes() != (tmp_path / "without.png").read_bytes()


# -- plots stay linear: a bounded number of artists ---------------------------------
def busy_run(n: int) -> RunResult:
    """``n`` migrations on 4 source hosts: every kind of mark the timeline draws."""
    store = StateStore(lambda: 0.0)
    statuses = [MigrationStatus.COMPLETED, MigrationStatus.FAILED, MigrationStatus.CANCELLED]
    for i in range(n):
        record = store.add_migration(instance=f"vm{i}", source=f"h{i % 4:02d}", dest="h04",
                                     block_migration=False, disk_over_commit=False,
                                     requested_at=float(i))
        if i % 10 == 9:  # rejected before the transfer
            store.update_migration(record.id, status=MigrationStatus.ERROR,
                                   finished_at=float(i), error="NoValidHost")
            continue
        status = statuses[i % 3]
        done = {"total_time": 5.0, "downtime": 0.2} if status is MigrationStatus.COMPLETED else {}
        store.update_migration(record.id, status=status, started_at=float(i),
                               finished_at=i + 5.0, postcopy_at=i + 4.0 if i % 7 == 0 else None,
                               **done)
    return run_result(scenario=synthetic([], hosts=5).scenario, driver="sim", seed=0,
                      store=store, final_hosts={}, sim_time=n + 5.0, wall_time=0.0,
                      sim_events=0)


def timeline_artists(run: RunResult, path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    figures: list[Any] = []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, p: (figures.append(fig), real_save(fig, p)))
    plots.plot_timeline(run, path)
    (ax,) = figures[0].axes
    return len(ax.get_children())


def test_timeline_artists_do_not_grow_with_the_migrations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    few = timeline_artists(busy_run(30), tmp_path / "few.png", monkeypatch)
    many = timeline_artists(busy_run(600), tmp_path / "many.png", monkeypatch)
    assert many == few  # one collection per kind of mark, not one artist per migration
    assert png_size(tmp_path / "many.png")[0] > 0


def first_fit_lanes(spans: list[tuple[float, float]]) -> list[int]:
    """The reference: the lowest lane whose last span ended by the start, by scanning."""
    ends: list[float] = []
    lanes = []
    for start, end in spans:
        free = [k for k, busy_until in enumerate(ends) if busy_until <= start]
        if free:
            ends[free[0]] = end
            lanes.append(free[0])
        else:
            ends.append(end)
            lanes.append(len(ends) - 1)
    return lanes


def test_lanes_are_first_fit() -> None:
    import random

    rng = random.Random(5)
    for _ in range(50):
        starts = sorted(rng.choice([0.0, 1.0, 2.5, rng.uniform(0, 20)]) for _ in range(40))
        spans = [(s, s + rng.choice([0.0, 1.0, rng.uniform(0, 8)])) for s in starts]
        lanes, count = plots._lanes(spans)
        assert lanes == first_fit_lanes(spans)
        assert count == max(1, max(lanes, default=0) + 1)
