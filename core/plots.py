"""Plots of a run (PNG, matplotlib's Agg canvas; pyplot's global state is never touched).

* ``timeline.png``: one row per source host, one bar per migration from
  ``started_at`` to ``finished_at``, coloured by status, the switchover
  (downtime) marked, and the switch to post-copy (a diamond); requests that
  never started are crosses.
* ``cdf_total_time.png`` and ``cdf_downtime.png``: empirical CDFs over the
  completed migrations.

The cost is linear in the number of migrations: the timeline draws all bars as one
collection (and all downtimes, switchovers, post-copy and rejected marks as one each),
never one artist per migration. matplotlib is imported when a plot is drawn, so
importing this module (e.g. for :data:`PLOT_FILES`) costs nothing.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from livemig.core.model import MigrationStatus

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from livemig.core.runner import RunResult
    from livemig.core.state import MigrationRecord

PLOT_FILES = ("timeline.png", "cdf_total_time.png", "cdf_downtime.png")
MAX_HOSTS = 50
DPI = 100
STATUS_COLOURS = {
    MigrationStatus.COMPLETED: "#2ca02c",
    MigrationStatus.FAILED: "#d62728",
    MigrationStatus.ERROR: "#ff7f0e",
    MigrationStatus.CANCELLED: "#7f7f7f",
    MigrationStatus.POSTCOPY: "#9467bd",
}
POSTCOPY_COLOUR = "#9467bd"
UNFINISHED_COLOUR = "#1f77b4"


def _figure(width: float, height: float) -> Figure:
    """A figure on matplotlib's Agg canvas (no GUI backend, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, metadata={"Software": None})


def _colour(status: MigrationStatus) -> str:
    return STATUS_COLOURS.get(status, UNFINISHED_COLOUR)


def _lanes(spans: Sequence[tuple[float, float]]) -> tuple[list[int], int]:
    """The lowest free lane per span (spans sorted by start), so overlapping spans differ.

    A lane is free for a span when its last span ended at or before the start.
    O(n log n) with two heaps (busy lanes by end, free lanes by number).

    >>> _lanes([(0, 2), (1, 3), (2, 4)])
    ([0, 1, 0], 2)
    >>> _lanes([(0, 9), (1, 2), (1, 5), (3, 4)])
    ([0, 1, 2, 1], 3)
    """
    busy: list[tuple[float, int]] = []  # (end, lane)
    free: list[int] = []
    lanes = []
    count = 0
    for start, end in spans:
        while busy and busy[0][0] <= start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            lane = heapq.heappop(free)
        else:
            lane, count = count, count + 1
        heapq.heappush(busy, (end, lane))
        lanes.append(lane)
    return lanes, max(1, count)


def timeline_hosts(result: RunResult, max_hosts: int = MAX_HOSTS) -> tuple[list[str], int]:
    """The source hosts to draw (scenario order; the busiest ``max_hosts``) and how many had any."""
    counts = Counter(m.source for m in result.store.migrations() if m.source is not None)
    order = {h.name: i for i, h in enumerate(result.scenario.hosts)}
    busiest = sorted(counts, key=lambda h: (-counts[h], order.get(h, len(order)), h))[:max_hosts]
    return sorted(busiest, key=lambda h: (order.get(h, len(order)), h)), len(counts)


class _Marks:
    """What the timeline draws, gathered per kind, drawn as one artist per kind."""

    def __init__(self) -> None:
        self.bars: list[list[tuple[float, float]]] = []  # rectangles' corners
        self.bar_colours: list[str] = []
        self.downtimes: list[list[tuple[float, float]]] = []
        self.switchovers: tuple[list[float], list[float], list[float]] = ([], [], [])  # x, y, size
        self.postcopy: tuple[list[float], list[float], list[float]] = ([], [], [])
        self.rejected: tuple[list[float], list[float], list[str]] = ([], [], [])  # x, y, colour

    def draw(self, ax: Axes) -> None:
        from matplotlib.collections import PolyCollection

        if self.bars:
            ax.add_collection(PolyCollection(self.bars, facecolors=self.bar_colours,
                                             edgecolors="white", linewidths=1.5))
        if self.downtimes:
            ax.add_collection(PolyCollection(self.downtimes, facecolors="black",
                                             edgecolors="none"))
        x, y, size = self.switchovers
        if x:
            ax.scatter(x, y, s=[v * v for v in size], marker="|", c="black", linewidths=1.5,
                       zorder=2.5)
        x, y, size = self.postcopy
        if x:
            ax.scatter(x, y, s=[v * v for v in size], marker="D", c=POSTCOPY_COLOUR,
                       edgecolors="black", zorder=2.6)
        x, y, colours = self.rejected
        if x:
            ax.scatter(x, y, s=49, marker="x", c=colours, linewidths=2, zorder=2.5)


def _box(left: float, width: float, bottom: float, height: float) -> list[tuple[float, float]]:
    return [(left, bottom), (left + width, bottom), (left + width, bottom + height),
            (left, bottom + height)]


