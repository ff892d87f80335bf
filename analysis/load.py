"""A run or a sweep directory as pandas DataFrames, so a notebook stays a few lines long.

* :func:`load_run` reads what ``livemig run`` writes (core/results.py): ``migrations.csv``,
  ``instances.csv``, ``events.csv``, ``actions.csv`` and ``summary.json``, into a
  :class:`Run`. Columns get their types (times float, ``block_migration`` bool, ``status``
  text); an empty cell is ``NaN``/``None``.
* :func:`load_sweep` reads a sweep's ``cells.parquet`` (``livemig sweep``): one row per
  cell with ``cell``, ``status``, ``error``, ``seed``, ``axis.<path>``, ``metric.<name>``,
  ``wall_s``. :func:`axes` and :func:`metrics` name its columns.
* :func:`load_compare` reads a calibration's per-migration error table (``compare.csv``).

Helpers for the usual first questions: :func:`slowest`, :func:`ecdf`, :func:`outcome_table`
and :func:`pareto_front`.

>>> import pandas as pd
>>> cells = pd.DataFrame({"cell": [0, 1], "axis.policy": ["a", "b"], "metric.x": [1.0, 2.0]})
>>> axes(cells), metrics(cells)
(['axis.policy'], ['metric.x'])
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

RUN_TABLES = ("migrations", "instances", "events", "actions")
"""The CSV files of a run directory (``NAME.csv``), in :class:`Run`'s attribute order."""
SWEEP_FILE = "cells.parquet"
AXIS_PREFIX = "axis."
METRIC_PREFIX = "metric."

_BOOL_COLUMNS = {
    "migrations": ("block_migration", "paused_guest"),
    "events": ("state_change",),
}
_TEXT_COLUMNS = {
    "migrations": ("instance", "source", "dest", "status", "error", "error_message",
                   "attempted_hosts", "timeout_action"),
    "instances": ("instance", "host", "vm_state", "task_state", "driver_host"),
    "events": ("instance", "event", "old_vm_state", "new_vm_state", "old_task_state",
               "new_task_state"),
    "actions": ("kind", "target", "outcome"),
}


class AnalysisError(ValueError):
    """A directory or file that is not what the loader expected (one-line message)."""


@dataclass(frozen=True)
class Run:
    """One run directory: its summary and its tables.

    ``migrations`` is indexed by nothing special (``id`` is a column); ``scenario_text``
    is the scenario file when ``summary.json``'s ``scenario_source`` still exists.
    """

    directory: Path
    summary: dict[str, Any]
    migrations: pd.DataFrame
    instances: pd.DataFrame
    events: pd.DataFrame
    actions: pd.DataFrame
    scenario_text: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The scenario's name."""
        return str(self.summary.get("scenario", self.directory.name))

    @property
    def completed(self) -> pd.DataFrame:
        """The migrations that completed."""
        return self.migrations[self.migrations["status"] == "completed"]


def is_run_dir(path: str | Path) -> bool:
    """Does ``path`` hold a run's ``summary.json`` and ``migrations.csv``?"""
    p = Path(path)
    return (p / "summary.json").is_file() and (p / "migrations.csv").is_file()


def is_sweep_dir(path: str | Path) -> bool:
    """Does ``path`` hold a sweep's ``cells.parquet``?"""
    return (Path(path) / SWEEP_FILE).is_file()


def read_table(path: Path, kind: str) -> pd.DataFrame:
    """One CSV of a run with its column types (see the module docstring).

    Every text column stays text (a host named ``1`` is ``'1'``, not a number); the
    booleans are ``true``/``false`` as core/results.py writes them.
    """
    text_columns = _TEXT_COLUMNS.get(kind, ())
    try:
        frame = pd.read_csv(path, dtype={c: "string" for c in text_columns},
                            keep_default_na=False, na_values=[""])
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise AnalysisError(f"{path}: cannot read it as CSV ({' '.join(str(exc).split())})") \
            from exc
    for column in _BOOL_COLUMNS.get(kind, ()):
        if column in frame:
            frame[column] = frame[column].map({"true": True, "false": False, True: True,
                                               False: False}).astype("boolean")
    return frame


def load_run(path: str | Path) -> Run:
    """The run in directory ``path`` (written by ``livemig run``).

    A missing ``actions.csv`` or ``events.csv`` (a run from an older livemig) is an empty
    table; a missing ``summary.json`` or ``migrations.csv`` is an :class:`AnalysisError`.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise AnalysisError(f"{directory}: not a directory; expected a run directory")
    if not is_run_dir(directory):
        raise AnalysisError(f"{directory}: no summary.json and migrations.csv in it; expected "
                            "a run directory written by livemig run")
    try:
        summary = json.loads((directory / "summary.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnalysisError(f"{directory / 'summary.json'}: not valid JSON ({exc})") from exc
    if not isinstance(summary, dict):
        raise AnalysisError(f"{directory / 'summary.json'}: expected a JSON object")
    tables = {}
    for kind in RUN_TABLES:
        file = directory / f"{kind}.csv"
        tables[kind] = read_table(file, kind) if file.is_file() else pd.DataFrame()
    return Run(directory=directory, summary=summary, scenario_text=_scenario_text(summary),
               **tables)


def _scenario_text(summary: dict[str, Any]) -> str | None:
    source = summary.get("scenario_source")
    if not isinstance(source, str) or not source:
        return None
    try:
        return Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def load_sweep(path: str | Path) -> pd.DataFrame:
    """The cells of a sweep directory (or of a ``cells.parquet`` file), one row per cell."""
    p = Path(path)
    file = p / SWEEP_FILE if p.is_dir() else p
    if not file.is_file():
        raise AnalysisError(f"{p}: no {SWEEP_FILE}; expected a sweep directory written by "
                            "livemig sweep")
    try:
        return pd.read_parquet(file)
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"{file}: cannot read it as Parquet ({' '.join(str(exc).split())})") \
            from exc


def axes(cells: pd.DataFrame) -> list[str]:
    """The sweep's axis columns (``axis.<path>``), in column order."""
    return [c for c in cells.columns if str(c).startswith(AXIS_PREFIX)]


