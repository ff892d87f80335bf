"""Sweep files: the YAML schema and its loader.

``load_sweep(path)`` / ``parse_sweep(text, source)`` return a :class:`Sweep` or raise
:class:`SweepError`, whose message is one line, ``FILE:LINE: FIELD: what is wrong;
expected ...``, as the scenario loader's (:mod:`livemig.core.yaml_nodes`). Which cells
the sweep makes, and whether its axes are fields of its scenarios, is
:mod:`livemig.sweep.cells`' to say (before anything runs).

Schema (``*`` required, ``=`` default)::

    name: text                 = the file name without extension
    scenarios:*                base scenario files, relative to this file (a list, or one):
                               Nova-flow scenarios, or consolidation ones (sweep/kinds.py)
      - ../scenarios/quickstart.yaml
    axes:                      (= none) field path -> its values; every combination is a
                               cell, per scenario and seed (the first axis varies slowest)
      policy.scheduler.heuristic: [weighed, first_fit, best_fit]
                               a list: any YAML values, written as in a scenario file
      policy.migration.bandwidth: {from: 100, to: 400, step: 100, unit: MiB/s}
                               a range: from, to (included when hit), step or count (> 1:
                               evenly spaced from..to); unit appended to each number
      vms[*].dirty_rate: [10MiB/s, 100MiB/s]
                               a path: KEY.KEY...; a list's entries by [INDEX], by [NAME]
                               (its name or prefix) or all with [*] (sweep/paths.py)
    seeds: [1, 2, 3]           (= each scenario's own seed) the run's seed, as `livemig run
                               --seed`; or a range {from: 1, to: 10}. To vary the scenario's
                               own seed (which also seeds random_faults), use the axis `seed`.
                               A consolidation scenario's seeds are its seed: key
                               (sweep/kinds.py)
    metrics: [outcomes, completed_downtime_ms.p95]
                               (= all) the keys of summary.json to keep: a key keeps what is
                               below it; nested keys joined with "."
    x-...: anything            ignored (a place for YAML anchors)

Decisions: an axis, a seed, a scenario or a metric written twice is an error; two axes
may not overlap (``policy.migration`` and ``policy.migration.bandwidth``); a sweep has at
most :data:`MAX_CELLS` cells.

>>> sweep = parse_sweep('''
... scenarios: [a.yaml]
... axes:
...   policy.migration.bandwidth: {from: 100, to: 300, step: 100, unit: MiB/s}
...   until: [1h, 2h]
... seeds: {from: 1, to: 3}
... ''', "demo.yaml")
>>> [v.value for v in sweep.axes[0].values], sweep.seeds, sweep.size
(['100MiB/s', '200MiB/s', '300MiB/s'], (1, 2, 3), 18)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from livemig.core.yaml_nodes import (
    TAG,
    Field,
    ScenarioError,
    compose,
    decode_yaml_text,
    integer,
    show,
)

from .paths import PathError, overlap, parse_path

MAX_CELLS = 100_000
"""The most cells a sweep may have (each is resolved, and checked, before any runs)."""
MAX_AXIS_VALUES = 10_000
_RANGE_KEYS = ("from", "to", "step", "count", "unit")
_RANGE = "a range {from: A, to: B, step: S} (or count: N instead of step), unit: U optional"


class SweepError(ScenarioError):
    """A sweep that cannot be loaded or resolved: ``FILE:LINE: FIELD: problem; expected ...``."""


@dataclass(frozen=True)
class AxisValue:
    """One value of an axis: the node put into the scenario, what the table shows."""

    node: Node
    value: Any  # a scalar as written (int, float, str, bool, None); JSON text for a collection
    line: int


@dataclass(frozen=True)
class Axis:
    path: str
    values: tuple[AxisValue, ...]
    line: int  # the line of its key

    @property
    def field(self) -> str:
        """The axis as a field of the sweep file, for messages: ``axes.<path>``."""
        return f"axes.{self.path}"


@dataclass(frozen=True)
class ScenarioRef:
    written: str  # as written in the sweep file
    path: Path  # relative to the working directory
    line: int


@dataclass(frozen=True)
class Sweep:
    name: str
    source: str
    scenarios: tuple[ScenarioRef, ...]
    axes: tuple[Axis, ...] = ()
    seeds: tuple[int, ...] | None = None  # None: each scenario's own seed
    metrics: tuple[str, ...] | None = None  # None: every key of summary.json
    axes_line: int = 1

    @property
    def size(self) -> int:
        """The number of cells."""
        return len(self.scenarios) * math.prod(len(a.values) for a in self.axes) * len(
            self.seeds or (0,))


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file (``OSError`` if it cannot be read)."""
    path = Path(path)
    data = path.read_bytes()
    text = decode_yaml_text(data, str(path), SweepError)
    return parse_sweep(text, str(path))


