"""``livemig check``: run a suite of scenario files and gate on their expectations.

:func:`discover` turns the command's paths into scenario files (a directory: every
``*.yaml`` / ``*.yml`` below it, sorted), :func:`run_suite` runs each file on the
simulator and evaluates its ``expect:`` section (:mod:`livemig.core.expectations`) in
``jobs`` worker processes, :func:`table` and :func:`write_junit` report the verdicts.

* Runs are in memory: no results directory is written, nothing is left behind.
* Deterministic: each file runs with its own seed in its own process; the reports come
  back in discovery order, so the same suite gives the same verdicts, whatever ``jobs``.
* Exit code (:func:`exit_code`): 0 every expectation met, 1 one failed, 2 a file could not
  be loaded (a bad file outweighs a failed expectation; the other files still run).

>>> ok = FileReport("a.yaml", (Verdict("outcomes.completed == 1", 3, True, "1"),))
>>> bad = FileReport("b.yaml", error="b.yaml:1: no content")
>>> exit_code([ok]), exit_code([ok, bad]), ok.passed, bad.passed
(0, 2, True, False)
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from livemig.core.expectations import Verdict

__all__ = [
    "EXIT_BAD_FILE",
    "EXIT_FAILED",
    "EXIT_OK",
    "SUFFIXES",
    "FileReport",
    "check_file",
    "discover",
    "exit_code",
    "junit_tree",
    "run_suite",
    "table",
    "write_junit",
]

SUFFIXES = (".yaml", ".yml")
EXIT_OK, EXIT_FAILED, EXIT_BAD_FILE = 0, 1, 2
SUITE_NAME = "livemig check"


@dataclass(frozen=True)
class FileReport:
    """One file's verdicts, or the one-line reason it could not be loaded (``error``)."""

    path: str
    verdicts: tuple[Verdict, ...] = ()
    error: str | None = None
    wall: float = 0.0  # seconds to load, run and evaluate it

    @property
    def met(self) -> int:
        return sum(1 for v in self.verdicts if v.met)

    @property
    def failed(self) -> int:
        return sum(1 for v in self.verdicts if not v.met)

    @property
    def passed(self) -> bool:
        return self.error is None and self.failed == 0


def discover(paths: Iterable[str]) -> list[str]:
    """The scenario files of ``paths``: files as given, directories searched recursively.

    A path that does not exist is kept (its report says so); a directory without scenario
    files is a ``ValueError``. Each file once, in the order found.
    """
    found: list[str] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            below = sorted(str(p) for p in path.rglob("*") if p.suffix in SUFFIXES
                           and p.is_file())
            if not below:
                raise ValueError(f"{text}: no scenario files (*.yaml) in this directory")
            found.extend(below)
        else:
            found.append(text)
    return list(dict.fromkeys(found))


def check_file(path: str, driver: str = "sim") -> FileReport:
    """Load ``path``, run it in memory on ``driver`` and evaluate its expectations."""
    from livemig.consolidation import commands as consolidation
    from livemig.core.cli import CliError
    from livemig.core.expectations import evaluate
    from livemig.core.runner import run_scenario
    from livemig.core.scenario_commands import load

    if consolidation.handles(path):
        return consolidation.check_file(path)
    start = time.perf_counter()
    try:
        scenario = load(path)
    except CliError as exc:
        return FileReport(path, error=str(exc), wall=time.perf_counter() - start)
    result = run_scenario(scenario, driver)
    try:
        verdicts = tuple(evaluate(scenario.expect, result))
    finally:
        result.store.close()
    return FileReport(path, verdicts, wall=time.perf_counter() - start)


def run_suite(files: Sequence[str], jobs: int = 1, driver: str = "sim") -> list[FileReport]:
    """:func:`check_file` for every file, in ``jobs`` processes; reports in ``files`` order."""
    work = partial(check_file, driver=driver)
    if jobs <= 1 or len(files) <= 1:
        return [work(path) for path in files]
    # what every worker needs, imported once here (a forked worker inherits it)
    import livemig.core.results  # noqa: F401 - percentiles
    import livemig.core.runner  # noqa: F401
    import livemig.core.scenario  # noqa: F401
    import livemig.drivers.simulated  # noqa: F401

    with ProcessPoolExecutor(max_workers=min(jobs, len(files))) as pool:
        return list(pool.map(work, files, chunksize=1))


