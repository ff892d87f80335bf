"""Fit a calibration's profile again from its recorded cases, running nothing.

``livemig calibrate`` records every real case in ``CASES_DIR/cases.csv`` (libvirt's
completed-job statistics and the guest's truth). When the model or its estimators change,
the same real runs can be fitted again::

    python -m livemig.calibration.refit CASES_DIR [--matrix MATRIX.yaml] [--out PROFILE]
                                        [--fit CASE,...]

It rewrites the profile (default ``CASES_DIR/profile.yaml``) and the replay scenarios in
``CASES_DIR/scenarios/``; the fit uses the cases the old profile was fitted on (its
``measured.fitted_on``) unless ``--fit`` names others, so held-out cases stay held out.
The old profile's provenance (date, inventory, versions, load) is kept, with the date of
the refit added. Then ``python -m livemig.calibration.models CASES_DIR --held-out``
compares the models again.
"""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from livemig.calibration.matrix import DEFAULT_MATRIX, load_matrix
from livemig.calibration.run import fit_and_write, load_results


def _old_document(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    doc = yaml.safe_load(path.read_text()) or {}
    return doc if isinstance(doc, dict) else {}


def _hosts(scenarios: Path) -> tuple[str, str]:
    """The two host names the replay scenarios use (``lab1``, ``lab2`` without any)."""
    for path in sorted(scenarios.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        names = [h.get("name") for h in doc.get("hosts") or [] if isinstance(h, dict)]
        if len(names) >= 2:
            return str(names[0]), str(names[1])
    return "lab1", "lab2"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m livemig.calibration.refit",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("cases_dir", type=Path, help="a calibration's directory (cases.csv)")
    parser.add_argument("--matrix", help="the matrix it ran (default: the built-in one)")
    parser.add_argument("--out", type=Path, help="the profile to write (default: "
                        "CASES_DIR/profile.yaml)")
    parser.add_argument("--fit", help="the cases to fit on, comma-separated (default: the "
                        "old profile's measured.fitted_on, else all)")
    args = parser.parse_args(argv)
    matrix = load_matrix(args.matrix) if args.matrix else list(DEFAULT_MATRIX)
    out = args.out or args.cases_dir / "profile.yaml"
    old = _old_document(out)
    measured = old.get("measured") if isinstance(old.get("measured"), dict) else {}
    if args.fit:
        fit_names: list[str] | None = [n.strip() for n in args.fit.split(",") if n.strip()]
    else:
        fit_names = list(measured.get("fitted_on") or []) or None
    keep = ("date", "inventory", "qemu", "libvirt", "lab_hugepages", "load_average_start",
            "load_average_end")
    provenance = {k: measured[k] for k in keep if k in measured}
    provenance["refitted"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    results = load_results(args.cases_dir / "cases.csv", matrix)
    profile = fit_and_write(results, args.cases_dir, out,
                            name=str(old.get("name") or "calibrated"), fit_names=fit_names,
                            hosts=_hosts(args.cases_dir / "scenarios"), provenance=provenance)
    print(f"{out}: {profile.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
