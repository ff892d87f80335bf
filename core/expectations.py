"""A scenario's ``expect:`` section: what a run of it must show, and the verdicts.

:func:`read_expectations` turns the ``expect:`` node of a scenario file into frozen
:class:`Expectations` (every check keeps its line); :func:`evaluate` compares them with a
:class:`~livemig.core.runner.RunResult` and returns one :class:`Verdict` per check. The
numbers are those ``summary.json`` reports (completed migrations' ``total_time_s`` and
``downtime_ms``, every migration's ``data_transferred_bytes``, ``outcomes``, ``invariants``).

Schema (every part optional)::

    expect:
      instances:                 a VM name or a glob (vm-*, web-0[1-4]) -> fields; every
        "vm-*": {status: completed, error: null, host: node-2, vm_state: active}
                                 matching VM must have them. status, error: of the VM's last
                                 migration (error: an exception name, null = none); host,
                                 vm_state: its final record. Names and globs must match VMs.
      outcomes: {completed: 3, error: 1, total: 4}   migrations by status (exact counts;
                                 total = all migrations; statuses not written are not checked)
      stats:                     "[AGGREGATE] METRIC OP VALUE", VALUE in the metric's unit
        - p95 total_time_s < 40s
        - max downtime_ms <= 300ms
        - sum data_transferred_bytes < 2TB
        - count total_time_s == 9
        - sim_time_s < 10min
      invariants: {violations: 0, unverifiable: 0}

* Metrics (as in summary.json): ``total_time_s`` and ``downtime_ms`` of the completed
  migrations (durations), ``data_transferred_bytes`` of every migration (sizes, none = 0),
  each with an aggregate ``min max mean p50 p95 p99 sum count``; ``sim_time_s`` of the run
  (a duration, no aggregate). Comparators ``< <= > >= ==``; ``count`` takes a bare integer.
  An aggregate of no values (``max`` with no completed migration) fails; ``sum`` and
  ``count`` of none are 0. Percentiles interpolate linearly, as summary.json's ``p95``.
* ``invariants.violations: 0`` is always checked, written or not, and may only be written
  as 0: no expectation accepts a broken invariant. ``unverifiable`` (checks that could not
  be made, e.g. an unreachable host) is only checked when written.

>>> from livemig.core.yaml_nodes import Field, compose
>>> node = compose('stats: ["p95 total_time_s < 40s"]', "x.yaml")
>>> expect = read_expectations(Field(node, "expect", "x.yaml"), hosts=[], vms=[])
>>> expect.stats[0].aggregate, expect.stats[0].metric, expect.stats[0].op, expect.stats[0].value
('p95', 'total_time_s', '<', 40.0)
>>> [c.describe() for c in expect.invariants]
['invariants.violations == 0 (implied)']
"""

from __future__ import annotations

import fnmatch
import math
import operator
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from . import errors
from .model import MigrationStatus, VmState
from .units import UnitError, format_bytes, parse_bytes, parse_duration
from .yaml_nodes import TAG, Field, Mapping, did_you_mean, show

if TYPE_CHECKING:
    from .runner import RunResult

__all__ = [
    "AGGREGATES",
    "COMPARATORS",
    "METRICS",
    "CountCheck",
    "Expectations",
    "InstanceCheck",
    "InvariantCheck",
    "StatCheck",
    "Verdict",
    "evaluate",
    "read_expectations",
    "verdicts_block",
]

COMPARATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
}
AGGREGATES = ("min", "max", "mean", "p50", "p95", "p99", "sum", "count")
INSTANCE_FIELDS = ("status", "error", "host", "vm_state")
TOTAL = "total"  # outcomes: every migration


@dataclass(frozen=True)
class Metric:
    """A number ``summary.json`` reports: its kind (unit parser) and the unit it shows."""

    kind: str  # duration | size
    unit: str  # as in summary.json: s, ms, B
    factor: float  # base units (s, bytes) per shown unit
    per_migration: bool  # needs an aggregate


