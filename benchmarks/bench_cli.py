"""Command benchmark: where the time of ``livemig run`` goes for 1,000 migrations.

    python benchmarks/bench_cli.py              # 1,000 migrations (10 hosts drained)
    python benchmarks/bench_cli.py --vms 5000   # 5,000
    python benchmarks/bench_cli.py --importtime # also the biggest imports of each command

Every measurement runs in a fresh interpreter, as the command does. Prints:

* the whole commands, wall time: ``livemig run`` (the scenario through to the
  results directory, plots included), ``livemig validate``, ``livemig --help``;
* the phases of ``run`` in one fresh interpreter: importing the command, importing
  what running needs (runner, driver, results), loading the scenario, the simulation,
  the tables (CSVs, summary.json, the terminal summary), importing matplotlib and
  drawing the three plots.

The scenario: 40 hosts (10 sources with 100 VMs each, 30 destinations), every
source drained at 0 s, so each VM is migrated once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCES = 10


def scenario_yaml(vms: int) -> str:
    """A drain of ``SOURCES`` hosts holding ``vms`` VMs between them."""
    per_host_gib = 2 * -(-vms // SOURCES) + 16
    drains = "\n".join(f"  - {{at: 0s, drain: {{host: src-{i:02d}}}}}"
                       for i in range(1, SOURCES + 1))
    return f"""\
name: bench-cli-{vms}
seed: 1
hosts:
  - {{prefix: src-, count: {SOURCES}, ram: {per_host_gib}GiB, vcpus: 512}}
  - {{prefix: dst-, count: 30, ram: {per_host_gib}GiB, vcpus: 512}}
vms:
  - {{prefix: vm, count: {vms}, host: "src-*", ram: 2GiB, used_memory: 1GiB,
     working_set: 128MiB, dirty_rate: 20MiB/s}}
policy:
  migration: {{max_concurrent_per_host: 2}}
events:
{drains}
"""


PHASES = r"""
import json, sys, time
from pathlib import Path
marks = [("start", time.perf_counter())]
def mark(name):
    marks.append((name, time.perf_counter()))
from livemig.core import scenario_commands  # imports livemig.core.cli
mark("import the command (cli, scenario_commands)")
from livemig.core import results, runner
from livemig.drivers import driver_class
driver_class("sim")
mark("import runner, sim driver, results")
scenario = scenario_commands.load(sys.argv[1])
mark("load the scenario")
result = runner.run_scenario(scenario, "sim", seed=None)
mark("run the simulation")
out = Path(sys.argv[2])
out.mkdir()
results.write_csv(out / "migrations.csv", results.MIGRATION_COLUMNS, results.migration_rows(result))
results.write_csv(out / "instances.csv", results.INSTANCE_COLUMNS, results.instance_rows(result))
results.write_csv(out / "events.csv", results.EVENT_COLUMNS, results.event_rows(result))
results.write_summary(out / "summary.json", results.summarize(result))
results.summary_table(result)
mark("tables: CSVs, summary.json, terminal summary")
from livemig.core import plots
from matplotlib.backends.backend_agg import FigureCanvasAgg
mark("import matplotlib (if not yet)")
plots.write_plots(result, out)
mark("draw the plots")
migrations = len(result.store.migrations())
print(json.dumps({"migrations": migrations, "marks": marks}))
"""


def timed(args: list[str], **kwargs: object) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed, done


def top_imports(args: list[str], count: int = 8) -> list[tuple[str, float]]:
    """The biggest top-level imports (cumulative, ms) of ``python -X importtime ARGS``."""
    done = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True,
                          text=True, check=False)
    tops = []
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue  # the header, or not an importtime line
        name = parts[2]
        if name.startswith(" ") and not name.startswith("  "):  # top level: one space
            tops.append((name.strip(), int(parts[1]) / 1000))
    return sorted(tops, key=lambda t: -t[1])[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=1_000, help="migrations (default 1,000)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N for the commands")
    parser.add_argument("--importtime", action="store_true",
                        help="also list the biggest imports of each command")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "livemig.core.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench-cli.yaml"
        path.write_text(scenario_yaml(args.vms))
        runs = []
        for k in range(args.repeat):
            runs.append(timed([*cli, "run", str(path), "--out", f"{tmp}/run{k}",
                               "--no-progress"])[0])
        validate = min(timed([*cli, "validate", str(path)])[0] for _ in range(args.repeat))
        helps = min(timed([*cli, "--help"])[0] for _ in range(args.repeat))
        print(f"scenario: {args.vms:,} VMs on {SOURCES} drained hosts")
        print(f"livemig run       {min(runs):6.2f} s  (best of {args.repeat}; "
              f"all: {', '.join(f'{r:.2f}' for r in runs)})")
        print(f"livemig validate  {validate:6.2f} s")
        print(f"livemig --help    {helps:6.2f} s")
        _, done = timed([sys.executable, "-c", PHASES, str(path), f"{tmp}/phases"])
        report = json.loads(done.stdout.splitlines()[-1])
        marks = report["marks"]
        print(f"\nphases of run in one interpreter ({report['migrations']:,} migrations):")
        for (_, before), (name, at) in zip(marks, marks[1:], strict=False):
            print(f"  {name:<46} {at - before:6.2f} s")
        print(f"  {'total':<46} {marks[-1][1] - marks[0][1]:6.2f} s")
        if args.importtime:
            for label, command in (("run", ["run", str(path), "--out", f"{tmp}/imp",
                                            "--no-progress"]),
                                   ("validate", ["validate", str(path)]), ("--help", ["--help"])):
                tops = top_imports(["-m", "livemig.core.cli", *command])
                print(f"\nbiggest top-level imports of {label} (cumulative):")
                for name, ms in tops:
                    print(f"  {name:<40} {ms:7.1f} ms")


if __name__ == "__main__":
    main()
