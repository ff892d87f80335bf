"""One calibration, several models: how far each prediction is from the real runs.

``livemig calibrate --replay`` compares the real cases with the default model, using the
fitted profile and the guest's measured truth. This module replays the same cases under
every model a reader may want to see next to it. Each one is written as its own run
directories in ``CASES_DIR/models/MODEL/`` and compared with ``CASES_DIR/real/``:

* ``qemu``: the default model, with the fitted profile and the guest's measured non-zero
  memory and write rate (``scenarios/CASE.yaml``, as ``--replay`` runs them);
* ``qemu-default-inputs``: the default model as a scenario author would use it. There is
  no profile; ``used_memory`` takes its default and ``dirty_rate`` the rate asked of the
  guest (the matrix's own case);
* ``textbook``: the earlier model (``policy.migration.model: textbook``), with the
  measured truth;
* ``cloudsim``: CloudSim's accounting, ``RAM / (bandwidth / 2)``, with no downtime and
  no pre-copy. The bandwidth is the cap, or the fitted link speed when uncapped. Every
  migration completes, so a case that cannot converge comes out wrong.

    python -m livemig.calibration.models CASES_DIR [--matrix MATRIX.yaml] [--profile FILE]
                                         [--held-out] [--also DIR2,DIR3]

prints one line per model: the median and p90 absolute errors of total time and
downtime, split into capped and uncapped cases, plus bytes and outcomes.

When a case has two real runs or more (``calibrate --repeat``, or other recordings of
the same matrix pooled with ``--also``: their ``cases.csv`` runs count as further
repeats), the table reads the runs from the ``cases.csv`` files and has, instead, a first
line with the lab's own noise floor (each run against its case's median,
:mod:`livemig.calibration.repeats`) and two lines per model: its error against every run
and against each case's median run. The models still replay ``CASES_DIR``'s scenarios
(the guest's truth of its own runs).

>>> cloudsim_time(ram=256 * MiB, bandwidth=20 * MiB)
25.6
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from livemig.calibration.matrix import DEFAULT_MATRIX, Case, case_scenario_text, load_matrix

MiB = 2**20
MODELS = ("qemu", "qemu-default-inputs", "textbook", "cloudsim")


def cloudsim_time(*, ram: float, bandwidth: float) -> float:
    """CloudSim's migration time in seconds: the RAM over half the bandwidth (bytes/s)."""
    return ram / (bandwidth / 2)


def _textbook(text: str) -> str:
    return text.replace("\n  migration:", "\n  migration:\n    model: textbook", 1)


def _profile_made_absolute(text: str, scenario_dir: Path) -> str:
    """The scenario text with its ``profile: "PATH"`` resolved against ``scenario_dir``
    (so the text can be written anywhere)."""
    def absolute(match: re.Match[str]) -> str:
        path = (scenario_dir / json.loads(match.group(1))).resolve()
        return f"profile: {json.dumps(str(path))}"

    return re.sub(r'profile: ("[^"\n]*")', absolute, text)


def _run(scenario_text: str, path: Path, out: Path) -> None:
    from livemig.core import results
    from livemig.core.runner import run_scenario
    from livemig.core.scenario import load_scenario

    path.write_text(scenario_text)
    results.write_results(run_scenario(load_scenario(path), "sim"), out, force=True)


def _cloudsim_run(case: Case, link_speed: float, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    bandwidth = case.bandwidth if case.capped else link_speed
    with (out / "migrations.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("instance", "status", "error", "total_time_s", "downtime_ms",
                    "data_transferred_bytes", "iterations"))
        w.writerow((case.name, "completed", "",
                    cloudsim_time(ram=case.ram, bandwidth=bandwidth), 0.0, case.ram, 1))


