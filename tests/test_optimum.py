"""livemig.analysis.optimum and the snapshot file: CP-SAT against brute force, the bound,
the gap, and ``livemig optimum``."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from livemig.analysis.optimum import capacity_bound, gap, solve
from livemig.analysis.snapshot import (
    HostCapacity,
    Snapshot,
    SnapshotError,
    VmDemand,
    dump_snapshot,
    load_snapshot,
    parse_snapshot,
)
from livemig.core.cli import main
from livemig.core.yaml_nodes import ScenarioError


def brute_force(snap: Snapshot) -> tuple[int, int] | None:
    """(fewest active hosts, fewest migrations among such placements), by enumeration."""
    util = snap.max_utilization
    best: tuple[int, int] | None = None
    for hosts in itertools.product(range(len(snap.hosts)), repeat=len(snap.vms)):
        cpu = [0.0] * len(snap.hosts)
        ram = [0] * len(snap.hosts)
        for v, h in zip(snap.vms, hosts, strict=True):
            cpu[h] += v.cpu
            ram[h] += v.ram or 0
        if any(c > h.cpu * util + 1e-9 for c, h in zip(cpu, snap.hosts, strict=True)):
            continue
        if snap.has_ram and any(r > (h.ram or 0) for r, h in zip(ram, snap.hosts,
                                                                   strict=True)):
            continue
        moves = sum(1 for v, h in zip(snap.vms, hosts, strict=True)
                    if v.host is not None and v.host != snap.hosts[h].name)
        key = (len(set(hosts)), moves)
        best = key if best is None or key < best else best
    return best


def random_snapshot(rng: random.Random) -> Snapshot:
    n_hosts = rng.randint(1, 4)
    with_ram = rng.random() < 0.5
    kinds = [(rng.choice([6.0, 10.0]), rng.choice([4, 8]) * 2**30) for _ in range(2)]
    hosts = []
    for i in range(n_hosts):
        cpu, ram = rng.choice(kinds)  # often identical: the symmetry breaking is exercised
        hosts.append(HostCapacity(f"h{i}", cpu, ram if with_ram else None))
    vms = [VmDemand(f"v{i}", float(rng.randint(0, 7)), rng.choice([h.name for h in hosts]),
                    rng.choice([1, 2, 3]) * 2**30 if with_ram else None)
           for i in range(rng.randint(1, 6))]
    return Snapshot(tuple(hosts), tuple(vms), rng.choice([1.0, 1.0, 0.8]))


def placement_fits(snap: Snapshot, placement: dict[str, str]) -> bool:
    load: dict[str, float] = {}
    ram: dict[str, int] = {}
    for v in snap.vms:
        load[placement[v.name]] = load.get(placement[v.name], 0.0) + v.cpu
        ram[placement[v.name]] = ram.get(placement[v.name], 0) + (v.ram or 0)
    caps = {h.name: h for h in snap.hosts}
    return all(load[h] <= caps[h].cpu * snap.max_utilization + 1e-9 for h in load) and all(
        not snap.has_ram or ram[h] <= (caps[h].ram or 0) for h in ram)


@pytest.mark.parametrize("seed", range(60))
def test_cp_sat_agrees_with_brute_force_on_small_instances(seed: int) -> None:
    snap = random_snapshot(random.Random(seed))
    expected = brute_force(snap)
    result = solve(snap, time_limit=20, min_migrations=True, deterministic=True)
    if expected is None:
        assert result.status == "INFEASIBLE" and result.active_hosts is None
        return
    assert result.status == "OPTIMAL"
    assert (result.active_hosts, result.migrations) == expected
    assert result.bound == result.active_hosts
    assert result.migrations_status == "OPTIMAL" and result.migrations_bound == expected[1]
    assert result.capacity_bound <= expected[0]
    assert result.placement is not None and placement_fits(snap, result.placement)
    assert len(set(result.placement.values())) == expected[0]
    moved = sum(1 for v in snap.vms if v.host != result.placement[v.name])
    assert moved == expected[1]


def test_identical_hosts_with_vms_on_them_are_not_treated_as_interchangeable() -> None:
    # 4 identical hosts, one VM of 40 on each: 2 hosts suffice, 2 moves; symmetry breaking
    # in the second phase must not force the VMs onto the first hosts (that would be 4 moves)
    hosts = tuple(HostCapacity(f"h{i}", 100.0) for i in range(4))
    vms = tuple(VmDemand(f"v{i}", 40.0, f"h{3 - i}") for i in range(4))
    result = solve(Snapshot(hosts, vms), min_migrations=True, deterministic=True)
    assert (result.active_hosts, result.migrations) == (2, 2)


def test_a_vm_larger_than_every_host_is_infeasible() -> None:
    snap = Snapshot((HostCapacity("h", 10.0),), (VmDemand("v", 11.0, "h"),))
    result = solve(snap)
    assert result.status == "INFEASIBLE" and result.active_hosts is None


def test_decimal_demands_that_fill_a_host_exactly_share_it() -> None:
    snap = Snapshot((HostCapacity("a", 0.3), HostCapacity("b", 0.3)),
                    (VmDemand("x", 0.1, "a"), VmDemand("y", 0.2, "b")))
    assert solve(snap).active_hosts == 1


def test_a_time_limit_too_short_to_prove_reports_the_bound_not_optimal() -> None:
    # RAM-bound packing (CloudSim's VM sizes on 4 GiB hosts): the capacity bound is 14,
    # the optimum 15; in 0.05 s of CP-SAT's deterministic time it is found, not proven
    mb = 10**6
    hosts = tuple(HostCapacity(f"h{i}", 100.0, 4 * 2**30) for i in range(16))
    sizes = (1740 * mb, 1740 * mb, 870 * mb, 613 * mb)
    snap = Snapshot(hosts, tuple(VmDemand(f"v{i}", 1.0, None, sizes[i % 4])
                                 for i in range(48)))
    quick = solve(snap, time_limit=0.05, deterministic=True)
    assert (quick.status, quick.active_hosts, quick.bound, quick.capacity_bound) == \
        ("FEASIBLE", 15, 14, 14)
    proven = solve(snap, time_limit=20, deterministic=True)
    assert (proven.status, proven.active_hosts, proven.bound) == ("OPTIMAL", 15, 15)


def test_the_capacity_bound_takes_the_largest_hosts_first() -> None:
    hosts = (HostCapacity("s", 10.0), HostCapacity("l", 30.0), HostCapacity("m", 20.0))
    assert capacity_bound(Snapshot(hosts, (VmDemand("v", 45.0, None),))) == 2
    assert capacity_bound(Snapshot(hosts, (VmDemand("v", 55.0, None),))) == 3
    assert capacity_bound(Snapshot(hosts, (VmDemand("v", 45.0, None),),
                                   max_utilization=0.5)) == 4  # more than there are


def test_the_gap_of_a_spread_placement() -> None:
    hosts = tuple(HostCapacity(f"h{i}", 100.0) for i in range(5))
    snap = Snapshot(hosts, tuple(VmDemand(f"v{i}", 30.0, f"h{i}") for i in range(5)))
    g = gap(None, snap)
    assert (g.heuristic, g.best, g.bound, g.status) == (5, 2, 2, "OPTIMAL")
    assert (g.hosts_over_bound, g.hosts_over_best, g.relative) == (3, 3, 1.5)
    assert gap(2, snap).hosts_over_bound == 0
    assert gap(4, snap).as_dict()["hosts_over_bound"] == 2


def test_a_deterministic_solve_gives_the_same_answer_twice() -> None:
    snap = random_snapshot(random.Random(7))
    a = solve(snap, min_migrations=True, deterministic=True)
    b = solve(snap, min_migrations=True, deterministic=True)
    assert a.as_dict() | {"wall_s": 0} == b.as_dict() | {"wall_s": 0}


# -- the snapshot file -------------------------------------------------------------------------
GOOD = """\
max_utilization: 0.9
hosts:
  - {name: h1, cpu: 100, ram: 4GiB}
  - {name: h2, cpu: 100, ram: 4294967296}
