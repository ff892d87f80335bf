"""Sweep files and the cells they resolve to: values, ranges, paths, identities, and the
one-line errors (FILE:LINE: FIELD: ...) for every way a sweep can be wrong."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from livemig.core import cli
from livemig.core.model import Heuristic
from livemig.core.yaml_nodes import ScenarioError
from livemig.sweep import cells as cells_mod
from livemig.sweep import kinds
from livemig.sweep.paths import PathError, parse_path, set_path
from livemig.sweep.spec import MAX_CELLS, SweepError, load_sweep, parse_sweep

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "scenarios"

BASE = """\
name: base
seed: 5
x-flavors:
  small: &small {ram: 4GiB, vcpus: 2, dirty_rate: 20MiB/s}
hosts:
  - {prefix: h, count: 3, ram: 64GiB, vcpus: 16}
vms:
  - {prefix: web-, count: 2, host: h1, <<: *small}
  - {name: db, host: h2, <<: *small}
policy:
  migration: {max_downtime: 500ms}
events:
  - {at: 0s, live_migrate: {instance: web-1, dest: h3}}
"""


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "base.yaml"
    path.write_text(BASE)
    return path


def write_sweep(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def resolve_text(tmp_path: Path, text: str) -> list[cells_mod.Cell]:
    return cells_mod.resolve(load_sweep(write_sweep(tmp_path, text)))


# -- the file ---------------------------------------------------------------------------


def test_lists_ranges_seeds_and_metrics_are_read(tmp_path: Path) -> None:
    sweep = parse_sweep("""\
scenarios: base.yaml
axes:
  policy.scheduler.heuristic: [weighed, first_fit]
  policy.migration.bandwidth: {from: 100, to: 300, step: 100, unit: MiB/s}
  policy.scheduler.ram_allocation_ratio: {from: 0.5, to: 1.5, count: 3}
  until: {from: 0.1, to: 0.3, step: 0.1, unit: h}
