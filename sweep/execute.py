"""Running a sweep's cells on dask.distributed, resumably.

:func:`run_sweep` submits every cell not finished yet to a dask cluster (a
``LocalCluster`` of ``workers`` processes with one thread each, or the scheduler at
``scheduler``), and as each one finishes writes its record ``DIR/cells/<cell>.json``
(and with ``keep_runs`` its run directory ``DIR/runs/<cell>/``) atomically: a file
written whole under a temporary name, fsynced, renamed. At the end it writes
``DIR/cells.parquet`` (:mod:`livemig.sweep.table`).

* **Resumable**: a cell whose record says ``ok`` (and, with ``keep_runs``, whose run
  directory is there) is not run again; a killed sweep loses only the cells it was
  running. Failed cells are run again by the next invocation.
* **Safe**: a cell that raises is recorded as ``failed`` with its error (one line, and
  the traceback in its record); so is a cell whose worker died (dask retries it on
  another worker first, ``distributed.scheduler.allowed-failures``). Neither stops the
  sweep. One sweep at a time per directory (a lock file, ``DIR/.lock``).
* Records are written by this process, not by the workers, so the cluster's workers
  need no access to ``DIR`` (only livemig installed): any cluster works.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import livemig

from . import table
from .cells import DRIVER, Cell
from .progress import SweepProgress
from .spec import Sweep

SWEEP_FILE = "sweep.json"
CELLS_DIR = "cells"
RUNS_DIR = "runs"
LOCK_FILE = ".lock"
POLL_INTERVAL = 0.1  # seconds between two looks at the futures while none is ready
CONNECT_TIMEOUT = 10.0  # seconds to reach an existing scheduler


class SweepSetupError(Exception):
    """The sweep cannot start: its directory, or the cluster (one line, nothing ran)."""


CellFunction = Callable[[str, Any, int, bool], dict[str, Any]]


def run_cell(kind: str, scenario: Any, seed: int, keep_run: bool) -> dict[str, Any]:
    """Run one cell (on a worker): its summary, and its run files when ``keep_run``.

    ``kind`` names the scenario's kind (:mod:`livemig.sweep.kinds`). Never raises: an
    exception of the run is returned as ``status: failed`` with its one-line ``error``
    and ``traceback``.
    """
    from .kinds import by_name

    start = time.perf_counter()
    out: dict[str, Any] = {"status": table.STATUS_OK, "error": None, "traceback": None,
                           "summary": None, "files": None}
    try:
        out["summary"], out["files"] = by_name(kind).run(scenario, seed, keep_run)
    except Exception as exc:  # a crashed cell is a result of the sweep
        out.update(status=table.STATUS_FAILED, error=_one_line(exc),
                   traceback=traceback.format_exc())
    out["wall_s"] = time.perf_counter() - start
    out["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    return out


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())


def _warm() -> str:
    """Import what a cell needs, once per worker (and check the worker has livemig)."""
    import livemig.core.results  # noqa: F401
    import livemig.core.runner  # noqa: F401
    import livemig.drivers.simulated  # noqa: F401
    import livemig.sweep.kinds  # noqa: F401

    return livemig.__version__


# -- the sweep directory ------------------------------------------------------------


def check_dir(out: Path) -> None:
    """May ``out`` hold this sweep? New, empty, or an earlier sweep's (``sweep.json``)."""
    from livemig.core.results import check_writable

    try:
        if out.exists() or out.is_symlink():
            if not out.is_dir():
                raise SweepSetupError(f"{out} exists and is not a directory; expected a sweep "
                                      "directory")
            if any(out.iterdir()) and not (out / SWEEP_FILE).is_file():
                raise SweepSetupError(f"{out} is not empty and holds no {SWEEP_FILE}; expected "
                                      "a new directory or an earlier sweep's")
            if not os.access(out, os.W_OK | os.X_OK):
                raise SweepSetupError(f"{out}: not writable")
        else:
            check_writable(out)
    except OSError as exc:
        raise SweepSetupError(f"{exc.filename or out}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Create ``out`` (and ``cells/``, ``runs/``) and hold its lock while the sweep runs."""
    try:
        (out / CELLS_DIR).mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise SweepSetupError(f"{exc.filename or out}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepSetupError(f"{out}: another livemig sweep is running in this "
                                  "directory; expected one sweep at a time") from None
        for stale in [*(out / CELLS_DIR).glob(".*.tmp"), *(out / RUNS_DIR).glob(".*.tmp")]:
            _remove(stale)  # left by a sweep that was killed while writing
        yield
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` into ``path``: whole or not at all, even if the process is killed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def record_path(out: Path, key: str) -> Path:
    return out / CELLS_DIR / f"{key}.json"


def read_record(out: Path, key: str) -> dict[str, Any] | None:
    """A cell's record, or None if it has none (or an unreadable one: it runs again)."""
    try:
        data = json.loads(record_path(out, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("cell") == key else None


def is_done(out: Path, key: str, keep_runs: bool) -> bool:
    record = read_record(out, key)
    if record is None or record.get("status") != table.STATUS_OK:
        return False
    return not keep_runs or (out / RUNS_DIR / key).is_dir()


def _write_run_dir(out: Path, key: str, files: dict[str, bytes]) -> str:
    runs = out / RUNS_DIR
    runs.mkdir(exist_ok=True)
    tmp = runs / f".{key}.{os.getpid()}.tmp"
    _remove(tmp)
    tmp.mkdir()
    try:
        for name, data in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        final = runs / key
        _remove(final)  # a complete earlier copy whose record was not written
        tmp.rename(final)
    finally:
        _remove(tmp)
    return f"{RUNS_DIR}/{key}"


def _write_sweep_file(out: Path, sweep: Sweep, cells: Sequence[Cell]) -> None:
    info = {
        "name": sweep.name, "sweep_file": sweep.source,
        "scenarios": [ref.written for ref in sweep.scenarios],
        "axes": [axis.path for axis in sweep.axes],
        "seeds": list(sweep.seeds) if sweep.seeds is not None else None,
        "metrics": list(sweep.metrics) if sweep.metrics is not None else None,
        "cells": [cell.key for cell in cells], "driver": DRIVER,
        "livemig_version": livemig.__version__, "started_at": _now(),
    }
    write_atomic(out / SWEEP_FILE, (json.dumps(info, indent=2) + "\n").encode())


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# -- running ------------------------------------------------------------------------


@dataclass
class SweepOutcome:
    total: int
    earlier: int = 0  # finished by an earlier invocation
    ok: int = 0  # finished ok now
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    missing_metrics: list[str] = field(default_factory=list)
    table: Path | None = None
    setup_s: float = 0.0  # starting (or reaching) the cluster
    run_s: float = 0.0  # first submit to last result
    interrupted: bool = False


def run_sweep(
    sweep: Sweep,
    cells: Sequence[Cell],
    out: Path,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    keep_runs: bool = False,
    progress_stream: Any = None,
    cell_function: CellFunction = run_cell,
) -> SweepOutcome:
    """Run the cells of ``sweep`` not done yet into ``out``; see the module docstring.

    ``SweepSetupError`` when the directory or the cluster cannot be used (nothing ran).
    ``KeyboardInterrupt`` propagates after the table of the finished cells is written.
    """
    check_dir(out)
    outcome = SweepOutcome(total=len(cells))
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        client = None
        if any(not is_done(out, cell.key, keep_runs) for cell in cells):
            # the cluster first: if it cannot be had, nothing is written
            client, threads = stack.enter_context(_client(scheduler, workers))
            outcome.setup_s = time.perf_counter() - start
        stack.enter_context(locked(out))
        _write_sweep_file(out, sweep, cells)
        todo = [cell for cell in cells if not is_done(out, cell.key, keep_runs)]
        outcome.earlier = len(cells) - len(todo)
        bar = None
        if progress_stream is not None:
            bar = SweepProgress(len(cells), progress_stream, done_before=outcome.earlier)
            bar.draw()
        try:
            if todo and client is not None:
                _run(client, threads, todo, out, outcome, keep_runs=keep_runs, bar=bar,
                     cell_function=cell_function)
        except KeyboardInterrupt:
            outcome.interrupted = True
            raise
        finally:
            if bar is not None:
                bar.close()
            _write_table(sweep, cells, out, outcome)
    return outcome


def _write_table(sweep: Sweep, cells: Sequence[Cell], out: Path, outcome: SweepOutcome) -> None:
    rows, records = [], []
    for cell in cells:
        record = read_record(out, cell.key)
        if record is None:
            continue  # not run (the sweep was interrupted)
        records.append(record)
        rows.append(table.row(record, cell.axes, sweep.metrics))
    df = table.frame(rows, [axis.path for axis in sweep.axes])
    path = out / table.TABLE_FILE
    table.write_parquet(df, path)
    outcome.table = path
    if sweep.metrics is not None:
        ok = [r for r in records if r.get("status") == table.STATUS_OK]
        outcome.missing_metrics = table.missing_metrics(ok, sweep.metrics) if ok else []


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int | None) -> Iterator[tuple[Any, int]]:
    """A dask client and its number of worker threads: of the scheduler at ``scheduler``,
    or of a new LocalCluster; its workers have imported what a cell needs."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise SweepSetupError(f"livemig sweep needs dask.distributed (pip install "
                              f"'livemig[sweep]'): {exc}") from exc
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SweepSetupError(f"cannot reach the dask scheduler {scheduler}: "
                                  f"{_one_line(exc)}") from exc
        with client:
            yield client, _ready(client, scheduler)
        return
    n = workers or os.cpu_count() or 1
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        yield client, _ready(client, "the local cluster")


def _ready(client: Any, name: str) -> int:
    """The worker threads of ``client``'s cluster, once each worker has imported livemig."""
    threads = sum(client.nthreads().values())
    if threads == 0:
        raise SweepSetupError(f"the dask cluster at {name} has no workers")
    try:
        versions = client.run(_warm)
    except Exception as exc:
        raise SweepSetupError(f"the dask workers of {name} cannot run livemig: "
                              f"{_one_line(exc)}") from exc
    for worker, version in sorted(versions.items()):
        if version != livemig.__version__:  # results would not be this version's
            raise SweepSetupError(f"the dask worker {worker} of {name} has livemig {version}; "
                                  f"expected {livemig.__version__}, as here")
    return threads


class _CtrlC:
    """A Ctrl-C held for the main loop (:func:`_ctrl_c_held`)."""

    def __init__(self) -> None:
        self.pressed = False

    def take(self) -> None:
        """Raise the held Ctrl-C, if there is one."""
        if self.pressed:
            raise KeyboardInterrupt


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[_CtrlC]:
    """Hold Ctrl-C (SIGINT) until the sweep's loop takes it between two of its dask calls:
    raised inside one, it can make dask.distributed log a traceback of its own (a
    ``NameError`` in its ``sync``, seen in CI), where the user should only read
    ``interrupted``. Outside the main thread signals cannot be caught: nothing is held."""
    held = _CtrlC()
    if threading.current_thread() is not threading.main_thread():
        yield held
        return

    def press(_signum: int, _frame: object) -> None:
        held.pressed = True

    previous = signal.signal(signal.SIGINT, press)
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, previous)


def _run(client: Any, threads: int, todo: Sequence[Cell], out: Path, outcome: SweepOutcome,
         *, keep_runs: bool, bar: SweepProgress | None, cell_function: CellFunction) -> None:
    with _ctrl_c_held() as ctrl_c:
        _run_cells(client, threads, todo, out, outcome, keep_runs=keep_runs, bar=bar,
                   cell_function=cell_function, ctrl_c=ctrl_c)


def _run_cells(client: Any, threads: int, todo: Sequence[Cell], out: Path,
               outcome: SweepOutcome, *, keep_runs: bool, bar: SweepProgress | None,
               cell_function: CellFunction, ctrl_c: _CtrlC) -> None:
    from dask.distributed import as_completed

    start = time.perf_counter()
    live: dict[str, Any] = {}  # future key -> future, until it is recorded
    by_key: dict[str, Cell] = {}
    finished = as_completed()
    try:
        for cell in todo:
            ctrl_c.take()
            future = client.submit(cell_function, cell.kind, cell.scenario, cell.seed,
                                   keep_runs, key=f"livemig-cell-{cell.key}", retries=0)
            by_key[future.key] = cell
            live[future.key] = future
            finished.add(future)
        while live:
            ctrl_c.take()
            batch = finished.next_batch(block=False)
            if not batch:
                if bar is not None:
                    bar.set_running(min(len(live), threads))
                    bar.tick()
                time.sleep(POLL_INTERVAL)
                continue
            for future in batch:
                cell = by_key[future.key]
                result = _result(future)
                del live[future.key]
                future.release()
                ok = _record(out, cell, result)
                if ok:
                    outcome.ok += 1
                else:
                    outcome.failed.append((cell, result["error"]))
                if bar is not None:
                    bar.set_running(min(len(live), threads))
                    bar.finish(ok=ok)
    except BaseException:
        finished.clear()
        client.cancel(list(live.values()))
        raise
    outcome.run_s = time.perf_counter() - start


def _result(future: Any) -> dict[str, Any]:
    """A finished future's result; the worker's death (or any dask error) as a failure."""
    try:
        result = future.result()
    except Exception as exc:  # KilledWorker, a result that cannot be unpickled, ...
        return {"status": table.STATUS_FAILED, "error": f"dask: {_one_line(exc)}",
                "traceback": None, "summary": None, "files": None, "wall_s": None,
                "worker": None}
    return result


def _record(out: Path, cell: Cell, result: dict[str, Any]) -> bool:
    """Write a finished cell (run directory first, then its record); True if it is ok."""
    run_dir = None
    if result.get("files"):
        run_dir = _write_run_dir(out, cell.key, result["files"])
    record = {
        "cell": cell.key, "status": result["status"], "error": result["error"],
        "traceback": result.get("traceback"), "scenario": cell.scenario_file,
        "kind": cell.kind,
        "seed": cell.seed, "axes": dict(cell.axes), "summary": result.get("summary"),
        "wall_s": result.get("wall_s"), "worker": result.get("worker"),
        "finished_at": _now(), "run_dir": run_dir,
    }
    try:
        data = json.dumps(record, indent=1, sort_keys=True, allow_nan=False, default=str)
    except ValueError as exc:  # NaN or infinity in a summary: a bug, not the sweep's end
        record.update(status=table.STATUS_FAILED, summary=None,
                      error=f"the summary is not valid JSON: {_one_line(exc)}")
        data = json.dumps(record, indent=1, sort_keys=True, default=str)
    write_atomic(record_path(out, cell.key), (data + "\n").encode())
    return record["status"] == table.STATUS_OK
