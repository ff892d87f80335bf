"""Repeated real runs of the same cases: their order, the lab's noise floor, and a model's
error against each run and against the case's median.

The real lab is noisy: the same case run twice on the same machine can differ by a third
in uncapped total time and several-fold in downtime. ``livemig calibrate --repeat N`` runs
every case N times, round-robin over the matrix (:func:`round_robin`), so a slow drift in
the machine spreads over all cases instead of landing on a few. Separate recordings of the
same matrix can also be pooled (:func:`pool_recordings`) as further repeats.

With two runs or more of a case:

* the **noise floor** of a metric is the spread of its runs around their own median,
  ``|run - case median| / case median`` (:func:`spread`): the error a perfect model, one
  that predicted every case's typical value exactly, would still show against single
  runs;
* a model's error **against every run** is what a one-run calibration measures;
* its error **against the case median** judges it against the case's typical value.

>>> spread([584.0, 775.0])   # the same uncapped case, twice: 679.5 ms median
[0.140545, 0.140545]
>>> spread([12.0, 45.0, 20.0])   # downtime, three runs: median 20 ms
[0.4, 1.25, 0.0]
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace
from statistics import median
from typing import TYPE_CHECKING, Any, TypeVar

from livemig.calibration.compare import outcome

if TYPE_CHECKING:
    from livemig.calibration.run import CaseResult

T = TypeVar("T")
#: the metrics of a migration record that the tables compare (as ``migrations.csv``)
METRICS = ("total_time_s", "downtime_ms", "data_transferred_bytes")


def round_robin(cases: Sequence[T], repeat: int) -> list[tuple[int, T]]:
    """``(repeat number, case)`` in the order calibrate runs them: every case once, then
    every case again ..., so that drift in the machine spreads over all cases.

    >>> round_robin(["a", "b", "c"], 2)
    [(1, 'a'), (1, 'b'), (1, 'c'), (2, 'a'), (2, 'b'), (2, 'c')]
    >>> round_robin(["a"], 0)
    Traceback (most recent call last):
    ...
    ValueError: repeat must be at least 1, not 0
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, not {repeat}")
    return [(r, case) for r in range(1, repeat + 1) for case in cases]


def real_dir_name(repeat: int) -> str:
    """The directory (in a calibration's directory) of the real runs of repeat ``repeat``:
    ``real`` for the first (as a one-run calibration), ``real-rN`` for the others, each a
    directory of run directories that ``livemig compare`` reads as it reads ``real``.

    >>> real_dir_name(1), real_dir_name(3)
    ('real', 'real-r3')
    """
    return "real" if repeat == 1 else f"real-r{repeat}"


def pool_recordings(recordings: Sequence[Sequence[CaseResult]]) -> list[CaseResult]:
    """Several recordings of the same matrix as one: the runs of each later recording are
    numbered after those of the ones before it (its repeat 1 follows their last)."""
    pooled: list[CaseResult] = []
    offset = 0
    for results in recordings:
        pooled += [replace(r, repeat=r.repeat + offset) for r in results]
        offset += max((r.repeat for r in results), default=0)
    return pooled


def spread(values: Sequence[float]) -> list[float]:
    """``|value - median| / median`` of each value, rounded to 6 places (the median of
    the values themselves); [] when the median is 0 (no relative spread)."""
    mid = median(values) if values else 0
    if mid == 0:
        return []
    return [round(abs(v - mid) / mid, 6) for v in values]


def _number(value: Any) -> float | None:
    if value in (None, ""):
        return None
    return float(value)


def run_rows(results: Sequence[CaseResult]) -> dict[str, list[dict[str, Any]]]:
    """Each case's runs as migration rows (``instance``, ``status``, ``error`` and the
    :data:`METRICS`, as in ``migrations.csv``), in repeat order."""
    by_case: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(results, key=lambda r: r.repeat):
        row = r.row()
        by_case[r.case.name].append({
            "instance": r.case.name, "repeat": r.repeat, "status": row["status"],
            "error": row["error"] or "", **{m: _number(row[m]) for m in METRICS}})
    return dict(by_case)


def median_row(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A case's typical run: per metric the median of the runs that have it, and the
    outcome most runs had (the first run's among equals).

    >>> runs = [{"instance": "a", "status": "completed", "error": "", "total_time_s": 2.0,
    ...          "downtime_ms": 12.0, "data_transferred_bytes": 100.0},
    ...         {"instance": "a", "status": "completed", "error": "", "total_time_s": 3.0,
    ...          "downtime_ms": 45.0, "data_transferred_bytes": 110.0}]
    >>> m = median_row(runs)
    >>> m["total_time_s"], m["downtime_ms"], m["data_transferred_bytes"], m["status"]
    (2.5, 28.5, 105.0, 'completed')
    """
    outcomes = Counter(outcome(r) for r in runs)
    top = max(outcomes.values())
    modal = next(outcome(r) for r in runs if outcomes[outcome(r)] == top)
    status, _, error = modal.partition(":")
    out: dict[str, Any] = {"instance": runs[0]["instance"], "status": status, "error": error}
    for m in METRICS:
        values = [r[m] for r in runs if r[m] is not None]
        out[m] = median(values) if values else None
    return out


def noise_rows(by_case: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The lab's noise floor as error rows (one per run of a case with two runs or more):
    ``METRIC_err`` is the run's :func:`spread` around its case's median, and
    ``outcome_match`` whether its outcome is the case's usual one (:func:`median_row`)."""
    rows = []
    for name, runs in by_case.items():
        if len(runs) < 2:
            continue
        typical = median_row(runs)
        errs: dict[str, list[float | None]] = {}
        for m in METRICS:
            known = iter(spread([r[m] for r in runs if r[m] is not None]) or [])
            errs[m] = [None if r[m] is None else next(known, None) for r in runs]
        for i, run in enumerate(runs):
            rows.append({"instance": name, **{f"{m}_err": errs[m][i] for m in METRICS},
                         "outcome_match": outcome(run) == outcome(typical)})
    return rows


def error_rows(by_case: dict[str, list[dict[str, Any]]], sims: dict[str, dict[str, str]],
               *, against_median: bool) -> list[dict[str, Any]]:
    """A model's error rows (:func:`livemig.calibration.compare.pair_rows`): its one run
    of each case (``sims``, by instance) against every real run of the case, or against
    the case's :func:`median_row`; cases the model did not run are left out."""
    from livemig.calibration.compare import pair_rows

    rows = []
    for name, runs in by_case.items():
        sim = sims.get(name)
        if sim is None:
            continue
        for real in ([median_row(runs)] if against_median else runs):
            text = {k: "" if v is None else str(v) for k, v in real.items()}
            rows += pair_rows([text], [sim])
    return rows


def most_runs(by_case: dict[str, list[dict[str, Any]]]) -> int:
    """The most runs any case has (0 for none)."""
    return max((len(runs) for runs in by_case.values()), default=0)