seeds: {from: 1, to: 3}
metrics: [outcomes, completed_downtime_ms.p95]
""", str(tmp_path / "s.yaml"))
    assert [ref.written for ref in sweep.scenarios] == ["base.yaml"]
    assert sweep.scenarios[0].path == tmp_path / "base.yaml"  # relative to the sweep file
    assert [[v.value for v in a.values] for a in sweep.axes] == [
        ["weighed", "first_fit"], ["100MiB/s", "200MiB/s", "300MiB/s"], [0.5, 1.0, 1.5],
        ["0.1h", "0.2h", "0.3h"]]  # no 0.30000000000000004
    assert sweep.seeds == (1, 2, 3)
    assert sweep.metrics == ("outcomes", "completed_downtime_ms.p95")
    assert sweep.size == 2 * 3 * 3 * 3 * 3
    assert sweep.name == "s"


@pytest.mark.parametrize(("text", "expected"), [
    ("", "s.yaml:1: no content; expected a mapping with scenarios and axes"),
    ("axes: {until: [1h]}\n", "s.yaml:1: missing key 'scenarios'"),
    ("scenarios: [a.yaml]\nseed: [1]\n", "s.yaml:2: unknown key 'seed' (did you mean 'seeds'?)"),
    ("scenarios: []\n", "s.yaml:1: scenarios: empty list; expected at least one scenario"),
    ("scenarios: [a.yaml, a.yaml]\n", "s.yaml:1: scenarios[1]: duplicate scenario 'a.yaml'"),
    ("scenarios: [a.yaml]\naxes:\n  until: []\n", "s.yaml:3: axes.until: empty list"),
    ("scenarios: [a.yaml]\naxes:\n  until:\n    - 1h\n    - 1h\n",
     "s.yaml:5: axes.until: duplicate value \"1h\" (first at line 4)"),
    ("scenarios: [a.yaml]\naxes:\n  until: [1h]\n  until: [2h]\n",
     "s.yaml:4: axes: duplicate axis 'until' (first at line 3)"),
    ("scenarios: [a.yaml]\naxes:\n  policy.migration: [{}]\n  policy.migration.bandwidth: [0]\n",
     "s.yaml:4: axes: axis 'policy.migration.bandwidth' overlaps axis 'policy.migration' (line 3)"),
    ("scenarios: [a.yaml]\naxes:\n  vms[].ram: [1GiB]\n",
     "s.yaml:3: axes: 'vms[].ram' is not a field path"),
    ("scenarios: [a.yaml]\naxes:\n  policy..x: [1]\n",
     "s.yaml:3: axes: 'policy..x' is not a field path"),
    ("scenarios: [a.yaml]\naxes:\n  until: 1h\n",
     "s.yaml:3: axes.until: '1h' is not valid here; expected a list of values or a range"),
    ("scenarios: [a.yaml]\naxes:\n  until: {from: 1, to: 2}\n",
     "s.yaml:3: axes.until: missing key 'step' (or 'count')"),
    ("scenarios: [a.yaml]\naxes:\n  until: {from: 2, to: 1, step: 1}\n",
     "s.yaml:3: axes.until.to: 1 is less than from (2); expected to >= from"),
    ("scenarios: [a.yaml]\naxes:\n  until: {from: 1, to: 2, step: 0}\n",
     "s.yaml:3: axes.until.step: 0 is out of range; expected a number > 0"),
    ("scenarios: [a.yaml]\naxes:\n  until: {from: 1, to: 2, step: 1, count: 2}\n",
     "s.yaml:3: axes.until: 'step' and 'count' cannot be used together"),
    ("scenarios: [a.yaml]\naxes:\n  until: {from: 0, to: 1e9, step: 1}\n",
     "s.yaml:3: axes.until.step: 1000000001 values; expected at most 10000"),
    ("scenarios: [a.yaml]\naxes: {}\n", "s.yaml:2: axes: no axes"),
    ("scenarios: [a.yaml]\nseeds: [1, -1]\n", "s.yaml:2: seeds[1]: -1 is out of range"),
    ("scenarios: [a.yaml]\nseeds: [1, 1]\n", "s.yaml:2: seeds[1]: duplicate seed 1"),
    ("scenarios: [a.yaml]\nseeds: {from: 3, to: 1}\n", "s.yaml:2: seeds.to: 1 is out of range"),
    ("scenarios: [a.yaml]\nmetrics: [outcomes., x]\n",
     "s.yaml:2: metrics[0]: 'outcomes.' is not a key path"),
    ("scenarios: [a.yaml]\nmetrics: [x, x]\n", "s.yaml:2: metrics[1]: duplicate metric 'x'"),
    ("scenarios: [a.yaml]\naxes:\n  until: !!python/name:os.system [1]\n",
     "s.yaml:3: axes.until: unsupported YAML tag"),
    ("scenarios: [a.yaml\n", "s.yaml:2: YAML syntax error"),
])
def test_a_bad_sweep_file_is_one_line_naming_file_line_and_field(text: str,
                                                                 expected: str) -> None:
    with pytest.raises(SweepError) as err:
        parse_sweep(text, "s.yaml")
    message = str(err.value)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_too_many_cells_is_refused_before_any_is_resolved() -> None:
    seeds = MAX_CELLS // 100 + 1
    with pytest.raises(SweepError, match=rf"s.yaml:3: axes: {seeds * 100} cells; expected at "
                                         rf"most {MAX_CELLS}"):
        parse_sweep(f"scenarios: [a.yaml]\naxes:\n  until: {{from: 1, to: 100, step: 1}}\n"
                    f"seeds: {{from: 1, to: {seeds}}}\n", "s.yaml")


# -- paths ------------------------------------------------------------------------------


def test_set_path_copies_the_nodes_on_its_way_and_keeps_aliases_apart() -> None:
    doc = yaml.compose(BASE)
    new = set_path(doc, "vms[db].dirty_rate", yaml.compose("1GiB/s"))
    data, old = yaml.safe_load(yaml.serialize(new)), yaml.safe_load(yaml.serialize(doc))
    assert data["vms"][1]["dirty_rate"] == "1GiB/s"
    assert data["vms"][0]["dirty_rate"] == "20MiB/s"  # the shared anchor is not changed
    assert old["vms"][1]["dirty_rate"] == "20MiB/s"  # nor is the original document


@pytest.mark.parametrize(("path", "expected"), [
    ("vms[9].ram", r"vms\[9\]: no such entry; expected an index from 0 to 1"),
    ("vms[nope].ram", r"vms\[nope\]: no entry has name or prefix 'nope'; expected one of web-,"),
    ("name.x", r"name is the value 'base', not a mapping"),
    ("policy[0]", r"policy is a mapping, not a list"),
    ("network.x[0]",
     r"network.x is not written in this scenario; expected a list to select \[0\] from"),
])
def test_a_path_that_leads_nowhere_says_where_it_stops(path: str, expected: str) -> None:
    with pytest.raises(PathError, match=expected):
        set_path(yaml.compose(BASE), path, yaml.compose("1"))


def test_paths_are_parsed_with_their_selectors() -> None:
    steps = parse_path("hosts[node.1].ram")  # a dot inside a selector is part of the name
    assert [(s.key, s.selectors) for s in steps] == [("hosts", ("node.1",)), ("ram", ())]


# -- cells ------------------------------------------------------------------------------


def test_cells_are_the_product_in_order_with_each_value_applied(base: Path,
                                                                tmp_path: Path) -> None:
    cells = resolve_text(tmp_path, """\
