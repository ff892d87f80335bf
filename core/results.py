"""Tables and files of a run: CSVs, ``summary.json``, plots and a terminal table.

:func:`write_results` writes a :class:`~livemig.core.runner.RunResult` into a
directory atomically: everything goes into a hidden temporary sibling first,
which is swapped into place only when every file was written, so a failed or
interrupted run leaves no half-written directory behind.

The run directory of a real run already exists when its results are written: it
holds the records the run kept while it went (``state.sqlite`` with its
``-wal``/``-shm`` files, ``run.json``; :data:`RUN_STATE_FILES`), which
``livemig resume`` needs and which the run's store may still have open. They
are *hard-linked* into the temporary sibling (same files, same inodes: an open
SQLite connection goes on writing to them, and SQLite's by-path operations hit
the same files under the same path afterwards), then the two directories are
exchanged in one ``renameat2(RENAME_EXCHANGE)`` where the kernel and file system
offer it (else: old directory renamed aside, new one renamed in), and the old
one is deleted. A crash at any step leaves the directory either as it was or
complete with the new results, the run's records intact in both cases (at
worst a hidden ``.NAME.tmp-*``/``.NAME.old-*`` sibling is left over).

Cells are plain text: ``None`` is an empty cell, booleans are ``true``/``false``,
enums their value, floats ``repr`` (shortest round-trip form), so two runs with
the same seed give byte-identical files.

>>> _cell(None), _cell(True), _cell(0.1 + 0.2), _cell(MigrationStatus.COMPLETED)
('', 'true', '0.30000000000000004', 'completed')
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import ctypes.util
import errno
import json
import math
import os
import secrets
import shutil
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import livemig
from livemig.core import plots  # cheap: matplotlib is imported only when drawing
from livemig.core.expectations import evaluate, verdicts_block
from livemig.core.model import (
    FINISHED_STATUSES,
    DrainEvent,
    MigrationPolicy,
    MigrationStatus,
    VmState,
)
from livemig.core.profile import model_params
from livemig.core.runner import RUN_FILE, STATE_FILE, RunResult
from livemig.core.state import ActionRecord, MigrationRecord
from livemig.core.units import format_duration

MIGRATION_COLUMNS = (
    "id", "instance", "source", "dest", "block_migration", "requested_at", "started_at",
    "finished_at", "status", "error", "error_message", "attempted_hosts", "total_time_s",
    "downtime_ms", "iterations", "data_transferred_bytes", "flags", "max_downtime_ms",
    "progress", "postcopy_at", "paused_guest", "auto_converge_throttle", "timeout_action",
)
INSTANCE_COLUMNS = ("instance", "host", "vm_state", "task_state", "driver_host")
EVENT_COLUMNS = (
    "time", "instance", "event", "old_vm_state", "new_vm_state", "old_task_state",
    "new_task_state", "state_change",
)
ACTION_COLUMNS = ("time", "kind", "target", "outcome")
POLICY_FIELDS = (
    "downtime_steps", "downtime_delay", "timeout_action", "permit_post_copy",
    "permit_auto_converge", "completion_timeout", "max_concurrent_per_host",
)
"""The convergence policy reported in ``summary.json`` (``MigrationPolicy`` fields)."""
RUN_STATE_FILES = (
    *(STATE_FILE + suffix for suffix in ("", "-wal", "-shm", "-journal")), RUN_FILE,
)
"""Files a real run writes into its run directory while it runs; kept by :func:`write_results`."""
WALL_TIME_KEY = "wall_time_s"
"""The one ``summary.json`` field that differs between two runs of the same seed."""

RESULT_FILES = (
    "migrations.csv", "instances.csv", "events.csv", "actions.csv", "summary.json",
    *plots.PLOT_FILES, "hosts.csv", "active_hosts.png",  # a consolidation run's
)
"""The files :func:`write_files` writes: with :data:`RUN_STATE_FILES` (and the run file's
``.tmp`` while it is replaced), all that ``--force`` may replace."""

TABLE_PROBLEM_LINES = 20


class OutputExistsError(FileExistsError):
    """The output directory exists and ``force`` was not given."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"output directory {path} already exists (use --force to replace it)")
        self.path = path


