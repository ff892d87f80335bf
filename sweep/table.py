"""``DIR/cells.parquet``: one row per cell of a sweep (pandas + pyarrow).

A sweep directory holds (``livemig sweep SWEEP.yaml --out DIR``):

* ``sweep.json``: the sweep as run last (name, sweep file, scenarios, axis paths,
  seeds, metrics, cell keys in order, livemig version);
* ``cells/<cell>.json``: one file per finished cell, written atomically when it
  finishes (:data:`RECORD_KEYS`; ``summary`` is the run's whole ``summary.json``);
* ``runs/<cell>/``: the run's directory, as ``livemig run`` writes it (``--keep-runs``);
* ``cells.parquet``: the table below, rebuilt from ``cells/`` at the end of every sweep
  (rows of the sweep's own cells, in the sweep's order; earlier sweeps' files stay).

Columns of ``cells.parquet``, in this order:

=================  =======  ==========================================================
``cell``           string   the cell's identity: 16 hex digits of the SHA-256 of its
                            resolved scenario and seed (:func:`livemig.sweep.cells.cell_key`)
``status``         string   ``ok``: the run ended (migrations that failed are results:
                            see the metrics); ``failed``: the run raised or its worker died
``error``          string   why it failed, one line (null when ok)
``scenario``       string   the base scenario file, as written in the sweep file
``seed``           int      the run's seed
``axis.<path>``    any      one per axis, the value as written in the sweep file (a
                            quantity stays text, ``"10Gbit/s"``; a list or mapping is JSON)
``metric.<key>``   any      every key of the run's ``summary.json``, nested keys joined
                            with ``.`` (``metric.outcomes.completed``,
                            ``metric.completed_downtime_ms.p95``, consolidation metrics
                            too: whatever keys exist); lists as JSON text; only the keys
                            under the sweep's ``metrics:`` when it has that list; null where
                            a cell's summary lacks the key, and for a failed cell
``wall_s``         float    seconds the cell took on its worker (run, summary, run files)
``worker``         string   where it ran (host:pid)
``finished_at``    string   when it finished (UTC, ISO 8601)
``run_dir``        string   ``runs/<cell>`` (relative to DIR) with ``--keep-runs``, else null
=================  =======  ==========================================================

A column whose values mix types (text and numbers) is written as text.

>>> flatten({"outcomes": {"completed": 3, "error": 0}, "drains": [{"host": "a"}], "x": None})
{'outcomes.completed': 3, 'outcomes.error': 0, 'drains': '[{"host": "a"}]', 'x': None}
>>> select(flatten({"a": {"b": 1, "c": 2}, "ab": 3}), ("a",))
{'a.b': 1, 'a.c': 2}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

FIRST_COLUMNS = ("cell", "status", "error", "scenario", "seed")
LAST_COLUMNS = ("wall_s", "worker", "finished_at", "run_dir")
AXIS_PREFIX, METRIC_PREFIX = "axis.", "metric."
STATUS_OK, STATUS_FAILED = "ok", "failed"
RECORD_KEYS = ("cell", "status", "error", "traceback", "scenario", "kind", "seed", "axes",
               "summary", "wall_s", "worker", "finished_at", "run_dir")
TABLE_FILE = "cells.parquet"


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of ``a.b.c`` keys; lists as JSON text."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(value, sort_keys=True)
        else:
            flat[name] = value
    return flat


def select(flat: Mapping[str, Any], metrics: Sequence[str] | None) -> dict[str, Any]:
    """The keys of ``flat`` that are, or are below, one of ``metrics`` (all if None)."""
    if metrics is None:
        return dict(flat)
    return {k: v for k, v in flat.items()
            if any(k == m or k.startswith(m + ".") for m in metrics)}


def row(record: Mapping[str, Any], axes: Sequence[tuple[str, Any]],
        metrics: Sequence[str] | None) -> dict[str, Any]:
    """The table row of a cell's record (``cells/<cell>.json``), with the sweep's axes."""
    out: dict[str, Any] = {name: record.get(name) for name in FIRST_COLUMNS}
    out.update({AXIS_PREFIX + path: value for path, value in axes})
    summary = record.get("summary") or {}
    out.update({METRIC_PREFIX + k: v for k, v in select(flatten(summary), metrics).items()})
    out.update({name: record.get(name) for name in LAST_COLUMNS})
    return out


def missing_metrics(records: Iterable[Mapping[str, Any]], metrics: Sequence[str]) -> list[str]:
    """The ``metrics`` that no finished cell's summary has.

    >>> missing_metrics([{"summary": {"a": {"b": 1}}}], ["a", "a.b", "z"])
    ['z']
    """
    found: set[str] = set()
    for record in records:
        found.update(select(flatten(record.get("summary") or {}), metrics))
    return [m for m in metrics if not any(k == m or k.startswith(m + ".") for k in found)]


def frame(rows: Sequence[Mapping[str, Any]], axis_paths: Sequence[str]) -> Any:
    """The pandas DataFrame of ``rows`` with the columns in the documented order."""
    import pandas as pd

    columns = [*FIRST_COLUMNS, *(AXIS_PREFIX + p for p in axis_paths)]
    metric_columns: dict[str, None] = {}
    for r in rows:
        metric_columns.update((k, None) for k in r if k.startswith(METRIC_PREFIX))
    columns += [*sorted(metric_columns), *LAST_COLUMNS]
    df = pd.DataFrame([[r.get(c) for c in columns] for r in rows], columns=columns)
    for column in df.columns:
        values = df[column].dropna()
        kinds = {_kind(v) for v in values}
        if len(kinds) > 1:  # e.g. text in one cell, a number in another
            df[column] = [None if v is None or v != v else
                          (v if isinstance(v, str) else json.dumps(v)) for v in df[column]]
    df["seed"] = df["seed"].astype("int64")
    return df


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def arrow_table(df: Any) -> Any:
    """``df`` as a pyarrow Table whose documented columns have their documented types, even
    where every value is null (pandas alone writes an all-null ``error`` or ``run_dir``,
    as in a sweep with no failure, as Arrow's ``null`` type, not text); the axis and
    metric columns keep the types pyarrow infers.

    >>> import pandas as pd
    >>> t = arrow_table(pd.DataFrame({"cell": ["a"], "status": ["ok"], "error": [None],
    ...     "scenario": ["s.yaml"], "seed": [1], "metric.x": [2.5], "wall_s": [0.1],
    ...     "worker": ["h:1"], "finished_at": ["t"], "run_dir": [None]}))
    >>> [str(t.schema.field(c).type) for c in ("error", "seed", "metric.x", "run_dir")]
    ['string', 'int64', 'double', 'string']
    """
    import pyarrow as pa

    types = {"cell": pa.string(), "status": pa.string(), "error": pa.string(),
             "scenario": pa.string(), "seed": pa.int64(), "wall_s": pa.float64(),
             "worker": pa.string(), "finished_at": pa.string(), "run_dir": pa.string()}
    table = pa.Table.from_pandas(df, preserve_index=False)
    for name, kind in types.items():
        if name in table.column_names:
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, table.column(name).cast(kind))
    return table


def write_parquet(df: Any, path: Path) -> None:
    """``df`` into ``path`` atomically (a temporary file renamed over it), with the
    documented column types (:func:`arrow_table`)."""
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(arrow_table(df), tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
