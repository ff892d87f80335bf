"""``livemig calibrate``'s pure parts and ``livemig compare`` (sim lane: no lab, no libvirt).

The estimators are checked on cases made from known parameters (they must find them
again), the matrix's scenarios are run on the simulator, the guest's tick format is the
one the parser reads, and compare runs on synthetic run directories and on real ones
written by ``livemig run``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml

from livemig.calibration import compare as cmp
from livemig.calibration.fit import (
    CaseMeasurement,
    Profile,
    completion_timeout,
    fit_profile,
    predict,
)
from livemig.calibration.matrix import (
    DEFAULT_MATRIX,
    MIGRATE_AT,
    case_scenario_text,
    load_matrix,
)
from livemig.calibration.run import (
    CASE_COLUMNS,
    CaseResult,
    HiddenMemory,
    hidden_memory,
    load_results,
    non_zero,
    profile_document,
    replay_on_simulator,
    write_cases,
)
from livemig.calibration.truth import GuestTruth, guest_truth
from livemig.core.cli import main
from livemig.core.profile import load_profile
from livemig.core.results import summarize, write_results
from livemig.core.runner import run_scenario
from livemig.core.scenario import load_scenario, parse_scenario
from livemig.core.units import parse_duration, parse_rate
from livemig.core.yaml_nodes import ScenarioError

MiB = 2**20
DIRTIER = Path(__file__).resolve().parents[1] / "drivers" / "lab" / "guest" / "dirtier.c"
TRUE = Profile(startup_cost=0.3, switchover_cost=0.025, link_speed=150 * MiB,
               flush_speed=600 * MiB)


# -- the estimators find known parameters again -------------------------------------------


def synthetic(name: str, *, cap: float, limit: float, nz: float, profile: Profile,
              rate: float = 0.0, ws: float = 16 * MiB, ram: float = 0.0) -> CaseMeasurement:
    """A completed case as real QEMU would report it if ``profile`` were the truth:
    time_elapsed = start-up + bytes / memory_bps, downtime = cost + remainder / flush."""
    pred = predict(profile, non_zero=nz, working_set=ws, dirty_rate=rate, bandwidth=cap,
                   max_downtime=limit, ram=ram or None)
    assert pred.converges
    bps = cap if cap else profile.link_speed
    return CaseMeasurement(
        name=name, capped=cap > 0, bandwidth=cap, max_downtime=limit, completed=True,
        time_elapsed=profile.startup_for(ram) + pred.transferred / bps,
        downtime=pred.downtime, memory_processed=pred.transferred, memory_bps=bps,
        non_zero=nz, working_set=ws, dirty_rate=rate, ram=ram,
    )


def test_fit_recovers_the_parameters_that_made_the_cases() -> None:
    cases = [
        synthetic("u1", cap=0, limit=0.1, nz=90 * MiB, profile=TRUE),
        synthetic("u2", cap=0, limit=0.3, nz=300 * MiB, profile=TRUE, rate=8 * MiB),
        synthetic("c1", cap=20 * MiB, limit=0.3, nz=120 * MiB, profile=TRUE, rate=4 * MiB),
        synthetic("c2", cap=10 * MiB, limit=0.1, nz=80 * MiB, profile=TRUE),
    ]
    fitted = fit_profile(cases)
    assert fitted.startup_cost == pytest.approx(TRUE.startup_cost, rel=1e-9)
    assert fitted.link_speed == pytest.approx(TRUE.link_speed, rel=1e-9)
    # the line through the capped cases' (remainder, downtime): cost and flush speed
    assert fitted.switchover_cost == pytest.approx(TRUE.switchover_cost, rel=1e-9)
    assert fitted.flush_speed == pytest.approx(TRUE.flush_speed, rel=1e-9)
    other = Profile(startup_cost=0.7, switchover_cost=0.005, link_speed=60 * MiB,
                    flush_speed=300 * MiB)
    refit = fit_profile([synthetic(c.name, cap=c.bandwidth, limit=c.max_downtime,
                                   nz=c.non_zero, rate=c.dirty_rate, ws=c.working_set,
                                   profile=other) for c in cases])
    assert (refit.startup_cost, refit.link_speed) == pytest.approx((0.7, 60 * MiB))
    assert (refit.switchover_cost, refit.flush_speed) == pytest.approx((0.005, 300 * MiB))


def test_fit_finds_a_start_up_that_grows_with_the_ram_and_the_simulator_uses_it(
    tmp_path: Path,
) -> None:
    """A destination that preallocates the guest's RAM (huge pages) starts up 0.2 s + 0.25 s
    per GiB: the fit finds both, even with one case slowed by the machine's load, the
    profile file carries them, and a replayed case waits that long before its first byte."""
    grows = dataclasses.replace(TRUE, startup_cost=0.2, startup_cost_per_gib=0.25)
    cases = [
        synthetic("u1", cap=0, limit=0.1, nz=90 * MiB, profile=grows, ram=128 * MiB),
        synthetic("u2", cap=0, limit=0.3, nz=300 * MiB, profile=grows, ram=512 * MiB),
        synthetic("c1", cap=20 * MiB, limit=0.3, nz=120 * MiB, profile=grows, ram=256 * MiB),
        synthetic("c2", cap=10 * MiB, limit=0.1, nz=80 * MiB, profile=grows, ram=384 * MiB),
    ]
    slow = dataclasses.replace(cases[3], time_elapsed=cases[3].time_elapsed + 0.3)
    fitted = fit_profile([*cases, slow, cases[0]])
    assert fitted.startup_cost == pytest.approx(0.2, rel=1e-6)
    assert fitted.startup_cost_per_gib == pytest.approx(0.25, rel=1e-6)
    assert fit_profile(cases[:1] * 2).startup_cost_per_gib == 0.0  # one RAM size: flat
    doc = profile_document("p", fitted, [], [], HiddenMemory(0.0), {})
    assert doc["startup_cost_per_gib"] == "250.0ms"
    assert "startup_cost_per_gib" not in profile_document("p", TRUE, [], [],
                                                          HiddenMemory(0.0), {})
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    scen = tmp_path / "case.yaml"
    scen.write_text(case_scenario_text(DEFAULT_MATRIX[0], "lab1", "lab2",
                                       profile="profile.yaml"))
    result = run_scenario(load_scenario(scen), "sim")
    (m,) = result.store.migrations()
    plan = predict(fitted, non_zero=DEFAULT_MATRIX[0].working_set + 64 * MiB,
                   working_set=DEFAULT_MATRIX[0].working_set, dirty_rate=0.0, bandwidth=0.0,
                   max_downtime=DEFAULT_MATRIX[0].max_downtime, ram=DEFAULT_MATRIX[0].ram)
    assert m.total_time == pytest.approx(plan.total_time, rel=1e-3)
    assert summarize(result)["model"]["params"]["startup_cost_per_gib"] == pytest.approx(0.25)


def test_fit_without_two_capped_cases_takes_the_smallest_downtime() -> None:
    """One capped case cannot fix a line: the switchover cost is then the smallest downtime
    (the cost plus c2's remainder, 1 MiB flushed at the link's 150 MiB/s) and the flush runs
    at link speed (the profile has no flush_speed)."""
    old = Profile(startup_cost=0.3, switchover_cost=0.025, link_speed=150 * MiB)
    cases = [synthetic("u1", cap=0, limit=0.1, nz=90 * MiB, profile=old),
             synthetic("c2", cap=10 * MiB, limit=0.1, nz=80 * MiB, profile=old)]
    fitted = fit_profile(cases)
    assert fitted.flush_speed is None
    assert fitted.switchover_cost == pytest.approx(0.025 + 1 / 150, rel=1e-9)


def test_fit_ignores_cases_that_did_not_complete() -> None:
    good = synthetic("u1", cap=0, limit=0.1, nz=90 * MiB, profile=TRUE)
    aborted = CaseMeasurement(name="x", capped=True, bandwidth=8 * MiB, max_downtime=0.1,
                              completed=False, time_elapsed=0, downtime=0, memory_processed=0,
                              memory_bps=0, non_zero=90 * MiB)
    assert fit_profile([good, aborted]) == fit_profile([good])


def test_prediction_follows_the_cap_the_rate_and_the_timeout() -> None:
    base = dict(non_zero=100 * MiB, working_set=32 * MiB, max_downtime=0.3)
    slow = predict(TRUE, **base, dirty_rate=4 * MiB, bandwidth=10 * MiB)
    fast = predict(TRUE, **base, dirty_rate=4 * MiB, bandwidth=50 * MiB)
    assert slow.converges and fast.converges
    assert slow.total_time > fast.total_time > TRUE.startup_cost
    # a capped remainder (at most the threshold, 3 MiB) is flushed at flush_speed, not the
    # cap (at the cap 3 MiB would take 0.3 s)
    assert TRUE.switchover_cost < slow.downtime <= (10 * MiB * 0.3 / TRUE.flush_speed
                                                    + TRUE.switchover_cost) * (1 + 1e-9)
    hot = predict(TRUE, **base, dirty_rate=24 * MiB, bandwidth=8 * MiB,
                  timeout=completion_timeout(4.0, 192 * MiB))
    assert (hot.converges, hot.total_time) == (False, 8.0)
    # an idle guest whose whole non-zero memory is below the threshold switches at once
    # (with no bandwidth window to wait for), uncapped: flushed at the link's speed
    tiny = predict(dataclasses.replace(TRUE, bandwidth_window=0.0), non_zero=10 * MiB,
                   working_set=1 * MiB, dirty_rate=0, bandwidth=0, max_downtime=0.3)
    assert tiny.passes == 1
    assert tiny.downtime == pytest.approx(TRUE.switchover_cost + 10 * MiB / TRUE.link_speed)


# -- the matrix and its scenarios ------------------------------------------------------------


def test_the_default_matrix_spans_the_space_and_has_one_case_that_cannot_converge() -> None:
    m = DEFAULT_MATRIX
    assert 10 <= len(m) <= 14 and len({c.name for c in m}) == len(m)
    assert {c.capped for c in m} == {True, False}
    assert {c.max_downtime for c in m} == {0.1, 0.3}
    assert min(c.ram for c in m) == 128 * MiB and max(c.ram for c in m) == 512 * MiB
    assert any(c.dirty_rate == 0 for c in m) and max(c.dirty_rate for c in m) >= 24 * MiB
    outcomes = {}
    for c in m:
        p = predict(TRUE, non_zero=c.working_set + 64 * MiB, working_set=c.working_set,
                    dirty_rate=c.dirty_rate, bandwidth=c.bandwidth, max_downtime=c.max_downtime,
                    timeout=completion_timeout(c.completion_timeout, c.ram))
        outcomes[c.name] = p.converges
    assert [n for n, ok in outcomes.items() if not ok] == ["no-converge"]


@pytest.mark.parametrize("case", [DEFAULT_MATRIX[0], DEFAULT_MATRIX[4], DEFAULT_MATRIX[-1]],
                         ids=lambda c: c.name)
def test_a_case_is_a_scenario_that_runs_on_the_simulator(case) -> None:
    scenario = parse_scenario(case_scenario_text(case, "lab1", "lab2"), source=case.name)
    (vm,) = scenario.vms
    assert (vm.name, vm.host, vm.ram, vm.working_set) == (case.name, "lab1", case.ram,
                                                         case.working_set)
    assert vm.dirty_rate == case.dirty_rate
    assert scenario.policy.migration.bandwidth == case.bandwidth
    assert scenario.policy.migration.max_downtime == case.max_downtime
    assert scenario.events[0].at == MIGRATE_AT
    result = run_scenario(scenario, "sim")
    (m,) = result.store.migrations()
    if case.name == "no-converge":
        # aborted by the completion timeout (Nova's abort: the job is cancelled), VM kept
        assert (m.status.value, m.error, m.timeout_action) == (
            "cancelled", "LiveMigrationFailed", "abort")
        assert result.final_hosts[case.name] == "lab1"
    else:
        assert m.status.value == "completed" and result.final_hosts[case.name] == "lab2"


def test_replay_scenario_carries_the_guest_truth() -> None:
    case = DEFAULT_MATRIX[1]
    text = case_scenario_text(case, "a", "b", non_zero=123 * MiB, dirty_rate=7.5 * MiB)
    (vm,) = parse_scenario(text, source="x").vms
    assert (vm.used_memory, vm.dirty_rate) == (123 * MiB, 7.5 * MiB)


def test_a_matrix_file_is_read_and_its_errors_name_file_line_and_field(tmp_path: Path) -> None:
    good = tmp_path / "m.yaml"
    good.write_text("cases:\n  - {name: a, ram: 256MiB, working_set: 32MiB, dirty_rate: 8MiB/s,\n"
                    "     bandwidth: 20MiB/s, max_downtime: 100ms, completion_timeout: 4s}\n")
    (case,) = load_matrix(good)
    assert (case.ram, case.bandwidth, case.max_downtime, case.completion_timeout) == (
        256 * MiB, 20 * MiB, 0.1, 4.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("cases:\n  - name: a\n    ram: 256MiB\n    working_set: 32MiB\n"
                   "    dirty_rate: 8MiB/s\n    max_downtime: 100ms\n    bandwith: 2MiB/s\n")
    with pytest.raises(ScenarioError, match=r"bad.yaml:7: cases\[0\]: unknown key 'bandwith'"):
        load_matrix(bad)


# -- the guest's truth -------------------------------------------------------------------------


def test_the_dirtier_prints_the_truth_fields_that_the_parser_reads() -> None:
    source = DIRTIER.read_text()
    start = source.index('printf("tick %llu') + len('printf("')
    literal = source[start:source.index('", tick_line', start)]
    fmt = re.sub(r'"\s*"', "", literal).removesuffix("\\n")  # adjacent C literals joined
    line = (fmt.replace("%llu", "7").replace("%.2f", "1.50").replace("%.1f", "90.5")
            .replace("%ld", "0"))
    assert re.match(r"^tick (\d+) ", line)  # the lab tests' tick pattern still matches
    truth = guest_truth(line + "\n")
    assert truth == GuestTruth(ticks=1, rate_mibps=1.5, nonzero_mib=90.5, memfree_mib=90.5)


def test_a_changed_dirtier_source_gives_a_new_image_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guest image is cached by a hash of its inputs: a new dirtier.c builds a new one."""
    from types import SimpleNamespace

    from livemig.drivers.lab import image

    src = tmp_path / "guest"
    src.mkdir()
    for name in ("init", "dirtier.c"):
        (src / name).write_bytes((DIRTIER.parent / name).read_bytes())
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"busybox")
    monkeypatch.setattr(image, "GUEST_SRC", src)
    monkeypatch.setattr(image, "BUSYBOX", busybox)
    monkeypatch.setattr(image, "_kernel_package", lambda cache: ("linux-image-x", "1"))
    monkeypatch.setattr(image, "run", lambda *a, **k: SimpleNamespace(stdout="12.2.0\n"))
    before = image.image_key(tmp_path)
    assert image.image_key(tmp_path) == before
    (src / "dirtier.c").write_text((src / "dirtier.c").read_text() + "/* changed */\n")
    assert image.image_key(tmp_path) != before


