"""The cells of a sweep: each base scenario with one value of every axis, per seed.

:func:`resolve` applies the axes to each base scenario's YAML nodes
(:func:`livemig.sweep.paths.set_path`) and loads the result with the scenario loader,
so whatever the loader accepts can be swept (a policy field added tomorrow too) and
every cell is checked before any runs. Problems are :class:`SweepError` at the sweep
file's line:

* an axis path that is not a field of a scenario: at the axis' key;
* a value the scenario loader refuses: at the value;
* a combination it refuses (say, VMs that no longer fit their hosts): at ``axes:``;
* two cells with the same identity (two spellings of one value): at ``axes:``.

A cell's identity (:func:`cell_key`) is a hash of its resolved scenario (every field
of the loaded :class:`~livemig.core.model.Scenario` but the file it came from) and its
seed: what decides the run's results, so a finished cell is never run again.

The scenario a cell runs is loaded from the YAML of its base with the axes applied, so
the lines of its ``expect:`` verdicts in ``summary.json`` are those of that text, not of
the base file.

>>> from livemig.core.model import HostSpec, Scenario
>>> a = Scenario(name="a", hosts=(HostSpec(name="h", ram=1, vcpus=1, disk=0),), vms=())
>>> cell_key(a, 1) == cell_key(a, 1), cell_key(a, 1) == cell_key(a, 2), len(cell_key(a, 1))
(True, False, 16)
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import Node, ScalarNode

from livemig.core.yaml_nodes import TAG, ScenarioError, compose, decode_yaml_text, show

from . import kinds
from .paths import PathError, set_path
from .spec import Axis, AxisValue, ScenarioRef, Sweep, SweepError

DRIVER = "sim"  # sweeps run on the simulator
KEY_DIGITS = 16


@dataclass(frozen=True)
class Cell:
    """One run of a sweep."""

    key: str  # identity: cell_key(scenario, seed, kind)
    scenario_file: str  # the base scenario as written in the sweep file
    seed: int  # the run's seed
    axes: tuple[tuple[str, Any], ...]  # (path, value as written) per axis
    scenario: Any  # the loaded scenario (a core.model.Scenario for the kind nova)
    kind: str = "nova"  # livemig.sweep.kinds


def canonical(value: Any) -> Any:
    """``value`` as plain JSON data, the same for equal values in any process (a
    function or class by its name, never by its address).

    >>> import numpy as np
    >>> canonical((1.0, {"b": {2, 1}}, None, len, np.arange(2000)))[:4]
    ['1.0', {'b': [1, 2]}, None, 'builtins.len']
    >>> len(canonical(np.arange(2000)))  # all of it, not numpy's "0 1 2 ... 1999"
    2000
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__type__": type(value).__name__,
                **{f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, Enum):
        return canonical(value.value)
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((canonical(v) for v in value), key=json.dumps)
    if isinstance(value, float):
        return repr(value)  # exact
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, bytes | bytearray):
        return hashlib.sha256(value).hexdigest()
    if hasattr(value, "tolist") and callable(value.tolist):  # a NumPy array: every element
        return canonical(value.tolist())
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"  # not its address
    if hasattr(value, "__dict__"):
        return {"__type__": type(value).__qualname__, **canonical(vars(value))}
    return repr(value)


def cell_key(scenario: Any, seed: int, kind: str = "nova") -> str:
    """The identity of a run: the first 16 hex digits of the SHA-256 of its resolved
    scenario (without ``source``, the file it came from; with what else its kind says
    the run reads, e.g. a trace's content), seed, kind and driver."""
    return _key(_scenario_text(scenario, kinds.by_name(kind)), seed)


def _scenario_text(scenario: Any, kind: Any) -> str:
    if dataclasses.is_dataclass(scenario) and any(
            f.name == "source" for f in dataclasses.fields(scenario)):
        scenario = dataclasses.replace(scenario, source="")
    data = {"kind": kind.name, "scenario": canonical(scenario),
            "reads": canonical(kind.identity(scenario))}
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _key(scenario_text: str, seed: int) -> str:
    text = f'{{"driver":"{DRIVER}","seed":{int(seed)},"scenario":{scenario_text}}}'
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_DIGITS]


def resolve(sweep: Sweep) -> list[Cell]:
    """Every cell of ``sweep``, in order: scenario, then the axes (the first varies
    slowest), then the seed. ``SweepError`` (or the base scenario's own
    ``ScenarioError``) when one cannot be made; ``OSError`` when a file cannot be read."""
    cells: list[Cell] = []
    seen: dict[str, Cell] = {}
    for ref in sweep.scenarios:
        root, kind = _base(sweep, ref)
        for combination in itertools.product(*(axis.values for axis in sweep.axes)):
            axes = tuple((axis.path, value.value)
                         for axis, value in zip(sweep.axes, combination, strict=True))
            for seed, scenario in _seeded(sweep, ref, root, kind, combination):
                text = _scenario_text(scenario, kind)
                cell = Cell(_key(text, seed), ref.written, seed, axes, scenario, kind.name)
                if cell.key in seen:
                    raise SweepError(sweep.source, sweep.axes_line, "axes",
                                     f"{_describe(seen[cell.key])} and {_describe(cell)} are the "
                                     "same run (same scenario and seed); expected distinct "
                                     "values")
                seen[cell.key] = cell
                cells.append(cell)
    return cells