METRICS: dict[str, Metric] = {
    "total_time_s": Metric("duration", "s", 1.0, True),
    "downtime_ms": Metric("duration", "ms", 1e-3, True),
    "data_transferred_bytes": Metric("size", "B", 1.0, True),
    "sim_time_s": Metric("duration", "s", 1.0, False),
}
_PARSERS: dict[str, Callable[[str], float]] = {"duration": parse_duration, "size": parse_bytes}
_OPERATOR = re.compile(r"[<>=!]+")
_ERROR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GLOB_CHARS = re.compile(r"[*?\[]")
_SHOW_NAMES = 5  # instances named in a failed instance verdict


def _nova_errors() -> list[str]:
    """The names of the flow's exceptions (core/errors.py), for typo hints."""
    names, todo = [], [errors.NovaException]
    while todo:
        cls = todo.pop()
        names.append(cls.__name__)
        todo.extend(cls.__subclasses__())
    return sorted(names)


# -- the checks ------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceCheck:
    """One field of every VM that ``pattern`` names; ``value`` None = no error."""

    pattern: str
    field: str  # one of INSTANCE_FIELDS
    value: str | None
    line: int

    def describe(self) -> str:
        return f"instances.{self.pattern}.{self.field} == {_text(self.value)}"


@dataclass(frozen=True)
class CountCheck:
    """The number of migrations with ``status`` (a MigrationStatus value or ``total``)."""

    status: str
    count: int
    line: int

    def describe(self) -> str:
        return f"outcomes.{self.status} == {self.count}"


@dataclass(frozen=True)
class StatCheck:
    """``[aggregate] metric op value``; ``value`` in base units (s, bytes), as written in
    ``text``."""

    aggregate: str | None
    metric: str
    op: str
    value: float
    text: str
    line: int

    def describe(self) -> str:
        return f"stats: {self.text}"


@dataclass(frozen=True)
class InvariantCheck:
    """``invariants.<what> == count``; line 0 when implied."""

    what: str  # violations | unverifiable
    count: int
    line: int = 0

    def describe(self) -> str:
        return f"invariants.{self.what} == {self.count}" + ("" if self.line else " (implied)")


IMPLIED = InvariantCheck("violations", 0)


@dataclass(frozen=True)
class Expectations:
    instances: tuple[InstanceCheck, ...] = ()
    outcomes: tuple[CountCheck, ...] = ()
    stats: tuple[StatCheck, ...] = ()
    invariants: tuple[InvariantCheck, ...] = (IMPLIED,)


@dataclass(frozen=True)
class Verdict:
    """One check against one run: ``met``, and what the run showed (``actual``)."""

    expectation: str
    line: int  # 0: implied
    met: bool
    actual: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.expectation}: {'met' if self.met else 'FAILED'} (got {self.actual})"


def _text(value: str | None) -> str:
    return "null" if value is None else value


# -- reading ---------------------------------------------------------------------------


def read_expectations(f: Field, *, hosts: Collection[str], vms: Sequence[str]) -> Expectations:
    """The ``expect:`` mapping of a scenario whose hosts and VMs are given."""
    m = f.mapping(("instances", "outcomes", "stats", "invariants"))
    instances = m.get("instances")
    outcomes = m.get("outcomes")
    stats = m.get("stats")
    invariants = m.get("invariants")
    return Expectations(
        instances=() if instances is None else _instances(instances, hosts, vms),
        outcomes=() if outcomes is None else _outcomes(outcomes),
        stats=() if stats is None else tuple(_stat(item) for _, item in stats.items(
            "a list of statistics such as 'p95 total_time_s < 40s'")),
        invariants=(IMPLIED,) if invariants is None else _invariants(invariants),
    )


def _keys(f: Field, expected: str) -> Mapping:
    """A mapping whose keys are free (names, globs), checked as strings without duplicates."""
    f.check_tag(expected)
    if not isinstance(f.node, MappingNode):
        f.wrong(expected)
    return f.mapping(tuple(_written_keys(f.node, set())), expected)


