"""A scenario's ``expect:`` section: reading it (file:line errors) and evaluating it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from livemig.core.expectations import (
    Expectations,
    InstanceCheck,
    evaluate,
    verdicts_block,
)
from livemig.core.invariants import InvariantReport, Violation
from livemig.core.runner import RunResult, run_scenario
from livemig.core.scenario import ScenarioError, load_scenario, parse_scenario

# vm-1 migrates to b (completes), vm-2 to itself (UnableToMigrateToSelf), vm-3 stays
BASE = """\
name: two-moves
hosts:
  - {name: a, ram: 64GiB, vcpus: 8}
  - {name: b, ram: 64GiB, vcpus: 8}
vms:
  - {prefix: vm-, count: 3, host: a, ram: 4GiB, used_memory: 1GiB, dirty_rate: 10MiB/s}
events:
  - {at: 0s, live_migrate: {instance: vm-1, dest: b}}
  - {at: 1s, live_migrate: {instance: vm-2, dest: a}}
"""
EXPECT_LINE = BASE.count("\n") + 1  # the line of `expect:` when appended to BASE


def with_expect(section: str) -> str:
    return BASE + "expect:\n" + section


def load_error(section: str) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(with_expect(section), "s.yaml")
    return str(info.value)


@pytest.fixture(scope="module")
def run() -> RunResult:
    return run_scenario(parse_scenario(BASE, "s.yaml"))


def verdicts(section: str, result: RunResult) -> list[tuple[str, bool, str]]:
    expect = parse_scenario(with_expect(section), "s.yaml").expect
    return [(v.expectation, v.met, v.actual) for v in evaluate(expect, result)]


# -- reading -----------------------------------------------------------------------------


def test_a_scenario_without_expect_has_none_and_the_implied_invariant_is_still_checked(
    run: RunResult,
) -> None:
    assert parse_scenario(BASE, "s.yaml").expect is None
    assert [(v.expectation, v.met) for v in evaluate(None, run)] == [
        ("invariants.violations == 0 (implied)", True)]


def test_every_part_is_read_with_its_line() -> None:
    expect = parse_scenario(with_expect(
        "  instances:\n"
        "    vm-1: {status: completed, error: null, host: b, vm_state: active}\n"
        "  outcomes: {completed: 1, error: 1, total: 2}\n"
        "  stats:\n"
        "    - p95 total_time_s < 40s\n"
        "    - max downtime_ms<=300ms\n"
        "    - sum data_transferred_bytes < 2TB\n"
        "    - count total_time_s == 1\n"
        "    - sim_time_s >= 1s\n"
        "  invariants: {violations: 0, unverifiable: 0}\n"), "s.yaml").expect
    assert expect is not None
    line = EXPECT_LINE
    assert [(c.field, c.value, c.line) for c in expect.instances] == [
        ("status", "completed", line + 2), ("error", None, line + 2), ("host", "b", line + 2),
        ("vm_state", "active", line + 2)]
    assert [(c.status, c.count) for c in expect.outcomes] == [
        ("completed", 1), ("error", 1), ("total", 2)]
    assert [(s.aggregate, s.metric, s.op, s.value, s.line) for s in expect.stats] == [
        ("p95", "total_time_s", "<", 40.0, line + 5),
        ("max", "downtime_ms", "<=", 0.3, line + 6),
        ("sum", "data_transferred_bytes", "<", 2e12, line + 7),
        ("count", "total_time_s", "==", 1.0, line + 8),
        (None, "sim_time_s", ">=", 1.0, line + 9)]
    assert expect.stats[1].text == "max downtime_ms <= 300ms"
    assert [(c.what, c.count) for c in expect.invariants] == [
        ("violations", 0), ("unverifiable", 0)]


@pytest.mark.parametrize(("section", "message"), [
    ("  outcome: {completed: 1}\n",
     "s.yaml:{}: expect: unknown key 'outcome' (did you mean 'outcomes'?); expected one of "
     "instances, outcomes, stats, invariants"),
    ("  instances:\n    vm-1: {status: complete}\n",
     "s.yaml:{}: expect.instances.vm-1.status: unknown migration status 'complete' (did you "
     "mean 'completed'?); expected one of accepted,"),
    ("  instances:\n    vm-1: {state: active}\n",
     "s.yaml:{}: expect.instances.vm-1: unknown key 'state'"),
    ("  instances:\n    vm-9: {status: completed}\n",
     "s.yaml:{}: expect.instances.vm-9: unknown VM 'vm-9' (did you mean 'vm-3'?)"),
    ("  instances:\n    'web-*': {status: completed}\n",
     "s.yaml:{}: expect.instances.web-*: the glob 'web-*' matches no VM"),
    ("  instances:\n    vm-1: {host: c}\n",
     "s.yaml:{}: expect.instances.vm-1.host: unknown host 'c'"),
    ("  instances:\n    vm-1: {error: NoValidHosts}\n",
     "s.yaml:{}: expect.instances.vm-1.error: unknown error 'NoValidHosts' (did you mean "
     "'NoValidHost'?)"),
    ("  instances:\n    vm-1: {}\n", "s.yaml:{}: expect.instances.vm-1: no fields"),
    ("  outcomes: {done: 1}\n", "s.yaml:{}: expect.outcomes: unknown key 'done'"),
    ("  outcomes: {completed: -1}\n", "s.yaml:{}: expect.outcomes.completed: -1 is out"),
    ("  stats:\n    - p95 total_time_s < 40\n",
     "s.yaml:{}: expect.stats[0]: '40' is not a duration (no unit); expected a number and "
     "one of us, ms, s, min, h for total_time_s"),
    ("  stats:\n    - sum data_transferred_bytes < 2 TBs\n",
     "s.yaml:{}: expect.stats[0]: '2 TBs' is not a size; expected"),
    ("  stats:\n    - p95 total_time_s =< 40s\n",
     "s.yaml:{}: expect.stats[0]: unknown comparator '=<' (did you mean '<='?); expected "
     "one of <, <=, >, >=, =="),
    ("  stats:\n    - p95 total_time_s 40s\n",
     "s.yaml:{}: expect.stats[0]: 'p95 total_time_s 40s' has no comparator"),
    ("  stats:\n    - p95 total_time < 40s\n",
     "s.yaml:{}: expect.stats[0]: unknown metric 'total_time' (did you mean 'total_time_s'?)"),
    ("  stats:\n    - p90 total_time_s < 40s\n",
     "s.yaml:{}: expect.stats[0]: unknown aggregate 'p90'"),
    ("  stats:\n    - total_time_s < 40s\n",
     "s.yaml:{}: expect.stats[0]: total_time_s is one number per migration; expected an "
     "aggregate"),
    ("  stats:\n    - max sim_time_s < 40s\n",
     "s.yaml:{}: expect.stats[0]: sim_time_s is one number per run; expected no aggregate"),
    ("  stats:\n    - count total_time_s == 1s\n",
     "s.yaml:{}: expect.stats[0]: '1s' is not a count"),
    ("  stats: p95 total_time_s < 40s\n",
     "s.yaml:{}: expect.stats: 'p95 total_time_s < 40s' is not valid here; expected a list"),
    ("  invariants: {violations: 1}\n",
     "s.yaml:{}: expect.invariants.violations: only 0 may be written"),
    ("  invariants: {violation: 0}\n",
     "s.yaml:{}: expect.invariants: unknown key 'violation' (did you mean 'violations'?)"),
])
def test_a_bad_expectation_is_a_one_line_error_with_file_and_line(
    section: str, message: str
) -> None:
    error = load_error(section)  # each section's problem is on its last line
    assert error.startswith(message.format(EXPECT_LINE + section.count("\n"))), error
    assert "\n" not in error


def test_instances_may_be_merged_from_an_anchor() -> None:
    text = BASE.replace("name: two-moves", "name: two-moves\nx-common: &common\n"
                        "  vm-3: {status: completed}") + "expect:\n  instances: {<<: *common}\n"
    expect = parse_scenario(text, "s.yaml").expect
    assert expect is not None
    assert [(c.pattern, c.field, c.value) for c in expect.instances] == [
        ("vm-3", "status", "completed")]


def test_an_empty_expect_is_an_error() -> None:
    assert load_error("").startswith(
        f"s.yaml:{EXPECT_LINE}: expect: an empty value is not valid here; expected a mapping")


# -- evaluating --------------------------------------------------------------------------


def test_instance_expectations_are_met_or_name_the_instances_that_differ(run: RunResult) -> None:
    got = verdicts(
        "  instances:\n"
        "    vm-1: {status: completed, error: null, host: b, vm_state: active}\n"
        "    vm-2: {status: error, error: UnableToMigrateToSelf, host: a}\n"
        "    'vm-*': {status: completed, vm_state: active}\n"
        "    vm-3: {status: completed, error: null}\n", run)
    assert got[:7] == [
        ("instances.vm-1.status == completed", True, "completed"),
        ("instances.vm-1.error == null", True, "null"),
        ("instances.vm-1.host == b", True, "b"),
        ("instances.vm-1.vm_state == active", True, "active"),
        ("instances.vm-2.status == error", True, "error"),
        ("instances.vm-2.error == UnableToMigrateToSelf", True, "UnableToMigrateToSelf"),
        ("instances.vm-2.host == a", True, "a"),
    ]
    assert got[7:] == [
        ("instances.vm-*.status == completed", False,
         "2 of 3 VMs differ: vm-2: error, vm-3: no migration"),
        ("instances.vm-*.vm_state == active", True, "active for all 3 VMs"),
        ("instances.vm-3.status == completed", False, "no migration"),
        ("instances.vm-3.error == null", True, "null"),  # no migration: no error
        ("invariants.violations == 0 (implied)", True, "0"),
    ]


def test_the_last_migration_of_an_instance_is_the_one_checked(run: RunResult) -> None:
    first, second = run.store.migrations()
    twice = dataclasses.replace(run, store=_Store(run.store, [
        first, dataclasses.replace(second, instance="vm-1")]))
    (verdict, _) = evaluate(Expectations(instances=(
        InstanceCheck("vm-1", "status", "completed", 1),)), twice)
    assert (verdict.met, verdict.actual) == (False, "error")


def test_a_pattern_matching_no_instance_fails_clearly(run: RunResult) -> None:
    (verdict, _) = evaluate(Expectations(instances=(
        InstanceCheck("db-*", "status", "completed", 4),)), run)
    assert (verdict.met, verdict.actual, verdict.line) == (False, "no VM matches", 4)


def test_outcomes_are_exact_counts(run: RunResult) -> None:
    assert verdicts("  outcomes: {completed: 1, error: 1, cancelled: 0, total: 2}\n", run)[:4] == [
        ("outcomes.completed == 1", True, "1"), ("outcomes.error == 1", True, "1"),
        ("outcomes.cancelled == 0", True, "0"), ("outcomes.total == 2", True, "2")]
    assert verdicts("  outcomes: {completed: 2, total: 3}\n", run)[:2] == [
        ("outcomes.completed == 2", False, "1"), ("outcomes.total == 3", False, "2")]


def test_stats_use_the_numbers_of_summary_json(run: RunResult) -> None:
    from livemig.core.results import summarize

    summary = summarize(run)
    total = summary["completed_total_time_s"]["max"]
    downtime_ms = summary["completed_downtime_ms"]["max"]
    data = summary["data_transferred_bytes"]
    assert total > 0 and downtime_ms > 0 and data > 0
    got = verdicts(
        "  stats:\n"
        f"    - max total_time_s == {total!r}s\n"
        f"    - p95 total_time_s < {total!r}s\n"
        f"    - p50 downtime_ms <= {downtime_ms!r}ms\n"
        f"    - mean downtime_ms > {downtime_ms!r}ms\n"
        f"    - sum data_transferred_bytes == {data}B\n"
        f"    - min data_transferred_bytes >= 1B\n"  # vm-2's rejected migration: 0 bytes
        "    - count total_time_s == 1\n"
        "    - p99 total_time_s >= 0s\n"
        f"    - sim_time_s >= {summary['sim_time_s']!r}s\n", run)
    assert [(name.removeprefix("stats: ").split()[0], met) for name, met, _ in got[:-1]] == [
        ("max", True), ("p95", False), ("p50", True), ("mean", False), ("sum", True),
        ("min", False), ("count", True), ("p99", True), ("sim_time_s", True)]
    assert got[0][2] == f"{total:.6g} s of 1"
    assert got[4][2].startswith(f"{data} B (")
    assert got[5][2] == "0 B (0 B) of 2"
    assert got[6][2] == "1"


def test_an_aggregate_of_no_values_fails_but_sum_and_count_are_zero() -> None:
    result = run_scenario(parse_scenario(BASE.replace("dest: b", "dest: a"), "s.yaml"))
    got = verdicts("  stats:\n    - max downtime_ms < 1s\n    - count downtime_ms == 0\n"
                   "    - sum total_time_s == 0s\n", result)
    assert got[:3] == [
        ("stats: max downtime_ms < 1s", False, "no completed migrations to take it over"),
        ("stats: count downtime_ms == 0", True, "0"),
        ("stats: sum total_time_s == 0s", True, "0 s of 0")]


def test_a_broken_invariant_fails_even_when_not_written(run: RunResult) -> None:
    broken = dataclasses.replace(run, invariants=InvariantReport(violations=(
        Violation(rule="placement", subject="vm-1", detail="runs on a and b"),)))
    (verdict,) = evaluate(None, broken)
    assert (verdict.met, verdict.line) == (False, 0)
    assert verdict.actual == "1: placement: vm-1: runs on a and b"
    block = verdicts_block(evaluate(None, broken))
    assert (block["met"], block["failed"]) == (0, 1)


def test_every_shipped_scenario_loads_with_its_expectations() -> None:
    from livemig.consolidation.commands import is_consolidation

    shipped = sorted(p for p in (Path(__file__).resolve().parents[1] / "scenarios").glob("*.yaml")
                     if not is_consolidation(p.read_text()))  # their own: test_consolidation
    assert shipped
    for path in shipped:
        expect = load_scenario(path).expect
        assert expect is not None and (expect.instances or expect.outcomes), path


class _Store:
    """A run's store with other migration records (the rest delegated)."""

    def __init__(self, store: object, migrations: list[object]) -> None:
        self._store, self._migrations = store, migrations

    def migrations(self) -> list[object]:
        return self._migrations

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


def test_doctests() -> None:
    import doctest

    from livemig.core import check_suite, expectations

    for module in (expectations, check_suite):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
