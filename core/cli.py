"""The ``livemig`` command.

``livemig run SCENARIO``     run a scenario and write its results directory
``livemig validate FILE...`` check scenario files without running them
``livemig check PATH...``    run scenario files on the simulator and gate on their ``expect:``
``livemig resume RUN_DIR``   a new controller for a real run whose controller died
``livemig calibrate ...``    run a matrix of real migrations, fit a profile (calibration.commands)
``livemig compare REAL SIM`` per-migration errors of a prediction against real runs (idem)
``livemig sweep SWEEP``      a grid of runs on dask.distributed, into cells.parquet (sweep.commands)
``livemig hosts ...``        provision/validate/collect KVM hosts with Ansible (hosts.commands)
``livemig lab ...``          the namespace lab (when ``livemig.drivers.lab.commands`` exists)

A problem with the input (scenario file, driver name, inventory, output
directory) is one line ``livemig: error: <message>`` on stderr and exit code 2,
and nothing is written. A migration that fails is a result (exit 0). Standard
output that cannot be written (a full disk, ``> /dev/full``) is such an error too;
a closed pipe (``livemig run ... | head -1``) ends the command quietly with exit
code 141 (128 + SIGPIPE, what the shell shows for ``cat`` in that case), the
results directory, written before the summary is printed, complete. Anything
else is a bug and propagates with its traceback.

Modules are imported when a command needs them: ``--help`` and ``validate`` load
neither the simulator (SimPy, NumPy) nor matplotlib.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import livemig
from livemig.core.model import Scenario
from livemig.core.units import UnitError
from livemig.drivers import DRIVERS, driver_class

PROG = "livemig"
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE
RESULTS_ROOT = Path("results")
LAB_COMMANDS_MODULE = "livemig.drivers.lab.commands"
# Command families in modules of their own, each with ``add_commands(subparsers)``
# (light at import: a command imports what it needs when it runs).
COMMAND_MODULES = ("livemig.calibration.commands", "livemig.analysis.commands",
                   "livemig.hosts.commands", "livemig.sweep.commands")


class CliError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""


def echo(text: str) -> None:
    """``text`` and a newline on stdout, flushed: a write error surfaces here.

    A closed pipe propagates as ``BrokenPipeError`` (see :func:`main`); any other
    ``OSError`` (e.g. ``ENOSPC`` from ``> /dev/full``) becomes a :class:`CliError`.
    """
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        _discard_stdout()
        raise CliError(f"cannot write to standard output: {exc.strerror or exc}") from exc


def _discard_stdout() -> None:
    """Point file descriptor 1 at /dev/null so the exit's final flush cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (e.g. captured by a test)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _scenario_module() -> Any:
    """``livemig.core.scenario``, imported when first needed."""
    from livemig.core import scenario

    return scenario


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (OSErrors as ``path: reason``)."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{printable(str(exc.filename))}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def load(path: str) -> Scenario:
    """Load and check a scenario file; input problems become :class:`CliError`."""
    scenario = _scenario_module()
    try:
        return scenario.load_scenario(path)
    except (scenario.ScenarioError, UnitError, OSError) as exc:
        raise CliError(one_line(exc)) from exc


def default_out_dir(name: str) -> Path:
    """``results/<name>``, the name made safe as one path component.

    >>> str(default_out_dir("rack drain/2")), str(default_out_dir(".."))
    ('results/rack_drain_2', 'results/_..')
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if safe.startswith("."):
        safe = "_" + safe
    return RESULTS_ROOT / safe


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


# -- commands -------------------------------------------------------------
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


def is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long for the system
        return False


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
            _error(str(exc))
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


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (``-j``, ``--workers``)."""
    value = _seed(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


# -- parser -----------------------------------------------------------------
def _add_lab_commands(subparsers: Any) -> None:
    """Register ``livemig lab`` if its module exists (only its absence is tolerated)."""
    import importlib

    try:
        module = importlib.import_module(LAB_COMMANDS_MODULE)
    except ModuleNotFoundError as exc:
        parts = LAB_COMMANDS_MODULE.split(".")
        if exc.name in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}:
            return  # the module (or its package) is not there
        raise
    add = getattr(module, "add_lab_commands", None)
    if add is not None:
        add(subparsers)


def printable(text: str) -> str:
    """``text`` on one line, control characters escaped.

    >>> printable("unrecognized arguments: \\x0c a\\nb")
    'unrecognized arguments: \\\\x0c a\\\\nb'
    """
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line: ``livemig run: error: ... (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {printable(message)} "
                              f"(see {self.prog} --help)\n")

    def _print_message(self, message: str, file: IO[str] | None = None) -> None:
        """As argparse's, but a failed write (``--help > /dev/full``) raises, not vanishes."""
        if message:
            stream = file if file is not None else sys.stderr
            stream.write(message)
            stream.flush()


def build_parser() -> argparse.ArgumentParser:
    """The ``livemig`` argument parser; every command sets ``func(args) -> int``."""
    parser = _Parser(
        prog=PROG,
        description="A testbed for VM live migration: OpenStack Nova's live-migration flow "
        "on a simulated data centre or real libvirt hosts.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {livemig.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
    run.add_argument("--seed", metavar="N", type=_seed,
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

    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    _add_lab_commands(sub)
    return parser


def _error(message: str) -> None:
    with contextlib.suppress(OSError):  # stderr is gone too: the exit code still tells
        print(f"{PROG}: error: {printable(message)}", file=sys.stderr, flush=True)


def _closed_pipe() -> int:
    """The reader of stdout went away: no message, the shell's exit code for SIGPIPE."""
    _discard_stdout()
    return EXIT_CLOSED_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``livemig`` console script; returns the exit code."""
    try:
        return _main(argv)
    except BrokenPipeError:  # EPIPE: the reader of stdout went away
        return _closed_pipe()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BrokenPipeError:
        raise
    except OSError as exc:  # --help or --version could not be written
        _discard_stdout()
        _error(f"cannot write to standard output: {exc.strerror or exc}")
        return EXIT_USAGE
    func: Callable[[argparse.Namespace], int | None] | None = getattr(args, "func", None)
    if func is None:  # a sub-command registered without a handler
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    try:
        return func(args) or EXIT_OK
    except CliError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    # ``python -m livemig.core.cli``: this file runs as ``__main__``, a second copy beside
    # ``livemig.core.cli``, from which the command modules import CliError. Run the
    # imported module's main so that it catches theirs.
    from livemig.core.cli import main as _imported_main

    sys.exit(_imported_main())