# -- cells and rows -------------------------------------------------------
def _cell(value: object) -> str:
    """One CSV cell: see the module docstring."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else float(seconds) * 1000.0


def migration_rows(result: RunResult) -> list[tuple[object, ...]]:
    """One row per requested migration, in :data:`MIGRATION_COLUMNS` order."""
    return [
        (
            m.id, m.instance, m.source, m.dest, m.block_migration, _float(m.requested_at),
            _float(m.started_at), _float(m.finished_at), m.status, m.error, m.error_message,
            ";".join(m.attempted_hosts), _float(m.total_time), _ms(m.downtime), m.iterations,
            m.data_transferred, m.flags, _ms(m.max_downtime), _float(m.progress),
            _float(m.postcopy_at), m.paused_guest, m.auto_converge_throttle, m.timeout_action,
        )
        for m in result.store.migrations()
    ]


def instance_rows(result: RunResult) -> list[tuple[object, ...]]:
    """The store's final instance records, with the driver's idea of their host."""
    return [
        (i.name, i.host, i.vm_state, i.task_state, result.final_hosts.get(i.name))
        for i in result.store.instances()
    ]


def event_rows(result: RunResult) -> list[tuple[object, ...]]:
    """Every notification, in the order it was emitted."""
    return [
        (
            _float(n.time), n.instance, n.event, n.old_vm_state, n.new_vm_state,
            n.old_task_state, n.new_task_state, n.state_change,
        )
        for n in result.store.notifications
    ]


def actions(result: RunResult) -> list[ActionRecord]:
    """The scenario events applied to the run (none from a store without actions)."""
    read = getattr(result.store, "actions", None)
    return list(read()) if read is not None else []


def action_rows(result: RunResult) -> list[tuple[object, ...]]:
    """One row per applied event (operator action, fault, controller restart), in order."""
    return [(_float(a.time), a.kind, a.target, a.outcome) for a in actions(result)]


_AS_CSV_WRITES = frozenset((str, int, float, type(None)))
"""Types whose cell the csv module writes itself as :func:`_cell` would (``str``, ``repr``
of a float, ``None`` empty): only the others (bools, enums, ...) go through ``_cell``."""


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write a header and rows with ``\\n`` line ends (same bytes on every platform)."""
    native = _AS_CSV_WRITES
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([v if type(v) in native else _cell(v) for v in row] for row in rows)


