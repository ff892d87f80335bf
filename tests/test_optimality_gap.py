"""The optimality gap as a consolidation metric (consolidation.optimality) and the
first-fit placement it is compared with (consolidation.first_fit)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from livemig.consolidation import cloudsim
from livemig.consolidation.optimality import COLUMNS, GapOption, GapRecorder
from livemig.consolidation.power import MODELS
from livemig.consolidation.scenario import parse
from livemig.core import cli

SAMPLE = Path(__file__).resolve().parent.parent / "scenarios" / "traces" / "sample-60vms-4h.csv"


def _scenario(tmp_path: Path, extra: str = "", policy: str = "overload: thr, parameter: 0.8",
              mode: str = "cloudsim") -> Path:
    path = tmp_path / "gap.yaml"
    path.write_text(f"""name: gap
seed: 1
consolidation:
  mode: {mode}
  trace: {SAMPLE}
  hosts: 40
  interval: 300s
  until: 4h
  policy: {{{policy}, selection: mmt}}
{extra}""")
    return path


def _run(tmp_path: Path, scenario: Path, name: str = "out") -> tuple[dict, list[dict]]:
    out = tmp_path / name
    assert cli.main(["run", str(scenario), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "hosts.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    return summary, rows


def test_each_step_records_the_heuristic_against_the_proven_bound(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, "  optimality_gap: {time_limit: 1s, every: 1}\n")
    summary, rows = _run(tmp_path, scenario)
    assert len(rows) == 47 and all(c in rows[0] for c in COLUMNS)
    gaps = []
    for row in rows:
        heuristic, bound = int(row["optimality_heuristic"]), int(row["optimality_bound"])
        assert int(row["optimality_gap"]) == heuristic - bound >= 0
        assert bound <= int(row["optimality_best"]) <= heuristic
        # the bound is at least the CPU capacity bound (60 VMs, 40 hosts of 3720 or 5320)
        assert bound >= 1
        gaps.append(heuristic - bound)
    m = summary["metrics"]
    assert m["optimality_steps"] == 47
    assert m["optimality_gap_mean"] == pytest.approx(sum(gaps) / 47)
    assert m["optimality_gap_max"] == max(gaps) > 0  # PABFD leaves hosts on early in the run
    assert summary["optimality_gap"] == {"time_limit": 1.0, "every": 1, "max_utilization": 1.0}
    assert "optimality_s" in summary["timing_s"]


def test_the_gap_is_deterministic_and_every_n_measures_every_nth_step(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, "  optimality_gap: {time_limit: 1s, every: 5}\n")
    first, rows = _run(tmp_path, scenario, "a")
    second, rows2 = _run(tmp_path, scenario, "b")
    assert rows == rows2 and first["metrics"] == second["metrics"]
    measured = [i for i, row in enumerate(rows) if row["optimality_status"]]
    assert measured == list(range(0, 47, 5))
    assert first["metrics"]["optimality_steps"] == 10
    # the run itself is the one without the option: the metric only observes
    plain, plain_rows = _run(tmp_path, _scenario(tmp_path), "c")
    assert "optimality_steps" not in plain["metrics"] and "optimality_gap" not in plain_rows[0]
    for key in ("energy_kwh", "migrations", "slav"):
        assert plain["metrics"][key] == first["metrics"][key]


def test_the_bound_of_a_small_world_is_the_hand_computed_minimum() -> None:
    # 4 VMs of 1000 MIPS at 40 % (400 each) on 3 G4 hosts of 3720 MIPS: DVFS never moves
    # them; creation put 3 on host 0 (3000 of 3720 MIPS) and 1 on host 1; all 1600 MIPS fit
    # on one host, so the bound is 1 and the gap 1
    samples = np.full((4, 4), 0.4)
    g4 = MODELS["hp-ml110-g4"].watts
    exp = cloudsim.Experiment(
        samples=samples, vm_mips=np.full(4, 1000.0), vm_ram=np.full(4, 625.0),
        vm_bw=np.full(4, 1e5), host_pe_mips=np.full(3, 1860.0), host_pes=np.full(3, 2.0),
        host_ram=np.full(3, 4096.0), host_bw=np.full(3, 1e6),
        host_tables=np.array([g4] * 3, dtype=float), limit=700.0)
    recorder = GapRecorder(GapOption(), ram=False)
    out = cloudsim.run(exp, cloudsim.Policy(kind="dvfs"), observer=recorder)
    assert [(r["optimality_heuristic"], r["optimality_bound"], r["optimality_gap"])
            for r in out.series] == [(2, 1, 1), (2, 1, 1)]
    # with RAM and 40 % of each host, 1600 MIPS no longer fit in 1488: two hosts
    tight = GapRecorder(GapOption(max_utilization=0.4), ram=True)
    out = cloudsim.run(exp, cloudsim.Policy(kind="dvfs"), observer=tight)
    assert [r["optimality_bound"] for r in out.series] == [2, 2]
    assert tight.metrics()["optimality_gap_mean"] == 0.0


@pytest.mark.parametrize(("option", "message"), [
    ("{every: 0}", "consolidation.optimality_gap.every: 0 is out of range"),
    ("{time_limit: fast}", "consolidation.optimality_gap.time_limit"),
    ("{max_utilization: 1.5}", "consolidation.optimality_gap.max_utilization"),
    ("{limit: 1s}", "consolidation.optimality_gap: unknown key 'limit'"),
])
def test_a_bad_optimality_gap_option_names_the_line_and_field(option: str,
                                                              message: str) -> None:
    text = ("consolidation:\n  trace: t.csv\n  policy: {power: dvfs}\n"
            f"  optimality_gap: {option}\n")
    with pytest.raises(ValueError, match=r"^x.yaml:4: ") as err:
        parse(text, "x.yaml")
    assert message in str(err.value)


def test_first_fit_is_a_placement_policy_of_the_registry(tmp_path: Path) -> None:
    ff = parse(_scenario(tmp_path, policy="overload: thr, parameter: 0.8, placement: ff")
               .read_text(), str(tmp_path / "x.yaml"))
    assert ff.policy.placement == "ff" and ff.policy.label == "THR 0.8-MMT-FF"
    pabfd_summary, _ = _run(tmp_path, _scenario(tmp_path), "pabfd")
    ff_summary, _ = _run(tmp_path, _scenario(
        tmp_path, policy="overload: thr, parameter: 0.8, placement: ff"), "ff")
    assert ff_summary["policy"] == "THR 0.8-MMT-FF"
    assert ff_summary["metrics"]["energy_kwh"] != pabfd_summary["metrics"]["energy_kwh"]
    with pytest.raises(ValueError, match="placement: 'bf' is not known"):
        parse("consolidation: {trace: t.csv, policy: {overload: thr, placement: bf}}", "x.yaml")
    with pytest.raises(ValueError, match="power cannot be used with overload/selection/place"):
        parse("consolidation: {trace: t.csv, policy: {power: dvfs, placement: ff}}", "x.yaml")


DAY = Path("/work/shared/data/planetlab/20110303.csv")
GAP_SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios-full")
                       .glob("planetlab-20110303-100hosts-*-gap.yaml"))


def test_the_100_host_gap_scenarios_compare_the_two_placements() -> None:
    specs = [parse(p.read_text(), str(p)) for p in GAP_SCENARIOS]
    assert sorted(s.policy.placement for s in specs) == ["ff", "pabfd"]
    for spec in specs:
        assert spec.hosts == 100 and spec.optimality_gap == GapOption(time_limit=1.0, every=1)
        assert len(Path(spec.trace).read_text().splitlines()) == 1 + 200


@pytest.mark.skipif(not DAY.exists(), reason="the PlanetLab day is not on this machine")
def test_the_200_vm_trace_is_every_fifth_vm_of_the_planetlab_day() -> None:
    day = DAY.read_text().splitlines()
    shipped = (Path(__file__).resolve().parent.parent / "scenarios" / "traces"
               / "planetlab-20110303-200vms.csv").read_text().splitlines()
    assert shipped == [day[0], *day[1:][0::5][:200]]
