"""Run a consolidation scenario and write its results directory.

* :func:`build_experiment`: the scenario's hosts (``host_models`` in turn), its trace's VMs
  (the reference's four types, by block) and clock;
* :func:`run_spec`: the engine of the scenario's ``mode`` (``cloudsim``: :mod:`cloudsim`;
  ``default``: :mod:`flow`, Nova's flow on the simulated data centre);
* :func:`evaluate`: the ``expect:`` lines against the metrics;
* :func:`write`: ``summary.json`` (metrics, expectations, timings), ``hosts.csv`` (per
  consolidation step: active and overloaded hosts, migrations started, energy so far, and
  with ``optimality_gap:`` the optimum's bound and the gap, :mod:`optimality`),
  ``migrations.csv`` and ``active_hosts.png``, into a sibling directory renamed into place.

>>> evaluate(((3, "energy_kwh", "<", 10.0),), {"energy_kwh": 12.5})[0]
Verdict(expectation='energy_kwh < 10', line=3, met=False, actual='12.5')
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from livemig.consolidation import reference as ref
from livemig.consolidation.cloudsim import Experiment, Outcome, run
from livemig.consolidation.power import MODELS
from livemig.consolidation.scenario import OPERATORS, ConsolidationScenario
from livemig.consolidation.traces import Trace, block_types, load_trace
from livemig.core.expectations import Verdict

HOST_FILES = ("hosts.csv", "active_hosts.png")
_HOST_TYPES = {h.power_model: h for h in ref.HOST_TYPES}


def build_experiment(spec: ConsolidationScenario, trace: Trace) -> Experiment:
    types = block_types(len(trace.names), len(ref.VM_TYPES))
    hosts = [_HOST_TYPES[spec.host_models[i % len(spec.host_models)]] for i in range(spec.hosts)]
    vm_ram = np.array([ref.VM_TYPES[t].ram_mb for t in types], dtype=float)
    if spec.vm_ram is not None:
        vm_ram[:] = spec.vm_ram / (1 << 20)
    return Experiment(
        samples=trace.samples,
        vm_mips=np.array([ref.VM_TYPES[t].mips for t in types], dtype=float),
        vm_ram=vm_ram,
        vm_bw=np.array([ref.VM_TYPES[t].bw_kbit for t in types], dtype=float),
        host_pe_mips=np.array([h.mips for h in hosts], dtype=float),
        host_pes=np.array([h.pes for h in hosts], dtype=float),
        host_ram=np.array([h.ram_mb for h in hosts], dtype=float),
        host_bw=np.array([h.bw_kbit for h in hosts], dtype=float),
        host_tables=np.array([MODELS[h.power_model].watts for h in hosts], dtype=float),
        vm_names=trace.names, host_names=spec.host_names, interval=spec.interval,
        limit=spec.until,
    )


def run_spec(spec: ConsolidationScenario, driver: str = "sim",
             driver_options: dict[str, Any] | None = None,
             ) -> tuple[Outcome, dict[str, float]]:
    """Load the trace, run, and return the outcome with load/run timings (seconds).
    The default mode runs on ``driver`` (``sim``, or ``libvirt`` with an ``inventory``
    in ``driver_options``); the cloudsim mode is an accounting engine, simulator only."""
    start = time.perf_counter()
    trace = load_trace(spec.trace)
    exp = build_experiment(spec, trace)
    loaded = time.perf_counter()
    recorder = None
    if spec.optimality_gap is not None:
        from livemig.consolidation.optimality import GapRecorder

        recorder = GapRecorder(spec.optimality_gap, ram=spec.mode == "default")
    if spec.mode == "default":
        from livemig.consolidation import flow

        options: dict[str, Any] = {"driver": driver, "driver_options": driver_options}
        if spec.initial_hosts is not None:
            if len(spec.initial_hosts) != len(trace.names):
                raise ValueError(f"consolidation.initial_hosts: {len(spec.initial_hosts)} "
                                 f"hosts for {len(trace.names)} VMs in the trace; expected "
                                 "one per VM")
            options["initial_hosts"] = list(spec.initial_hosts)
        if spec.dirty_rate_follows_cpu:
            options["dirty_rate_follows_cpu"] = True
        if spec.dirty_rate_max is not None:
            options["dirty_rate_max"] = spec.dirty_rate_max
        outcome = flow.run(exp, spec.policy, observer=recorder, **options)
    else:
        if driver != "sim":
            raise ValueError(f"the cloudsim mode runs on the simulator only (not {driver}); "
                             "expected mode: default")
        outcome = run(exp, spec.policy, observer=recorder)
    ran = time.perf_counter()
    timings = {"load_s": loaded - start, "run_s": ran - loaded}
    if recorder is not None:
        outcome.metrics.update(recorder.metrics())
        timings["optimality_s"] = recorder.wall_s
    active = [row["active_hosts"] for row in outcome.series] or [0]
    outcome.metrics["active_hosts_max"] = int(max(active))
    outcome.metrics["active_hosts_mean"] = float(np.mean(active))
    return outcome, timings


def evaluate(expect: tuple[tuple[int, str, str, float], ...],
             metrics: dict[str, Any]) -> list[Verdict]:
    verdicts = []
    for line, metric, op, value in expect:
        actual = float(metrics[metric])
        verdicts.append(Verdict(f"{metric} {op} {value:g}", line,
                                bool(OPERATORS[op](actual, value)), f"{actual:g}"))
    return verdicts


def summary(spec: ConsolidationScenario, outcome: Outcome, verdicts: list[Verdict],
            timings: dict[str, float], driver: str = "sim") -> dict[str, Any]:
    return {
        "scenario": spec.name, "kind": "consolidation", "mode": spec.mode, "driver": driver,
        "trace": spec.trace, "hosts": spec.hosts, "host_models": list(spec.host_models),
        "interval_s": spec.interval, "until_s": spec.until, "seed": spec.seed,
        "policy": outcome.metrics["policy"], "metrics": outcome.metrics,
        "optimality_gap": (None if spec.optimality_gap is None
                           else dataclasses.asdict(spec.optimality_gap)),
        "expectations": {
            "met": sum(v.met for v in verdicts), "failed": sum(not v.met for v in verdicts),
            "details": [{"expectation": v.expectation, "line": v.line, "met": v.met,
                         "actual": v.actual} for v in verdicts],
        },
        "timing_s": timings,
    }


def write(out: Path, data: dict[str, Any], outcome: Outcome) -> None:
    """Write the results into a fresh sibling of ``out``, then rename it into place
    (an existing ``out`` was checked by the caller and is replaced)."""
    tmp = out.parent / f".{out.name}.tmp-consolidation"
    shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    try:
        with open(tmp / "summary.json", "w") as stream:
            json.dump(data, stream, indent=1, sort_keys=True)
            stream.write("\n")
        columns: tuple[str, ...] = ("time_s", "active_hosts", "overloaded_hosts",
                                    "migrations_started", "energy_kwh")
        if outcome.series and "optimality_gap" in outcome.series[0]:
            from livemig.consolidation.optimality import COLUMNS

            columns += COLUMNS
        with open(tmp / "hosts.csv", "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(columns)
            writer.writerows([row[c] for c in columns] for row in outcome.series)
        with open(tmp / "migrations.csv", "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(("vm", "source_host", "dest_host", "started_at", "finished_at"))
            writer.writerows(outcome.migrations)
        plot_active_hosts(tmp / "active_hosts.png", outcome, data["policy"])
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def plot_active_hosts(path: Path, outcome: Outcome, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    hours = [row["time_s"] / 3600 for row in outcome.series]
    ax.step(hours, [row["active_hosts"] for row in outcome.series], where="post",
            label="active hosts")
    ax.set_xlabel("time (h)")
    ax.set_ylabel("active hosts")
    ax.set_title(f"{title}: active hosts after each consolidation step")
    ax2 = ax.twinx()
    ax2.plot(hours, [row["energy_kwh"] for row in outcome.series], color="#d62728",
             label="energy (kWh)")
    ax2.set_ylabel("energy so far (kWh)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