# -- summary ----------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([5.0], 95), percentile([0, 10], 95)
    (2.5, 5.0, 9.5)
    """
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def describe(values: Sequence[float]) -> dict[str, float | int | None]:
    """count/total/mean/median/p95/max of ``values`` (``None`` when empty).

    >>> describe([1.0, 3.0])
    {'count': 2, 'total': 4.0, 'mean': 2.0, 'median': 2.0, 'p95': 2.9, 'max': 3.0}
    >>> describe([])["mean"] is None
    True
    """
    if not values:
        return {"count": 0, "total": 0.0, "mean": None, "median": None, "p95": None, "max": None}
    return {
        "count": len(values),
        "total": math.fsum(values),
        "mean": statistics.fmean(values),
        "median": float(statistics.median(values)),
        "p95": percentile(values, 95),
        "max": float(max(values)),
    }


def completed(result: RunResult) -> list[MigrationRecord]:
    """The migrations that ended with status ``completed``."""
    return [m for m in result.store.migrations() if m.status is MigrationStatus.COMPLETED]


def host_mismatches(result: RunResult) -> list[str]:
    """Instances whose record's host is not where the driver says the domain runs.

    An instance in ERROR runs nowhere (its host died): it names the host it ran on last,
    which is what the invariants ask of it, and is not counted here.
    """
    return [
        i.name for i in result.store.instances()
        if i.vm_state is not VmState.ERROR and result.final_hosts.get(i.name) != i.host
    ]


def outcomes(migrations: Iterable[MigrationRecord]) -> dict[str, int]:
    """Migrations by status, every status present (0 when none), in the enum's order.

    >>> counts = outcomes([])
    >>> list(counts)[:3], sum(counts.values()), len(counts) == len(MigrationStatus)
    (['accepted', 'queued', 'preparing'], 0, True)
    """
    counts = {str(s.value): 0 for s in MigrationStatus}
    for m in migrations:
        counts[str(m.status.value)] += 1
    return counts


def policy_block(policy: MigrationPolicy) -> dict[str, Any]:
    """The convergence policy in force (:data:`POLICY_FIELDS`), enums by value.

    >>> policy_block(MigrationPolicy())["timeout_action"]
    'abort'
    """
    block: dict[str, Any] = {}
    for name in POLICY_FIELDS:
        value = getattr(policy, name)
        if isinstance(value, Enum):
            value = value.value
        elif isinstance(value, float):
            value = float(value)
        block[name] = value
    return block


def model_block(policy: MigrationPolicy) -> dict[str, Any]:
    """The simulator's pre-copy model: its name, the profile it was given (name and
    file) and the parameters in force (core/profile.py).

    >>> block = model_block(MigrationPolicy())
    >>> block["name"], block["profile"], block["params"]["startup_cost"]
    ('qemu', None, 0.285)
    """
    params = model_params(policy).as_dict()
    return {"name": params.pop("model"), "profile": policy.profile_name,
            "profile_path": policy.profile, "params": params}


def invariants_block(result: RunResult) -> dict[str, Any] | None:
    """``InvariantReport.as_dict()`` of the run (``None`` if it was not checked)."""
    report = getattr(result, "invariants", None)
    return None if report is None else dict(report.as_dict())


def drains_block(result: RunResult) -> list[dict[str, Any]]:
    """One entry per ``drain`` event: did it leave its host empty, and if not, which
    instances are still recorded there (e.g. no host could take them, or they died).

    >>> from livemig.core.model import DrainEvent, Scenario
    >>> from livemig.core.state import StateStore
    >>> from livemig.core.model import VmSpec
    >>> store = StateStore(lambda: 0.0)
    >>> store.add_instances([VmSpec(name="a", host="h1", ram=1, used_memory=1,
    ...                             working_set=0, dirty_rate=0.0)])
    >>> sc = Scenario(name="t", hosts=(), vms=(), events=(DrainEvent(at=5.0, host="h1"),))
    >>> drains_block(RunResult(scenario=sc, driver="sim", seed=0, store=store, final_hosts={},
    ...     sim_time=0.0, wall_time=0.0, sim_events=0, invariants=None))
    [{'at': 5.0, 'completed': False, 'host': 'h1', 'instances_left': ['a']}]
    """
    out = []
    for event in result.scenario.events:
        if isinstance(event, DrainEvent):
            left = sorted(i.name for i in result.store.instances_on(event.host))
            out.append({"at": float(event.at), "completed": not left, "host": event.host,
                        "instances_left": left})
    return out


def summarize(result: RunResult) -> dict[str, Any]:
    """The run in numbers (what ``summary.json`` holds); times in s, downtime in ms."""
    migrations = result.store.migrations()
    done = completed(result)
    status_counts: Counter[str] = Counter({str(s.value): 0 for s in FINISHED_STATUSES})
    status_counts.update(str(m.status.value) for m in migrations)
    error_counts = Counter(m.error for m in migrations if m.error is not None)
    mismatched = host_mismatches(result)
    summary: dict[str, Any] = {
        "scenario": result.scenario.name,
        "scenario_source": result.scenario.source,
        "driver": result.driver,
        "seed": result.seed,
        "livemig_version": livemig.__version__,
        "instances": len(result.store.instances()),
        "migrations": len(migrations),
        "status_counts": dict(sorted(status_counts.items())),
        "outcomes": outcomes(migrations),
        "invariants": invariants_block(result),
        "policy": policy_block(result.scenario.policy.migration),
        "model": model_block(result.scenario.policy.migration),
        "actions": len(actions(result)),
        "error_counts": dict(sorted(error_counts.items())),
        "completed_total_time_s": describe(
            [float(m.total_time) for m in done if m.total_time is not None]
        ),
        "completed_downtime_ms": describe(
            [float(m.downtime) * 1000.0 for m in done if m.downtime is not None]
        ),
        "data_transferred_bytes": sum(m.data_transferred or 0 for m in migrations),
        "sim_time_s": float(result.sim_time),
        "horizon_s": float(result.horizon),
        "horizon_reached": bool(result.horizon_reached),
        WALL_TIME_KEY: float(result.wall_time),
        "sim_events": result.sim_events,
        "host_mismatches": len(mismatched),
        "host_mismatch_instances": mismatched,
        "drains": drains_block(result),
    }
    block = expectations_block(result)
    if block is not None:  # only when the scenario has an expect: section
        summary["expectations"] = block
    return summary


def expectations_block(result: RunResult) -> dict[str, Any] | None:
    """The verdicts of the scenario's ``expect:`` section (``None`` when it has none)."""
    expect = getattr(result.scenario, "expect", None)
    return None if expect is None else verdicts_block(evaluate(expect, result))


