"""The kinds of scenario file a sweep can run, each with its loader and its runner.

* ``nova``: the Nova live-migration flow (:mod:`livemig.core.scenario`,
  :func:`livemig.core.runner.run_scenario`); ``seeds:`` are the run's seed, as
  ``livemig run --seed`` (the file's own ``seed:`` stays, and with it ``random_faults``).
* ``consolidation``: a file with a top-level ``consolidation:`` section, when the
  ``livemig.consolidation`` package is installed; its seed is read when the file is
  loaded, so ``seeds:`` set the file's ``seed:`` key of each cell.

A kind's ``run`` is what a dask worker calls: it returns the run's ``summary.json``
data and, when asked, the files of its run directory.

>>> kind_of("hosts: []\\nvms: []\\n").name
'nova'
"""

from __future__ import annotations

import hashlib
import importlib.util
import tempfile
from pathlib import Path
from typing import Any

CONSOLIDATION_PACKAGE = "livemig.consolidation"


class NovaKind:
    """The Nova flow on the simulator."""

    name = "nova"
    seed_in_file = False  # seeds: the run's seed

    def handles(self, text: str) -> bool:
        return True  # the default kind: its loader says what is wrong with a file

    def parse(self, text: str, source: str, default_name: str) -> Any:
        from livemig.core.scenario import parse_scenario

        return parse_scenario(text, source=source, default_name=default_name)

    def identity(self, spec: Any) -> dict[str, Any]:
        """What the cell's key covers besides the loaded scenario (nothing: it is whole)."""
        return {}

    def run(self, spec: Any, seed: int, keep_run: bool) -> tuple[dict[str, Any],
                                                                dict[str, bytes] | None]:
        from livemig.core import results
        from livemig.core.runner import run_scenario

        result = run_scenario(spec, "sim", seed=seed)
        try:
            summary = results.summarize(result)
            files = None
            if keep_run:
                files = _files(lambda root: results.write_files(result, root))
        finally:
            result.store.close()
        return summary, files


class ConsolidationKind:
    """Dynamic consolidation (a ``consolidation:`` section; ``livemig.consolidation``)."""

    name = "consolidation"
    seed_in_file = True  # the file's seed seeds its policy when it is loaded

    def handles(self, text: str) -> bool:
        if importlib.util.find_spec(CONSOLIDATION_PACKAGE) is None:
            return False
        from livemig.consolidation.scenario import is_consolidation

        return bool(is_consolidation(text))

    def parse(self, text: str, source: str, default_name: str) -> Any:
        from livemig.consolidation.scenario import parse

        return parse(text, source)

    def identity(self, spec: Any) -> dict[str, Any]:
        """The trace's content: the scenario names its file, the runs read what is in it."""
        try:
            digest = hashlib.sha256(Path(spec.trace).read_bytes()).hexdigest()
        except OSError:
            digest = None  # the run will say what is wrong with it
        return {"trace_sha256": digest}

    def run(self, spec: Any, seed: int, keep_run: bool) -> tuple[dict[str, Any],
                                                                dict[str, bytes] | None]:
        from livemig.consolidation.run import evaluate, run_spec, summary, write

        outcome, timings = run_spec(spec)
        verdicts = evaluate(spec.expect, outcome.metrics)
        data = summary(spec, outcome, verdicts, timings)
        files = None
        if keep_run:  # write() puts a directory of its own in place: one below the temporary
            files = _files(lambda root: write(root / "run", data, outcome), below="run")
        return data, files


KINDS: tuple[Any, ...] = (ConsolidationKind(), NovaKind())
"""In the order they are asked whether a file is theirs (the last takes any file)."""


def kind_of(text: str) -> Any:
    """The kind of the scenario file whose text is ``text``."""
    return next(kind for kind in KINDS if kind.handles(text))


def by_name(name: str) -> Any:
    return next(kind for kind in KINDS if kind.name == name)


def _files(write: Any, below: str = "") -> dict[str, bytes]:
    """The files ``write(directory)`` writes ({path relative to ``directory / below``:
    content})."""
    with tempfile.TemporaryDirectory(prefix="livemig-cell-") as tmp:
        write(Path(tmp))
        root = Path(tmp) / below
        return {str(p.relative_to(root)): p.read_bytes()
                for p in sorted(root.rglob("*")) if p.is_file()}
