"""PABFD's and first-fit's optimality gap on a trace-driven 100-host scenario (issue 12 §2).

    .venv/bin/python benchmarks/bench_optimality_gap.py [SCENARIO ...]

Default: ``scenarios-full/planetlab-20110303-100hosts-lr-mmt-{pabfd,ff}-gap.yaml``, 200 VMs
of PlanetLab day 20110303 (every fifth) on 100 hosts, a full day of 288 five-minute steps,
LR 1.2 + MMT with the two placements, CloudSim's accounting; at every step CP-SAT proves
the fewest active hosts (1 unit of deterministic time per step). Prints, per scenario, the
run's energy and migrations, the mean heuristic and bound, the mean gap (heuristic - bound,
in hosts) over every step and over the steps after the first hour (the initial placement
at full VM MIPS inflates the first ones), the max, the steps CP-SAT did not prove optimal,
and wall times; then the machine's load average.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = [ROOT / "scenarios-full" / f"planetlab-20110303-100hosts-lr-mmt-{p}-gap.yaml"
           for p in ("pabfd", "ff")]


def measure(path: Path) -> dict[str, float | str]:
    from livemig.consolidation.run import run_spec
    from livemig.consolidation.scenario import load

    spec = load(path)
    if spec.optimality_gap is None:
        raise SystemExit(f"{path}: no optimality_gap: option; expected a scenario that asks "
                         "for the gap")
    start = time.perf_counter()
    outcome, timings = run_spec(spec)
    wall = time.perf_counter() - start
    m = outcome.metrics
    measured = [row for row in outcome.series if row["optimality_status"]]
    warm = [row["optimality_gap"] for row in measured if row["time_s"] > 3600]
    return {
        "policy": m["policy"], "energy_kwh": m["energy_kwh"], "migrations": m["migrations"],
        "heuristic": m["optimality_heuristic_mean"], "bound": m["optimality_bound_mean"],
        "gap": m["optimality_gap_mean"], "gap_after_1h": sum(warm) / len(warm) if warm else 0.0,
        "gap_max": m["optimality_gap_max"], "relative": m["optimality_gap_relative_mean"],
        "steps": m["optimality_steps"], "not_optimal": m["optimality_steps_not_optimal"],
        "wall_s": wall, "solver_s": timings["optimality_s"],
    }


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or DEFAULT
    print(f"{'policy':<18} {'kWh':>6} {'migr':>5} {'hosts':>6} {'bound':>6} {'gap':>5} "
          f"{'gap>1h':>6} {'max':>4} {'rel':>5} {'steps':>5} {'!opt':>4} {'wall_s':>6} "
          f"{'cpsat_s':>7}")
    for path in paths:
        r = measure(path)
        print(f"{r['policy']:<18} {r['energy_kwh']:>6.2f} {r['migrations']:>5} "
              f"{r['heuristic']:>6.2f} {r['bound']:>6.2f} {r['gap']:>5.2f} "
              f"{r['gap_after_1h']:>6.2f} {r['gap_max']:>4} {r['relative']:>5.2f} "
              f"{r['steps']:>5} {r['not_optimal']:>4} {r['wall_s']:>6.1f} {r['solver_s']:>7.1f}")
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