def comparable(summary: Mapping[str, Any]) -> dict[str, Any]:
    """``summary`` without its non-deterministic field (the wall time)."""
    return {k: v for k, v in summary.items() if k != WALL_TIME_KEY}


def same_summary(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Are two summaries equal, ignoring the wall time?

    >>> same_summary({"seed": 1, "wall_time_s": 0.1}, {"seed": 1, "wall_time_s": 9.0})
    True
    """
    return comparable(a) == comparable(b)


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """JSON with sorted keys, floats in their shortest round-trip form."""
    path.write_text(
        json.dumps(summary, sort_keys=True, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )


def read_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a ``summary.json``."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


# -- terminal table ---------------------------------------------------------
def _mean_text(values: list[float]) -> str:
    return format_duration(statistics.fmean(values)) if values else "-"


def summary_table(result: RunResult) -> str:
    """Counts and mean times by status, then one line per migration that did not complete."""
    migrations = result.store.migrations()
    by_status: dict[str, list[MigrationRecord]] = {}
    for m in migrations:
        by_status.setdefault(str(m.status.value), []).append(m)
    header = ("status", "count", "mean total time", "mean downtime")
    rows = [
        (
            status,
            str(len(records)),
            _mean_text([m.total_time for m in records if m.total_time is not None]),
            _mean_text([m.downtime for m in records if m.downtime is not None]),
        )
        for status, records in sorted(by_status.items())
    ]
    rows.append(("total", str(len(migrations)), "", ""))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i == 1 else c.ljust(w) for i, (c, w) in pairs).rstrip()

    out = [
        f"scenario {result.scenario.name} (driver {result.driver}, seed {result.seed}): "
        f"{len(migrations)} migrations in {format_duration(result.sim_time)}",
        line(header),
        line(["-" * w for w in widths]),
        *(line(r) for r in rows),
    ]
    problems = [m for m in migrations if m.status is not MigrationStatus.COMPLETED]
    if problems:
        out.append("")
        out.append(f"not completed ({len(problems)}):")
        for m in problems[:TABLE_PROBLEM_LINES]:
            text = f"  #{m.id} {m.instance}: {m.status.value}"
            if m.error:
                text += f" {m.error}"
            if m.error_message:
                message = m.error_message.replace("\n", " ")
                text += f" ({message[:77] + '...' if len(message) > 80 else message})"
            out.append(text)
        if len(problems) > TABLE_PROBLEM_LINES:
            out.append(f"  ... and {len(problems) - TABLE_PROBLEM_LINES} more")
    for drain in drains_block(result):
        if not drain["completed"]:
            left = drain["instances_left"]
            out.append("")
            out.append(f"drain of {drain['host']} (at {drain['at']:g} s) "
                       f"incomplete: {len(left)} instance(s) left: " + ", ".join(left[:10])
                       + (" ..." if len(left) > 10 else ""))
    if result.horizon_reached:
        out.append("")
        out.append(f"horizon reached (until: {format_duration(result.horizon)}): the run was "
                   "halted there (HorizonReached)")
    out.extend(_invariant_lines(result))
    out.extend(_expectation_lines(result))
    mismatched = host_mismatches(result)
    if mismatched:
        out.append("")
        out.append(
            f"WARNING: {len(mismatched)} instance record(s) disagree with the driver's host: "
            + ", ".join(mismatched[:10]) + (" ..." if len(mismatched) > 10 else "")
        )
    return "\n".join(out)


def _invariant_lines(result: RunResult) -> list[str]:
    report = invariants_block(result)
    if report is None:
        return []
    violations, unverifiable = int(report["violations"]), int(report["unverifiable"])
    text = f"invariants: {violations} violation(s)"
    if unverifiable:
        text += f", {unverifiable} unverifiable"
    lines = ["", text]
    details = list(report.get("details", []))
    lines.extend(f"  {d}" for d in details[:TABLE_PROBLEM_LINES])
    if len(details) > TABLE_PROBLEM_LINES:
        lines.append(f"  ... and {len(details) - TABLE_PROBLEM_LINES} more")
    return lines


def _expectation_lines(result: RunResult) -> list[str]:
    block = expectations_block(result)
    if block is None:
        return []
    lines = ["", f"expectations: {block['met']} met, {block['failed']} failed"]
    failed = [d for d in block["details"] if not d["met"]]
    lines.extend(f"  FAILED line {d['line'] or '-'}: {d['expectation']} (got {d['actual']})"
                 for d in failed[:TABLE_PROBLEM_LINES])
    if len(failed) > TABLE_PROBLEM_LINES:
        lines.append(f"  ... and {len(failed) - TABLE_PROBLEM_LINES} more")
    return lines


# -- the output directory ---------------------------------------------------
def write_files(result: RunResult, directory: Path) -> None:
    """Write every file of a run into an existing (empty) ``directory``."""
    write_csv(directory / "migrations.csv", MIGRATION_COLUMNS, migration_rows(result))
    write_csv(directory / "instances.csv", INSTANCE_COLUMNS, instance_rows(result))
    write_csv(directory / "events.csv", EVENT_COLUMNS, event_rows(result))
    write_csv(directory / "actions.csv", ACTION_COLUMNS, action_rows(result))
    write_summary(directory / "summary.json", summarize(result))
    plots.write_plots(result, directory)


def check_output_dir(out_dir: str | os.PathLike[str], *, force: bool = False) -> Path:
    """The output directory, checked before anything is run or written.

    Raises :class:`OutputExistsError` if ``out_dir`` exists and ``force`` is not given;
    ``FileExistsError`` when it may not be replaced even with ``force``: it is not a
    directory, it is the current directory or one of its parents, or it holds anything
    that is not a result or run file of livemig (:data:`RESULT_FILES`,
    :data:`RUN_STATE_FILES`: a user's ``notes.txt`` is never deleted); ``OSError``
    for a name the system cannot take (e.g. too long).
    """
    out = Path(out_dir)
    if out.exists() or out.is_symlink():
        if not force:
            raise OutputExistsError(out)
        if not out.is_dir() or out.is_symlink():
            raise FileExistsError(f"{out} exists and is not a directory; not replacing it")
        here = Path.cwd().resolve()
        if out.resolve() in (here, *here.parents):
            raise FileExistsError(f"{out} is the current directory or one of its parents; "
                                  "expected a directory of its own for the results")
        foreign = sorted(path.name for path in out.iterdir()
                         if path.name not in _REPLACEABLE or not path.is_file()
                         or path.is_symlink())
        if foreign:
            raise FileExistsError(
                f"{out} holds {len(foreign)} file(s) that livemig did not write "
                f"({', '.join(map(repr, foreign[:3]))}{', ...' if len(foreign) > 3 else ''}); "
                "not replacing it (expected a directory of earlier results only)"
            )
    return out


REPORT_FILE = "report.html"
"""``livemig report``'s default output in a run directory: a rerun with ``--force`` replaces
the directory, report included (the report would describe the old run)."""
_REPLACEABLE = frozenset((*RESULT_FILES, *RUN_STATE_FILES, RUN_FILE + ".tmp", REPORT_FILE))


def check_writable(out_dir: str | os.PathLike[str]) -> Path:
    """Can ``out_dir`` be created (or replaced) here? Checked before a run starts.

    Tries to make (and removes again) a hidden directory in the nearest existing
    ancestor of ``out_dir``'s parent, so a read-only file system, a directory without
    write permission or a file in the way fails before anything runs. Raises
    ``OSError`` whose message names ``out_dir`` (never the hidden folder).
    """
    out = Path(out_dir)
    existing = out.parent
    for parent in [out.parent, *out.parent.parents]:
        if os.path.lexists(parent):
            existing = parent
            break
    try:
        if not existing.is_dir():
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        probe = _sibling(existing / out.name, "probe")
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OSError(exc.errno, f"cannot write the results here ({existing}: {reason})",
                      str(out)) from None
    return out


def missing_parents(path: Path) -> list[Path]:
    """The ancestors of ``path`` that do not exist yet, outermost first."""
    missing = []
    for parent in [path, *path.parents]:
        if parent.exists():
            break
        missing.append(parent)
    return missing[::-1]


def make_dirs(paths: Sequence[Path]) -> None:
    """Create ``paths``, outermost first, one by one (no recursion: any depth works)."""
    for path in paths:
        with contextlib.suppress(FileExistsError):
            path.mkdir()


def _sibling(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux ``renameat2``); False if unsupported here."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint)
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTTY):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _swap(new: Path, out: Path) -> Path:
    """Put directory ``new`` in place of the existing ``out``; returns where the old one is."""
    if _exchange(new, out):
        return new
    old = _sibling(out, "old")
    out.rename(old)
    try:
        new.rename(out)
    except BaseException:
        old.rename(out)
        raise
    return old


def _link_run_state(out: Path, new: Path) -> None:
    """Hard-link the run's own records (:data:`RUN_STATE_FILES`) from ``out`` into ``new``."""
    for name in RUN_STATE_FILES:
        try:
            os.link(out / name, new / name)
        except FileNotFoundError:
            continue  # not there (or an SQLite side file that just went away)


def _sync(directory: Path) -> None:
    """fsync every file in ``directory`` and the directory itself."""
    for path in sorted(directory.iterdir()):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_results(
    result: RunResult, out_dir: str | os.PathLike[str], *, force: bool = False
) -> Path:
    """Write the run's files into ``out_dir`` atomically; returns the directory.

    The files go into a temporary sibling swapped into place at the end (see the
    module docstring); on any failure (or interrupt) before the swap the sibling
    and any parent directories created for it are removed again and ``out_dir``
    is as it was. An existing ``out_dir`` is refused unless ``force``; then its
    run records (:data:`RUN_STATE_FILES`) are kept and everything else replaced.
    """
    out = check_output_dir(out_dir, force=force)
    created = missing_parents(out.parent)
    tmp = _sibling(out, "tmp")
    old: Path | None = None
    try:
        make_dirs(created)
        try:
            tmp.mkdir()
            write_files(result, tmp)
        except OSError as exc:  # name the user's directory, not the hidden one
            raise OSError(exc.errno, f"cannot write the results: {exc.strerror or exc}",
                          str(out)) from exc
        check_output_dir(out, force=force)  # again: it may have appeared meanwhile
        if out.exists():
            _link_run_state(out, tmp)
            _sync(tmp)
            old = _swap(tmp, out)
        else:
            _sync(tmp)
            tmp.rename(out)
    except BaseException:
        if old is None:
            shutil.rmtree(tmp, ignore_errors=True)
            for parent in reversed(created):
                try:
                    parent.rmdir()
                except FileNotFoundError:
                    continue  # not made (the failure came first)
                except OSError:
                    break
        raise
    with contextlib.suppress(OSError):
        _sync_parent(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def _sync_parent(out: Path) -> None:
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