def exit_code(reports: Iterable[FileReport]) -> int:
    """2 if a file is bad, else 1 if an expectation failed, else 0."""
    reports = list(reports)
    if any(r.error is not None for r in reports):
        return EXIT_BAD_FILE
    return EXIT_FAILED if any(r.failed for r in reports) else EXIT_OK


# -- reports ---------------------------------------------------------------------------


def table(reports: Sequence[FileReport], wall: float, jobs: int) -> str:
    """A line per file (expectations met / failed, wall), then every failure and a total."""
    rows = [("file", "met", "failed", "wall")]
    for r in reports:
        if r.error is not None:
            rows.append((r.path, "-", "-", "BAD FILE"))
        else:
            rows.append((r.path, str(r.met), str(r.failed), f"{r.wall:.2f} s"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                         strict=True))])
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    problems = []
    for r in reports:
        if r.error is not None:
            problems.append(f"BAD FILE {r.error}")
        problems.extend(f"FAILED {r.path}:{v.line or '-'}: {v.expectation} (got {v.actual})"
                        for v in r.verdicts if not v.met)
    if problems:
        lines += ["", *problems]
    bad = sum(1 for r in reports if r.error is not None)
    failed_files = sum(1 for r in reports if r.error is None and r.failed)
    met = sum(r.met for r in reports)
    failed = sum(r.failed for r in reports)
    lines += [
        "",
        f"{len(reports)} files: {len(reports) - bad - failed_files} passed, {failed_files} "
        f"failed, {bad} bad; {met} expectations met, {failed} failed; {wall:.2f} s wall "
        f"(-j {jobs})",
    ]
    return "\n".join(lines)


def _classname(path: str) -> str:
    """``scenarios/quickstart.yaml`` -> ``scenarios.quickstart`` (JUnit's class name).

    >>> _classname("scenarios/quickstart.yaml"), _classname("./a b.yml"), _classname("/t/x.yaml")
    ('scenarios.quickstart', 'a b', 't.x')
    """
    parts = Path(path).with_suffix("").parts
    return ".".join(p for p in parts if p not in ("/", ".", "..")) or path


def junit_tree(reports: Sequence[FileReport], wall: float) -> ET.ElementTree:
    """JUnit XML: a ``<testsuite>`` per file, a ``<testcase>`` per expectation; a failed
    expectation is a ``<failure>``, a file that cannot be loaded one ``<error>`` case."""
    root = ET.Element("testsuites", name=SUITE_NAME, time=f"{wall:.3f}")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for r in reports:
        suite = ET.SubElement(root, "testsuite", name=r.path, time=f"{r.wall:.3f}")
        counts = {"tests": max(len(r.verdicts), 1 if r.error else 0), "failures": r.failed,
                  "errors": 1 if r.error else 0, "skipped": 0}
        for key, value in counts.items():
            suite.set(key, str(value))
        for key in totals:
            totals[key] += counts[key]
        classname = _classname(r.path)
        if r.error is not None:
            case = ET.SubElement(suite, "testcase", classname=classname, name="load scenario",
                                 time=f"{r.wall:.3f}")
            ET.SubElement(case, "error", message=r.error, type="ScenarioError").text = r.error
        for v in r.verdicts:
            name = f"line {v.line}: {v.expectation}" if v.line else v.expectation
            case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
            if not v.met:
                message = f"{v.expectation}: got {v.actual}"
                ET.SubElement(case, "failure", message=message, type="ExpectationFailed").text = (
                    f"{r.path}:{v.line or '-'}: {message}")
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(path: str | os.PathLike[str], reports: Sequence[FileReport], wall: float) -> None:
    """Write the JUnit XML of ``reports`` to ``path`` (whole, or not at all)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        junit_tree(reports, wall).write(tmp, encoding="utf-8", xml_declaration=True)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
