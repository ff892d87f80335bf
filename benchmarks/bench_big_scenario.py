"""Whole-command benchmark: ``livemig run`` on a big scenario file, one entry per VM.

    python benchmarks/bench_big_scenario.py               # 1,000 hosts, 20,000 VMs
    python benchmarks/bench_big_scenario.py --scale 2     # 2,000 hosts, 40,000 VMs
    python benchmarks/bench_big_scenario.py --keep /tmp/big.yaml   # also keep the file
    python benchmarks/bench_big_scenario.py --file scenarios/X.yaml # time another file

The scenario is :func:`bench_drain.data_centre` (1,000 hosts in 50 racks, 20,000 VMs of
mixed sizes, 100 hosts drained at 0 s, about 2,000 migrations) written as YAML the way
a generator or a person would write it for a data centre that is not regular: one
mapping per host and one per VM (``name:``, ``host:``, sizes with units), so the loader
reads some 200,000 YAML nodes.

Prints, each measured in a fresh interpreter as the command runs:

* the whole ``livemig run`` process, wall and CPU time (best of ``--repeat``) and its
  peak RSS;
* ``livemig validate`` (import + load + check), wall and CPU time;
* the phases of ``run`` in one interpreter: imports, loading the scenario, the
  simulation, the tables (CSVs, summary.json, terminal summary), the plots; and
  the share of load + write against the simulation (the target: less than it);
* the machine's load average before and after: on a shared machine the wall times
  vary with it; the CPU times (user + system) much less.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_drain import data_centre  # noqa: E402 - the same data centre as bench_drain

from livemig.core.model import DrainEvent, Scenario  # noqa: E402
from livemig.core.units import GiB, MiB  # noqa: E402


def _size(value: int) -> str:
    """Bytes as the shortest exact unit string (``4GiB``, ``1536MiB``, ``123B``)."""
    for unit, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return f"{value}B"


def _rate(value: float) -> str:
    return f"{int(value // MiB)}MiB/s" if value % MiB == 0 else f"{value!r}B/s"


def scenario_yaml(scenario: Scenario) -> str:
    """``scenario`` as a YAML file with one mapping per host and per VM."""
    out = [f"name: {scenario.name}", f"seed: {scenario.seed}", "network:",
           f"  host_link: {_rate(scenario.network.host_link)}",
           f"  uplink: {_rate(scenario.network.uplink or 0.0)}",
           "policy:",
           "  migration:",
           f"    max_concurrent_per_host: "
           f"{scenario.policy.migration.max_concurrent_per_host}",
           "hosts:"]
    for h in scenario.hosts:
        out.append(f"  - {{name: {h.name}, ram: {_size(h.ram)}, vcpus: {h.vcpus}, "
                   f"disk: {_size(h.disk)}, storage: {h.storage.value}, rack: {h.rack}}}")
    out.append("vms:")
    for vm in scenario.vms:
        out.append(f"  - name: {vm.name}\n    host: {vm.host}\n    ram: {_size(vm.ram)}\n"
                   f"    vcpus: {vm.vcpus}\n    used_memory: {_size(vm.used_memory)}\n"
                   f"    working_set: {_size(vm.working_set)}\n"
                   f"    dirty_rate: {_rate(vm.dirty_rate)}")
    out.append("events:")
    for event in scenario.events:
        assert isinstance(event, DrainEvent)
        out.append(f"  - {{at: {event.at:g}s, drain: {{host: {event.host}}}}}")
    return "\n".join(out) + "\n"


PHASES = r"""
import json, resource, sys, time
from pathlib import Path
from typing import Any
marks = [("start", time.perf_counter(), time.process_time())]
def mark(name):
    marks.append((name, time.perf_counter(), time.process_time()))