def parse_sweep(text: str, source: str = "<string>") -> Sweep:
    """Check the YAML ``text`` of a sweep; ``source`` names it (scenario paths are relative
    to its directory)."""
    try:
        node = compose(text, source)
    except ScenarioError as err:
        raise SweepError(err.source, err.line, err.path, err.problem) from None
    try:
        return _sweep(node, source)
    except SweepError:
        raise
    except ScenarioError as err:  # raised by the shared field readers
        raise SweepError(err.source, err.line, err.path, err.problem) from None


def _sweep(node: Node | None, source: str) -> Sweep:
    if node is None:
        raise SweepError(source, 1, "", "no content; expected a mapping with scenarios and axes")
    top = Field(node, "", source).mapping(
        ("name", "scenarios", "axes", "seeds", "metrics", "x-*"),
        "a mapping with keys scenarios, axes, seeds, metrics",
    )
    base = Path(".") if source.startswith("<") else Path(source).parent
    default_name = "sweep" if source.startswith("<") else Path(source).stem
    name = top.value("name", lambda f: f.text("a sweep name"), default_name)
    scenarios = _scenarios(top.require("scenarios", "a list of scenario files"), base)
    axes_field = top.get("axes")
    axes = () if axes_field is None else _axes(axes_field)
    seeds = top.value("seeds", _seeds, None)
    metrics = top.value("metrics", _metrics, None)
    sweep = Sweep(name=name, source=source, scenarios=scenarios, axes=axes, seeds=seeds,
                  metrics=metrics, axes_line=axes_field.line if axes_field else 1)
    if sweep.size > MAX_CELLS:
        where = axes_field or top.field
        where.fail(f"{sweep.size} cells; expected at most {MAX_CELLS} (fewer values or seeds)")
    return sweep


def _scenarios(f: Field, base: Path) -> tuple[ScenarioRef, ...]:
    expected = "a scenario file (YAML, relative to the sweep file)"
    items = [(f, f.text(expected))] if isinstance(f.node, ScalarNode) else [
        (item, item.text(expected)) for _, item in f.items("a list of scenario files")]
    if not items:
        f.fail("empty list; expected at least one scenario file")
    refs: list[ScenarioRef] = []
    for item, written in items:
        path = base / written
        if any(r.written == written for r in refs):
            item.fail(f"duplicate scenario {show(written)}; expected each scenario once")
        refs.append(ScenarioRef(written, path, item.line))
    return tuple(refs)


def _axes(f: Field) -> tuple[Axis, ...]:
    expected = "a mapping of field paths to values (a list or a range)"
    f.check_tag(expected)
    if not isinstance(f.node, MappingNode):
        f.wrong(expected)
    axes: list[Axis] = []
    for key_node, value_node in f.node.value:
        key_field = Field(key_node, f.path, f.source)
        if not isinstance(key_node, ScalarNode) or key_node.tag != TAG + "str":
            key_field.fail(f"key {key_field.describe()} is not a field path; expected a path "
                           "such as policy.scheduler.heuristic")
        path = key_node.value
        try:
            parse_path(path)
        except PathError as err:
            key_field.fail(str(err))
        for other in axes:
            if other.path == path:
                key_field.fail(f"duplicate axis {show(path)} (first at line {other.line}); "
                               "expected each field once")
            if overlap(other.path, path):
                key_field.fail(f"axis {show(path)} overlaps axis {show(other.path)} (line "
                               f"{other.line}); expected axes on separate fields")
        field = f.at(path, value_node)
        axes.append(Axis(path, _values(field), key_field.line))
    if not axes:
        f.fail("no axes; expected a mapping of field paths to values (or no axes: key)")
    return tuple(axes)


def _values(f: Field) -> tuple[AxisValue, ...]:
    if isinstance(f.node, MappingNode):
        values = _range(f)
    else:
        values = []
        for _, item in f.items(f"a list of values or {_RANGE}"):
            item.check_tag("a YAML value")
            values.append(AxisValue(item.node, _table_value(item), item.line))
    if not values:
        f.fail("empty list; expected at least one value")
    if len(values) > MAX_AXIS_VALUES:
        f.fail(f"{len(values)} values; expected at most {MAX_AXIS_VALUES}")
    seen: dict[str, int] = {}
    for value in values:
        text = json.dumps(value.value)
        if text in seen:
            raise SweepError(f.source, value.line, f.path, f"duplicate value {text} (first at "
                             f"line {seen[text]}); expected each value once")
        seen[text] = value.line
    return tuple(values)


