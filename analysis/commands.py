"""``livemig optimum`` and ``livemig report``: the analysis command family.

Registered on the main parser by :mod:`livemig.core.cli` (``COMMAND_MODULES``); input
problems raise :class:`~livemig.core.cli.CliError` (one line, exit code 2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from livemig.core.cli import EXIT_OK, CliError, echo, is_file, one_line, printable

EXIT_NO_PLACEMENT = 1
"""``livemig optimum``: the snapshot has no placement (or none was found in time)."""


def _time_limit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (0 < value <= 86400):
        raise argparse.ArgumentTypeError(f"{text} is out of range; expected seconds > 0 and "
                                         "<= 86400")
    return value


def cmd_optimum(args: argparse.Namespace) -> int:
    """``livemig optimum``: the fewest active hosts of a snapshot, with the proven bound."""
    from livemig.analysis.optimum import solve
    from livemig.analysis.snapshot import load_snapshot
    from livemig.core.yaml_nodes import ScenarioError

    path = Path(args.snapshot)
    if not is_file(path):
        raise CliError(f"{printable(args.snapshot)}: snapshot file not found")
    try:
        snapshot = load_snapshot(path)
    except (ScenarioError, OSError, UnicodeDecodeError) as exc:
        raise CliError(one_line(exc)) from exc
    result = solve(snapshot, time_limit=args.time_limit, min_migrations=args.min_migrations,
                   deterministic=args.deterministic)
    if args.json:
        data: dict[str, Any] = {"snapshot": str(path), "hosts": len(snapshot.hosts),
                                "vms": len(snapshot.vms),
                                "active_hosts_now": snapshot.active_hosts,
                                "time_limit_s": args.time_limit, **result.as_dict()}
        if not args.placement:
            data.pop("placement")
        echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        echo(f"snapshot {printable(str(path))}: {len(snapshot.hosts)} hosts, "
             f"{len(snapshot.vms)} VMs, {snapshot.active_hosts} hosts active now"
             + (f", max_utilization {snapshot.max_utilization:g}"
                if snapshot.max_utilization != 1 else ""))
        if result.active_hosts is None:
            echo(f"active hosts: none found ({result.status}); proven lower bound "
                 f"{result.bound}")
        else:
            echo(f"active hosts: {result.active_hosts} ({result.status}); proven lower bound "
                 f"{result.bound}; capacity bound {result.capacity_bound}")
        if result.migrations is not None:
            echo(f"migrations to reach it: {result.migrations} ({result.migrations_status}); "
                 f"proven lower bound {result.migrations_bound}")
        echo(f"solved in {result.wall_s:.2f} s (time limit {args.time_limit:g} s)")
        if args.placement and result.placement is not None:
            for vm, host in result.placement.items():
                echo(f"  {vm} -> {host}")
    return EXIT_OK if result.active_hosts is not None else EXIT_NO_PLACEMENT


def cmd_report(args: argparse.Namespace) -> int:
    """``livemig report``: one self-contained HTML file of a run or a sweep."""
    from livemig.analysis import report
    from livemig.analysis.load import AnalysisError

    source = Path(args.directory)
    out = Path(args.out) if args.out else source / "report.html"
    if out.exists() and not args.force and args.out is not None:
        raise CliError(f"{printable(str(out))} already exists (use --force to replace it)")
    try:
        written = report.write_report(source, out)
    except AnalysisError as exc:
        raise CliError(printable(str(exc))) from exc
    except OSError as exc:
        raise CliError(one_line(exc)) from exc
    echo(f"report written to {written} ({written.stat().st_size:,} bytes)")
    return EXIT_OK


def add_commands(sub: Any) -> None:
    """Register ``optimum`` and ``report`` on the main CLI's sub-command set."""
    optimum = sub.add_parser(
        "optimum", help="the fewest active hosts a placement snapshot could use (CP-SAT)",
        description="Read a placement snapshot (YAML or JSON: hosts with cpu and optional "
        "ram, VMs with cpu, ram and host) and find the minimum number of active hosts that "
        "hold every VM, with OR-Tools CP-SAT under a time limit. Prints the best found, the "
        "proven lower bound (OPTIMAL when they meet, FEASIBLE when not) and, with "
        "--min-migrations, the fewest migrations that reach it. Exit 0 with a placement, 1 "
        "when there is none (a VM fits on no host) or none was found in time.",
    )
    optimum.add_argument("snapshot", metavar="SNAPSHOT", help="the snapshot file")
    optimum.add_argument("--time-limit", type=_time_limit, default=10.0, metavar="S",
                         help="seconds for the whole search (default 10)")
    optimum.add_argument("--min-migrations", action="store_true",
                         help="then minimise the migrations that reach that many hosts")
    optimum.add_argument("--deterministic", action="store_true",
                         help="one worker and CP-SAT's deterministic time: the same answer "
                         "on every run")
    optimum.add_argument("--json", action="store_true", help="print the result as JSON")
    optimum.add_argument("--placement", action="store_true",
                         help="also print the placement found (VM -> host)")
    optimum.set_defaults(func=cmd_optimum)

    report = sub.add_parser(
        "report", help="one self-contained HTML report of a run or a sweep",
        description="Write one HTML file with everything embedded (no external resources): "
        "for a run directory the scenario, outcome table, invariants, expectation verdicts "
        "and plots; for a sweep directory (cells.parquet) the cells, failures, and a "
        "comparison table and plot per axis.",
    )
    report.add_argument("directory", metavar="RUN_DIR|SWEEP_DIR")
    report.add_argument("--out", metavar="FILE",
                        help="the HTML file (default: DIR/report.html, replaced)")
    report.add_argument("--force", action="store_true", help="replace an existing --out file")
    report.set_defaults(func=cmd_report)
