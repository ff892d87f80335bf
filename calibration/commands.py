"""``livemig calibrate`` and ``livemig compare``: the calibration command family.

Registered on the main parser by :mod:`livemig.core.cli` (``COMMAND_MODULES``);
input problems raise :class:`~livemig.core.cli.CliError` (one line, exit code 2).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from livemig.core.cli import (
    EXIT_OK,
    RESULTS_ROOT,
    CliError,
    echo,
    is_file,
    one_line,
    printable,
)
from livemig.core.units import UnitError


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``livemig calibrate``: real migrations of a matrix on an inventory's hosts, a profile."""
    from livemig.calibration import matrix as matrix_mod
    from livemig.core.yaml_nodes import ScenarioError

    inventory = Path(args.inventory)
    if not is_file(inventory):
        raise CliError(f"{printable(args.inventory)}: inventory file not found")
    try:
        from livemig.drivers.hosts_inventory import InventoryError, load_hosts_inventory

        inv = load_hosts_inventory(inventory)
    except InventoryError as exc:
        raise CliError(one_line(exc)) from exc
    if len(inv.hosts) < 2:
        raise CliError(f"{printable(args.inventory)}: calibration needs two hosts (the "
                       f"inventory has {len(inv.hosts)})")
    if args.matrix is None:
        cases = list(matrix_mod.DEFAULT_MATRIX)
    else:
        try:
            cases = matrix_mod.load_matrix(args.matrix)
        except (ScenarioError, UnitError, OSError, UnicodeDecodeError) as exc:
            raise CliError(one_line(exc)) from exc
    fit_names = None
    if args.fit is not None:
        fit_names = [n.strip() for n in args.fit.split(",") if n.strip()]
        unknown = [n for n in fit_names if n not in {c.name for c in cases}]
        if unknown or not fit_names:
            raise CliError(f"--fit {printable(args.fit)}: expected names of the matrix's cases "
                           f"({', '.join(c.name for c in cases)})")
    if not any(not c.capped for c in cases if fit_names is None or c.name in fit_names):
        raise CliError("the cases to fit include no uncapped case: the link speed cannot be "
                       "measured (add a case without bandwidth)")
    profile = Path(args.out)
    cases_dir = Path(args.cases_dir) if args.cases_dir else profile.parent
    if profile.is_dir() or not profile.parent.is_dir():
        raise CliError(f"--out {printable(args.out)}: expected a file in an existing directory")
    if args.repeat < 1:
        raise CliError(f"--repeat {args.repeat}: expected a whole number >= 1")
    existing = [p for p in (profile, cases_dir / "cases.csv", cases_dir / "real",
                            cases_dir / "scenarios", cases_dir / "sim", cases_dir / "compare",
                            *sorted(cases_dir.glob("real-r*")))
                if p.exists()]
    if existing and not args.force:
        raise CliError(f"{printable(str(existing[0]))} already exists (use --force to replace "
                       "the profile and the calibration's files)")
    if not os.access(profile.parent, os.W_OK):
        raise CliError(f"{printable(str(profile.parent))}: not writable")
    try:
        from livemig.calibration import run as run_mod
    except ImportError as exc:
        raise CliError(f"calibrate needs libvirt-python: {one_line(exc)}") from exc
    from livemig.core.progress import ProgressBar
    from livemig.drivers.base import DriverSetupError
    from livemig.drivers.lab.hugepages import ordinary_memory_warning

    huge = run_mod.lab_hugepages(inventory)
    if huge is not None and (note := ordinary_memory_warning(huge)):
        print(note, file=sys.stderr)

    bar = None
    if not args.no_progress and sys.stderr.isatty():
        bar = ProgressBar(len(cases) * args.repeat, sys.stderr, label="calibration runs")
        bar.draw()
    try:
        results, fitted = run_mod.calibrate(
            inventory, cases, cases_dir, profile, name=args.name, fit_names=fit_names,
            on_case=(lambda r: bar.advance(ok=r.completed)) if bar is not None else None,
            repeat=args.repeat,
        )
    except (DriverSetupError, ValueError) as exc:
        raise CliError(one_line(exc)) from exc
    finally:
        if bar is not None:
            bar.close()
    for r in results:
        row = r.row()
        name = row["case"] if args.repeat == 1 else f"{row['case']} r{row['repeat']}"
        echo(f"{name:<20} {row['status']:<10} time_elapsed={row['time_elapsed_ms']} ms "
               f"downtime={row['downtime_ms']} ms guest_rate={row['guest_rate_mibps']} MiB/s "
               f"guest_nonzero={row['guest_nonzero_mib']} MiB"
               + (f" scan={row['guest_scan_nonzero_mib']} MiB" if r.truth.scan_error is None
                  else f" scan unavailable ({printable(r.truth.scan_error)})"))
    echo(f"\n{fitted.summary()}")
    echo(f"profile written to {profile}; cases in {cases_dir / 'cases.csv'}")
    if args.replay:
        text, _ = run_mod.replay_on_simulator(cases_dir)
        echo("\nthe simulator replaying the cases (sim/), against the real runs (real/):")
        echo(text)
        echo(f"\nwritten to {cases_dir / 'compare'} (compare.csv, compare.png)")
    if args.repeat > 1:
        from livemig.calibration import models, repeats
        from livemig.calibration.compare import read_migrations

        sims: dict[str, dict[str, str]] = {}
        if args.replay:
            for row in read_migrations(cases_dir / "sim"):
                sims.setdefault(row["instance"], row)
        echo(f"\nthe lab's noise floor over the {args.repeat} runs of each case"
             + (", and the simulator (sim/) against every run and against the case medians:"
                if args.replay else ":"))
        echo(models.repeats_table(repeats.run_rows(results), {"qemu": sims} if sims else {},
                                  {c.name for c in cases if c.capped}))
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    """``livemig compare``: the error table of SIM against REAL, compare.csv/.png."""
    import json

    from livemig.calibration import compare as compare_mod

    out = Path(args.out) if args.out else RESULTS_ROOT / "compare"
    try:
        text, summ = compare_mod.compare(Path(args.real), Path(args.sim), out)
        (out / "compare.json").write_text(json.dumps(summ, indent=2) + "\n")
    except compare_mod.CompareError as exc:
        raise CliError(printable(str(exc))) from exc
    except OSError as exc:
        raise CliError(one_line(exc)) from exc
    echo(text)
    echo(f"\nwritten to {out} (compare.csv, compare.png, compare.json)")
    return EXIT_OK