scenarios: [base.yaml]
axes:
  policy.scheduler.heuristic: [first_fit, random]
  vms[*].dirty_rate: [1MiB/s, 2MiB/s]
seeds: [7, 8]
""")
    assert [(c.axes, c.seed) for c in cells][:3] == [
        ((("policy.scheduler.heuristic", "first_fit"), ("vms[*].dirty_rate", "1MiB/s")), 7),
        ((("policy.scheduler.heuristic", "first_fit"), ("vms[*].dirty_rate", "1MiB/s")), 8),
        ((("policy.scheduler.heuristic", "first_fit"), ("vms[*].dirty_rate", "2MiB/s")), 7)]
    assert len(cells) == 8 and len({c.key for c in cells}) == 8
    last = cells[-1].scenario
    assert last.policy.scheduler.heuristic is Heuristic.RANDOM
    assert {vm.dirty_rate for vm in last.vms} == {2 * 2**20}
    assert last.policy.migration.max_downtime == 0.5  # the rest of the base is kept
    assert last.name == "base" and last.source == str(tmp_path / "base.yaml")


def test_without_seeds_each_scenario_runs_with_its_own(base: Path, tmp_path: Path) -> None:
    cells = resolve_text(tmp_path, "scenarios: [base.yaml]\n")
    assert [(c.seed, c.axes) for c in cells] == [(5, ())]


@pytest.mark.parametrize("path, value, check", [
    ("policy.migration.permit_post_copy", "true",
     lambda s: s.policy.migration.permit_post_copy is True),
    ("policy.migration.timeout_action", "force_complete",
     lambda s: s.policy.migration.timeout_action.value == "force_complete"),
    ("policy.scheduler.filters", "[RamFilter]", lambda s: s.policy.scheduler.filters == (
        "RamFilter",)),
    ("network.host_link", "1Gbit/s", lambda s: s.network.host_link == 1e9 / 8),
    ("vms[0].ram", "8GiB", lambda s: [vm.ram for vm in s.vms] == [8 * 2**30, 8 * 2**30,
                                                                   4 * 2**30]),
    ("hosts[h].vcpus", "32", lambda s: {h.vcpus for h in s.hosts} == {32}),
    ("seed", "11", lambda s: s.seed == 11),
])
def test_any_field_the_scenario_loader_knows_can_be_an_axis(
        base: Path, tmp_path: Path, path: str, value: str, check: object) -> None:
    cells = resolve_text(tmp_path, f"scenarios: [base.yaml]\naxes:\n  {path}: [{value}]\n")
    assert check(cells[0].scenario)  # type: ignore[operator]


def test_merged_entries_are_set_on_the_entry_alone(tmp_path: Path) -> None:
    cells = resolve_text(tmp_path, f"""\
scenarios: [{SCENARIOS / 'rack-drain.yaml'}]
axes:
  vms[web-].dirty_rate: [1MiB/s]
