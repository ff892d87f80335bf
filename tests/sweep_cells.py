"""Cell functions for the sweep tests, run by dask workers (pickled by value)."""

from __future__ import annotations

import os
from typing import Any

from livemig.core.model import Scenario
from livemig.sweep.execute import run_cell

CRASH_SEED = 2


def crash_on_seed_2(kind: str, scenario: Scenario, seed: int,
                    keep_run: bool) -> dict[str, Any]:
    """As :func:`run_cell`, but the run of seed 2 raises (as a bug in the simulator would)."""
    if seed == CRASH_SEED:
        scenario = None  # type: ignore[assignment]  # run_scenario fails on it
    return run_cell(kind, scenario, seed, keep_run)


def die_on_seed_2(kind: str, scenario: Scenario, seed: int, keep_run: bool) -> dict[str, Any]:
    """As :func:`run_cell`, but the worker process dies running seed 2."""
    if seed == CRASH_SEED:
        os._exit(13)
    return run_cell(kind, scenario, seed, keep_run)
