"""Wall time of ``livemig check`` on a suite, for several job counts.

    python benchmarks/bench_check.py [PATH ...] [--jobs 1 2] [--repeat 5] [--copies 1]

Runs the whole command (``livemig check PATH... -j N`` in a new process: interpreter
start, imports, the runs, the table) ``--repeat`` times for each ``N`` and prints the
best and the median wall time, the speed-up over the first ``N``, and the load average
before the runs. ``--copies K`` checks every file K times (K copies of the suite in a
temporary directory): a bigger suite for the same scenarios. PATH defaults to
``scenarios/``. Each run must exit 0 (every expectation met) to count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def suite(paths: list[str], copies: int, tmp: Path) -> list[str]:
    """``paths``, or ``copies`` copies of their scenario files under ``tmp``."""
    if copies <= 1:
        return paths
    files = [p for path in map(Path, paths)
             for p in (sorted(path.rglob("*.yaml")) if path.is_dir() else [path])]
    for k in range(copies):
        for f in files:
            target = tmp / f"copy{k}" / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
    return [str(tmp)]


def wall(paths: list[str], jobs: int) -> float:
    command = [sys.executable, "-m", "livemig.core.cli", "check", *paths, "-j", str(jobs)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=[str(ROOT / "scenarios")])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--copies", type=int, default=1)
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        paths = suite(args.paths, args.copies, Path(tmp))
        print(f"livemig check {' '.join(args.paths)} (x{args.copies}), best and median of "
              f"{args.repeat}; load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
              f"{os.cpu_count()} CPUs")
        base = None
        for jobs in args.jobs:
            times = [wall(paths, jobs) for _ in range(args.repeat)]
            best, median = min(times), statistics.median(times)
            base = base or median
            print(f"  -j {jobs}: best {best:.2f} s  median {median:.2f} s  "
                  f"speed-up {base / median:.2f}x")


if __name__ == "__main__":
    main()