def _written_keys(node: MappingNode, seen: set[int]) -> Iterator[str]:
    """The keys of ``node`` and of the mappings it merges (``<<: *anchor``)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    for key, value in node.value:
        if key.tag == TAG + "merge":
            for source in value.value if isinstance(value, SequenceNode) else [value]:
                if isinstance(source, MappingNode):
                    yield from _written_keys(source, seen)
        elif isinstance(key, ScalarNode):
            yield key.value


def _instances(f: Field, hosts: Collection[str], vms: Sequence[str]) -> tuple[InstanceCheck, ...]:
    checks: list[InstanceCheck] = []
    entries = _keys(f, "a mapping of VM names or globs to {status, error, host, vm_state}")
    for pattern in entries.entries:
        where = entries.key_field(pattern)
        if _GLOB_CHARS.search(pattern):
            if not any(fnmatch.fnmatchcase(vm, pattern) for vm in vms):
                where.fail(f"the glob {show(pattern)} matches no VM; expected a pattern "
                           "matching VM names")
        elif pattern not in vms:
            where.fail(f"unknown VM {show(pattern)}{did_you_mean(pattern, vms)}; expected a VM "
                       "defined under vms, or a glob")
        entry_field = entries.get(pattern)
        assert entry_field is not None
        entry = entry_field.mapping(INSTANCE_FIELDS)
        if not entry.entries:
            entry_field.fail(f"no fields; expected at least one of {', '.join(INSTANCE_FIELDS)}")
        for name in INSTANCE_FIELDS:
            value_field = entry.get(name)
            if value_field is not None:
                value = _instance_value(name, value_field, hosts)
                checks.append(InstanceCheck(pattern, name, value, value_field.line))
    return tuple(checks)


def _instance_value(name: str, f: Field, hosts: Collection[str]) -> str | None:
    if name == "status":
        return _one_of(f, [s.value for s in MigrationStatus], "migration status")
    if name == "vm_state":
        return _one_of(f, [s.value for s in VmState], "vm_state")
    if name == "host":
        host = f.text("a host name")
        if host not in hosts:
            f.fail(f"unknown host {show(host)}{did_you_mean(host, hosts)}; expected a host "
                   "defined under hosts")
        return host
    error = f.text("an exception name such as NoValidHost, or null for none", null=True)
    if error is not None:
        known = _nova_errors()
        if not _ERROR_NAME.fullmatch(error):
            f.fail(f"{show(error)} is not an exception name; expected a name such as "
                   "NoValidHost, or null for none")
        if error not in known and (hint := did_you_mean(error, known)):
            f.fail(f"unknown error {show(error)}{hint}; expected an exception name such as "
                   "NoValidHost, or null for none")
    return error


def _one_of(f: Field, names: list[str], what: str) -> str:
    value = f.text(f"one of {', '.join(names)}")
    if value not in names:
        f.fail(f"unknown {what} {show(value)}{did_you_mean(value, names)}; "
               f"expected one of {', '.join(names)}")
    return value


def _outcomes(f: Field) -> tuple[CountCheck, ...]:
    statuses = (*(s.value for s in MigrationStatus), TOTAL)
    m = f.mapping(statuses, "a mapping of migration statuses (or total) to counts")
    return tuple(
        CountCheck(status, value_field.integer(0), value_field.line)
        for status in statuses if (value_field := m.get(status)) is not None
    )


def _invariants(f: Field) -> tuple[InvariantCheck, ...]:
    m = f.mapping(("violations", "unverifiable"))
    checks = [IMPLIED]
    violations = m.get("violations")
    if violations is not None:
        if violations.integer(0) != 0:
            violations.fail("only 0 may be written: every run must keep every invariant; "
                            "expected 0")
        checks = [InvariantCheck("violations", 0, violations.line)]
    unverifiable = m.get("unverifiable")
    if unverifiable is not None:
        checks.append(InvariantCheck("unverifiable", unverifiable.integer(0), unverifiable.line))
    return tuple(checks)


def _stat(f: Field) -> StatCheck:
    """``"p95 total_time_s < 40s"`` -> a :class:`StatCheck` (base units)."""
    form = "'[AGGREGATE] METRIC OP VALUE' such as 'p95 total_time_s < 40s'"
    text = f.text(f"a statistic {form}")
    op_match = _OPERATOR.search(text)
    if op_match is None:
        f.fail(f"{show(text)} has no comparator; expected {form}, OP one of "
               f"{', '.join(COMPARATORS)}")
    op = op_match.group()
    if op not in COMPARATORS:
        guess = {"=": "==", "=<": "<=", "=>": ">="}.get(op)
        hint = f" (did you mean {show(guess)}?)" if guess else ""
        f.fail(f"unknown comparator {show(op)}{hint}; expected one of {', '.join(COMPARATORS)}")
    words = text[: op_match.start()].split()
    written = text[op_match.end():].strip()
    if not 1 <= len(words) <= 2 or not written:
        f.fail(f"{show(text)} is not a statistic; expected {form}")
    metric_name = words[-1]
    if metric_name not in METRICS:
        f.fail(f"unknown metric {show(metric_name)}{did_you_mean(metric_name, METRICS)}; "
               f"expected one of {', '.join(METRICS)}")
    metric = METRICS[metric_name]
    aggregate = words[0] if len(words) == 2 else None
    if aggregate is not None and aggregate not in AGGREGATES:
        f.fail(f"unknown aggregate {show(aggregate)}{did_you_mean(aggregate, AGGREGATES)}; "
               f"expected one of {', '.join(AGGREGATES)}")
    if metric.per_migration and aggregate is None:
        f.fail(f"{metric_name} is one number per migration; expected an aggregate before it, "
               f"one of {', '.join(AGGREGATES)}")
    if not metric.per_migration and aggregate is not None:
        f.fail(f"{metric_name} is one number per run; expected no aggregate before it")
    if aggregate == "count":
        if not written.isdigit():
            f.fail(f"{show(written)} is not a count; expected a whole number >= 0")
        value = float(int(written))
    else:
        try:
            value = float(_PARSERS[metric.kind](written))
        except UnitError as err:
            f.fail(f"{show(written)} {err.problem}; expected {err.expected or 'a ' + metric.kind}"
                   f" for {metric_name}")
    normal = " ".join([*words, op, written])
    return StatCheck(aggregate, metric_name, op, value, normal, f.line)


# -- evaluating ------------------------------------------------------------------------


def evaluate(expectations: Expectations | None, result: RunResult) -> list[Verdict]:
    """One verdict per check, in the order: instances, outcomes, stats, invariants.

    ``None`` (a scenario without ``expect:``) checks the implied invariants only.
    """
    expect = expectations if expectations is not None else Expectations()
    verdicts = [_instance_verdict(c, result) for c in expect.instances]
    verdicts += [_count_verdict(c, result) for c in expect.outcomes]
    verdicts += [_stat_verdict(c, result) for c in expect.stats]
    verdicts += [_invariant_verdict(c, result) for c in expect.invariants]
    return verdicts


def _instance_verdict(check: InstanceCheck, result: RunResult) -> Verdict:
    records = {i.name: i for i in result.store.instances()}
    last = {m.instance: m for m in result.store.migrations()}  # in request order
    names = [name for name in records if fnmatch.fnmatchcase(name, check.pattern)]
    if not names:
        return Verdict(check.describe(), check.line, False, "no VM matches")
    got: dict[str, str] = {}
    for name in names:
        migration = last.get(name)
        if check.field == "host":
            got[name] = records[name].host
        elif check.field == "vm_state":
            got[name] = records[name].vm_state.value
        elif migration is None:
            got[name] = "no migration" if check.field == "status" else "null"
        elif check.field == "status":
            got[name] = migration.status.value
        else:
            got[name] = _text(migration.error)
    wrong = [name for name in names if got[name] != _text(check.value)]
    if not wrong:
        value = got[names[0]]
        actual = value if len(names) == 1 else f"{value} for all {len(names)} VMs"
        return Verdict(check.describe(), check.line, True, actual)
    shown = ", ".join(f"{name}: {got[name]}" for name in wrong[:_SHOW_NAMES])
    if len(wrong) > _SHOW_NAMES:
        shown += f", ... {len(wrong) - _SHOW_NAMES} more"
    if len(names) == 1:
        shown = got[names[0]]
    else:
        shown = f"{len(wrong)} of {len(names)} VMs differ: {shown}"
    return Verdict(check.describe(), check.line, False, shown)


def _count_verdict(check: CountCheck, result: RunResult) -> Verdict:
    migrations = result.store.migrations()
    count = len(migrations) if check.status == TOTAL else sum(
        1 for m in migrations if m.status.value == check.status)
    return Verdict(check.describe(), check.line, count == check.count, str(count))


def metric_values(metric: str, result: RunResult) -> list[float]:
    """The values of a metric in base units (s, bytes), as summary.json computes them."""
    migrations = result.store.migrations()
    done = [m for m in migrations if m.status is MigrationStatus.COMPLETED]
    if metric == "total_time_s":
        return [float(m.total_time) for m in done if m.total_time is not None]
    if metric == "downtime_ms":
        return [float(m.downtime) for m in done if m.downtime is not None]
    if metric == "data_transferred_bytes":
        return [float(m.data_transferred or 0) for m in migrations]
    if metric == "sim_time_s":
        return [float(result.sim_time)]
    raise ValueError(f"unknown metric {metric!r}")


def aggregate(name: str, values: Sequence[float]) -> float | None:
    """``name`` of ``values`` (None when it needs values and there are none).

    >>> aggregate("p50", [1.0, 2.0, 3.0, 4.0]), aggregate("sum", []), aggregate("max", [])
    (2.5, 0.0, None)
    >>> aggregate("p95", [0.0, 10.0]), aggregate("count", [5.0, 6.0]), aggregate("mean", [1, 2])
    (9.5, 2.0, 1.5)
    """
    if name == "count":
        return float(len(values))
    if name == "sum":
        return math.fsum(values)
    if not values:
        return None
    if name == "min":
        return float(min(values))
    if name == "max":
        return float(max(values))
    if name == "mean":
        return math.fsum(values) / len(values)
    from .results import percentile  # summary.json's percentile (matplotlib: imported late)

    return percentile(values, float(name[1:]))


def _stat_verdict(check: StatCheck, result: RunResult) -> Verdict:
    metric = METRICS[check.metric]
    values = metric_values(check.metric, result)
    value = values[0] if check.aggregate is None else aggregate(check.aggregate, values)
    if value is None:
        what = "completed migrations" if check.metric != "data_transferred_bytes" else (
            "migrations")
        return Verdict(check.describe(), check.line, False, f"no {what} to take it over")
    met = COMPARATORS[check.op](value, check.value)
    if check.aggregate == "count":
        shown = f"{int(value)}"
    elif metric.kind == "size":
        shown = f"{value:.0f} B ({format_bytes(value)})"
    else:
        shown = f"{value / metric.factor:.6g} {metric.unit}"
    if check.aggregate not in (None, "count"):
        shown += f" of {len(values)}"
    return Verdict(check.describe(), check.line, met, shown)


def _invariant_verdict(check: InvariantCheck, result: RunResult) -> Verdict:
    report = result.invariants
    found = report.violations if check.what == "violations" else report.unverifiable
    actual = str(len(found))
    if found:
        actual += ": " + "; ".join(str(v) for v in found[:_SHOW_NAMES])
        if len(found) > _SHOW_NAMES:
            actual += f"; ... {len(found) - _SHOW_NAMES} more"
    return Verdict(check.describe(), check.line, len(found) == check.count, actual)


def verdicts_block(verdicts: Iterable[Verdict]) -> dict[str, Any]:
    """The ``expectations`` block of summary.json: counts and one entry per check."""
    details = [
        {"expectation": v.expectation, "line": v.line, "met": v.met, "actual": v.actual}
        for v in verdicts
    ]
    met = sum(1 for d in details if d["met"])
    return {"met": met, "failed": len(details) - met, "details": details}
