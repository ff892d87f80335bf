"""Consolidation scenario files: a top-level ``consolidation:`` section instead of
``hosts``/``vms``/``events``. ``livemig run``, ``validate`` and ``check`` recognise them
(:func:`is_consolidation`). Errors are ``FILE:LINE: field: problem; expected ...``.

.. code-block:: yaml

    name: planetlab-sample-lr-mmt
    seed: 1
    consolidation:
      mode: cloudsim            # the reference's accounting; default: Nova's flow, pre-copy
      trace: traces/x.csv       # one VM per row (relative to this file), types by block
      hosts: 800                # host i is host_models[i mod len(host_models)]
      host_models: [hp-ml110-g4, hp-ml110-g5]
      interval: 300s            # consolidation period and trace sample spacing
      until: 24h                # the run's limit (CloudSim's SIMULATION_LIMIT)
      policy: {overload: lr, parameter: 1.2, selection: mmt}   # placement: pabfd (or ff);
      # or {power: dvfs | npa}, or
      # {watcher: vm_workload_consolidation} / {watcher: workload_balance, threshold: 25}
      # default mode only (optional): the hosts' names (real hosts: inventory names; their
      # count is then ``hosts``), every VM's RAM instead of its type's, the dirty rate of a
      # VM at 100 % CPU (default 100MiB/s)
      host_names: [lab1, lab2, lab3]
      vm_ram: 128MiB
      dirty_rate_max: 4MiB/s
      dirty_rate_follows_cpu: false   # true: x the CPU utilisation now, not its mean
      initial_hosts: [lab1, lab1, lab1]   # where each VM starts, in trace order (else the
                                          # policy's placement at creation)
      optimality_gap: {time_limit: 1s, every: 1}   # optional: CP-SAT's bound per step
    expect:                     # METRIC OP VALUE, METRIC a key of summary.json's metrics
      - energy_kwh < 170
      - migrations >= 100

>>> text = '''
... consolidation:
...   trace: t.csv
...   policy: {overload: lr, parameter: 1.2, selection: mmt}
... expect: [energy_kwh < 1]
... '''
>>> spec = parse(text, "/tmp/x.yaml")
>>> spec.trace, spec.policy.label, spec.hosts, spec.expect[0][1:]
('/tmp/t.csv', 'LR 1.2-MMT', 800, ('energy_kwh', '<', 1.0))
>>> try:
...     parse("consolidation: {trace: t.csv, hosts: 0}", "x.yaml")
... except ValueError as err:
...     print(err)
x.yaml:1: consolidation.hosts: 0 is out of range; expected an integer >= 1 and <= 1000000
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from livemig.consolidation import overload, selection
from livemig.consolidation.cloudsim import Policy
from livemig.consolidation.commands import is_consolidation  # noqa: F401 - re-exported
from livemig.consolidation.optimality import METRICS as GAP_METRICS
from livemig.consolidation.optimality import GapOption
from livemig.consolidation.placement import PLACEMENT
from livemig.consolidation.power import MODELS
from livemig.core.yaml_nodes import (
    Field,
    ScenarioError,
    check_name,
    compose,
    did_you_mean,
    rate,
    size,
)

MODES = ("cloudsim", "default")
METRICS = ("energy_kwh", "migrations", "slatah", "pdm", "slav", "esv", "host_shutdowns",
           "sla_overall", "sla_average", "migration_time_mean_s", "vms_removed_idle",
           "active_hosts_max", "active_hosts_mean", "downtime_ms_mean", "downtime_ms_max",
           "bytes_moved", "migration_time_s_mean", "migrations_completed",
           "invariant_violations", *GAP_METRICS)
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "<": operator.lt, ">": operator.gt}
_EXPECTATION = re.compile(r"\s*([a-z_]+)\s*(<=|>=|==|<|>)\s*(\S+)\s*")
_TOP = ("name", "seed", "consolidation", "expect", "x-*")


@dataclass(frozen=True)
class ConsolidationScenario:
    name: str
    source: str
    trace: str
    policy: Policy
    mode: str = "cloudsim"
    hosts: int = 800
    host_models: tuple[str, ...] = ("hp-ml110-g4", "hp-ml110-g5")
    interval: float = 300.0
    until: float = 86_400.0
    seed: int = 1
    expect: tuple[tuple[int, str, str, float], ...] = field(default=())  # line, metric, op, v
    host_names: tuple[str, ...] = ()  # () = host-0, host-1, ...
    vm_ram: int | None = None  # bytes, every VM's (None: its type's)
    dirty_rate_max: float | None = None  # bytes/s at 100 % CPU (None: flow's default)
    initial_hosts: tuple[int, ...] | None = None  # each VM's first host (index), trace order
    dirty_rate_follows_cpu: bool = False  # the dirty rate: x utilisation now (else its mean)
    optimality_gap: GapOption | None = None  # measure it at each step (optimality.py)


def load(path: str | Path) -> ConsolidationScenario:
    """Read and check a consolidation scenario file (``OSError`` if unreadable)."""
    path = Path(path)
    return parse(path.read_text(encoding="utf-8"), str(path))


def parse(text: str, source: str) -> ConsolidationScenario:
    node = compose(text, source)
    if node is None:
        raise ScenarioError(source, 1, "", "no content; expected a mapping with consolidation")
    top = Field(node, "", source).mapping(_TOP, "a mapping with keys consolidation, ...")
    section = top.require("consolidation", "a consolidation section").mapping(
        ("mode", "trace", "hosts", "host_models", "interval", "until", "policy",
         "host_names", "vm_ram", "dirty_rate_max", "initial_hosts",
         "dirty_rate_follows_cpu", "optimality_gap"))
    trace_field = section.require("trace", "a trace file (CSV, one VM per row)")
    trace = trace_field.text("a trace file path")
    assert trace is not None
    trace = str(Path(source).parent / trace) if not Path(trace).is_absolute() else trace
    mode = section.value("mode", _choice(MODES, "a mode"), "cloudsim")
    names = section.value("host_names", _host_names, ())
    hosts = section.value("hosts", lambda f: f.integer(1, 1_000_000),
                          len(names) if names else 800)
    if names and len(names) != hosts:
        section.require("host_names", "").fail(
            f"{len(names)} names for {hosts} hosts; expected one name per host")
    vm_ram = section.value("vm_ram", size(maximum=1 << 50, positive=True), None)
    dirty_max = section.value("dirty_rate_max", rate(), None)
    every = names or tuple(f"host-{h}" for h in range(hosts))
    initial = section.value("initial_hosts", lambda f: _initial_hosts(f, every), None)
    models = section.value("host_models", _models, ("hp-ml110-g4", "hp-ml110-g5"))
    interval = section.value("interval", _seconds, 300.0)
    until = section.value("until", _seconds, 86_400.0)
    seed = top.value("seed", lambda f: f.integer(0), 1)
    policy = _policy(section.require("policy", "a policy mapping"), seed)
    return ConsolidationScenario(
        name=top.value("name", lambda f: f.text("a scenario name"), Path(source).stem),
        source=source, trace=trace, mode=mode, hosts=hosts, host_models=models,
        interval=interval, until=until, policy=policy, seed=seed,
        expect=tuple(top.value("expect", _expectations, ())),
        host_names=names, vm_ram=vm_ram, initial_hosts=initial,
        dirty_rate_follows_cpu=section.value("dirty_rate_follows_cpu", lambda f: f.boolean(),
                                             False),
        dirty_rate_max=None if dirty_max is None else float(dirty_max),
        optimality_gap=section.value("optimality_gap", _gap_option, None),
    )


def _initial_hosts(f: Field, hosts: tuple[str, ...]) -> tuple[int, ...]:
    out = []
    for _, item in f.items("a list of host names, one per VM"):
        name = item.text("a host name")
        if name not in hosts:
            item.fail(f"unknown host {name!r}{did_you_mean(str(name), hosts)}; expected one "
                      "of the scenario's hosts")
        out.append(hosts.index(name))
    return tuple(out)


def _host_names(f: Field) -> tuple[str, ...]:
    names: list[str] = []
    for _, item in f.items("a list of host names"):
        name = item.text("a host name")
        assert name is not None
        if name in names:
            item.fail(f"duplicate host name {name!r}; expected distinct names")
        names.append(check_name(item, name, "host"))
    if not names:
        f.fail("empty list; expected at least one host name")
    return tuple(names)


def _gap_option(f: Field) -> GapOption:
    m = f.mapping(("time_limit", "every", "max_utilization"))
    return GapOption(
        time_limit=m.value("time_limit", _seconds, 1.0),
        every=m.value("every", lambda e: e.integer(1, 1_000_000), 1),
        max_utilization=m.value("max_utilization",
                                lambda u: u.number(positive=True, limit=1.0), 1.0))


def _choice(choices: tuple[str, ...], what: str) -> Callable[[Field], str]:
    def read(f: Field) -> str:
        value = f.text(what)
        if value not in choices:
            f.fail(f"{value!r} is not known{did_you_mean(str(value), choices)}; expected one "
                   f"of {', '.join(choices)}")
        return str(value)
    return read


def _models(f: Field) -> tuple[str, ...]:
    names = tuple(_choice(tuple(sorted(MODELS)), "a power model name")(item)
                  for _, item in f.items("a list of power model names"))
    if not names:
        f.fail("empty list; expected at least one power model name")
    return names


def _seconds(f: Field) -> float:
    from livemig.core.yaml_nodes import duration

    return float(duration(positive=True)(f))


def _policy(f: Field, seed: int) -> Policy:
    m = f.mapping(("overload", "parameter", "selection", "placement", "power", "watcher",
                   "threshold"))
    strategy = m.get("watcher")
    if strategy is not None:
        from livemig.consolidation.cloudsim import WATCHER

        name = _choice(WATCHER, "a Watcher strategy")(strategy)
        threshold = m.value("threshold", lambda p: p.number(positive=True, limit=100.0), None)
        return Policy(kind=name, parameter=threshold, seed=seed)
    power = m.get("power")
    if power is not None:
        if "overload" in m or "selection" in m or "placement" in m:
            power.fail("power cannot be used with overload/selection/placement; expected one "
                       "of them")
        return Policy(kind=_choice(("dvfs", "npa"), "a power mode")(power), seed=seed)
    name = _choice(tuple(sorted(overload.OVERLOAD)), "an overload policy")(
        m.require("overload", "an overload policy (thr, iqr, mad, lr, lrr) or power"))
    chosen = m.value("selection", _choice(tuple(sorted(selection.SELECTION)),
                                          "a selection policy"), "mmt")
    parameter = m.value("parameter", lambda p: p.number(positive=True, limit=100.0), None)
    placement = m.value("placement", _choice(tuple(sorted(PLACEMENT)), "a placement"), "pabfd")
    return Policy(overload=name, parameter=parameter, selection=chosen, placement=placement,
                  seed=seed)


def _expectations(f: Field) -> list[tuple[int, str, str, float]]:
    out = []
    for _, item in f.items("a list of 'METRIC OP VALUE'"):
        text = item.text("'METRIC OP VALUE'")
        assert text is not None
        match = _EXPECTATION.fullmatch(text)
        if match is None:
            item.fail(f"{text!r} is not an expectation; expected 'METRIC OP VALUE', e.g. "
                      "'energy_kwh < 170'")
        metric, op, value = match.groups()
        if metric not in METRICS:
            item.fail(f"unknown metric {metric!r}{did_you_mean(metric, METRICS)}; expected one "
                      f"of {', '.join(METRICS)}")
        try:
            number = float(value)
        except ValueError:
            item.fail(f"{value!r} is not a number; expected 'METRIC OP NUMBER'")
        out.append((item.line, metric, op, number))
    return out