def add_commands(sub: Any) -> None:
    """Register ``calibrate`` and ``compare`` on the main CLI's sub-command set."""
    calibrate = sub.add_parser(
        "calibrate", help="run real migrations and fit a profile",
        description="Run a matrix of real migrations (default: a dozen cases) between the "
        "first two hosts of an inventory, record each case's completed-job statistics and "
        "the guest's own truth in cases.csv, fit the profile's parameters (start-up cost, "
        "switchover cost, link speed) and write the profile file.",
    )
    calibrate.add_argument("--inventory", metavar="FILE", required=True,
                           help="host inventory (e.g. the lab's inventory.yaml)")
    calibrate.add_argument("--out", metavar="PROFILE", required=True,
                           help="profile file to write (YAML)")
    calibrate.add_argument("--matrix", metavar="FILE", help="the cases (default: built in)")
    calibrate.add_argument("--cases-dir", metavar="DIR",
                           help="where cases.csv, real/ and scenarios/ go (default: beside "
                           "the profile)")
    calibrate.add_argument("--name", help="the profile's name (default: calibrated-<lab>)")
    calibrate.add_argument("--fit", metavar="CASE,...",
                           help="fit on these cases only; the others are held out (their "
                           "prediction errors are reported in the profile's measured block)")
    calibrate.add_argument("--repeat", metavar="N", type=int, default=1,
                           help="run every case N times, round-robin over the matrix "
                           "(cases.csv: a row per run; real/ holds run 1, real-rN/ run N); "
                           "with --replay, also print the lab's noise floor (default 1)")
    calibrate.add_argument("--replay", action="store_true",
                           help="then run the cases on the simulator (sim/) and compare them "
                           "with the real runs (compare/)")
    calibrate.add_argument("--force", action="store_true",
                           help="replace an existing profile and calibration files")
    calibrate.add_argument("--no-progress", action="store_true", help="no progress bar")
    calibrate.set_defaults(func=cmd_calibrate)

    compare = sub.add_parser(
        "compare", help="per-migration errors of predicted runs against real ones",
        description="Match the migrations of SIM with those of REAL (by instance and order; "
        "each a run directory or a directory of run directories), print the error table "
        "(total time, downtime, bytes, iterations, outcome) with the median and p90 of the "
        "absolute relative errors, and write compare.csv, compare.json and compare.png.",
    )
    compare.add_argument("real", metavar="REAL_RUN_DIR", help="the real runs")
    compare.add_argument("sim", metavar="SIM_RUN_DIR", help="the predicted (simulated) runs")
    compare.add_argument("--out", metavar="DIR", help="output directory (default: "
                         "results/compare)")
    compare.set_defaults(func=cmd_compare)
