"""The consolidation package: traces, the cloudsim-mode engine's accounting on small
worlds whose figures are worked out by hand, and the reference experiment's NPA figure."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from livemig.consolidation import cloudsim, overload, selection
from livemig.consolidation import commands as consolidation_commands
from livemig.consolidation.power import MODELS
from livemig.consolidation.scenario import is_consolidation
from livemig.consolidation.traces import (
    TraceError,
    load_trace,
    read_trace_csv,
    synthetic_trace,
    write_trace_csv,
)
from livemig.core import cli

DAY = Path(__file__).resolve().parents[1] / "data" / "planetlab" / "20110303.csv"


def _experiment(rows: list[list[int]], hosts: int = 2, mips: float = 1000.0,
                ram: float = 625.0, limit: float = 900.0) -> cloudsim.Experiment:
    samples = np.array(rows, dtype=float) / 100
    samples = np.concatenate([samples, samples[:, -1:]], axis=1)
    n = len(rows)
    g4 = MODELS["hp-ml110-g4"].watts
    return cloudsim.Experiment(
        samples=samples, vm_mips=np.full(n, mips), vm_ram=np.full(n, ram),
        vm_bw=np.full(n, 100_000.0), host_pe_mips=np.full(hosts, 1860.0),
        host_pes=np.full(hosts, 2.0), host_ram=np.full(hosts, 4096.0),
        host_bw=np.full(hosts, 1_000_000.0), host_tables=np.array([g4] * hosts, dtype=float),
        limit=limit)


def test_a_bad_trace_row_names_file_and_line() -> None:
    with pytest.raises(TraceError, match=r"^x.csv:3: samples: expected integer"):
        read_trace_csv(io.StringIO("vm,u0,u1\na,1,2\nb,1,z\n"), "x.csv")
    with pytest.raises(TraceError, match=r"^x.csv:2: samples: expected percentages in 0..100"):
        read_trace_csv(io.StringIO("vm,u0\na,101\n"), "x.csv")


def test_dvfs_energy_is_the_trapezoid_of_each_update_and_skips_the_first_interval() -> None:
    # one VM at a constant 37 % of 1000 MIPS on a 3720-MIPS G4 host
    exp = _experiment([[37, 37, 37, 37]], hosts=1, limit=900.0)
    out = cloudsim.run(exp, cloudsim.Policy(kind="dvfs"))
    u = 370.0 / 3720
    watts = MODELS["hp-ml110-g4"].power(u)
    # updates at 300.1 and 600.1 (900.1 is past the limit): one accounted interval
    assert out.metrics["updates"] == 2
    assert out.metrics["energy_kwh"] == pytest.approx(watts * 300 / 3.6e6, rel=1e-12)


def test_npa_counts_every_host_at_full_power_from_zero() -> None:
    exp = _experiment([[10, 10, 10, 10]], hosts=3, limit=900.0)
    out = cloudsim.run(exp, cloudsim.Policy(kind="npa"))
    assert out.metrics["energy_kwh"] == pytest.approx(3 * 117 * 600.1 / 3.6e6, rel=1e-12)


def test_an_overloaded_host_is_relieved_and_the_migration_costs_ram_over_half_the_link() -> None:
    # 3 VMs of 1000 MIPS on one G4 host, every one at 100 %: u = 3000/3720 > 0.8 (THR)
    exp = _experiment([[100] * 4] * 3, hosts=2, ram=625.0, limit=900.0)
    engine = cloudsim.Engine(exp, cloudsim.Policy(overload="thr", parameter=0.8,
                                                  selection="mmt"))
    engine.place_initial()
    engine.lists = [[0, 1, 2], []]
    engine.host_of[:] = 0
    engine._step(300.1)
    assert engine.migrations == [[0, 0, 1, 300.1, 300.1 + 625 / 62.5]]
    # in flight: the source counts the VM whole, the destination reserves 10 %
    assert engine.util_mips.tolist() == pytest.approx([3000.0, 100.0])
    engine._complete(310.1)
    assert engine.lists == [[1, 2], [0]]
    assert engine.util_mips.tolist() == pytest.approx([2000.0, 1000.0])
    # PDM: 10 % of 1000 MIPS for 10 s, over all requested MIPS-seconds so far
    assert engine.vm_under_migration == pytest.approx(100.0 * 10)


def test_the_underloaded_host_is_emptied_onto_an_active_one() -> None:
    exp = _experiment([[20] * 4, [20] * 4], hosts=2, limit=900.0)
    engine = cloudsim.Engine(exp, cloudsim.Policy(overload="thr", parameter=0.8,
                                                  selection="mmt"))
    engine.place_initial()
    engine.lists = [[0], [1]]
    engine.host_of[:] = [0, 1]
    engine._step(300.1)
    # both hosts at 200/3720; the first is the least utilised (first on ties) and moves
    assert [(m[0], m[1], m[2]) for m in engine.migrations] == [(0, 0, 1)]


def test_registries_name_every_policy_of_the_reference() -> None:
    assert {"thr", "iqr", "mad", "lr", "lrr"} <= set(overload.OVERLOAD)
    assert {"mmt", "mu", "mc", "rs"} <= set(selection.SELECTION)
    with pytest.raises(KeyError, match="unknown overload policy 'nope'"):
        overload.make("nope")


@pytest.mark.skipif(not DAY.is_file(), reason="the PlanetLab day is not on this machine")
def test_the_reference_npa_figure_is_reproduced() -> None:
    exp = cloudsim.reference_experiment(load_trace(DAY))
    out = cloudsim.run(exp, cloudsim.Policy(kind="npa"))
    assert round(out.metrics["energy_kwh"], 2) == 2410.80


@pytest.mark.skipif(not DAY.is_file(), reason="the PlanetLab day is not on this machine")
def test_a_seeded_run_is_deterministic() -> None:
    trace = load_trace(DAY)
    small = cloudsim.reference_experiment(trace, hosts=800)
    small = cloudsim.Experiment(**{**small.__dict__, "limit": 3000.0})
    policy = cloudsim.Policy(overload="lr", parameter=1.2, selection="rs", seed=3)
    a, b = cloudsim.run(small, policy), cloudsim.run(small, policy)
    assert a.metrics == b.metrics and a.migrations == b.migrations
    assert a.metrics["migrations"] > 0


def test_a_vm_whose_request_is_exactly_zero_is_destroyed_for_good() -> None:
    # CloudSim's getCompletedVms: VM 0 requests 0 at 300.1 (0 % on both sides) and is gone,
    # even though its trace rises again later; VM 1 stays.
    exp = _experiment([[0, 0, 0, 50], [10, 10, 10, 10]], hosts=1, limit=1000.0)
    engine = cloudsim.Engine(exp, cloudsim.Policy(kind="dvfs"))
    out = engine.run()
    assert out.metrics["vms_removed_idle"] == 1
    assert engine.lists == [[1]]
    # the host only ever carried VM 1's 100 MIPS
    watts = MODELS["hp-ml110-g4"].power(100 / 3720)
    assert out.metrics["energy_kwh"] == pytest.approx(2 * 300 * watts / 3.6e6, rel=1e-12)


@pytest.mark.skipif(not DAY.is_file(), reason="the PlanetLab day is not on this machine")
def test_the_reference_dvfs_figure_is_reproduced() -> None:
    exp = cloudsim.reference_experiment(load_trace(DAY))
    out = cloudsim.run(exp, cloudsim.Policy(kind="dvfs"))
    assert round(out.metrics["energy_kwh"], 2) == 802.75


@pytest.mark.skipif(not DAY.is_file(), reason="the PlanetLab day is not on this machine")
def test_lr_mmt_reproduces_the_reference_within_the_issue_tolerances() -> None:
    """LR 1.2 + MMT on 20110303 (about 10 s): CloudSim 5.0 gives 163.48 kWh, 27,859
    migrations, SLATAH 5.86 %, SLAV 4.64e-05 (so PDM = SLAV / SLATAH)."""
    exp = cloudsim.reference_experiment(load_trace(DAY))
    m = cloudsim.run(exp, cloudsim.Policy(overload="lr", parameter=1.2, selection="mmt")).metrics
    assert m["energy_kwh"] == pytest.approx(163.48, rel=0.01)
    assert m["migrations"] == pytest.approx(27859, rel=0.02)
    assert m["slatah"] == pytest.approx(0.0586, rel=0.05)
    assert m["pdm"] == pytest.approx(4.64e-05 / 0.0586, rel=0.05)


CONSOLIDATION_SCENARIOS = sorted(
    p for p in (Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml")
    if is_consolidation(p.read_text()))


def test_the_shipped_consolidation_scenarios_are_found() -> None:
    assert len(CONSOLIDATION_SCENARIOS) >= 6


@pytest.mark.parametrize("path", CONSOLIDATION_SCENARIOS, ids=lambda p: p.stem)
def test_shipped_consolidation_scenario_meets_its_expectations(path: Path) -> None:
    report = consolidation_commands.check_file(str(path))
    assert report.error is None
    assert report.verdicts and all(v.met for v in report.verdicts), report.verdicts


def test_the_sample_trace_is_the_generator_s_output(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parent.parent / "scenarios/traces/sample-60vms-4h.csv"
    write_trace_csv(tmp_path / "t.csv", synthetic_trace(60, 48, seed=2011))
    assert (tmp_path / "t.csv").read_text() == shipped.read_text()


def test_a_bad_consolidation_scenario_is_one_line_exit_2(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("consolidation:\n  trace: t.csv\n  policy: {overload: lrx}\n")
    assert cli.main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"livemig: error: {bad}:3: consolidation.policy.overload: 'lrx' is not "
                   "known (did you mean 'lr'?); expected one of iqr, lr, lrr, mad, thr")
    assert not (tmp_path / "out").exists()


def test_livemig_run_writes_the_consolidation_results(tmp_path: Path) -> None:
    scenario = next(p for p in CONSOLIDATION_SCENARIOS if p.stem.startswith("planetlab"))
    out = tmp_path / "out"
    assert cli.main(["run", str(scenario), "--out", str(out), "--no-progress"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["active_hosts.png", "hosts.csv", "migrations.csv", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    rows = (out / "hosts.csv").read_text().splitlines()
    assert len(rows) == 1 + 47  # the header, then a step at 300.1, ..., 14100.1 s
    migrations = (out / "migrations.csv").read_text().splitlines()
    assert len(migrations) == 1 + summary["metrics"]["migrations"]
    assert summary["kind"] == "consolidation" and summary["expectations"]["failed"] == 0


def test_watcher_balance_moves_one_vm_per_step_from_the_busiest_host() -> None:
    # host 0 carries 3 VMs at 40 % of 1000 MIPS (1200 of 3720: 32 %), host 1 one at 10 %
    exp = _experiment([[40] * 4] * 3 + [[10] * 4], hosts=2, limit=700.0)
    engine = cloudsim.Engine(exp, cloudsim.Policy(kind="workload_balance", parameter=25.0))
    engine.place_initial()
    engine.lists = [[0, 1, 2], [3]]
    engine.host_of[:] = [0, 0, 0, 1]
    engine._step(300.1)
    # average 650: host 0 may give 550 at most, so one 400-MIPS VM, to host 1 (500 < 930)
    assert [(m[0], m[1], m[2]) for m in engine.migrations] == [(0, 0, 1)]


def test_the_default_mode_moves_a_vm_through_novas_flow() -> None:
    # 3 VMs at 100 % of 1000 MIPS on host 0 (3000/3720 > 0.8): one must go, and it goes by
    # a real (simulated) pre-copy live migration requested from the orchestrator
    from livemig.consolidation import flow

    exp = _experiment([[100] * 4] * 3, hosts=2, ram=613.0, limit=900.0)
    engine = flow.FlowEngine(exp, cloudsim.Policy(overload="thr", parameter=0.8,
                                                  selection="mmt"), initial_hosts=[0, 0, 0])
    out = engine.run()
    assert out.metrics["migrations_by_status"] == {"completed": 1}
    (record,) = engine.records
    assert (record.source, record.dest) == ("host-0", "host-1")
    assert record.downtime and record.downtime > 0
    assert record.data_transferred and record.data_transferred > 0
    assert sorted(map(sorted, engine.lists)) == [[0], [1, 2]]
    (m,) = out.migrations
    assert m[4] - m[3] == pytest.approx(record.finished_at - record.requested_at)


def test_the_default_mode_plans_with_ram_as_nova_checks_it() -> None:
    # two busy 1740-MB VMs on host 0 (overloaded for THR 0.5), two idle ones on host 1:
    # 616 MB free there, not enough for a third, so no request at all (the cloudsim mode,
    # where RAM does not bind after creation, moves one)
    from livemig.consolidation import flow

    exp = _experiment([[100] * 4] * 2 + [[1] * 4] * 2, hosts=2, ram=1740.0, limit=900.0)
    policy = cloudsim.Policy(overload="thr", parameter=0.5, selection="mmt")
    out = flow.FlowEngine(exp, policy, initial_hosts=[0, 0, 1, 1]).run()
    assert out.metrics["migrations"] == 0
    engine = cloudsim.Engine(exp, policy)
    engine.place_initial()
    engine.lists, engine.host_of[:] = [[0, 1], [2, 3]], [0, 0, 1, 1]
    engine._step(300.1)
    assert [(m[0], m[2]) for m in engine.migrations] == [(0, 1)]