def test_truth_takes_medians_over_a_tick_range_and_skips_unreadable_memory() -> None:
    lines = "".join(f"tick {i} uptime={i}.00 dirtied_mib=0 behind_ms=0 rate_mibps={r} "
                    f"nonzero_mib={z} memfree_mib=50\n"
                    for i, (r, z) in enumerate([(8, -1), (8, 90), (2, 91), (8, 92)], start=1))
    assert guest_truth(lines).rate_mibps == 8
    assert guest_truth(lines).nonzero_mib == 91  # the -1 (unreadable) is left out
    assert guest_truth(lines, first_tick=3).rate_mibps == 5
    assert guest_truth(lines, last_tick=1) == GuestTruth(ticks=1, rate_mibps=8,
                                                         nonzero_mib=None, memfree_mib=50)


# -- cases.csv and the profile file ------------------------------------------------------------


def case_result(case, *, nonzero: float | None, normal: int, status: str = "completed",
                elapsed: int = 2000, downtime: int = 40, bps: int = 100 * MiB) -> CaseResult:
    stats = {"time_elapsed": elapsed, "downtime": downtime, "memory_processed": normal,
             "memory_normal_bytes": normal, "memory_bps": bps, "setup_time": 2}
    return CaseResult(
        case=case, status=status, error=None if status == "completed" else "timeout",
        record={"total_time_s": elapsed / 1000, "downtime_ms": float(downtime),
                "iterations": 3, "data_transferred_bytes": normal},
        stats=stats if status == "completed" else {},
        truth=GuestTruth(ticks=5, rate_mibps=case.dirty_rate / MiB, nonzero_mib=nonzero,
                         memfree_mib=30.0),
        wall_s=20.0, load1=3.5,
    )


