"""``livemig report``: one self-contained HTML file of a run or a sweep.

Everything is inside the file: styles in a ``<style>`` element, plots as PNG ``data:`` URIs,
no script, no link to anything outside, so the file can be attached to a paper draft or a
CI run and opened anywhere, offline.

* A run directory: the scenario (name, driver, seed, policy, model, and its YAML when the
  file is still there), the outcome table and time statistics, the invariants, the
  expectations' verdicts, the run's plots, the slowest and the unfinished migrations.
* A sweep directory (``cells.parquet``): the cells (done / failed), the failures with their
  errors, and per axis a table of each metric's mean (and standard deviation) by the axis's
  values with a plot of it; then every cell.

>>> _cell(None), _cell(0.30000000000000004), _cell(1234567.0), _cell("<b>")
('', '0.3', '1.23457e+06', '&lt;b&gt;')
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from livemig.analysis.load import Run

MAX_ROWS = 200
"""The longest table written out; longer ones say how many rows were left out."""
MAX_METRIC_PLOTS = 6
"""Metrics plotted per axis (the first ones, in column order); the table has them all."""

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: .6em 0; font-size: 90%; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.met td.verdict { color: #1a7f1a; font-weight: bold; }
tr.failed td.verdict { color: #c62828; font-weight: bold; }
.ok { color: #1a7f1a; font-weight: bold; } .bad { color: #c62828; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; margin: .4em 0; display: block; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: 85%; }
p.note { color: #666; font-size: 90%; }
div.wide { overflow-x: auto; }
"""


