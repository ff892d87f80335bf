"""Plot benchmark: the three plots of a run with N synthetic migrations.

    python benchmarks/bench_plots.py                  # 5,000 and 20,000 migrations
    python benchmarks/bench_plots.py --sizes 1000 5000 20000 --out /tmp/plots

A synthetic run like a rack drain: 200 source hosts (the timeline shows the busiest
50), migrations of 5..60 s started in waves of 2 per host, 90 % completed (each with a
downtime, some with a switch to post-copy), the rest failed, cancelled or rejected
before the transfer. Prints the time of each plot and of ``write_plots`` in all, and
the number of matplotlib artists on the timeline's axes (it should not grow with N).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from livemig.core import plots
from livemig.core.model import HostSpec, MigrationStatus
from livemig.core.state import MigrationRecord

GiB = 1 << 30


@dataclass
class _Store:
    records: list[MigrationRecord]

    def migrations(self) -> list[MigrationRecord]:
        return self.records


@dataclass
class _Scenario:
    name: str
    hosts: tuple[HostSpec, ...]


@dataclass
class SyntheticRun:
    """What :func:`plots.write_plots` reads of a ``RunResult``."""

    store: _Store
    scenario: _Scenario
    driver: str
    sim_time: float


def synthetic_run(n: int, hosts: int = 200, seed: int = 1) -> SyntheticRun:
    """``n`` migrations over ``hosts`` source hosts (see the module docstring)."""
    rng = random.Random(seed)
    names = [f"h{i:03d}" for i in range(hosts)]
    busy_until = dict.fromkeys(names, 0.0)
    records = []
    for i in range(n):
        source = names[i % hosts]
        start = busy_until[source] + rng.uniform(0.0, 2.0)
        length = rng.uniform(5.0, 60.0)
        busy_until[source] = start + length / 2  # two at a time per host, roughly
        roll = rng.random()
        fields: dict[str, object] = {}
        if roll < 0.9:
            downtime = rng.uniform(0.01, 0.5)
            fields = {"status": MigrationStatus.COMPLETED, "started_at": start,
                      "finished_at": start + length, "total_time": length,
                      "downtime": downtime}
            if rng.random() < 0.05:
                fields["postcopy_at"] = start + length * 0.8
        elif roll < 0.95:
            fields = {"status": MigrationStatus.FAILED, "started_at": start,
                      "finished_at": start + length}
        elif roll < 0.98:
            fields = {"status": MigrationStatus.CANCELLED, "started_at": start,
                      "finished_at": start + length / 3}
        else:
            fields = {"status": MigrationStatus.ERROR, "finished_at": start}
        records.append(MigrationRecord(
            id=i + 1, instance=f"vm{i:06d}", source=source, dest=None, block_migration=False,
            disk_over_commit=False, requested_at=start, **fields,  # type: ignore[arg-type]
        ))
    end = max((r.finished_at or r.requested_at) for r in records) if records else 0.0
    host_specs = tuple(HostSpec(name=h, ram=256 * GiB, vcpus=64, disk=0) for h in names)
    return SyntheticRun(_Store(records), _Scenario(f"bench-plots-{n}", host_specs), "sim", end)


def bench(n: int, out: Path) -> dict[str, float]:
    run = synthetic_run(n)
    directory = out / str(n)
    directory.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    start = time.perf_counter()
    plots.plot_timeline(run, directory / "timeline.png")  # type: ignore[arg-type]
    times["timeline"] = time.perf_counter() - start
    start = time.perf_counter()
    plots.write_plots(run, directory)  # type: ignore[arg-type]
    times["write_plots"] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000])
    parser.add_argument("--out", type=Path, help="where to keep the PNGs (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        bench(100, out)  # warm-up: matplotlib's imports and font cache
        for n in args.sizes:
            times = bench(n, out)
            print(f"{n:>7,} migrations: timeline {times['timeline']:7.2f} s, "
                  f"write_plots (timeline + 2 CDFs) {times['write_plots']:7.2f} s")


if __name__ == "__main__":
    main()
