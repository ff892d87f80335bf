"""Analysis of livemig's outputs: runs and sweeps as DataFrames, the optimality bound of a
placement (CP-SAT) and the self-contained HTML report.

``from livemig import analysis; run = analysis.load_run("results/quickstart")``: the
loaders of :mod:`livemig.analysis.load` are available here, imported on first use (so the
CLI, which imports this package to register its commands, loads no pandas).
"""

from __future__ import annotations

from typing import Any

_LOAD_NAMES = (
    "AnalysisError", "Run", "axes", "ecdf", "failed_cells", "is_run_dir", "is_sweep_dir",
    "load_compare", "load_run", "load_sweep", "metrics", "outcome_table", "pareto_front",
    "slowest",
)
__all__ = list(_LOAD_NAMES)


def __getattr__(name: str) -> Any:
    if name in _LOAD_NAMES:
        from livemig.analysis import load

        return getattr(load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