def test_hidden_memory_comes_from_idle_cases_and_non_zero_adds_it() -> None:
    idle, busy = DEFAULT_MATRIX[0], DEFAULT_MATRIX[1]
    results = [case_result(idle, nonzero=40.0, normal=75 * MiB),
               case_result(busy, nonzero=90.0, normal=200 * MiB)]
    assert hidden_memory(results) == HiddenMemory(35 * MiB)  # only the idle case measures it
    assert non_zero(results[1], HiddenMemory(35 * MiB)) == 125 * MiB
    capped = non_zero(case_result(idle, nonzero=120.0, normal=1), HiddenMemory(35 * MiB))
    assert capped == idle.ram
    assert hidden_memory(results[1:]) == HiddenMemory(0.0)


def test_hidden_memory_is_a_line_in_the_ram_with_idle_cases_of_two_sizes() -> None:
    """The kernel's page structures grow with the RAM: idle guests of 128 and 256 MiB
    hiding 33 and 37 MiB give 29 MiB + 1/32 of the RAM (a 512 MiB guest: 45 MiB); a line
    that falls is not believed (the median instead)."""
    small, big = DEFAULT_MATRIX[0], dataclasses.replace(DEFAULT_MATRIX[0], ram=256 * MiB)
    results = [case_result(small, nonzero=40.0, normal=73 * MiB),
               case_result(big, nonzero=40.0, normal=77 * MiB)]
    hidden = hidden_memory(results)
    assert hidden.base == pytest.approx(29 * MiB) and hidden.per_ram == pytest.approx(1 / 32)
    assert hidden.of(512 * MiB) == pytest.approx(45 * MiB)
    assert HiddenMemory.parse(hidden.text()).of(512 * MiB) == pytest.approx(45 * MiB, rel=1e-3)
    falling = [case_result(small, nonzero=40.0, normal=77 * MiB),
               case_result(big, nonzero=40.0, normal=73 * MiB)]
    assert hidden_memory(falling) == HiddenMemory(35 * MiB)