vms:
  - {name: a, cpu: 50, ram: 1GiB, host: h1}
  - {name: b, cpu: 45, ram: 2GiB, host: h2}
  - {name: c, cpu: 0, ram: 512MiB, host: null}
"""


def test_a_snapshot_file_loads_and_round_trips_through_json(tmp_path: Path) -> None:
    snap = parse_snapshot(GOOD, "s.yaml")
    assert snap.max_utilization == 0.9 and snap.has_ram
    assert [h.ram for h in snap.hosts] == [2**32, 2**32]
    assert [v.host for v in snap.vms] == ["h1", "h2", None]
    assert snap.active_hosts == 2
    dump_snapshot(snap, tmp_path / "s.json")
    assert load_snapshot(tmp_path / "s.json") == snap


@pytest.mark.parametrize(("edit", "message"), [
    (("host: h2}", "host: h9}"), "s.yaml:7: vms[1]: VM b: host 'h9' is not one of the hosts"),
    (("name: b,", "name: a,"), "s.yaml:7: vms[1]: VM name 'a' appears twice"),
    (("cpu: 45,", "cpu: -1,"), "s.yaml:7: vms[1].cpu: -1 is out of range; expected a number"),
    (("ram: 4294967296", "ram: 4"), "s.yaml:4: hosts[1].ram: 4 bytes is too small"),
    (("ram: 4294967296}", "ram: 4 GB/s}"), "s.yaml:4: hosts[1].ram: '4 GB/s'"),
    ((", ram: 4294967296}", "}"), "s.yaml:4: hosts[1]: host h2 has no ram but others do"),
    (("max_utilization: 0.9", "max_utilization: 1.5"), "s.yaml:1: max_utilization: 1.5"),
    (("cpu: 100, ram: 4GiB", "cpu: 0, ram: 4GiB"), "s.yaml:3: hosts[0].cpu: 0 is out of"),
    (("vms:", "vm:"), "s.yaml:5: unknown key 'vm'"),
])
def test_a_bad_snapshot_names_the_file_line_and_field(edit: tuple[str, str],
                                                      message: str) -> None:
    text = GOOD.replace(*edit)
    assert text != GOOD
    with pytest.raises(ScenarioError) as info:
        parse_snapshot(text, "s.yaml")
    assert str(info.value).startswith(message), str(info.value)


def test_a_snapshot_made_in_code_is_checked_too() -> None:
    with pytest.raises(SnapshotError, match="VM v: host 'x' is not one of the hosts"):
        Snapshot((HostCapacity("h", 1.0),), (VmDemand("v", 0.5, "x"),))
    with pytest.raises(SnapshotError, match="at least one host"):
        Snapshot((), ())


# -- the command -------------------------------------------------------------------------------
def test_livemig_optimum_prints_the_result_and_its_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(GOOD)
    assert main(["optimum", str(path), "--min-migrations", "--time-limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "3 VMs, 2 hosts active now, max_utilization 0.9" in out
    assert "active hosts: 2 (OPTIMAL); proven lower bound 2" in out  # 50 + 45 > 90
    assert "migrations to reach it: 0 (OPTIMAL)" in out
    assert main(["optimum", str(path), "--json", "--placement", "--deterministic"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["active_hosts"] == 2 and data["bound"] == 2 and data["status"] == "OPTIMAL"
    assert set(data["placement"]) == {"a", "b", "c"}


def test_livemig_optimum_exits_1_when_no_placement_exists(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"hosts": [{"name": "h", "cpu": 1}],
                                "vms": [{"name": "v", "cpu": 2, "host": "h"}]}))
    assert main(["optimum", str(path)]) == 1
    assert "active hosts: none found (INFEASIBLE)" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["missing.yaml"], "missing.yaml: snapshot file not found"),
    (["BAD"], "vms[1]: VM b: host 'h9' is not one of the hosts"),
    (["GOOD", "--time-limit", "0"], "0 is out of range; expected seconds > 0"),
])
def test_livemig_optimum_bad_input_is_one_line_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
        message: str) -> None:
    (tmp_path / "GOOD").write_text(GOOD)
    (tmp_path / "BAD").write_text(GOOD.replace("host: h2}", "host: h9}"))
    args = [str(tmp_path / a) if a in ("GOOD", "BAD", "missing.yaml") else a for a in args]
    assert main(["optimum", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) <= 2