def replay_models(cases_dir: Path, matrix: Sequence[Case], link_speed: float,
                  models: Sequence[str] = MODELS) -> dict[str, list[dict[str, Any]]]:
    """Run the cases of ``matrix`` that have a real run under each of ``models`` and
    compare them with their real runs in ``cases_dir/real`` (into ``models/MODEL/compare``);
    returns each model's per-migration rows."""
    from livemig.calibration.compare import pair_rows, plot, read_migrations, write_csv

    real = cases_dir / "real"
    done = [c for c in matrix if (real / c.name / "migrations.csv").is_file()]
    rows: dict[str, list[dict[str, Any]]] = {}
    for model in models:
        base = cases_dir / "models" / model
        (base / "scenarios").mkdir(parents=True, exist_ok=True)
        for case in done:
            out = base / "runs" / case.name
            measured = _profile_made_absolute(
                (cases_dir / "scenarios" / f"{case.name}.yaml").read_text(),
                cases_dir / "scenarios")
            scen = base / "scenarios" / f"{case.name}.yaml"
            if model == "qemu":
                _run(measured, scen, out)
            elif model == "textbook":
                _run(_textbook(measured), scen, out)
            elif model == "qemu-default-inputs":
                _run(case_scenario_text(case, "lab1", "lab2"), scen, out)
            else:
                _cloudsim_run(case, link_speed, out)
        names = {c.name for c in done}
        real_rows = [r for r in read_migrations(real) if r["instance"] in names]
        sim_rows = [r for r in read_migrations(base / "runs") if r["instance"] in names]
        rows[model] = pair_rows(real_rows, sim_rows)  # runs/ may hold an earlier, wider call's
        (base / "compare").mkdir(exist_ok=True)
        write_csv(base / "compare" / "compare.csv", rows[model])
        plot(base / "compare" / "compare.png", rows[model])
    return rows


def error_frame(rows: dict[str, list[dict[str, Any]]], capped: set[str]) -> pd.DataFrame:
    """Every model's per-migration rows as one DataFrame, with ``model`` and ``capped``."""
    frame = pd.DataFrame([{**r, "model": m} for m, rs in rows.items() for r in rs])
    frame["capped"] = frame["instance"].isin(capped)
    return frame


def _pct(errors: pd.Series, q: float) -> str:
    errors = errors.dropna().astype(float).abs()
    return "-" if errors.empty else f"{errors.quantile(q) * 100:.1f} %"


