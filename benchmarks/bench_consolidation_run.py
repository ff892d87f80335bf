"""Wall time and peak memory of a whole ``livemig run`` of a consolidation scenario
(process start, imports, trace load, run, results and plot), with its own load / run /
write split from ``summary.json``, and the machine's load average.

    .venv/bin/python benchmarks/bench_consolidation_run.py [SCENARIO] [--repeat N]

Default scenario: ``scenarios-full/planetlab-20110303-lr-mmt-cloudsim.yaml`` (the issue's
speed case: one trace day, 800 hosts, 1,052 VMs, 288 intervals, LR-MMT). CloudSim 5.0
takes about 32 s and 2.0-2.5 GB for it on this kind of machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "scenarios-full" / "planetlab-20110303-lr-mmt-cloudsim.yaml"


def one_run(scenario: Path) -> tuple[float, float, dict[str, float]]:
    livemig = Path(sys.executable).parent / "livemig"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        start = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        done = subprocess.run([str(livemig), "run", str(scenario), "--out", str(out),
                               "--no-progress"], check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        timing = json.loads((out / "summary.json").read_text())["timing_s"]
        line = next(x for x in done.stdout.splitlines() if x.startswith("load "))
        timing["write_s"] = float(line.split("write ")[1].split(" s")[0])
    return wall, max(peak_kib, before) / 1024, timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.scenario.name}: load average before {os.getloadavg()[0]:.2f}")
    for i in range(args.repeat):
        wall, peak_mib, timing = one_run(args.scenario)
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(timing.items()))
        print(f"run {i + 1}: {wall:.2f} s wall, peak RSS {peak_mib:.0f} MiB ({parts}); "
              f"load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
