"""``livemig sweep``: a grid of simulated runs on dask.distributed.

Registered on the main parser by :mod:`livemig.core.cli` (``COMMAND_MODULES``). The
sweep file is loaded and every cell resolved (and checked) before anything runs or is
written: a bad file is one line ``livemig: error: FILE:LINE: FIELD: ...``, exit code 2.
Exit codes: 0 every cell ok, 1 some cell failed (recorded, see ``cells.parquet``),
2 bad input or no cluster, 130 interrupted (the finished cells are kept).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from livemig.core.cli import (
    EXIT_OK,
    CliError,
    default_out_dir,
    echo,
    one_line,
    positive_int,
    printable,
)

EXIT_CELLS_FAILED = 1
_SHOWN_FAILURES = 5


def cmd_sweep(args: argparse.Namespace) -> int:
    """``livemig sweep``: resolve the cells, run those not done yet, write cells.parquet."""
    from livemig.core.units import UnitError
    from livemig.core.yaml_nodes import ScenarioError
    from livemig.sweep import cells as cells_mod
    from livemig.sweep import execute
    from livemig.sweep.spec import load_sweep

    if args.scheduler is not None and args.workers is not None:
        raise CliError("--workers starts a local cluster; with --scheduler the cluster's own "
                       "workers run the cells (use one of them)")
    try:
        sweep = load_sweep(args.sweep)
        cells = cells_mod.resolve(sweep)
    except (ScenarioError, UnitError, OSError) as exc:
        raise CliError(one_line(exc)) from exc
    out = Path(args.out) if args.out is not None else default_out_dir(sweep.name)
    stream = None if args.no_progress or not sys.stderr.isatty() else sys.stderr
    try:
        outcome = execute.run_sweep(sweep, cells, out, scheduler=args.scheduler,
                                    workers=args.workers, keep_runs=args.keep_runs,
                                    progress_stream=stream)
    except execute.SweepSetupError as exc:
        raise CliError(printable(str(exc))) from exc
    except OSError as exc:  # a record or the table could not be written (a full disk, ...)
        raise CliError(f"{printable(str(out))}: {one_line(exc)} (the cells recorded so far "
                       "are kept; run the same command again to go on)") from exc
    return _report(outcome, out)


def _report(outcome: Any, out: Path) -> int:
    failed = len(outcome.failed)
    ok = outcome.earlier + outcome.ok
    text = f"{outcome.total} cells: {ok} ok"
    if outcome.earlier:
        text += f" ({outcome.earlier} from an earlier run)"
    text += f", {failed} failed"
    if outcome.run_s:
        text += f"; ran {outcome.ok + failed} in {outcome.run_s:.1f} s"
    echo(text)
    for cell, error in outcome.failed[:_SHOWN_FAILURES]:
        axes = ", ".join(f"{path}={value}" for path, value in cell.axes)
        echo(f"  failed {cell.key} ({cell.scenario_file}{', ' + axes if axes else ''}, "
             f"seed {cell.seed}): {printable(str(error))}")
    if failed > _SHOWN_FAILURES:
        echo(f"  ... and {failed - _SHOWN_FAILURES} more (status == 'failed' in the table)")
    for name in outcome.missing_metrics:
        echo(f"warning: metric {name!r} is in no cell's summary.json")
    echo(f"results written to {out / 'cells.parquet'}")
    return EXIT_CELLS_FAILED if failed else EXIT_OK


def add_commands(sub: Any) -> None:
    """Register ``sweep`` on the main CLI's sub-command set."""
    sweep = sub.add_parser(
        "sweep", help="run a grid of scenarios x axes x seeds on dask",
        description="Run every cell of a sweep file (base scenarios x the values of its axes "
        "x seeds) on the simulator, in parallel on dask.distributed, and write one row per "
        "cell into DIR/cells.parquet. Cells finished by an earlier run into DIR are skipped; "
        "a cell that crashes is recorded as failed. Schema: livemig/sweep/spec.py; table "
        "columns: livemig/sweep/table.py.",
    )
    sweep.add_argument("sweep", metavar="SWEEP", help="sweep YAML file")
    sweep.add_argument("--out", metavar="DIR",
                       help="sweep directory (default: results/<sweep name>)")
    sweep.add_argument("--scheduler", metavar="ADDRESS",
                       help="an existing dask scheduler, e.g. tcp://HOST:8786 (default: a "
                       "local cluster)")
    sweep.add_argument("--workers", metavar="N", type=positive_int,
                       help="worker processes of the local cluster (default: the number of "
                       "CPUs), one thread each")
    sweep.add_argument("--keep-runs", action="store_true",
                       help="also write each cell's run directory into DIR/runs/<cell>/")
    sweep.add_argument("--no-progress", action="store_true",
                       help="no progress bar (it is only shown when stderr is a terminal)")
    sweep.set_defaults(func=cmd_sweep)