def summary_table(rows: dict[str, list[dict[str, Any]]], capped: set[str]) -> str:
    """One line per model: median / p90 |error| of total time and downtime (capped,
    uncapped), median |error| of bytes, outcomes right (p90 by linear interpolation, as
    :func:`livemig.core.results.percentile`)."""
    head = ("| model | total time capped (median / p90) | total time uncapped | "
            "downtime capped | downtime uncapped | bytes (median) | outcomes |")
    lines = [head, "|" + "---|" * 7]
    frame = error_frame(rows, capped)
    for model, of_model in frame.groupby("model", sort=False):
        cells = [str(model)]
        for metric in ("total_time_s_err", "downtime_ms_err"):
            for want in (True, False):
                errors = of_model.loc[of_model["capped"] == want, metric]
                cells.append(f"{_pct(errors, 0.5)} / {_pct(errors, 0.9)}")
        cells.append(_pct(of_model["data_transferred_bytes_err"], 0.5))
        cells.append(f"{int(of_model['outcome_match'].sum())}/{len(of_model)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def simulated(cases_dir: Path, model: str) -> dict[str, dict[str, str]]:
    """The first migration of each instance that ``model`` ran (``models/MODEL/runs``)."""
    from livemig.calibration.compare import read_migrations

    out: dict[str, dict[str, str]] = {}
    for row in read_migrations(cases_dir / "models" / model / "runs"):
        out.setdefault(row["instance"], row)
    return out


def repeats_table(by_case: dict[str, list[dict[str, Any]]],
                  sims: dict[str, dict[str, dict[str, str]]], capped: set[str]) -> str:
    """:func:`summary_table` of the lab's noise floor and of each model in ``sims`` (its
    runs by instance) against every real run and against the case medians
    (:mod:`livemig.calibration.repeats`; ``by_case``: each case's real runs)."""
    from livemig.calibration import repeats

    rows: dict[str, list[dict[str, Any]]] = {
        "lab noise floor (each run vs its case median)": repeats.noise_rows(by_case)}
    for model, of_model in sims.items():
        rows[f"{model} vs every run"] = repeats.error_rows(by_case, of_model,
                                                          against_median=False)
        rows[f"{model} vs case medians"] = repeats.error_rows(by_case, of_model,
                                                             against_median=True)
    return summary_table(rows, capped)


def recorded_runs(dirs: Sequence[Path], matrix: Sequence[Case],
                  keep: set[str]) -> list[Any]:
    """The runs of the ``keep`` cases in every ``DIR/cases.csv`` (later directories:
    further repeats); ValueError naming the row of a case that ``matrix`` lacks."""
    from livemig.calibration.repeats import pool_recordings
    from livemig.calibration.run import load_results

    pooled = pool_recordings([load_results(d / "cases.csv", matrix) for d in dirs])
    return [r for r in pooled if r.case.name in keep]


def fitted_on(profile_path: Path) -> list[str]:
    """The cases a calibrated profile was fitted on (its ``measured.fitted_on``)."""
    import yaml

    doc = yaml.safe_load(Path(profile_path).read_text()) or {}
    return list((doc.get("measured") or {}).get("fitted_on") or [])


def _fail(message: str) -> int:
    """One line on stderr, exit code 2."""
    import sys

    from livemig.core.cli import printable

    print(f"models: error: {printable(' '.join(message.split()))}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    from livemig.core.profile import load_profile

    parser = argparse.ArgumentParser(prog="python -m livemig.calibration.models",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("cases_dir", type=Path, help="a calibration's directory (real/, "
                        "scenarios/, profile beside it)")
    parser.add_argument("--matrix", help="the matrix the calibration ran (default: the "
                        "built-in one)")
    parser.add_argument("--profile", type=Path, help="the fitted profile (default: "
                        "CASES_DIR/profile.yaml)")
    parser.add_argument("--held-out", action="store_true", help="only the cases the fit "
                        "did not use (the profile's measured.fitted_on)")
    parser.add_argument("--also", metavar="DIR2[,DIR3...]", default="",
                        help="other recordings of the same matrix: their cases.csv runs "
                        "count as further repeats (read only)")
    args = parser.parse_args(argv)
    full = load_matrix(args.matrix) if args.matrix else list(DEFAULT_MATRIX)
    profile_path = args.profile or args.cases_dir / "profile.yaml"
    profile = load_profile(profile_path)
    matrix = full
    if args.held_out:
        fitted = set(fitted_on(profile_path))
        matrix = [c for c in full if c.name not in fitted]
    also = [Path(d.strip()) for d in args.also.split(",") if d.strip()]
    for d in also:
        if not (d / "cases.csv").is_file():
            return _fail(f"--also {d}: no cases.csv in it (expected a calibration's "
                         "directory)")
    if also and not (args.cases_dir / "cases.csv").is_file():
        return _fail(f"{args.cases_dir}: no cases.csv to pool --also with")
    from livemig.calibration.repeats import most_runs, run_rows

    runs = []
    if (args.cases_dir / "cases.csv").is_file():
        try:
            runs = recorded_runs([args.cases_dir, *also], full, {c.name for c in matrix})
        except (ValueError, OSError, KeyError) as exc:
            return _fail(f"{exc}" if not isinstance(exc, KeyError)
                         else f"a cases.csv lacks the column {exc}")
    link = float(profile.values.get("link_speed", 330 * MiB))
    rows = replay_models(args.cases_dir, matrix, link)
    capped = {c.name for c in matrix if c.capped}
    by_case = run_rows(runs)
    if most_runs(by_case) < 2:
        print(summary_table(rows, capped))
        return 0
    print(repeats_table(by_case, {m: simulated(args.cases_dir, m) for m in rows}, capped))
    many = sum(1 for r in by_case.values() if len(r) >= 2)
    print(f"\n{len(runs)} real runs of {len(by_case)} cases ({many} with two runs or more); "
          f"recordings: {', '.join(str(d) for d in [args.cases_dir, *also])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