# -- HTML pieces ------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    """A table cell's text, escaped: floats in 6 significant digits, missing as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.6g}"
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return ""
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    return html.escape(str(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *,
          row_classes: Sequence[str] | None = None, css_class: str = "") -> str:
    """An HTML table; at most :data:`MAX_ROWS` rows, then a note of how many more.

    >>> print(table(["a", "b"], [[1, "x"]]))
    <table><thead><tr><th>a</th><th>b</th></tr></thead><tbody>
    <tr><td class="num">1</td><td>x</td></tr>
    </tbody></table>
    """
    rows = list(rows)
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for i, row in enumerate(rows[:MAX_ROWS]):
        cls = f' class="{row_classes[i]}"' if row_classes else ""
        cells = "".join(
            f'<td class="num">{_cell(v)}</td>' if _is_number(v) else
            f'<td class="verdict">{_cell(v)}</td>' if row_classes and h == "verdict" else
            f"<td>{_cell(v)}</td>" for h, v in zip(header, row, strict=True))
        body.append(f"<tr{cls}>{cells}</tr>")
    attr = f' class="{css_class}"' if css_class else ""
    out = f"<table{attr}><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) \
        + "\n</tbody></table>"
    if len(header) > 8:  # a wide table scrolls on its own, the page does not
        out = f'<div class="wide">{out}</div>'

    if len(rows) > MAX_ROWS:
        out += f'\n<p class="note">... and {len(rows) - MAX_ROWS} more rows</p>'
    return out


def frame_table(frame: pd.DataFrame) -> str:
    """:func:`table` of a DataFrame (its index dropped); numbers as Python numbers."""
    rows = [[None if _missing(v) else (v.item() if hasattr(v, "item") else v) for v in row]
            for row in frame.itertuples(index=False, name=None)]
    return table([str(c) for c in frame.columns], rows)


def _missing(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def image(png: bytes, alt: str) -> str:
    """An ``<img>`` holding ``png`` as a base64 ``data:`` URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    return table(["", ""], [[k, v] for k, v in pairs]).replace(
        "<thead><tr><th></th><th></th></tr></thead>", "", 1)


def page(title: str, sections: Iterable[str]) -> str:
    """The whole document."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n")


def _figure_png(draw: Any, width: float = 8.0, height: float = 3.5) -> bytes:
    """Draw on a new figure (``draw(fig)``) and return its PNG bytes."""
    from livemig.core.plots import _figure

    fig = _figure(width, height)
    draw(fig)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


# -- a run ------------------------------------------------------------------------------------
def run_report(run: Run) -> str:
    """The report of one run."""
    from livemig.analysis import load

    s = run.summary
    sections = [
        "<h2>Scenario</h2>",
        key_values([
            ("scenario", s.get("scenario")), ("file", s.get("scenario_source")),
            ("driver", s.get("driver")), ("seed", s.get("seed")),
            ("livemig", s.get("livemig_version")), ("instances", s.get("instances")),
            ("migrations", s.get("migrations")),
            ("simulated time (s)", s.get("sim_time_s")),
            ("horizon reached", s.get("horizon_reached")),
            ("wall time (s)", s.get("wall_time_s")),
        ]),
    ]
    if isinstance(s.get("policy"), dict):
        sections += ["<h3>Migration policy</h3>", key_values(sorted(s["policy"].items()))]
    model = s.get("model")
    if isinstance(model, dict):
        params = model.get("params") if isinstance(model.get("params"), dict) else {}
        sections += ["<h3>Pre-copy model</h3>", key_values(
            [("model", model.get("name")), ("profile", model.get("profile")),
             *sorted(params.items())])]
    if run.scenario_text is not None:
        sections.append("<details><summary>scenario file</summary><pre>"
                        f"{html.escape(run.scenario_text)}</pre></details>")

    sections += ["<h2>Outcomes</h2>", frame_table(load.outcome_table(run))]
    stats = [(name, s.get(key)) for name, key in (
        ("total time of completed migrations (s)", "completed_total_time_s"),
        ("downtime of completed migrations (ms)", "completed_downtime_ms"))]
    stat_rows = [[name, *(block.get(k) for k in ("count", "mean", "median", "p95", "max"))]
                 for name, block in stats if isinstance(block, dict)]
    if stat_rows:
        sections.append(table(["", "count", "mean", "median", "p95", "max"], stat_rows))
    sections.append(key_values([("data transferred (bytes)", s.get("data_transferred_bytes")),
                                ("host mismatches", s.get("host_mismatches"))]))

    sections += ["<h2>Invariants</h2>", _invariants(s.get("invariants"))]
    sections += ["<h2>Expectations</h2>", _expectations(s.get("expectations"))]
    sections += ["<h2>Plots</h2>", *_run_plots(run)]

    sections += ["<h2>Slowest migrations</h2>"]
    slow = load.slowest(run, 10)
    sections.append(frame_table(slow) if not slow.empty
                    else '<p class="note">no completed migration</p>')
    unfinished = run.migrations[run.migrations["status"] != "completed"] \
        if not run.migrations.empty else run.migrations
    if not unfinished.empty:
        cols = [c for c in ("id", "instance", "source", "dest", "status", "error",
                            "error_message") if c in unfinished]
        sections += [f"<h2>Not completed ({len(unfinished)})</h2>",
                     frame_table(unfinished[cols])]
    drains = s.get("drains")
    if isinstance(drains, list) and drains:
        sections += ["<h2>Drains</h2>", table(
            ["host", "at (s)", "completed", "instances left"],
            [[d.get("host"), d.get("at"), d.get("completed"),
              ", ".join(d.get("instances_left") or [])] for d in drains])]
    return page(f"livemig report: {run.name}", sections)


def _invariants(block: Any) -> str:
    if not isinstance(block, dict):
        return '<p class="note">not checked</p>'
    violations = int(block.get("violations", 0))
    verdict = ('<p class="ok">0 violations</p>' if violations == 0
               else f'<p class="bad">{violations} violation(s)</p>')
    checked = block.get("checked") if isinstance(block.get("checked"), dict) else {}
    parts = [verdict, key_values([("unverifiable", block.get("unverifiable")),
                                  *((f"checked: {k}", v) for k, v in sorted(checked.items()))])]
    details = [*block.get("details", []), *block.get("unverifiable_details", [])]
    if details:
        parts.append("<ul>" + "".join(f"<li>{html.escape(str(d))}</li>"
                                      for d in details[:MAX_ROWS]) + "</ul>")
    return "\n".join(parts)


def _expectations(block: Any) -> str:
    if not isinstance(block, dict):
        return '<p class="note">the scenario has no expect: section</p>'
    details = list(block.get("details", []))
    head = (f'<p class="{"ok" if not block.get("failed") else "bad"}">{block.get("met", 0)} '
            f'met, {block.get("failed", 0)} failed</p>')
    return head + table(
        ["line", "expectation", "actual", "verdict"],
        [[d.get("line"), d.get("expectation"), d.get("actual"),
          "met" if d.get("met") else "FAILED"] for d in details],
        row_classes=["met" if d.get("met") else "failed" for d in details])


def _run_plots(run: Run) -> list[str]:
    """The run's own PNGs when they are there, else CDFs drawn from its tables."""
    from livemig.core.plots import PLOT_FILES

    found = [(name, run.directory / name) for name in PLOT_FILES
             if (run.directory / name).is_file()]
    if found:
        return [image(path.read_bytes(), name) for name, path in found]
    done = run.completed
    out = []
    for column, label in (("total_time_s", "total time (s)"), ("downtime_ms", "downtime (ms)")):
        values = done[column].dropna().tolist() if column in done else []
        if values:
            out.append(image(_cdf_png(values, label), f"cdf of {label}"))
    return out or ['<p class="note">no plot: no completed migration</p>']


def _cdf_png(values: list[float], label: str) -> bytes:
    from livemig.analysis.load import ecdf

    curve = ecdf(values)

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        ax.step(curve["value"], curve["fraction"], where="post")
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of migrations")
        ax.grid(alpha=.3)

    return _figure_png(draw, 6, 3.5)


# -- a sweep ----------------------------------------------------------------------------------
def sweep_report(cells: pd.DataFrame, directory: Path) -> str:
    """The report of a sweep's cells."""
    from livemig.analysis import load

    failed = load.failed_cells(cells)
    axes = load.axes(cells)
    metrics = load.metrics(cells, numeric=True)
    done = cells.drop(index=failed.index)
    wall = cells["wall_s"].sum() if "wall_s" in cells else None
    sections = ["<h2>Cells</h2>", key_values([
        ("directory", str(directory)), ("cells", len(cells)), ("done", len(done)),
        ("failed", len(failed)), ("axes", ", ".join(a.removeprefix(load.AXIS_PREFIX)
                                                   for a in axes)),
        ("metrics", len(metrics)), ("summed cell wall time (s)", wall)])]
    if not failed.empty:
        cols = [c for c in ("cell", "seed", *axes, "status", "error") if c in failed]
        sections += [f"<h2>Failed cells ({len(failed)})</h2>", frame_table(failed[cols])]
    for axis in axes:
        sections += [f"<h2>By {html.escape(axis.removeprefix(load.AXIS_PREFIX))}</h2>",
                     *_axis_section(done, axis, metrics)]
    cols = [c for c in ("cell", "status", "seed", *axes, *metrics, "wall_s") if c in cells]
    sections += ["<h2>Every cell</h2>", frame_table(cells[cols])]
    return page(f"livemig sweep report: {directory.name}", sections)


def _axis_section(done: pd.DataFrame, axis: str, metrics: list[str]) -> list[str]:
    from livemig.analysis import load

    if done.empty or not metrics:
        return ['<p class="note">no finished cell with a numeric metric</p>']
    key = done[axis].astype("string").fillna("(none)")
    grouped = done.groupby(key, sort=False)[metrics]
    means, stds, counts = grouped.mean(), grouped.std(), grouped.size()
    order = _axis_order(done, axis, list(means.index))
    rows = []
    for value in order:
        row: list[Any] = [value, int(counts[value])]
        for m in metrics:
            mean, std = means.at[value, m], stds.at[value, m]
            row.append(None if _missing(mean) else float(mean))
            row.append(None if _missing(std) else float(std))
        rows.append(row)
    header = [axis.removeprefix(load.AXIS_PREFIX), "cells"]
    for m in metrics:
        short = m.removeprefix(load.METRIC_PREFIX)
        header += [f"{short} mean", f"{short} sd"]
    shown = metrics[:MAX_METRIC_PLOTS]
    png = _axis_png(order, means.loc[order, shown], stds.loc[order, shown],
                    axis.removeprefix(load.AXIS_PREFIX))
    note = "" if len(metrics) <= MAX_METRIC_PLOTS else (
        f'<p class="note">plotted: the first {MAX_METRIC_PLOTS} of {len(metrics)} metrics</p>')
    return [table(header, rows), image(png, f"metrics by {axis}"), note]


def _axis_order(done: pd.DataFrame, axis: str, labels: list[str]) -> list[str]:
    """Numeric axis values in numeric order; others in the order they first appear."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(done[axis]) and not pd.api.types.is_bool_dtype(done[axis]):
        def number(label: str) -> float:
            try:
                return float(label)
            except ValueError:
                return math.inf
        return sorted(labels, key=number)
    return labels


def _axis_png(order: list[str], means: pd.DataFrame, stds: pd.DataFrame, axis: str) -> bytes:
    from livemig.analysis.load import METRIC_PREFIX

    columns = list(means.columns)
    n = len(columns)
    cols = min(n, 3)
    rows = math.ceil(n / cols)

    def draw(fig: Any) -> None:
        for i, metric in enumerate(columns):
            ax = fig.add_subplot(rows, cols, i + 1)
            xs = list(range(len(order)))
            ax.bar(xs, means[metric].astype(float).fillna(0).tolist(),
                   yerr=stds[metric].astype(float).fillna(0).tolist(), capsize=3,
                   color="#4c78a8")
            ax.set_xticks(xs, [str(o) for o in order], rotation=30, ha="right", fontsize=8)
            ax.set_title(metric.removeprefix(METRIC_PREFIX), fontsize=9)
            ax.set_xlabel(axis, fontsize=8)
            ax.tick_params(axis="y", labelsize=8)

    return _figure_png(draw, 3.6 * cols, 3.0 * rows)


# -- the file ---------------------------------------------------------------------------------
def render(source: str | Path) -> str:
    """The HTML of the run or sweep directory ``source``."""
    from livemig.analysis import load

    directory = Path(source)
    if load.is_sweep_dir(directory):
        return sweep_report(load.load_sweep(directory), directory)
    if load.is_run_dir(directory):
        return run_report(load.load_run(directory))
    if not directory.is_dir():
        raise load.AnalysisError(f"{directory}: not a directory; expected a run directory "
                                 "or a sweep directory")
    raise load.AnalysisError(f"{directory}: neither a run directory (summary.json, "
                             "migrations.csv) nor a sweep directory (cells.parquet)")


def write_report(source: str | Path, out: str | Path) -> Path:
    """Render ``source`` and write it to ``out`` atomically (a temporary file renamed)."""
    text = render(source)
    path = Path(out)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