def test_recorded_cases_are_read_back_and_refitted_without_the_lab(tmp_path: Path) -> None:
    """cases.csv round-trips through load_results, and refit fits on the old profile's
    fitted_on cases only, keeping its provenance and rewriting the replay scenarios."""
    from livemig.calibration import refit

    idle, busy = DEFAULT_MATRIX[0], DEFAULT_MATRIX[4]
    results = [case_result(idle, nonzero=40.0, normal=75 * MiB, elapsed=1300, bps=100 * MiB),
               case_result(busy, nonzero=50.0, normal=90 * MiB, elapsed=9000, downtime=25,
                           bps=10 * MiB),
               case_result(DEFAULT_MATRIX[-1], nonzero=60.0, normal=0, status="error")]
    write_cases(tmp_path / "cases.csv", results)
    back = load_results(tmp_path / "cases.csv", DEFAULT_MATRIX)
    assert [r.row() for r in back] == [r.row() for r in results]
    with pytest.raises(ValueError, match=r"cases.csv:2: case 'u128-idle' is not in the matrix"):
        load_results(tmp_path / "cases.csv", DEFAULT_MATRIX[1:])
    old = {"name": "lab", "startup_cost": "1s", "measured": {
        "date": "then", "qemu": "10.0.2", "lab_hugepages": True, "fitted_on": ["u128-idle"]}}
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(old))
    assert refit.main([str(tmp_path)]) == 0
    doc = yaml.safe_load((tmp_path / "profile.yaml").read_text())
    assert doc["name"] == "lab" and doc["measured"]["fitted_on"] == ["u128-idle"]
    assert doc["measured"]["date"] == "then" and doc["measured"]["refitted"]
    assert doc["measured"]["lab_hugepages"] is True  # the provenance it kept
    # fitted on the idle uncapped case alone: 1.3 s - 75 MiB / 100 MiB/s
    assert parse_duration(doc["startup_cost"]) == pytest.approx(0.55)
    assert "flush_speed" not in doc  # no capped case to fit it on
    scen = load_scenario(tmp_path / "scenarios" / f"{busy.name}.yaml")
    assert scen.vms[0].used_memory == (50 + 35) * MiB


