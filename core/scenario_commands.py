"""The commands that run and check scenario files: ``run``, ``validate``, ``check``, ``resume``.

``livemig run SCENARIO``     run a scenario and write its results directory
``livemig validate FILE...`` check scenario files without running them
``livemig check PATH...``    run scenario files on the simulator and gate on their ``expect:``
``livemig resume RUN_DIR``   a new controller for a real run whose controller died

Registered on the main parser by :mod:`livemig.core.cli` (``COMMAND_MODULES``, first, so
that ``livemig --help`` lists them first); input problems raise
:class:`~livemig.core.cli.CliError` (one line, exit code 2). A file with a
``consolidation:`` section goes to :mod:`livemig.consolidation.commands`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from livemig.core.cli import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    default_out_dir,
    echo,
    is_file,
    non_negative_int,
    one_line,
    positive_int,
    print_error,
    printable,
)
from livemig.core.model import Scenario
from livemig.core.units import UnitError
from livemig.drivers import DRIVERS, driver_class


def _scenario_module() -> Any:
    """``livemig.core.scenario``, imported when first needed."""
    from livemig.core import scenario

    return scenario


def load(path: str) -> Scenario:
    """Load and check a scenario file; input problems become :class:`CliError`."""
    scenario = _scenario_module()
    try:
        return scenario.load_scenario(path)
    except (scenario.ScenarioError, UnitError, OSError) as exc:
        raise CliError(one_line(exc)) from exc


def cmd_run(args: argparse.Namespace) -> int:
    """``livemig run``: load, check, run, write results, print the summary."""
    from livemig.core import results, runner
    from livemig.drivers.base import DriverSetupError

    if args.inventory is not None and args.driver != "libvirt":
        raise CliError(f"--inventory is only used by --driver libvirt (not {args.driver})")
    from livemig.consolidation import commands as consolidation

    if consolidation.handles(args.scenario):  # a consolidation: section, not Nova events
        return consolidation.run_command(args)
    scenario = load(args.scenario)
    try:
        driver_class(args.driver)
    except ValueError as exc:
        raise CliError(one_line(exc)) from exc
    except ImportError as exc:
        raise CliError(f"driver {args.driver!r} is not available: {one_line(exc)}") from exc
    options: dict[str, Any] = {}
    if args.inventory is not None:
        inventory = Path(args.inventory)
        if not is_file(inventory):
            raise CliError(f"{printable(str(inventory))}: inventory file not found")
        options["inventory"] = str(inventory)
    out = Path(args.out) if args.out is not None else default_out_dir(scenario.name)
    try:
        results.check_output_dir(out, force=args.force)
        results.check_writable(out)  # before the run, not after it
    except OSError as exc:  # exists (no --force), may not be replaced, a bad name, read-only
        raise CliError(one_line(exc)) from exc
    run_dir: Path | None = None
    if getattr(driver_class(args.driver), "REALTIME", False):
        # a real run keeps its records in the run directory while it runs (for resume)
        if out.is_dir():
            shutil.rmtree(out)  # --force was given (checked above)
        try:
            results.make_dirs(results.missing_parents(out))
        except OSError as exc:
            raise CliError(one_line(exc)) from exc
        run_dir = out

    bar = _progress(args, runner.expected_migrations(scenario), scenario.until)
    try:
        result = runner.run_scenario(
            scenario, args.driver, seed=args.seed, driver_options=options or None,
            on_finish=bar.on_finish if bar is not None else None, run_dir=run_dir,
        )
    except DriverSetupError as exc:  # nothing ran: leave nothing behind
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise CliError(one_line(exc)) from exc
    finally:
        if bar is not None:
            bar.close()
    return _write(result, out, force=args.force or run_dir is not None)


def _progress(args: argparse.Namespace, total: int, horizon: float | None = None) -> Any:
    from livemig.core.progress import ProgressBar

    if args.no_progress or not sys.stderr.isatty():
        return None
    bar = ProgressBar(total, sys.stderr, horizon=horizon)
    bar.draw()
    return bar


def _write(result: Any, out: Path, *, force: bool) -> int:
    from livemig.core import results

    try:
        written = results.write_results(result, out, force=force)
    except OSError as exc:  # appeared while the scenario ran, or cannot be replaced
        raise CliError(one_line(exc)) from exc
    echo(results.summary_table(result))
    echo(f"\nresults written to {written}")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    """``livemig resume``: a new controller reconciles a real run and finishes it."""
    from livemig.core import results, runner
    from livemig.drivers.base import DriverSetupError

    run_dir = Path(args.run_dir)
    try:
        info = runner.read_run_file(run_dir)
    except ValueError as exc:
        raise CliError(one_line(exc)) from exc
    try:  # the results replace the directory's files at the end: may they?
        results.check_output_dir(run_dir, force=True)
        results.check_writable(run_dir)
    except OSError as exc:
        raise CliError(one_line(exc)) from exc
    options: dict[str, Any] = {}
    if args.inventory is not None:
        if not is_file(Path(args.inventory)):
            raise CliError(f"{printable(args.inventory)}: inventory file not found")
        options["inventory"] = str(args.inventory)
    try:
        driver_class(info["driver"])
    except (ValueError, ImportError) as exc:
        raise CliError(f"{run_dir}: driver {info['driver']!r}: {one_line(exc)}") from exc
    bar = _progress(args, 0)
    try:
        result = runner.resume_run(run_dir, driver_options=options or None,
                                   on_finish=bar.on_finish if bar is not None else None)
    except (ValueError, DriverSetupError) as exc:
        raise CliError(one_line(exc)) from exc
    finally:
        if bar is not None:
            bar.close()
    return _write(result, run_dir, force=True)


def cmd_validate(args: argparse.Namespace) -> int:
    """``livemig validate``: load every file; one line per file."""
    from livemig.consolidation import commands as consolidation

    status = EXIT_OK
    for path in args.scenarios:
        try:
            if consolidation.handles(path):
                echo(consolidation.validate(path))
                continue
            scenario = load(path)
        except CliError as exc:
            print_error(str(exc))
            status = EXIT_USAGE
            continue
        echo(
            f"OK {path} ({len(scenario.hosts)} hosts, {len(scenario.vms)} vms, "
            f"{len(scenario.events)} events)"
        )
    return status


def cmd_check(args: argparse.Namespace) -> int:
    """``livemig check``: run a suite in parallel, print a table, exit 0/1/2 (check_suite)."""
    import time

    from livemig.core import check_suite

    if args.driver != "sim":
        raise CliError(f"check runs on --driver sim only for now: --driver {args.driver} needs "
                       "root and an inventory of hosts (use livemig run --driver libvirt "
                       "--inventory FILE for one scenario)")
    if args.junit is not None:
        junit = Path(args.junit)
        if junit.is_dir() or not junit.parent.is_dir():
            raise CliError(f"--junit {printable(args.junit)}: expected a file in an existing "
                           "directory")
    try:
        files = check_suite.discover(args.paths)
    except ValueError as exc:
        raise CliError(one_line(exc)) from exc
    start = time.perf_counter()
    reports = check_suite.run_suite(files, args.jobs, args.driver)
    wall = time.perf_counter() - start
    print(check_suite.table(reports, wall, args.jobs))
    if args.junit is not None:
        try:
            check_suite.write_junit(args.junit, reports, wall)
        except OSError as exc:
            raise CliError(one_line(exc)) from exc
    return check_suite.exit_code(reports)


def add_commands(sub: Any) -> None:
    """Register ``run``, ``validate``, ``check`` and ``resume`` on ``sub``."""
    run = sub.add_parser(
        "run", help="run a scenario and write its results",
        description="Run a scenario file and write migrations.csv, instances.csv, events.csv, "
        "summary.json and plots into DIR.",
    )
    run.add_argument("scenario", metavar="SCENARIO", help="scenario YAML file")
    run.add_argument("--driver", choices=sorted(DRIVERS), default="sim",
                     help="where to run it (default: sim)")
    run.add_argument("--out", metavar="DIR",
                     help="output directory (default: results/<scenario name>)")
    run.add_argument("--seed", metavar="N", type=non_negative_int,
                     help="random seed (default: the scenario's seed)")
    run.add_argument("--force", action="store_true",
                     help="replace DIR if it holds earlier results (never other files)")
    run.add_argument("--inventory", metavar="FILE",
                     help="host inventory for --driver libvirt")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar (it is only shown when stderr is a terminal)")
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser(
        "validate", help="check scenario files without running them",
        description="Load and check scenario files; print one line per file.",
    )
    validate.add_argument("scenarios", metavar="SCENARIO", nargs="+", help="scenario YAML file")
    validate.set_defaults(func=cmd_validate)

    check = sub.add_parser(
        "check", help="run scenario files and check their expectations",
        description="Run every scenario file (directories: every *.yaml below them) on the "
        "simulator, in parallel, and evaluate its expect: section. Prints a table; exit code "
        "0 when every expectation is met, 1 when one failed, 2 when a file is bad. Writes no "
        "results directories.",
    )
    check.add_argument("paths", metavar="PATH", nargs="+", help="scenario file or directory")
    check.add_argument("-j", "--jobs", metavar="N", type=positive_int, default=os.cpu_count() or 1,
                       help="worker processes (default: the number of CPUs)")
    check.add_argument("--junit", metavar="FILE", help="also write JUnit XML to FILE")
    check.add_argument("--driver", choices=sorted(DRIVERS), default="sim",
                       help="where to run them (only sim for now)")
    check.set_defaults(func=cmd_check)

    resume = sub.add_parser(
        "resume", help="finish a real run whose controller died",
        description="Start a new controller for RUN_DIR (a run of a real-time driver whose "
        "livemig process died): every unfinished migration is resolved by asking the driver "
        "where its domain runs, the events not yet applied are played, and the results are "
        "written into RUN_DIR.",
    )
    resume.add_argument("run_dir", metavar="RUN_DIR", help="the run's output directory")
    resume.add_argument("--inventory", metavar="FILE",
                        help="host inventory (default: the one the run used)")
    resume.add_argument("--no-progress", action="store_true", help="no progress bar")
    resume.set_defaults(func=cmd_resume)