""")
    rates = {vm.name.split("-")[0]: vm.dirty_rate for vm in cells[0].scenario.vms}
    assert rates == {"web": 2**20, "app": 100 * 2**20, "db": 300 * 2**20}


@pytest.mark.parametrize(("axes", "expected"), [
    ("  policy.scheduler.heuristc: [weighed]\n",
     "s.yaml:3: axes.policy.scheduler.heuristc: not a field of scenario base.yaml: unknown key "
     "'heuristc' (did you mean 'heuristic'?)"),
    ("  polcy.x: [1]\n",
     "s.yaml:3: axes.polcy.x: not a field of scenario base.yaml: unknown key 'polcy' (did you "
     "mean 'policy'?)"),
    ("  vms[cache].ram: [1GiB]\n",
     "s.yaml:3: axes.vms[cache].ram: not a field of scenario base.yaml: vms[cache]: no entry "
     "has name or prefix 'cache'"),
    ("  policy.scheduler.heuristic:\n    - weighed\n    - bestfit\n",
     "s.yaml:5: axes.policy.scheduler.heuristic: \"bestfit\" is not valid for scenario "
     "base.yaml: policy.scheduler.heuristic: unknown heuristic 'bestfit' (did you mean "
     "'best_fit'?)"),
    ("  hosts[0].ram: [16GiB, 2GiB]\n",
     "s.yaml:3: axes.hosts[0].ram: \"2GiB\" is not valid for scenario base.yaml: vms[0].ram:"),
    ("  hosts[*].ram: [16GiB, 32GiB]\n  vms[web-].ram: [4GiB, 12GiB]\n",
     "s.yaml:3: axes: hosts[*].ram=\"16GiB\", vms[web-].ram=\"12GiB\" together are not valid "
     "for scenario base.yaml: vms[0].host: VM 'web-2' does not fit on 'h1'"),
    ("  policy.migration.bandwidth: [0, 0MB/s]\n",
     "s.yaml:3: axes: base.yaml with policy.migration.bandwidth=0, seed 5 and base.yaml with "
     "policy.migration.bandwidth=\"0MB/s\", seed 5 are the same run"),
])
def test_a_cell_the_scenario_loader_refuses_is_blamed_on_the_sweep_line(
        base: Path, tmp_path: Path, axes: str, expected: str) -> None:
    path = write_sweep(tmp_path, f"scenarios: [base.yaml]\naxes:\n{axes}", "s.yaml")
    with pytest.raises(SweepError) as err:
        cells_mod.resolve(load_sweep(path))
    message = str(err.value).replace(str(tmp_path) + "/", "")
    assert message.startswith(expected), message


def test_a_missing_or_broken_base_scenario_is_reported(base: Path, tmp_path: Path) -> None:
    with pytest.raises(SweepError,
                       match=r"sweep.yaml:1: scenarios: cannot read scenario 'nope.yaml'"):
        resolve_text(tmp_path, "scenarios: [base.yaml, nope.yaml]\n")
    (tmp_path / "broken.yaml").write_text(BASE.replace("count: 3", "count: zero"))
    with pytest.raises(ScenarioError,
                       match=r"broken.yaml:6: hosts\[0\].count: .zero. is not valid"):
        resolve_text(tmp_path, "scenarios: [broken.yaml]\n")


def test_a_cell_key_is_its_resolved_scenario_and_seed(base: Path, tmp_path: Path) -> None:
    text = "scenarios: [base.yaml]\naxes:\n  until: [1h, 2h]\nseeds: [1, 2]\n"
    keys = [c.key for c in resolve_text(tmp_path, text)]
    assert keys == [c.key for c in resolve_text(tmp_path, text)]  # stable
    assert len(set(keys)) == 4
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(base, elsewhere / "base.yaml")  # the file's place is not the scenario
    assert [c.key for c in resolve_text(elsewhere, text)] == keys
    # the same resolved scenario written differently (a default made explicit): the same key
    (elsewhere / "base.yaml").write_text(BASE.replace("{max_downtime: 500ms}",
                                                      "{max_downtime: 0.5s, bandwidth: 0}"))
    assert [c.key for c in resolve_text(elsewhere, text)] == keys
    (elsewhere / "base.yaml").write_text(BASE.replace("500ms", "400ms"))
    assert not set(c.key for c in resolve_text(elsewhere, text)) & set(keys)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "sweeps").glob("*.yaml")))
def test_the_shipped_example_sweeps_resolve(name: str) -> None:
    sweep = load_sweep(REPO / "sweeps" / name)
    cells = cells_mod.resolve(sweep)
    assert len(cells) == sweep.size >= 16
    if name == "placement-seeds.yaml":
        assert {c.scenario.policy.scheduler.heuristic for c in cells} == set(Heuristic)
    if name == "consolidation-policies.yaml":  # 4 policies x 2 days x 3 seeds
        assert len({(c.scenario.policy, c.scenario.trace, c.seed) for c in cells}) == 24
    if name == "consolidation-policies-sample.yaml":  # 4 policies x 2 modes x 2 seeds
        assert len({(c.scenario.policy, c.scenario.mode, c.seed) for c in cells}) == 16


def test_the_examples_are_the_expected_ones() -> None:
    assert sorted(p.name for p in (REPO / "sweeps").glob("*.yaml")) == [
        "consolidation-policies-sample.yaml", "consolidation-policies.yaml",
        "placement-seeds.yaml"]


def test_the_command_reports_a_bad_sweep_in_one_line_and_writes_nothing(
        base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_sweep(tmp_path, "scenarios: [base.yaml]\naxes:\n  policy.x: [1]\n")
    out = tmp_path / "out"
    assert cli.main(["sweep", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"livemig: error: {path}:3: axes.policy.x: not a field of scenario "
                          "base.yaml: unknown key 'x'")
    assert err.count("\n") == 1
    assert not out.exists()


def test_workers_and_scheduler_are_exclusive(base: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = write_sweep(tmp_path, "scenarios: [base.yaml]\n")
    assert cli.main(["sweep", str(path), "--workers", "2", "--scheduler", "tcp://h:1"]) == 2
    assert "--workers starts a local cluster" in capsys.readouterr().err


@dataclass(frozen=True)
class FakeSpec:
    source: str
    seed: int
    size: int


class FakeKind:
    """A kind whose seed is read with the file (as consolidation's): ``fake: {size: N}``."""

    name = "fake"
    seed_in_file = True

    def handles(self, text: str) -> bool:
        return text.startswith("fake:")

    def parse(self, text: str, source: str, default_name: str) -> FakeSpec:
        data = yaml.safe_load(text)
        if set(data) - {"fake", "seed"} or set(data["fake"]) - {"size"}:
            raise ScenarioError(source, 1, "fake", "unknown key; expected size")
        return FakeSpec(source, data.get("seed", 0), data["fake"]["size"])

    def identity(self, spec: FakeSpec) -> dict:
        return {}


def test_a_kind_that_reads_its_seed_with_the_file_gets_each_seed_written_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kinds, "KINDS", (FakeKind(), *kinds.KINDS))
    (tmp_path / "f.yaml").write_text("fake: {size: 1}\nseed: 9\n")
    cells = resolve_text(tmp_path, "scenarios: [f.yaml]\naxes:\n  fake.size: [2, 3]\n"
                                   "seeds: [4, 5]\n")
    assert [(c.kind, c.seed, c.scenario.seed, c.scenario.size) for c in cells] == [
        ("fake", 4, 4, 2), ("fake", 5, 5, 2), ("fake", 4, 4, 3), ("fake", 5, 5, 3)]
    assert len({c.key for c in cells}) == 4
    assert [c.seed for c in resolve_text(tmp_path, "scenarios: [f.yaml]\n")] == [9]
    with pytest.raises(SweepError, match=r"sweep.yaml:3: axes.fake.colour: "):
        resolve_text(tmp_path, "scenarios: [f.yaml]\naxes:\n  fake.colour: [red]\n")


def test_consolidation_scenarios_are_their_own_kind_with_their_own_fields(
        tmp_path: Path) -> None:
    base = SCENARIOS / "planetlab-sample-lr-mmt-cloudsim.yaml"
    cells = resolve_text(tmp_path, f"scenarios: [{base}]\naxes:\n  consolidation.hosts: [30]\n"
                                   "seeds: [3]\n")
    assert [(c.kind, c.seed, c.scenario.seed, c.scenario.hosts) for c in cells] == [
        ("consolidation", 3, 3, 30)]
    with pytest.raises(SweepError, match=r"sweep.yaml:3: axes.consolidation.polcy: not a field "
                       r".*unknown key 'polcy' \(did you mean 'policy'\?\)"):
        resolve_text(tmp_path, f"scenarios: [{base}]\naxes:\n  consolidation.polcy: [1]\n")
