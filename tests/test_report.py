"""``livemig report``: one self-contained HTML file of a run or a sweep, checked as text and
rendered in headless Chromium (Debian's ``chromium``)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from livemig.analysis.report import MAX_ROWS, render
from livemig.core.cli import main

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


class Parsed(HTMLParser):
    """Tables (as lists of row cell texts), images and every URL-bearing attribute."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self.tags: list[str] = []
        self.body_rows = 0
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_body = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr":
            self._row = []
            self.body_rows += self._in_body
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(values.get("src") or "")
        for name in ("src", "href", "action", "srcset", "poster"):
            if values.get(name):
                self.urls.append(values[name] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def png_size(data_uri: str) -> tuple[int, int]:
    assert data_uri.startswith("data:image/png;base64,")
    raw = base64.b64decode(data_uri.split(",", 1)[1])
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", raw[16:24])


def assert_self_contained(text: str, parsed: Parsed) -> None:
    assert all(u.startswith("data:") for u in parsed.urls), parsed.urls
    assert "script" not in parsed.tags and "link" not in parsed.tags
    assert "url(" not in text and "@import" not in text


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    assert main(["run", str(REPO / "scenarios" / "rack-drain-faults.yaml"), "--out", str(out),
                 "--no-progress"]) == 0
    return out


def test_a_run_report_holds_the_scenario_outcomes_verdicts_and_plots(run_dir: Path) -> None:
    text = render(run_dir)
    parsed = Parsed(text)
    assert_self_contained(text, parsed)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"<h1>livemig report: {summary['scenario']}</h1>" in text
    assert "name: rack-drain-faults" in text  # the scenario file, escaped in a <pre>
    outcome = next(t for t in parsed.tables if t and t[0][:2] == ["status", "count"])
    counts = {row[0]: int(row[1]) for row in outcome[1:]}
    assert counts == {k: v for k, v in summary["outcomes"].items() if v}
    verdicts = next(t for t in parsed.tables if t and t[0] == ["line", "expectation", "actual",
                                                                 "verdict"])
    details = summary["expectations"]["details"]
    assert [r[1] for r in verdicts[1:]] == [d["expectation"] for d in details]
    assert [r[3] for r in verdicts[1:]] == ["met" if d["met"] else "FAILED" for d in details]
    assert "0 violations" in text
    assert len(parsed.images) == 3  # the run's timeline and two CDFs, embedded
    for src, name in zip(parsed.images, ("timeline.png", "cdf_total_time.png",
                                         "cdf_downtime.png"), strict=True):
        assert base64.b64decode(src.split(",", 1)[1]) == (run_dir / name).read_bytes()
    assert "Not completed (1)" in text  # the migration whose destination died


def test_a_run_without_its_plots_gets_cdfs_drawn_from_its_tables(run_dir: Path,
                                                                 tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    for png in copy.glob("*.png"):
        png.unlink()
    parsed = Parsed(render(copy))
    assert len(parsed.images) == 2
    assert all(png_size(src)[0] > 100 for src in parsed.images)


def sweep_cells() -> pd.DataFrame:
    rows = []
    for cell, (policy, bw, seed) in enumerate(
            (p, b, s) for p in ("weighed", "random") for b in (1, 10) for s in (1, 2)):
        rows.append({"cell": cell, "status": "done", "error": None, "seed": seed,
                     "axis.policy.scheduler.heuristic": policy,
                     "axis.policy.migration.bandwidth": bw,
                     "metric.migrations": 10 + cell, "metric.downtime_ms": 100.0 * bw + seed,
                     "metric.scenario": "s", "wall_s": 0.5})
    rows.append({"cell": 8, "status": "failed", "error": "ValueError: <boom>", "seed": 3,
                 "axis.policy.scheduler.heuristic": "random",
                 "axis.policy.migration.bandwidth": 10, "metric.migrations": None,
                 "metric.downtime_ms": None, "metric.scenario": None, "wall_s": 0.1})
    return pd.DataFrame(rows)


def test_a_sweep_report_compares_the_cells_along_each_axis(tmp_path: Path) -> None:
    cells = sweep_cells()
    cells.to_parquet(tmp_path / "cells.parquet")
    text = render(tmp_path)
    parsed = Parsed(text)
    assert_self_contained(text, parsed)
    assert "ValueError: &lt;boom&gt;" in text
    assert len(parsed.images) == 2  # one plot per axis
    assert all(png_size(src)[0] > 300 for src in parsed.images)
    by_policy = next(t for t in parsed.tables if t and t[0][0] == "policy.scheduler.heuristic")
    assert by_policy[0][:4] == ["policy.scheduler.heuristic", "cells", "migrations mean",
                                "migrations sd"]
    done = cells[cells["status"] == "done"]
    expected = done.groupby("axis.policy.scheduler.heuristic")["metric.migrations"].mean()
    got = {row[0]: (int(row[1]), float(row[2])) for row in by_policy[1:]}
    assert got == {"weighed": (4, expected["weighed"]), "random": (4, expected["random"])}
    by_bw = next(t for t in parsed.tables if t and t[0][0] == "policy.migration.bandwidth")
    assert [row[0] for row in by_bw[1:]] == ["1", "10"]
    every = [t for t in parsed.tables if t and t[0][0] == "cell"][-1]
    assert len(every) == 1 + len(cells)


def test_a_long_table_is_cut_with_a_note(tmp_path: Path) -> None:
    n = MAX_ROWS + 5
    pd.DataFrame({"cell": range(n), "status": ["done"] * n, "axis.x": [i % 3 for i in range(n)],
                  "metric.y": [float(i) for i in range(n)]}).to_parquet(tmp_path / "cells.parquet")
    text = render(tmp_path)
    assert "... and 5 more rows" in text


def test_livemig_report_writes_the_file_and_refuses_what_is_not_a_run(
        run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert f"report written to {out}" in capsys.readouterr().out
    assert main(["report", str(run_dir), "--out", str(out)]) == 2
    assert "already exists (use --force" in capsys.readouterr().err
    assert main(["report", str(run_dir), "--out", str(out), "--force"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "neither a run directory" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob(".*tmp*"))


def test_a_report_in_the_run_directory_does_not_block_a_forced_rerun(
        run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert main(["report", str(copy)]) == 0
    assert (copy / "report.html").is_file()
    assert main(["run", str(REPO / "scenarios" / "rack-drain-faults.yaml"), "--out", str(copy),
                 "--no-progress", "--force"]) == 0
    assert not (copy / "report.html").exists()  # the stale report went with the old run


# -- in a browser -----------------------------------------------------------------------------
PROBE = """<script>window.addEventListener("load", () => {
  const out = document.createElement("pre"); out.id = "probe";
  out.textContent = JSON.stringify({
    rows: document.querySelectorAll("tbody tr").length,
    tables: document.querySelectorAll("table").length,
    h2: [...document.querySelectorAll("h2")].map(h => h.textContent),
    images: [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight,
                                           i.getBoundingClientRect().width])});
  document.body.appendChild(out); });</script>"""


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", *args], capture_output=True, text=True,
                          timeout=120, check=True)


@pytest.mark.root  # needs Debian's chromium: `scripts/setup --browser` as root (scripts/test does)
@pytest.mark.parametrize("kind", ["run", "sweep"])
def test_the_report_renders_in_headless_chromium(run_dir: Path, tmp_path: Path,
                                                 kind: str) -> None:
    assert Path(CHROMIUM).is_file(), ("chromium is not installed (scripts/setup --browser "
                                      "installs it, as root)")
    source = run_dir
    if kind == "sweep":
        source = tmp_path / "sweep"
        source.mkdir()
        sweep_cells().to_parquet(source / "cells.parquet")
    text = render(source)
    parsed = Parsed(text)
    page = tmp_path / "probe.html"  # the report plus a script that reports what rendered
    page.write_text(text.replace("</body>", PROBE + "</body>"))
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", page.as_uri()).stdout
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert match, dom[-500:]
    seen = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert seen["tables"] == len(parsed.tables)
    assert seen["rows"] == parsed.body_rows > 20
    assert len(seen["images"]) == len(parsed.images) > 0
    for (complete, width, height, shown), src in zip(seen["images"], parsed.images,
                                                     strict=True):
        assert complete and (width, height) == png_size(src) and shown > 100
    shot = tmp_path / "shot.png"
    chromium("--window-size=1200,2400", f"--screenshot={shot}", (tmp_path / "probe.html")
             .as_uri())
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (2400, 1200)
    ink = (pixels[..., :3].mean(axis=2) < 0.9).mean()
    assert ink > 0.02  # text, tables and plots, not a blank page
