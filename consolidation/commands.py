"""The consolidation side of ``livemig run``, ``validate`` and ``check``: a scenario file
with a top-level ``consolidation:`` section (:mod:`scenario`) is run by :mod:`run`.
The core commands hand such a file over with :func:`handles`."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from livemig.core.cli import CliError, echo, one_line, printable

_SECTION = re.compile(r"^consolidation\s*:", re.MULTILINE)


def is_consolidation(text: str) -> bool:
    """Does this scenario text have a top-level ``consolidation:`` key? (cheap: no YAML,
    no NumPy, so ``livemig validate`` of other files stays light)

    >>> is_consolidation("name: a\\nconsolidation:\\n  trace: t.csv\\n")
    True
    >>> is_consolidation("hosts: []")
    False
    """
    return _SECTION.search(text) is not None


def handles(path: str) -> bool:
    """Is ``path`` a consolidation scenario? (False for anything unreadable: the caller's
    own loader reports it)."""
    try:
        return is_consolidation(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return False


def load(path: str):  # noqa: ANN201 - ConsolidationScenario, imported lazily
    from livemig.consolidation import scenario
    from livemig.core.yaml_nodes import ScenarioError

    try:
        return scenario.load(path)
    except (ScenarioError, OSError) as exc:
        raise CliError(one_line(exc)) from exc


def validate(path: str) -> str:
    spec = load(path)
    if not Path(spec.trace).is_file():
        raise CliError(f"{printable(path)}: consolidation.trace: {printable(spec.trace)} "
                       "not found; expected a trace file (CSV, one VM per row)")
    return f"OK {path} (consolidation, {spec.mode} mode, {spec.hosts} hosts, {spec.policy.label})"


def _outcome(spec, driver: str = "sim", options: dict | None = None):  # noqa: ANN001, ANN202
    from livemig.consolidation.run import run_spec
    from livemig.consolidation.traces import TraceError
    from livemig.drivers.base import DriverSetupError

    try:
        return run_spec(spec, driver, options)
    except TraceError as exc:
        raise CliError(one_line(exc)) from exc
    except (ValueError, DriverSetupError) as exc:  # e.g. a VM that fits no host, no lab
        raise CliError(f"{printable(spec.source)}: {one_line(exc)}") from exc


def _driver_options(args: argparse.Namespace, spec) -> dict:  # noqa: ANN001
    """The driver's options for ``livemig run --driver``; CliError for what cannot run."""
    from livemig.drivers import driver_class

    driver = getattr(args, "driver", "sim")
    # the scenario's own limit first: it holds whether or not the driver is installed
    if driver != "sim" and spec.mode != "default":
        raise CliError(f"{printable(spec.source)}: the {spec.mode} mode runs on the simulator "
                       f"only (not --driver {driver}); expected consolidation.mode: default")
    try:
        driver_class(driver)
    except ValueError as exc:
        raise CliError(one_line(exc)) from exc
    except ImportError as exc:
        raise CliError(f"driver {driver!r} is not available: {one_line(exc)}") from exc
    inventory = getattr(args, "inventory", None)
    if inventory is None:
        return {}
    if not Path(inventory).is_file():
        raise CliError(f"{printable(str(inventory))}: inventory file not found")
    return {"inventory": str(inventory)}


def run_command(args: argparse.Namespace) -> int:
    """``livemig run`` of a consolidation scenario: results directory and a summary."""
    from livemig.consolidation.run import evaluate, summary, write
    from livemig.core import results
    from livemig.core.cli import default_out_dir

    spec = load(args.scenario)
    options = _driver_options(args, spec)
    out = Path(args.out) if args.out is not None else default_out_dir(spec.name)
    try:
        results.check_output_dir(out, force=args.force)
        results.check_writable(out)
    except OSError as exc:
        raise CliError(one_line(exc)) from exc
    outcome, timings = _outcome(spec, getattr(args, "driver", "sim"), options)
    verdicts = evaluate(spec.expect, outcome.metrics)
    start = time.perf_counter()
    data = summary(spec, outcome, verdicts, timings, getattr(args, "driver", "sim"))
    try:
        write(out, data, outcome)
    except OSError as exc:
        raise CliError(one_line(exc)) from exc
    timings["write_s"] = time.perf_counter() - start
    m = outcome.metrics
    echo(f"{spec.name}: {m['policy']} ({spec.mode} mode), {m['vms']} VMs on {m['hosts']} hosts")
    echo(f"energy {m['energy_kwh']:.2f} kWh, {m['migrations']} migrations, "
         f"SLATAH {m['slatah'] * 100:.2f} %, PDM {m['pdm'] * 100:.3f} %, SLAV {m['slav']:.3e}, "
         f"ESV {m['esv']:.3e}, {m['host_shutdowns']} host shutdowns")
    for v in verdicts:
        echo(f"{'met' if v.met else 'FAILED'}: {v.expectation} (got {v.actual})")
    echo(f"load {timings['load_s']:.2f} s, run {timings['run_s']:.2f} s, "
         f"write {timings['write_s']:.2f} s")
    echo(f"\nresults written to {out}")
    return 0


def check_file(path: str):  # noqa: ANN201 - a check_suite.FileReport
    """``livemig check`` of one consolidation scenario (no files written)."""
    from livemig.consolidation.run import evaluate
    from livemig.core.check_suite import FileReport

    start = time.perf_counter()
    try:
        spec = load(path)
        outcome, _ = _outcome(spec)
    except CliError as exc:
        return FileReport(path, error=str(exc), wall=time.perf_counter() - start)
    verdicts = tuple(evaluate(spec.expect, outcome.metrics))
    return FileReport(path, verdicts, wall=time.perf_counter() - start)
