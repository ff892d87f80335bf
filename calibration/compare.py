"""``livemig compare REAL SIM``: the per-migration error of a prediction against reality.

``REAL`` and ``SIM`` are each a run directory (with ``migrations.csv``) or a directory of
run directories (``livemig calibrate``'s ``real/``, one per case; taken in name order).
Migrations are matched by instance and order: the k-th migration of an instance in
``REAL`` with the k-th of the same instance in ``SIM``. For each pair: total time,
downtime, bytes transferred and iterations, real and predicted, and the relative error
``(sim - real) / real``; the outcome (status, and the error when not completed) must be
the same. The summary gives the median and p90 of the absolute relative errors.

>>> real = [{"instance": "a", "status": "completed", "error": "", "total_time_s": "2.0",
...          "downtime_ms": "40.0", "data_transferred_bytes": "100", "iterations": "4"}]
>>> sim = [{"instance": "a", "status": "completed", "error": "", "total_time_s": "2.2",
...         "downtime_ms": "30.0", "data_transferred_bytes": "101", "iterations": "3"}]
>>> (row,) = pair_rows(real, sim)
>>> row["total_time_s_err"], row["downtime_ms_err"], row["outcome_match"]
(0.1, -0.25, True)
>>> s = summary([row])
>>> s["total_time_s"], s["outcome"]
({'n': 1, 'median': 0.1, 'p90': 0.1}, {'n': 1, 'matched': 1})
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

METRICS = ("total_time_s", "downtime_ms", "data_transferred_bytes", "iterations")
COLUMNS = (
    "instance", "n", "real_outcome", "sim_outcome", "outcome_match",
    *[c for m in METRICS for c in (f"real_{m}", f"sim_{m}", f"{m}_err")],
)
PLOTTED = (("total_time_s", "total time (s)"), ("downtime_ms", "downtime (ms)"),
           ("data_transferred_bytes", "bytes transferred"))


class CompareError(ValueError):
    """A directory that holds no migrations to compare."""


def read_migrations(path: Path) -> list[dict[str, str]]:
    """The rows of ``path/migrations.csv``, or of every ``path/*/migrations.csv`` in name
    order when ``path`` is a directory of run directories."""
    if not path.is_dir():
        raise CompareError(f"{path}: not a directory")
    files = [path / "migrations.csv"] if (path / "migrations.csv").is_file() else sorted(
        p / "migrations.csv" for p in path.iterdir() if (p / "migrations.csv").is_file())
    if not files:
        raise CompareError(f"{path}: no migrations.csv in it or in its subdirectories "
                           "(expected a run directory or a directory of them)")
    rows: list[dict[str, str]] = []
    for f in files:
        with f.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("instance", "status", *METRICS)
                       if c not in (reader.fieldnames or [])]
            if missing:
                raise CompareError(f"{f}: line 1: missing columns {', '.join(missing)} "
                                   "(expected livemig's migrations.csv)")
            rows += list(reader)
    return rows


def outcome(row: dict[str, Any] | None) -> str:
    """``completed``, or ``status:error`` (``error:timeout`` ...); ``missing`` for no row."""
    if row is None:
        return "missing"
    status = row.get("status") or ""
    error = row.get("error") or ""
    return status if status == "completed" or not error else f"{status}:{error}"


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _by_instance(rows: Sequence[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        out[r["instance"]].append(r)
    return out


def pair_rows(
    real: Sequence[dict[str, str]], sim: Sequence[dict[str, str]]
) -> list[dict[str, Any]]:
    """One row per migration of either side (real order first), matched by instance and
    order; a migration without a partner has outcome ``missing`` on the other side."""
    real_by, sim_by = _by_instance(real), _by_instance(sim)
    instances = list(real_by) + [i for i in sim_by if i not in real_by]
    out = []
    for inst in instances:
        r_list, s_list = real_by.get(inst, []), sim_by.get(inst, [])
        for n in range(max(len(r_list), len(s_list))):
            r = r_list[n] if n < len(r_list) else None
            s = s_list[n] if n < len(s_list) else None
            row: dict[str, Any] = {"instance": inst, "n": n + 1, "real_outcome": outcome(r),
                                   "sim_outcome": outcome(s)}
            row["outcome_match"] = row["real_outcome"] == row["sim_outcome"]
            for m in METRICS:
                rv = _number(r.get(m)) if r else None
                sv = _number(s.get(m)) if s else None
                row[f"real_{m}"], row[f"sim_{m}"] = rv, sv
                row[f"{m}_err"] = (round((sv - rv) / rv, 6)
                                   if rv not in (None, 0) and sv is not None else None)
            out.append(row)
    return out


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per metric: how many pairs have an error, the median and p90 of ``|error|``."""
    from livemig.core.results import percentile

    out: dict[str, dict[str, Any]] = {}
    for m in METRICS:
        errs = [abs(r[f"{m}_err"]) for r in rows if r[f"{m}_err"] is not None]
        out[m] = {"n": len(errs),
                  "median": round(percentile(errs, 50), 6) if errs else None,
                  "p90": round(percentile(errs, 90), 6) if errs else None}
    out["outcome"] = {"n": len(rows), "matched": sum(1 for r in rows if r["outcome_match"])}
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f}%"


def table(rows: Sequence[dict[str, Any]], summ: dict[str, dict[str, Any]]) -> str:
    """The error table as text: one line per migration, then median and p90 of |error|."""
    head = f"{'instance':<24} {'outcome (real/sim)':<30} {'total':>8} {'downtime':>9} " \
           f"{'bytes':>8} {'iter':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        oc = r["real_outcome"]
        if not r["outcome_match"]:
            oc = f"{r['real_outcome']}/{r['sim_outcome']} !"
        name = r["instance"] if r["n"] == 1 else f"{r['instance']}#{r['n']}"
        lines.append(f"{name:<24} {oc:<30} {_pct(r['total_time_s_err']):>8} "
                     f"{_pct(r['downtime_ms_err']):>9} {_pct(r['data_transferred_bytes_err']):>8} "
                     f"{_pct(r['iterations_err']):>8}")
    lines.append("-" * len(head))
    for label in ("median", "p90"):
        cells = [summ[m][label] for m in METRICS]
        text = [("-" if c is None else f"{c * 100:.1f}%") for c in cells]
        lines.append(f"{label + ' |error|':<24} {'':<30} {text[0]:>8} {text[1]:>9} "
                     f"{text[2]:>8} {text[3]:>8}")
    o = summ["outcome"]
    lines.append(f"outcomes matched: {o['matched']}/{o['n']}")
    return "\n".join(lines)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if r[k] is None else r[k] for k in COLUMNS})


def plot(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``compare.png``: predicted vs real, one point per migration, the line y = x."""
    from livemig.core.plots import _figure, _save

    fig = _figure(4.0 * len(PLOTTED), 4.0)
    for i, (metric, label) in enumerate(PLOTTED):
        ax = fig.add_subplot(1, len(PLOTTED), i + 1)
        pts = [(r[f"real_{metric}"], r[f"sim_{metric}"]) for r in rows
               if r[f"real_{metric}"] is not None and r[f"sim_{metric}"] is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, s=18, color="#1f77b4", zorder=3)
            hi = max(max(xs), max(ys)) * 1.05 or 1.0
            ax.plot([0, hi], [0, hi], color="#7f7f7f", linewidth=1, linestyle="--", label="y = x")
            ax.set_xlim(0, hi)
            ax.set_ylim(0, hi)
            ax.legend(loc="lower right", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no pairs", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(f"real {label}")
        ax.set_ylabel(f"predicted {label}")
        ax.set_title(f"{label}: {len(pts)} migrations", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def compare(real_dir: Path, sim_dir: Path, out_dir: Path) -> tuple[str, dict[str, Any]]:
    """Read both sides, write ``compare.csv`` and ``compare.png`` into ``out_dir``;
    returns the printed table and the summary."""
    rows = pair_rows(read_migrations(real_dir), read_migrations(sim_dir))
    summ = summary(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = {name: out_dir / f".tmp-{name}" for name in ("compare.csv", "compare.png")}
    try:
        write_csv(staged["compare.csv"], rows)
        plot(staged["compare.png"], rows)
        for name, tmp in staged.items():  # both written: only then replace the old ones
            tmp.replace(out_dir / name)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
    return table(rows, summ), summ
