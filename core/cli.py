"""The ``livemig`` command.

``livemig run SCENARIO``     run a scenario and write its results directory (scenario_commands)
``livemig validate FILE...`` check scenario files without running them (scenario_commands)
``livemig check PATH...``    run scenario files on the simulator, gate on ``expect:`` (idem)
``livemig resume RUN_DIR``   a new controller for a real run whose controller died (idem)
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

This module is the dispatcher and the helpers every command module shares
(:class:`CliError`, :func:`echo`, :func:`one_line`, :func:`printable`, the argparse types);
each family of commands is a module of its own with ``add_commands(subparsers)``, listed in
``COMMAND_MODULES``.

Modules are imported when a command needs them: ``--help`` and ``validate`` load
neither the simulator (SimPy, NumPy) nor matplotlib.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import livemig

PROG = "livemig"
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE
RESULTS_ROOT = Path("results")
LAB_COMMANDS_MODULE = "livemig.drivers.lab.commands"
# Command families in modules of their own, each with ``add_commands(subparsers)``
# (light at import: a command imports what it needs when it runs).
# run/validate/check/resume (scenario_commands) first: ``livemig --help`` lists them first.
COMMAND_MODULES = ("livemig.core.scenario_commands", "livemig.calibration.commands",
                   "livemig.analysis.commands", "livemig.hosts.commands",
                   "livemig.sweep.commands")


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


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (OSErrors as ``path: reason``)."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{printable(str(exc.filename))}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def default_out_dir(name: str) -> Path:
    """``results/<name>``, the name made safe as one path component.

    >>> str(default_out_dir("rack drain/2")), str(default_out_dir(".."))
    ('results/rack_drain_2', 'results/_..')
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if safe.startswith("."):
        safe = "_" + safe
    return RESULTS_ROOT / safe


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0 (``--seed``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def is_file(path: Path) -> bool:
    """``path.is_file()``, but False where the system refuses the name."""
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long for the system
        return False


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (``-j``, ``--workers``)."""
    value = non_negative_int(text)
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

    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    _add_lab_commands(sub)
    return parser


def print_error(message: str) -> None:
    """``livemig: error: <message>`` on stderr, on one line."""
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
        print_error(f"cannot write to standard output: {exc.strerror or exc}")
        return EXIT_USAGE
    func: Callable[[argparse.Namespace], int | None] | None = getattr(args, "func", None)
    if func is None:  # a sub-command registered without a handler
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    try:
        return func(args) or EXIT_OK
    except CliError as exc:
        print_error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print_error("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    # ``python -m livemig.core.cli``: this file runs as ``__main__``, a second copy beside
    # ``livemig.core.cli``, from which the command modules import CliError. Run the
    # imported module's main so that it catches theirs.
    from livemig.core.cli import main as _imported_main

    sys.exit(_imported_main())
