"""Sweep benchmark: cells per second with 1 and 2 workers, per-cell overhead, 200 cells.

    python benchmarks/bench_sweep.py                  # 16 cells of a ~1 s drain, 200 quick cells
    python benchmarks/bench_sweep.py --hosts 120 --cells 8 --many 0 --repeat 1  # smaller

Each measure is a real ``livemig sweep`` (:func:`livemig.sweep.execute.run_sweep`) on a
fresh LocalCluster (processes, 1 thread each) into a fresh directory:

* **cells/s** with 1 and 2 workers, on ``--cells`` cells of one generated drain scenario
  (``--hosts`` hosts, a drain of every 5th host; only the seed differs, so every cell
  does the same work), from the first submit to the last record written (the cluster's
  start is reported apart). Target: 2 workers >= 1.8 x one. The two are alternated
  ``--repeat`` times: on a shared machine other jobs take CPUs from one or the other.
  After each pair, the same runs in a plain process pool of 1 and 2 processes (no dask)
  show what speed-up the machine itself gives at that moment.
* **per-cell overhead** with 1 worker: sweep time per cell minus the mean time of the run
  itself (``summary.json``'s ``wall_time_s``, measured inside the worker), i.e. the
  summary, the transfers, dask's scheduling and the record written. Target: < 0.2 s.
* **200 cells**: the wall time of a 200-cell sweep of ``scenarios/quickstart.yaml``
  (seeds 1..200) on the default cluster (one worker per CPU), cluster start included.

The machine's load (``uptime``) is printed before and after: on a shared machine the
figures move with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from livemig.core.runner import run_scenario
from livemig.core.scenario import load_scenario
from livemig.sweep import cells as cells_mod
from livemig.sweep import execute
from livemig.sweep.spec import load_sweep

REPO = Path(__file__).resolve().parents[1]


def drain_scenario(hosts: int) -> str:
    """A drain of every 5th host of ``hosts`` (15 VMs each, in racks of 10)."""
    width = len(str(hosts))  # node-01 .. node-NN, as the scenario loader names them
    drains = "".join(f"  - {{at: 0s, drain: {{host: node-{i:0{width}d}}}}}\n"
                     for i in range(5, hosts + 1, 5))
    return f"""\
name: bench-drain
x-flavors:
  small: &small {{ram: 4GiB, vcpus: 2, used_memory: 3GiB, dirty_rate: 20MiB/s}}
  medium: &medium {{ram: 16GiB, vcpus: 4, working_set: 2GiB, dirty_rate: 100MiB/s}}
hosts:
  - {{prefix: node-, count: {hosts}, ram: 384GiB, vcpus: 96}}
network: {{host_link: 25Gbit/s, hosts_per_rack: 10, uplink: 100Gbit/s}}
vms:
  - {{prefix: web-, count: {hosts * 10}, host: node-*, <<: *small}}
  - {{prefix: app-, count: {hosts * 5}, host: node-*, <<: *medium}}
policy:
  migration: {{max_concurrent_per_host: 2}}
events:
{drains}"""


def _plain_run(path: str, seed: int) -> float:
    result = run_scenario(load_scenario(path), seed=seed)
    result.store.close()
    return result.wall_time


def plain_rate(path: Path, cells: int, workers: int) -> float:
    """Cells/s of the same runs in a plain process pool (no dask): what the machine allows."""
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_plain_run, [str(path)] * workers, range(workers)))  # warm: imports
        start = time.perf_counter()
        list(pool.map(_plain_run, [str(path)] * cells, range(1, cells + 1)))
        return cells / (time.perf_counter() - start)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def sweep(path: Path, out: Path, workers: int | None) -> tuple[execute.SweepOutcome, float]:
    start = time.perf_counter()
    spec = load_sweep(path)
    cells = cells_mod.resolve(spec)
    outcome = execute.run_sweep(spec, cells, out, workers=workers)
    assert not outcome.failed, outcome.failed
    return outcome, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=240, help="hosts of the drain scenario")
    parser.add_argument("--cells", type=int, default=16, help="cells of the 1/2-worker runs")
    parser.add_argument("--many", type=int, default=200, help="cells of the big sweep (0: none)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="1- and 2-worker runs, alternated, this many times each")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the plain process pool's 1- and 2-process rates")
    args = parser.parse_args()
    print(f"load before: {uptime()}  (CPUs: {os.cpu_count()})")
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        root = Path(tmp)
        (root / "drain.yaml").write_text(drain_scenario(args.hosts))
        scenario = load_scenario(root / "drain.yaml")
        alone = []
        for seed in range(3):
            result = run_scenario(scenario, seed=seed)
            alone.append(result.wall_time)
            migrations = len(result.store.migrations())
            result.store.close()
        print(f"cell: drain of {args.hosts // 5} of {args.hosts} hosts, {migrations} "
              f"migrations; one run in this process: median {statistics.median(alone):.3f} s")
        (root / "sweep.yaml").write_text(
            f"scenarios: [drain.yaml]\nseeds: {{from: 1, to: {args.cells}}}\n")
        rates: dict[int, list[float]] = {1: [], 2: []}
        for repeat in range(args.repeat):
            for workers in (1, 2):
                out = root / f"out-{workers}-{repeat}"
                outcome, _ = sweep(root / "sweep.yaml", out, workers)
                df = pd.read_parquet(out / "cells.parquet")
                run_mean = df["metric.wall_time_s"].mean()
                rates[workers].append(args.cells / outcome.run_s)
                print(f"{workers} worker(s): {args.cells} cells in {outcome.run_s:.2f} s = "
                      f"{rates[workers][-1]:.2f} cells/s (cluster start {outcome.setup_s:.1f} "
                      f"s); run itself {run_mean:.3f} s mean, cell on its worker "
                      f"{df['wall_s'].mean():.3f} s mean; load {os.getloadavg()[0]:.1f}")
                if workers == 1:
                    overhead = outcome.run_s / args.cells - run_mean
                    print(f"  per-cell overhead over the run itself: {overhead:.3f} s "
                          "(target < 0.2 s)")
                else:
                    print(f"  speed-up over the 1-worker run just before: "
                          f"{rates[2][-1] / rates[1][-1]:.2f}x")
            if args.baseline:
                one, two = (plain_rate(root / "drain.yaml", args.cells, w) for w in (1, 2))
                print(f"  baseline, a plain process pool (no dask): {one:.2f} cells/s with 1, "
                      f"{two:.2f} with 2 = {two / one:.2f}x (what the machine gives now)")
        rates = {w: [max(r)] for w, r in rates.items()}  # the least disturbed of each
        print(f"speed-up 2 workers / 1 (best of {args.repeat} each): "
              f"{rates[2][0] / rates[1][0]:.2f}x (target >= 1.8x)")
        if args.many:
            quick = REPO / "scenarios" / "quickstart.yaml"
            (root / "many.yaml").write_text(
                f"scenarios: [{quick}]\nseeds: {{from: 1, to: {args.many}}}\n")
            outcome, wall = sweep(root / "many.yaml", root / "out-many", None)
            print(f"{args.many}-cell sweep (quickstart x {args.many} seeds, "
                  f"{os.cpu_count()} workers): {wall:.1f} s wall (cluster start "
                  f"{outcome.setup_s:.1f} s, cells {outcome.run_s:.1f} s = "
                  f"{args.many / outcome.run_s:.1f} cells/s)")
    print(f"load after:  {uptime()}")


if __name__ == "__main__":
    main()