def plot_timeline(result: RunResult, path: Path, max_hosts: int = MAX_HOSTS) -> None:
    """Write the migration timeline per source host to ``path``."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    hosts, total = timeline_hosts(result, max_hosts)
    rows = {h: i for i, h in enumerate(hosts)}
    height = max(3.0, 0.32 * len(hosts) + 1.8)
    fig = _figure(11, height)
    ax = fig.add_subplot()
    title = f"Migration timeline: {result.scenario.name} ({result.driver} driver)"
    if total > len(hosts):
        title += f"\nbusiest {len(hosts)} of {total} source hosts shown"
    ax.set_title(title)
    ax.set_xlabel("time since start of run (s)")
    ax.set_ylabel("source host")
    end_of_run = float(result.sim_time)
    by_host: dict[str, list[MigrationRecord]] = {h: [] for h in hosts}
    for m in result.store.migrations():
        if m.source in rows:
            by_host[m.source].append(m)
    statuses: set[MigrationStatus] = set()
    marks = _Marks()
    for host, records in by_host.items():
        y = rows[host]
        started = sorted(
            (m for m in records if m.started_at is not None), key=lambda m: (m.started_at, m.id)
        )
        spans = [
            (float(m.started_at or 0.0), float(m.finished_at if m.finished_at is not None
                                                 else end_of_run))
            for m in started
        ]
        lanes, count = _lanes(spans)
        lane_height = 0.8 / count
        for m, (start, end), lane in zip(started, spans, lanes, strict=True):
            bottom = y - 0.4 + lane * lane_height
            statuses.add(m.status)
            marks.bars.append(_box(start, max(end - start, 0.0), bottom, lane_height * 0.9))
            marks.bar_colours.append(_colour(m.status))
            middle = bottom + lane_height * 0.45
            if m.downtime is not None and m.total_time is not None:
                switch = start + float(m.total_time)
                marks.downtimes.append(_box(switch - float(m.downtime), float(m.downtime),
                                            bottom, lane_height * 0.9))
                for column, value in zip(marks.switchovers,
                                         (switch, middle, max(4.0, 12 * lane_height)),
                                         strict=True):
                    column.append(value)
            if m.postcopy_at is not None:
                for column, value in zip(marks.postcopy, (float(m.postcopy_at), middle,
                                                          max(3.0, 8 * lane_height)),
                                         strict=True):
                    column.append(value)
        for m in records:
            if m.started_at is None:
                at = m.finished_at if m.finished_at is not None else m.requested_at
                statuses.add(m.status)
                marks.rejected[0].append(float(at))
                marks.rejected[1].append(float(y))
                marks.rejected[2].append(_colour(m.status))
    marks.draw(ax)
    switchovers, postcopy, rejected = (bool(marks.switchovers[0]), bool(marks.postcopy[0]),
                                       bool(marks.rejected[0]))
    ax.set_yticks(range(len(hosts)), hosts, fontsize=8 if len(hosts) > 20 else 10)
    ax.set_ylim(max(len(hosts), 1) - 0.5, -0.5)  # first host on top (one row when empty)
    ax.set_xlim(left=0.0, right=max(end_of_run, 1e-9) * 1.02)
    ax.grid(axis="x", alpha=0.3)
    handles: list[Patch | Line2D] = [
        Patch(facecolor=_colour(s), edgecolor="black", label=s.value)
        for s in sorted(statuses, key=list(MigrationStatus).index)
    ]
    if switchovers:
        handles.append(Line2D([], [], marker="|", color="black", linestyle="none",
                              markersize=10, markeredgewidth=1.5, label="switchover (downtime)"))
    if postcopy:
        handles.append(Line2D([], [], marker="D", color=POSTCOPY_COLOUR, linestyle="none",
                              markeredgecolor="black", label="switch to post-copy"))
    if rejected:
        handles.append(Line2D([], [], marker="x", color="black", linestyle="none",
                              label="ended before the transfer"))
    if not hosts:
        ax.text(0.5, 0.5, "no migrations with a source host", transform=ax.transAxes,
                ha="center", va="center", fontsize=14)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def plot_cdf(values: Sequence[float], path: Path, *, title: str, xlabel: str) -> None:
    """An empirical CDF of ``values`` (or a 'no completed migrations' notice)."""
    fig = _figure(8, 5)
    ax = fig.add_subplot()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of completed migrations")
    if not values:
        ax.set_title(title)
        ax.text(0.5, 0.5, "no completed migrations", transform=ax.transAxes,
                ha="center", va="center", fontsize=16)
    else:
        xs = sorted(float(v) for v in values)
        n = len(xs)
        right = xs[-1] * 1.1 if xs[-1] > 0 else 1.0
        ax.step([0.0, *xs, right], [0.0, 0.0, *((i + 1) / n for i in range(n))], where="post",
                color="#1f77b4", linewidth=2)
        ax.set_xlim(min(0.0, xs[0]), right)
        ax.ticklabel_format(axis="x", useOffset=False)
        median = xs[(n - 1) // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
        ax.axvline(median, color="#d62728", linestyle=":", linewidth=1.2,
                   label=f"median {median:.4g}")
        ax.set_title(f"{title} (n = {n})")
        ax.legend(loc="lower right")
    ax.set_ylim(0.0, 1.05)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.11, top=0.92)  # fixed: no tight_layout
    _save(fig, path)


def write_plots(result: RunResult, directory: Path) -> list[Path]:
    """Write the three plots of a run into ``directory``; returns their paths."""
    done = [m for m in result.store.migrations() if m.status is MigrationStatus.COMPLETED]
    name = result.scenario.name
    paths = [directory / n for n in PLOT_FILES]
    plot_timeline(result, paths[0])
    plot_cdf([m.total_time for m in done if m.total_time is not None], paths[1],
             title=f"Total migration time: {name}", xlabel="total migration time (s)")
    plot_cdf([m.downtime * 1000.0 for m in done if m.downtime is not None], paths[2],
             title=f"Downtime: {name}", xlabel="downtime (ms)")
    return paths