def metrics(cells: pd.DataFrame, *, numeric: bool = False) -> list[str]:
    """The sweep's metric columns (``metric.<name>``); only the numeric ones if asked.

    >>> cells = pd.DataFrame({"metric.a": [1.0], "metric.b": ["x"]})
    >>> metrics(cells), metrics(cells, numeric=True)
    (['metric.a', 'metric.b'], ['metric.a'])
    """
    names = [c for c in cells.columns if str(c).startswith(METRIC_PREFIX)]
    if numeric:
        names = [c for c in names if pd.api.types.is_numeric_dtype(cells[c])
                 and not pd.api.types.is_bool_dtype(cells[c])]
    return names


def failed_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells that did not finish: a status other than ``done``/``ok``/``completed``,
    or an error recorded.

    >>> cells = pd.DataFrame({"cell": [0, 1], "status": ["done", "failed"],
    ...                       "error": [None, "ValueError: x"]})
    >>> failed_cells(cells)["cell"].tolist()
    [1]
    """
    bad = pd.Series(False, index=cells.index)
    if "status" in cells:
        bad |= ~cells["status"].astype("string").str.lower().isin(["done", "ok", "completed"])
    if "error" in cells:
        bad |= cells["error"].notna() & (cells["error"].astype("string") != "")
    return cells[bad]


def load_compare(path: str | Path) -> pd.DataFrame:
    """A calibration's ``compare.csv`` (``livemig compare``), or the one in ``path/compare/``
    or ``path/`` when ``path`` is a directory."""
    p = Path(path)
    candidates = [p] if p.is_file() else [p / "compare" / "compare.csv", p / "compare.csv"]
    for file in candidates:
        if file.is_file():
            frame = pd.read_csv(file, dtype={"instance": "string"})
            if "outcome_match" in frame:
                frame["outcome_match"] = frame["outcome_match"].astype(bool)
            return frame
    raise AnalysisError(f"{p}: no compare.csv; expected the output of livemig compare "
                        "(or a calibration directory holding compare/compare.csv)")


# -- first questions --------------------------------------------------------------------------
def slowest(run: Run, n: int = 10, by: str = "total_time_s") -> pd.DataFrame:
    """The ``n`` completed migrations with the largest ``by``, largest first."""
    columns = [c for c in ("id", "instance", "source", "dest", "total_time_s", "downtime_ms",
                           "iterations", "data_transferred_bytes") if c in run.migrations]
    done = run.completed
    return done.sort_values([by, "id"], ascending=[False, True]).head(n)[columns] \
        .reset_index(drop=True)


def ecdf(values: pd.Series | list[float]) -> pd.DataFrame:
    """The empirical CDF of ``values`` (NaN dropped): columns ``value`` and ``fraction``.

    >>> ecdf([3.0, 1.0, float("nan"), 2.0]).to_dict("list")
    {'value': [1.0, 2.0, 3.0], 'fraction': [0.3333333333333333, 0.6666666666666666, 1.0]}
    """
    xs = sorted(float(v) for v in values if not math.isnan(float(v)))
    n = len(xs)
    return pd.DataFrame({"value": xs, "fraction": [(i + 1) / n for i in range(n)]})


def outcome_table(run: Run) -> pd.DataFrame:
    """Migrations by status: count, mean total time (s) and mean downtime (ms)."""
    m = run.migrations
    if m.empty:
        return pd.DataFrame(columns=["status", "count", "mean_total_time_s",
                                     "mean_downtime_ms"])
    table = m.groupby("status", sort=True).agg(
        count=("id", "size"), mean_total_time_s=("total_time_s", "mean"),
        mean_downtime_ms=("downtime_ms", "mean"))
    return table.reset_index()


def pareto_front(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The rows not dominated when both ``x`` and ``y`` are to be minimised, sorted by ``x``.

    A row is dominated when another is no worse in both and better in one.

    >>> f = pd.DataFrame({"energy": [1, 2, 3, 2], "slav": [5, 3, 4, 6]})
    >>> pareto_front(f, "energy", "slav").to_dict("list")
    {'energy': [1, 2], 'slav': [5, 3]}
    """
    ordered = frame.dropna(subset=[x, y]).sort_values([x, y], kind="stable")
    keep = []
    best_y = math.inf
    for index, value in ordered[y].items():
        if value < best_y:
            keep.append(index)
            best_y = value
    return ordered.loc[keep]
