"""``scripts/demo``, the README's first command: set up, run, results, plots and a report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_demo_writes_results_plots_and_a_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run([str(REPO / "scripts" / "demo"), "scenarios/quickstart.yaml",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("migrations.csv", "instances.csv", "events.csv", "summary.json",
                 "timeline.png", "cdf_total_time.png", "report.html"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["expectations"]["failed"] == 0
    html = (out / "report.html").read_text()
    assert "quickstart" in html and "data:image/png;base64," in html