from livemig.core import scenario_commands  # imports livemig.core.cli
from livemig.core import results, runner
from livemig.drivers import driver_class
driver_class("sim")
mark("import")
scenario = scenario_commands.load(sys.argv[1])
mark("load")
result = runner.run_scenario(scenario, "sim", seed=None)
mark("run")
out = Path(sys.argv[2])
out.mkdir()
results.write_csv(out / "migrations.csv", results.MIGRATION_COLUMNS, results.migration_rows(result))
results.write_csv(out / "instances.csv", results.INSTANCE_COLUMNS, results.instance_rows(result))
results.write_csv(out / "events.csv", results.EVENT_COLUMNS, results.event_rows(result))
results.write_csv(out / "actions.csv", results.ACTION_COLUMNS, results.action_rows(result))
results.write_summary(out / "summary.json", results.summarize(result))
results.summary_table(result)
mark("tables")
from livemig.core import plots
plots.write_plots(result, out)
mark("plots")
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"migrations": len(result.store.migrations()), "marks": marks, "rss": rss}))
"""

LABELS = {
    "import": "import the command, runner, sim driver, results",
    "load": "load the scenario (YAML, checks)",
    "run": "run the simulation",
    "tables": "tables: 4 CSVs, summary.json, terminal summary",
    "plots": "plots (matplotlib import included)",
}


def run_phases(args: list[str]) -> dict[str, Any]:
    """The JSON report the ``PHASES`` child prints last."""
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def whole_command(args: list[str]) -> tuple[float, float, int]:
    """Wall time, CPU time (user + system) and peak RSS (bytes) of the command ``args``
    run as a child (``os.wait4``)."""
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"{' '.join(args)} failed ({child.returncode}):\n"
                             f"{errors.read().decode(errors='replace')}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1, help="x 1,000 hosts, 20,000 VMs")
    parser.add_argument("--repeat", type=int, default=3, help="best of N for the commands")
    parser.add_argument("--keep", metavar="FILE", help="also write the scenario file here")
    parser.add_argument("--file", metavar="SCENARIO",
                        help="time this scenario file instead of the generated one "
                        "(e.g. a trace day)")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "livemig.core.cli"]
    print(f"load average before: {load_average()} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.file:
            path = Path(args.file).resolve()
            text = path.read_text()
            print(f"scenario: {path}; {len(text) / 2**20:.1f} MiB, {text.count(chr(10)):,} lines")
        else:
            scenario = data_centre(args.scale)
            text = scenario_yaml(scenario)
            if args.keep:
                Path(args.keep).write_text(text)
            path = Path(tmp) / "big.yaml"
            path.write_text(text)
            print(f"scenario: {len(scenario.hosts):,} hosts, {len(scenario.vms):,} VMs, "
                  f"{len(scenario.events)} hosts drained; {len(text) / 2**20:.1f} MiB, "
                  f"{text.count(chr(10)):,} lines")
        runs = [whole_command([*cli, "run", str(path), "--out", f"{tmp}/run{k}",
                               "--no-progress"]) for k in range(args.repeat)]
        print(f"livemig run       {min(r[0] for r in runs):6.2f} s wall, "
              f"{min(r[1] for r in runs):6.2f} s CPU  (best of {args.repeat}; wall: "
              f"{', '.join(f'{r[0]:.2f}' for r in runs)}); peak RSS "
              f"{max(r[2] for r in runs) / 2**20:,.0f} MiB")
        validates = [whole_command([*cli, "validate", str(path)]) for _ in range(args.repeat)]
        print(f"livemig validate  {min(r[0] for r in validates):6.2f} s wall, "
              f"{min(r[1] for r in validates):6.2f} s CPU")
        report = run_phases([sys.executable, "-c", PHASES, str(path), f"{tmp}/phases"])
        marks = report["marks"]
        phases = {name: (at - before, cpu - cpu_before) for (_, before, cpu_before),
                  (name, at, cpu) in zip(marks, marks[1:], strict=False)}
        print(f"\nphases of run in one interpreter ({report['migrations']:,} migrations, "
              f"peak RSS {report['rss'] / 2**20:,.0f} MiB):")
        print(f"  {'':<50} {'wall':>8} {'CPU':>8}")
        for name, (wall, cpu) in phases.items():
            print(f"  {LABELS[name]:<50} {wall:6.2f} s {cpu:6.2f} s")
        print(f"  {'total':<50} {marks[-1][1] - marks[0][1]:6.2f} s "
              f"{marks[-1][2] - marks[0][2]:6.2f} s")
        for column, unit in ((0, "wall"), (1, "CPU")):
            overhead = sum(phases[p][column] for p in ("load", "tables", "plots"))
            run = phases["run"][column]
            verdict = "less" if overhead < run else "MORE"
            print(f"  load + write {overhead:.2f} s {unit} is {verdict} than the simulation "
                  f"{run:.2f} s ({overhead / run:.2f}x)")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