def _describe(cell: Cell) -> str:
    axes = ", ".join(f"{path}={json.dumps(value)}" for path, value in cell.axes)
    return f"{cell.scenario_file} with {axes or 'no axes'}, seed {cell.seed}"


def _seeded(sweep: Sweep, ref: ScenarioRef, root: Node, kind: Any,
            combination: tuple[AxisValue, ...]) -> list[tuple[int, Any]]:
    """``(seed, scenario)`` of each seed: one scenario for all, or, for a kind whose seed
    is read with the file, one with each ``seed:`` written in."""
    if not kind.seed_in_file:
        scenario = _cell_scenario(sweep, ref, root, kind, combination)
        return [(seed, scenario) for seed in sweep.seeds or (scenario.seed,)]
    if sweep.seeds is None:
        scenario = _cell_scenario(sweep, ref, root, kind, combination)
        return [(scenario.seed, scenario)]
    out = []
    for seed in sweep.seeds:
        node = ScalarNode(TAG + "int", str(seed), root.start_mark, root.end_mark)
        out.append((seed, _cell_scenario(sweep, ref, set_path(root, "seed", node), kind,
                                         combination)))
    return out


def _base(sweep: Sweep, ref: ScenarioRef) -> tuple[Node, Any]:
    """The base scenario's YAML document and kind, after checking the scenario loads."""
    try:
        data = ref.path.read_bytes()
    except FileNotFoundError:
        raise SweepError(sweep.source, ref.line, "scenarios",
                         f"cannot read scenario {show(ref.written)} ({ref.path}): no such "
                         "file; expected a scenario file relative to the sweep file") from None
    except IsADirectoryError:
        raise SweepError(sweep.source, ref.line, "scenarios",
                         f"{show(ref.written)} ({ref.path}) is a directory; expected a "
                         "scenario file") from None
    text = decode_yaml_text(data, str(ref.path))
    kind = kinds.kind_of(text)
    kind.parse(text, str(ref.path), _stem(ref.path))  # its own errors, at its own lines
    root = compose(text, str(ref.path))
    assert root is not None  # the loader refuses an empty file
    return root, kind


def _apply(sweep: Sweep, ref: ScenarioRef, root: Node,
           pairs: tuple[tuple[Axis, AxisValue], ...]) -> Node:
    for axis, value in pairs:
        try:
            root = set_path(root, axis.path, value.node)
        except PathError as err:
            raise SweepError(sweep.source, axis.line, axis.field,
                             f"not a field of scenario {ref.written}: {err}") from None
    return root


def _load(ref: ScenarioRef, root: Node, kind: Any) -> Any:
    text = yaml.serialize(root, Dumper=yaml.SafeDumper, allow_unicode=True, width=1 << 30)
    return kind.parse(text, str(ref.path), _stem(ref.path))


def _stem(path: Path) -> str:
    return path.stem.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _cell_scenario(sweep: Sweep, ref: ScenarioRef, root: Node, kind: Any,
                   combination: tuple[AxisValue, ...]) -> Any:
    pairs = tuple(zip(sweep.axes, combination, strict=True))
    try:
        return _load(ref, _apply(sweep, ref, root, pairs), kind)
    except ScenarioError as err:
        if isinstance(err, SweepError):
            raise
        raise _blame(sweep, ref, root, kind, pairs, err) from None


def _blame(sweep: Sweep, ref: ScenarioRef, root: Node, kind: Any,
           pairs: tuple[tuple[Axis, AxisValue], ...], err: ScenarioError) -> SweepError:
    """The sweep's own error for a cell the scenario loader refused (``err``)."""
    where = f"{err.path}: {err.problem}" if err.path else err.problem
    for axis, value in pairs:  # one value alone enough to break it?
        try:
            _load(ref, _apply(sweep, ref, root, ((axis, value),)), kind)
        except ScenarioError as alone:
            if isinstance(alone, SweepError):
                return alone
            if alone.problem.startswith("unknown key") and axis.path.startswith(alone.path):
                return SweepError(sweep.source, axis.line, axis.field,
                                  f"not a field of scenario {ref.written}: {alone.problem}")
            own = f"{alone.path}: {alone.problem}" if alone.path else alone.problem
            return SweepError(sweep.source, value.line, axis.field,
                              f"{json.dumps(value.value)} is not valid for scenario "
                              f"{ref.written}: {own}")
    axes = ", ".join(f"{axis.path}={json.dumps(value.value)}" for axis, value in pairs)
    return SweepError(sweep.source, sweep.axes_line, "axes",
                      f"{axes} together are not valid for scenario {ref.written}: {where}")