def test_cases_csv_and_profile_document(tmp_path: Path) -> None:
    results = [case_result(DEFAULT_MATRIX[0], nonzero=40.0, normal=75 * MiB),
               case_result(DEFAULT_MATRIX[-1], nonzero=60.0, normal=0, status="error")]
    write_cases(tmp_path / "cases.csv", results)
    with (tmp_path / "cases.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CASE_COLUMNS
    assert [(r["case"], r["status"], r["time_elapsed_ms"]) for r in rows] == [
        ("u128-idle", "completed", "2000"), ("no-converge", "error", "")]
    assert rows[0]["guest_nonzero_mib"] == "40.0" and rows[0]["setup_time_ms"] == "2"
    doc = profile_document("p", TRUE, results, ["u128-idle"], HiddenMemory(35 * MiB),
                           {"qemu": "10.0.2"})
    assert parse_duration(doc["startup_cost"]) == pytest.approx(0.3)
    assert parse_rate(doc["link_speed"]) == pytest.approx(150 * MiB)
    assert doc["measured"]["completed"] == 1 and doc["measured"]["qemu"] == "10.0.2"
    (res,) = doc["measured"]["residuals"]
    assert res["case"] == "u128-idle" and res["fitted"] and res["total_time_s"][0] == 2.0


def test_a_calibrated_profile_is_what_a_replayed_case_simulates_with(tmp_path: Path) -> None:
    """The profile calibrate writes loads as a model profile (its ``measured:`` block is
    provenance), and a replay scenario naming it runs the qemu model with its figures."""
    results = [case_result(DEFAULT_MATRIX[0], nonzero=40.0, normal=75 * MiB)]
    doc = profile_document("p", TRUE, results, ["u128-idle"], HiddenMemory(35 * MiB),
                           {"qemu": "10.0.2"})
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    loaded = load_profile(tmp_path / "profile.yaml")
    assert loaded.name == "p"
    assert loaded.values["startup_cost"] == pytest.approx(0.3)
    assert loaded.values["link_speed"] == pytest.approx(150 * MiB, rel=1e-3)
    assert loaded.values["flush_speed"] == pytest.approx(600 * MiB, rel=1e-3)
    scen = tmp_path / "scenarios" / "case.yaml"
    scen.parent.mkdir()
    scen.write_text(case_scenario_text(DEFAULT_MATRIX[0], "lab1", "lab2",
                                       profile="../profile.yaml"))
    result = run_scenario(load_scenario(scen), "sim")
    model = summarize(result)["model"]
    assert model["profile"] == "p"
    assert model["params"]["startup_cost"] == pytest.approx(0.3)


# -- compare -----------------------------------------------------------------------------------

FIELDS = ("id", "instance", "status", "error", "total_time_s", "downtime_ms", "iterations",
          "data_transferred_bytes")


def run_dir(path: Path, rows: list[tuple]) -> Path:
    path.mkdir(parents=True)
    with (path / "migrations.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(FIELDS)
        for i, r in enumerate(rows, start=1):
            w.writerow((i, *r))
    return path


def test_compare_matches_by_instance_and_order_and_writes_table_csv_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tmp_path / "real"
    run_dir(real / "case-a", [("a", "completed", "", 2.0, 40.0, 4, 100)])
    run_dir(real / "case-b", [("b", "completed", "", 10.0, 30.0, 6, 200),
                              ("b", "error", "timeout", "", "", "", "")])
    run_dir(tmp_path / "sim", [("b", "completed", "", 11.0, 60.0, 3, 210),
                               ("a", "completed", "", 1.5, 40.0, 4, 100),
                               ("b", "completed", "", 8.0, 20.0, 5, 50),
                               ("c", "completed", "", 1.0, 1.0, 1, 1)])
    out = tmp_path / "cmp"
    assert main(["compare", str(real), str(tmp_path / "sim"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    with (out / "compare.csv").open() as fh:
        rows = {(r["instance"], r["n"]): r for r in csv.DictReader(fh)}
    assert set(rows) == {("a", "1"), ("b", "1"), ("b", "2"), ("c", "1")}
    assert float(rows[("a", "1")]["total_time_s_err"]) == pytest.approx(-0.25)
    assert float(rows[("b", "1")]["total_time_s_err"]) == pytest.approx(0.1)
    assert float(rows[("b", "1")]["downtime_ms_err"]) == pytest.approx(1.0)
    assert (rows[("b", "2")]["real_outcome"], rows[("b", "2")]["outcome_match"]) == (
        "error:timeout", "False")
    assert rows[("c", "1")]["real_outcome"] == "missing"
    summ = json.loads((out / "compare.json").read_text())
    assert summ["total_time_s"] == {"n": 2, "median": pytest.approx(0.175),
                                    "p90": pytest.approx(0.235)}
    assert summ["outcome"] == {"n": 4, "matched": 2}
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "median |error|" in printed and "outcomes matched: 2/4" in printed
    assert re.search(r"b#2\s+error:timeout/completed !", printed)


def test_compare_on_run_directories_written_by_livemig_run(tmp_path: Path) -> None:
    """Two runs of the same case on the simulator, one told a slower link: compare sees
    the difference in total time and the same outcome."""
    case = DEFAULT_MATRIX[4]  # capped at 20 MiB/s
    text = case_scenario_text(case, "lab1", "lab2")
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text.replace("bandwidth: 20MiB/s", "bandwidth: 10MiB/s"))
    for name in ("a", "b"):
        assert main(["run", str(tmp_path / f"{name}.yaml"), "--out", str(tmp_path / name),
                     "--no-progress"]) == 0
    _, summ = cmp.compare(tmp_path / "a", tmp_path / "b", tmp_path / "cmp")
    assert summ["outcome"] == {"n": 1, "matched": 1}
    assert summ["total_time_s"]["median"] > 0.5  # half the cap: much longer


def test_replay_runs_the_case_scenarios_on_the_simulator_and_compares(tmp_path: Path) -> None:
    """``calibrate --replay``'s second half: scenarios/ on the simulator into sim/, then
    compare/ against real/ (here stand-in real runs: the simulator with half the cap)."""
    (tmp_path / "scenarios").mkdir()
    for case in (DEFAULT_MATRIX[4], DEFAULT_MATRIX[-1]):  # capped 20 MiB/s; no-converge
        text = case_scenario_text(case, "lab1", "lab2")
        (tmp_path / "scenarios" / f"{case.name}.yaml").write_text(text)
        slower = text.replace(f"bandwidth: {case.bandwidth / MiB:g}MiB/s",
                              f"bandwidth: {case.bandwidth / MiB / 2:g}MiB/s")
        result = run_scenario(parse_scenario(slower, source=case.name), "sim")
        write_results(result, tmp_path / "real" / case.name)
    table, summ = replay_on_simulator(tmp_path)
    assert sorted(p.name for p in (tmp_path / "sim").iterdir()) == [
        "c20-128-w16-r4", "no-converge"]
    assert summ["outcome"] == {"n": 2, "matched": 2}
    with (tmp_path / "compare" / "compare.csv").open() as fh:
        rows = {r["instance"]: r for r in csv.DictReader(fh)}
    assert float(rows["c20-128-w16-r4"]["total_time_s_err"]) < -0.3  # twice the cap: faster
    assert "outcomes matched: 2/2" in table


@pytest.mark.parametrize("argv, message", [
    (["compare", "{tmp}/nothing", "{tmp}"], "not a directory"),
    (["compare", "{tmp}", "{tmp}"], "no migrations.csv in it"),
    (["calibrate", "--inventory", "{tmp}/none.yaml", "--out", "{tmp}/p.yaml"],
     "inventory file not found"),
])
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "p.yaml").exists()


def fake_inventory(tmp_path: Path) -> Path:
    """An inventory file of two hosts that nobody serves (enough for the input checks)."""
    inv = tmp_path / "inventory.yaml"
    inv.write_text(
        "lab: x\nlab_dir: /nowhere\nstorage: shared\ninstances_path: /i\nconsole_dir: /c\n"
        "storage_pool: instances\nnetwork: 198.18.0.0/24\nbridge: {name: b, address: 198.18.0.1}\n"
        "image: null\nhosts:\n"
        + "".join(f"- {{name: h{i}, address: 198.18.0.1{i}, uri: 'qemu+tcp://198.18.0.1{i}/system',"
                  f" netns: n{i}, host_uuid: u{i}, instances_dir: /i}}\n" for i in (1, 2)))
    return inv


def test_calibrate_refuses_a_bad_matrix_before_running_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = fake_inventory(tmp_path)
    matrix = tmp_path / "m.yaml"
    matrix.write_text("cases:\n  - {name: a, ram: 128MiB, working_set: 100MiB, "
                      "dirty_rate: 0MiB/s, max_downtime: 1s}\n")
    code = main(["calibrate", "--inventory", str(inv), "--out", str(tmp_path / "p.yaml"),
                 "--matrix", str(matrix)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "m.yaml:2: cases[0].working_set: 100 MiB is too large" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.yaml", "m.yaml"]


@pytest.mark.parametrize("extra, message", [
    (["--fit", "u128-idle,nope"], "--fit u128-idle,nope: expected names of the matrix's cases"),
    (["--fit", "c20-128-w16-r4,no-converge"], "the cases to fit include no uncapped case"),
    (["--out", "{tmp}/missing/p.yaml"], "expected a file in an existing directory"),
    (["--out", "{tmp}/old.yaml"], "old.yaml already exists (use --force"),
])
def test_calibrate_checks_its_options_before_running_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    inv = fake_inventory(tmp_path)
    (tmp_path / "old.yaml").write_text("name: old\n")
    argv = ["calibrate", "--inventory", str(inv), "--out", str(tmp_path / "p.yaml"),
            *[a.format(tmp=tmp_path) for a in extra]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.yaml", "old.yaml"]
    assert (tmp_path / "old.yaml").read_text() == "name: old\n"


def test_the_shipped_trust_matrix_holds_out_at_least_twenty_cases() -> None:
    """calibration/trust-matrix.yaml (the README's table) loads; its header's --fit names
    six of its cases, and at least 20 others (one that cannot converge) are held out."""
    path = Path(__file__).resolve().parents[1] / "calibration" / "trust-matrix.yaml"
    cases = load_matrix(path)
    fit = re.search(r"--fit (\S+)", path.read_text()).group(1).split(",")
    names = [c.name for c in cases]
    assert set(fit) <= set(names) and len(fit) == 6
    held_out = [c for c in cases if c.name not in fit]
    assert len(held_out) >= 20
    assert any(c.name.startswith("no-converge") for c in held_out)
    assert {c.capped for c in held_out} == {True, False}


def test_the_same_cases_replayed_under_every_model(tmp_path: Path) -> None:
    """models.replay_models: each model's runs and comparison against real/ (stand-in real
    runs: the simulator); CloudSim completes a case that cannot converge and has no downtime."""
    from livemig.calibration import models

    capped, stuck = DEFAULT_MATRIX[4], DEFAULT_MATRIX[-1]
    (tmp_path / "scenarios").mkdir()
    doc = profile_document("p", TRUE, [], [], HiddenMemory(0.0), {})
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    for case in (capped, stuck):
        text = case_scenario_text(case, "lab1", "lab2", profile="../profile.yaml")
        (tmp_path / "scenarios" / f"{case.name}.yaml").write_text(text)
        result = run_scenario(load_scenario(tmp_path / "scenarios" / f"{case.name}.yaml"), "sim")
        write_results(result, tmp_path / "real" / case.name)
    rows = models.replay_models(tmp_path, [capped, stuck], link_speed=150 * MiB)
    assert set(rows) == set(models.MODELS)
    by_case = {m: {r["instance"]: r for r in rs} for m, rs in rows.items()}
    assert by_case["qemu"][capped.name]["total_time_s_err"] == pytest.approx(0, abs=1e-9)
    assert by_case["qemu"][stuck.name]["outcome_match"]
    textbook = json.loads((tmp_path / "models" / "textbook" / "runs" / capped.name
                           / "summary.json").read_text())
    assert textbook["model"]["name"] == "textbook"
    cloud = by_case["cloudsim"]
    assert not cloud[stuck.name]["outcome_match"]
    assert cloud[capped.name]["sim_total_time_s"] == pytest.approx(
        models.cloudsim_time(ram=capped.ram, bandwidth=capped.bandwidth))
    assert cloud[capped.name]["downtime_ms_err"] == pytest.approx(-1.0)
    table = models.summary_table(rows, {capped.name, stuck.name})
    assert table.count("\n") == 1 + len(models.MODELS)
    assert "| cloudsim |" in table and "1/2 |" in table
    # a narrower call (--held-out) after a wider one: only its own cases, though runs/ has both
    narrow = models.replay_models(tmp_path, [capped], link_speed=150 * MiB)
    assert {r["instance"] for rs in narrow.values() for r in rs} == {capped.name}


@pytest.mark.parametrize("extra, expected", [("", False), ("hugepages: true\n", True)])
def test_a_calibration_records_whether_the_lab_gave_its_guests_huge_pages(
    tmp_path: Path, extra: str, expected: bool
) -> None:
    from livemig.calibration.run import lab_hugepages

    inv = fake_inventory(tmp_path)
    inv.write_text(inv.read_text() + extra)
    assert lab_hugepages(inv) is expected
    hosts = tmp_path / "hosts.yml"  # real hosts: an Ansible inventory with no lab record
    hosts.write_text("all:\n  children:\n    kvm_hosts:\n      hosts:\n"
                     + "".join(f"        kvm{i}: {{libvirt_uri: 'qemu+ssh://root@kvm{i}/system',"
                               " storage: shared, instances_path: /var/lib/libvirt/instances}\n"
                               for i in (1, 2)))
    assert lab_hugepages(hosts) is None