def _table_value(f: Field) -> Any:
    """A scalar as YAML reads it; a list or mapping as JSON text."""
    if isinstance(f.node, ScalarNode):
        return f.scalar("a YAML value")
    data = yaml.safe_load(yaml.serialize(f.node))
    return json.dumps(data, sort_keys=True, default=str)


def _range(f: Field) -> list[AxisValue]:
    m = f.mapping(_RANGE_KEYS, _RANGE)
    start_f = m.require("from", _RANGE)
    stop_f = m.require("to", _RANGE)
    start, stop = start_f.number(), stop_f.number()
    which = m.only_one_of("step", "count")
    if which is None:
        f.fail(f"missing key 'step' (or 'count'); expected {_RANGE}")
    whole = all(isinstance(x.scalar("a number"), int) for x in (start_f, stop_f))
    if stop < start:
        stop_f.fail(f"{stop_f.describe()} is less than from ({start_f.describe()}); expected "
                    "to >= from")
    if which == "step":
        step_f = m.require("step", "")
        step = step_f.number(positive=True)
        whole = whole and isinstance(step_f.scalar("a number"), int)
        count = math.floor((stop - start) / step + 1e-9) + 1
        if count > MAX_AXIS_VALUES:
            step_f.fail(f"{count} values; expected at most {MAX_AXIS_VALUES}")
        numbers = [start + i * step for i in range(count)]
    else:
        count = m.require("count", "").integer(1, MAX_AXIS_VALUES)
        if count == 1 and stop != start:
            m.key_field("count").fail("1 value from a range; expected count >= 2, or to == from")
        span = (stop - start) / (count - 1) if count > 1 else 0.0
        numbers = [start + i * span for i in range(count)]
        whole = whole and all(float(n).is_integer() for n in numbers)
    unit = m.value("unit", lambda u: u.text("a unit such as MiB/s, GiB, ms"), None)
    values = []
    for number in numbers:
        number = int(round(number)) if whole else round(number, 12)
        text = _number_text(number)
        if unit is not None:
            node = ScalarNode(TAG + "str", text + unit, f.node.start_mark, f.node.end_mark)
            values.append(AxisValue(node, text + unit, f.line))
        else:
            tag = TAG + ("int" if isinstance(number, int) else "float")
            node = ScalarNode(tag, text, f.node.start_mark, f.node.end_mark)
            values.append(AxisValue(node, number, f.line))
    return values


def _number_text(number: float) -> str:
    """A number as a scenario file takes it: ``2``, ``0.25`` (never ``1e+06``).

    >>> _number_text(2), _number_text(0.25), _number_text(1e6), _number_text(1e-7)
    ('2', '0.25', '1000000', '0.0000001')
    """
    if isinstance(number, int) or float(number).is_integer():
        return str(int(number))
    text = repr(float(number))
    if "e" in text:
        text = f"{number:.15f}".rstrip("0")
    return text


def _seeds(f: Field) -> tuple[int, ...]:
    seeds: list[tuple[int, Field]] = []
    if isinstance(f.node, MappingNode):
        m = f.mapping(("from", "to", "step"), "a range of seeds {from: A, to: B}")
        start = m.require("from", "the first seed").integer(0)
        stop = m.require("to", "the last seed").integer(start)
        step = m.value("step", integer(1), 1)
        seeds = [(s, f) for s in range(start, stop + 1, step)]
    else:
        seeds = [(item.integer(0), item) for _, item in f.items(
            "a list of seeds (integers >= 0) or a range {from: A, to: B}")]
    if not seeds:
        f.fail("empty list; expected at least one seed")
    if len(seeds) > MAX_AXIS_VALUES:
        f.fail(f"{len(seeds)} seeds; expected at most {MAX_AXIS_VALUES}")
    found: set[int] = set()
    for seed, where in seeds:
        if seed in found:
            where.fail(f"duplicate seed {seed}; expected each seed once")
        found.add(seed)
    return tuple(s for s, _ in seeds)


def _metrics(f: Field) -> tuple[str, ...]:
    names: list[str] = []
    for _, item in f.items("a list of summary.json keys (nested keys joined with '.')"):
        name = item.text("a summary.json key such as outcomes.completed")
        if any(not part.strip() or part != part.strip() for part in name.split(".")):
            item.fail(f"{show(name)} is not a key path; expected keys joined with '.', such "
                      "as completed_downtime_ms.p95")
        if name in names:
            item.fail(f"duplicate metric {show(name)}; expected each metric once")
        names.append(name)
    if not names:
        f.fail("empty list; expected at least one metric (or no metrics: key for all)")
    return tuple(names)
