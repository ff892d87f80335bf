"""Instance and migration records in SQLite, compare-and-swap updates, notifications.

Like Nova's database layer: every instance update may name the task_state it
expects, and fails with ``UnexpectedTaskStateError`` when another request got
there first. Every update emits a notification (``compute.instance.update``);
it counts as a *state change* when vm_state or task_state changed
(``notify_on_state_change = vm_and_task_state``). Migration updates may name
the status (or statuses) they expect, and fail with :class:`MigrationStateConflict`.

The records live in SQLite (stdlib ``sqlite3``): ``":memory:"`` for simulations,
a file (the run directory's ``state.sqlite``) for real runs, reopened with
:meth:`StateStore.open` by ``livemig resume``. The compare-and-swap is done by
SQLite itself (``UPDATE ... WHERE task_state IS ?`` and a row count), so two
processes on one file cannot both win. On a file every write is one
transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``, the update and its notification
together) in WAL mode with ``synchronous = FULL``: a process killed at any
moment leaves every returned write readable and no half-done one. In memory the
store is one transaction that is never committed: no journal, no sync, each
statement applied whole (a simulation's store dies with its process anyway).

Columns are mapped generically from the record dataclasses' fields: enums by
value, tuples as JSON, ``None`` as NULL; reading a row gives back an equal
record. Records read are cached per store and the cache is dropped whenever
another connection committed (``PRAGMA data_version``), so a cache hit never
hides another process's write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import operator
import sqlite3
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from livemig.core.errors import InstanceNotFound, UnexpectedTaskStateError
from livemig.core.model import MigrationStatus, TaskState, VmSpec, VmState

_UNSET: Any = object()

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of a store file; :meth:`StateStore.open` refuses any other."""


@dataclass(frozen=True, kw_only=True)
class InstanceRecord:
    name: str
    host: str
    vm_state: VmState = VmState.ACTIVE
    task_state: TaskState | None = None
    ram: int  # bytes (the flavor)
    vcpus: int
    disk: int  # bytes, virtual size
    disk_allocated: int  # bytes really allocated
    volume_backed: bool = False


@dataclass(frozen=True, kw_only=True)
class MigrationRecord:
    id: int
    instance: str
    source: str | None
    dest: str | None  # the requested host, then the chosen one
    block_migration: bool
    disk_over_commit: bool
    requested_at: float
    status: MigrationStatus = MigrationStatus.ACCEPTED
    started_at: float | None = None  # the transfer began (migrateToURI called)
    finished_at: float | None = None  # post or rollback done
    error: str | None = None  # exception name
    error_message: str | None = None
    attempted_hosts: tuple[str, ...] = ()  # hosts the scheduler loop tried and rejected
    total_time: float | None = None  # seconds, the job's own time_elapsed
    downtime: float | None = None  # seconds
    iterations: int | None = None
    data_transferred: int | None = None  # bytes
    flags: int = 0  # the VIR_MIGRATE_* bitmask the job started with
    max_downtime: float | None = None  # seconds: the last limit set (downtime steps)
    progress: float | None = None  # percent, Nova's formula, at the last poll
    postcopy_at: float | None = None  # when the job switched to post-copy
    paused_guest: bool = False  # force-complete paused the guest (resumed at the end)
    auto_converge_throttle: int | None = None  # percent, the last one seen
    timeout_action: str | None = None  # the completion timeout's action, when it fired


@dataclass(frozen=True, kw_only=True)
class ActionRecord:
    """A scenario event applied to the run (operator action, fault, controller restart)."""

    time: float
    kind: str  # the event's key: abort, force_complete, host_down, controller_restart, ...
    target: str  # the instance or host it named ("" for a controller restart)
    outcome: str  # "ok", or why it was refused / what it did


@dataclass(frozen=True, kw_only=True)
class Notification:
    time: float
    instance: str
    event: str
    old_vm_state: VmState | None
    new_vm_state: VmState | None
    old_task_state: TaskState | None
    new_task_state: TaskState | None
    state_change: bool


class MigrationStateConflict(Exception):  # noqa: N818 - named like Nova's conflicts
    """A migration update named the status(es) it expected and found another."""

    def __init__(
        self, migration_id: int, expected: tuple[MigrationStatus, ...], actual: MigrationStatus
    ) -> None:
        names = ", ".join(s.value for s in expected)
        super().__init__(
            f"migration {migration_id}: expected status {names} but it is {actual.value}"
        )
        self.migration_id = migration_id
        self.expected = expected
        self.actual = actual


# -- dataclass <-> row ------------------------------------------------------
def _identity(value: Any) -> Any:
    return value


def _enum_value(value: Enum | None) -> Any:
    return None if value is None else value.value


def _codec(hint: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """(encode, decode) for one field's type: enums by value, tuples as JSON, bools 0/1.

    >>> encode, decode = _codec(TaskState | None)
    >>> encode(TaskState.MIGRATING) == "migrating", decode("migrating") is TaskState.MIGRATING
    (True, True)
    >>> encode, decode = _codec(tuple[str, ...])
    >>> encode(("a", "b")), decode('["a", "b"]')
    ('["a", "b"]', ('a', 'b'))
    """
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            hint = inner[0]
    origin = typing.get_origin(hint) or hint
    if isinstance(origin, type) and issubclass(origin, Enum):
        members = {m.value: m for m in origin}
        members[None] = None
        # a str-valued enum member is a str: sqlite3 binds its value as it is
        encode = _identity if issubclass(origin, str) else _enum_value
        return encode, members.__getitem__
    if origin is tuple:
        return (
            lambda v: None if v is None else json.dumps(list(v)),
            lambda v: None if v is None else tuple(json.loads(v)),
        )
    if origin is bool:  # a bool is an int: sqlite3 binds it as 0 or 1
        return _identity, lambda v: None if v is None else bool(v)
    return _identity, _identity


class _Table:
    """One record dataclass as one table: a column per field, in field order."""

    def __init__(self, name: str, cls: type, key: str | None) -> None:
        self.name = name
        self.cls = cls
        hints = typing.get_type_hints(cls)
        self.fields = tuple(f.name for f in dataclasses.fields(cls))
        codecs = {f: _codec(hints[f]) for f in self.fields}
        self.encoders = {f: codecs[f][0] for f in self.fields}
        self._get = operator.attrgetter(*self.fields)
        # only the fields whose values need converting are touched
        self._encode = tuple(
            (i, codecs[f][0]) for i, f in enumerate(self.fields) if codecs[f][0] is not _identity
        )
        self._decode = tuple(
            (i, codecs[f][1]) for i, f in enumerate(self.fields) if codecs[f][1] is not _identity
        )
        self.key = key
        self.columns = ", ".join(self.fields)
        self.insert_sql = (
            f"INSERT INTO {name} ({self.columns}) VALUES ({', '.join('?' * len(self.fields))})"
        )

    def schema(self, extra: str = "") -> str:
        # no declared types: SQLite keeps each value as given (int stays int, float float)
        columns = [f"{f} PRIMARY KEY" if f == self.key else f for f in self.fields]
        if self.key is None:
            columns.insert(0, "seq INTEGER PRIMARY KEY")
        if extra:
            columns.append(extra)
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({', '.join(columns)})"

    def row(self, record: Any) -> list[Any]:
        values = list(self._get(record))
        for i, encode in self._encode:
            values[i] = encode(values[i])
        return values

    def record(self, row: Iterable[Any]) -> Any:
        values = list(row)
        for i, decode in self._decode:
            values[i] = decode(values[i])
        return self.cls(**dict(zip(self.fields, values, strict=True)))


_INSTANCES = _Table("instances", InstanceRecord, "name")
_MIGRATIONS = _Table("migrations", MigrationRecord, "id")
_NOTIFICATIONS = _Table("notifications", Notification, None)
_ACTIONS = _Table("actions", ActionRecord, None)

_SCHEMA = (
    # host_seq orders a host's instances by arrival (a drain migrates them in that order)
    _INSTANCES.schema("host_seq INTEGER NOT NULL"),
    "CREATE INDEX IF NOT EXISTS instances_host ON instances (host, host_seq)",
    _MIGRATIONS.schema().replace("id PRIMARY KEY", "id INTEGER PRIMARY KEY"),
    _NOTIFICATIONS.schema(),
    _ACTIONS.schema(),
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


_R = typing.TypeVar("_R")
_FIELDS: dict[type, frozenset[str]] = {}
_NO_TRANSACTION: contextlib.nullcontext[None] = contextlib.nullcontext()


def _replace(record: _R, changes: dict[str, Any]) -> _R:
    """``dataclasses.replace`` without re-running ``__init__`` (records have no checks).

    >>> r = ActionRecord(time=1.0, kind="abort", target="vm1", outcome="ok")
    >>> _replace(r, {"outcome": "refused"}) == dataclasses.replace(r, outcome="refused")
    True
    >>> _replace(r, {"colour": "blue"})
    Traceback (most recent call last):
    TypeError: ActionRecord has no field colour
    """
    names = _FIELDS.get(type(record))
    if names is None:
        names = _FIELDS[type(record)] = frozenset(f.name for f in dataclasses.fields(record))
    unknown = changes.keys() - names
    if unknown:
        raise TypeError(f"{type(record).__name__} has no field {', '.join(sorted(unknown))}")
    new = object.__new__(type(record))
    fields = new.__dict__  # a frozen dataclass's fields live in its __dict__
    fields.update(record.__dict__)
    fields.update(changes)
    return new


def _statuses(expected: MigrationStatus | Iterable[MigrationStatus]) -> tuple[MigrationStatus, ...]:
    if isinstance(expected, MigrationStatus):
        return (expected,)
    return tuple(expected)


class StateStore:
    """Records in SQLite; ``clock`` gives the time stamped on notifications and actions.

    ``path`` is ``":memory:"`` (the default, for simulations) or a file, created
    if missing (reopen an existing one with :meth:`open`).
    """

    def __init__(self, clock: Callable[[], float], path: str | Path = ":memory:") -> None:
        self._clock = clock
        self.path = str(path)
        self._file = self.path != ":memory:"
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._instance_cache: dict[str, InstanceRecord] = {}
        self._migration_cache: dict[int, MigrationRecord] = {}
        self._update_sql: dict[tuple[tuple[str, ...], object], str] = {}
        self._version = -1
        self._host_seq = 0
        try:
            if self._file:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = FULL")
                self._db.execute("BEGIN IMMEDIATE")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ValueError(
                    f"{self.path}: state store schema version {version}, "
                    f"expected {SCHEMA_VERSION}"
                )
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if self._file:
                self._db.execute("COMMIT")
            else:
                # in memory: one transaction from start to end, never committed; each
                # statement still applies whole or not at all, and none waits on a journal
                self._db.execute("BEGIN")
        except BaseException:
            self._db.close()
            raise
        self._version = self._data_version()
        self._host_seq = self._max_host_seq()  # the last arrival's number

    @classmethod
    def open(cls, path: str | Path, clock: Callable[[], float]) -> StateStore:
        """Reopen an existing store file with every record as it was."""
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no state store file")
        try:
            db = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{file}: not a state store ({exc})") from None
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"{file}: state store schema version {version}, expected {SCHEMA_VERSION}"
            )
        return cls(clock, file)

    def close(self) -> None:
        """Close the database (a file store's WAL is checkpointed into the file)."""
        self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions and the cache -----------------------------------------
    def _data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _max_host_seq(self) -> int:
        return int(self._db.execute("SELECT coalesce(max(host_seq), 0) FROM instances")
                   .fetchone()[0])

    def _fresh(self) -> None:
        """Drop the cache if another connection committed since we last looked."""
        if self._file:
            version = self._data_version()
            if version != self._version:
                self._version = version
                self._instance_cache.clear()
                self._migration_cache.clear()
                self._host_seq = self._max_host_seq()

    def _transaction(self) -> _Transaction | contextlib.nullcontext[None]:
        """A write transaction on a file; in memory none (each statement applies alone)."""
        return _Transaction(self) if self._file else _NO_TRANSACTION

    # -- instances --------------------------------------------------------
    def add_instances(self, vms: Iterable[VmSpec]) -> None:
        records = [
            InstanceRecord(
                name=vm.name,
                host=vm.host,
                ram=vm.ram,
                vcpus=vm.vcpus,
                disk=vm.disk,
                disk_allocated=vm.disk if vm.disk_allocated is None else vm.disk_allocated,
                volume_backed=vm.volume_backed,
            )
            for vm in vms
        ]
        with self._transaction():
            start = self._host_seq
            sql = _INSTANCES.insert_sql.replace(") VALUES (", ", host_seq) VALUES (?, ", 1)
            try:
                self._db.executemany(
                    sql,
                    (
                        [*_INSTANCES.row(r), start + i]
                        for i, r in enumerate(records, start=1)
                    ),
                )
            except sqlite3.IntegrityError:
                raise ValueError("duplicate instance name in add_instances") from None
        self._host_seq = start + len(records)
        for r in records:
            self._instance_cache[r.name] = r

    def instance(self, name: str) -> InstanceRecord:
        self._fresh()
        record = self._instance_cache.get(name)
        if record is None:
            record = self._read_instance(name)
        return record

    def _read_instance(self, name: str) -> InstanceRecord:
        row = self._db.execute(
            f"SELECT {_INSTANCES.columns} FROM instances WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            raise InstanceNotFound(instance=name)
        record: InstanceRecord = _INSTANCES.record(row)
        self._instance_cache[name] = record
        return record

    def _stored_task_state(self, name: str) -> TaskState | None:
        row = self._db.execute(
            "SELECT task_state FROM instances WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            raise InstanceNotFound(instance=name)
        return None if row[0] is None else TaskState(row[0])

    def _instances_where(self, where: str, args: tuple[Any, ...]) -> list[InstanceRecord]:
        self._fresh()
        cache = self._instance_cache
        out = []
        for row in self._db.execute(
            f"SELECT {_INSTANCES.columns} FROM instances {where}", args
        ):
            record = cache.get(row[0])
            if record is None:
                record = cache[row[0]] = _INSTANCES.record(row)
            out.append(record)
        return out

    def instances(self) -> list[InstanceRecord]:
        """Every instance, in the order they were added."""
        return self._instances_where("ORDER BY rowid", ())

    def instances_on(self, host: str) -> list[InstanceRecord]:
        """The instances whose record names ``host``, in the order they arrived there."""
        return self._instances_where("WHERE host = ? ORDER BY host_seq", (host,))

    def _update_statement(self, keys: tuple[str, ...], cas: bool) -> str:
        sql = self._update_sql.get((keys, cas))
        if sql is None:
            sets = [f"{k} = ?" for k in keys]
            if "host" in keys:
                sets.append("host_seq = ?")
            sql = f"UPDATE instances SET {', '.join(sets)} WHERE name = ?"
            if cas:
                sql += " AND task_state IS ?"
            self._update_sql[(keys, cas)] = sql
        return sql

    def update_instance(
        self,
        name: str,
        *,
        expected_task_state: TaskState | None = _UNSET,
        **changes: Any,
    ) -> InstanceRecord:
        """Apply ``changes``; with ``expected_task_state``, only if it matches.

        >>> store = StateStore(lambda: 0.0)
        >>> store.add_instances([VmSpec(name="vm1", host="a", ram=1, used_memory=1,
        ...                             working_set=0, dirty_rate=0)])
        >>> _ = store.update_instance("vm1", task_state=TaskState.MIGRATING,
        ...                           expected_task_state=None)
        >>> store.update_instance("vm1", task_state=TaskState.MIGRATING,
        ...                       expected_task_state=None)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        UnexpectedTaskStateError: Unexpected task state: expecting None but ...
        """
        with self._transaction():
            old = self.instance(name)
            new = _replace(old, changes)
            keys = tuple(changes)
            cas = expected_task_state is not _UNSET
            enc = _INSTANCES.encoders
            args = [enc[k](changes[k]) for k in keys]
            moved = "host" in changes
            if moved:
                args.append(self._host_seq + 1)
            args.append(name)
            if cas:
                args.append(enc["task_state"](expected_task_state))
            if keys:
                count = self._db.execute(self._update_statement(keys, cas), args).rowcount
            elif cas:
                count = self._db.execute(
                    "SELECT count(*) FROM instances WHERE name = ? AND task_state IS ?", args
                ).fetchone()[0]
            else:
                count = 1
            if count != 1:
                actual = self._stored_task_state(name)
                raise UnexpectedTaskStateError(expected=expected_task_state, actual=actual)
            self._notify(old, new, "compute.instance.update")
            self._instance_cache[name] = new
            if moved:
                self._host_seq += 1
        return new

    def notify(self, instance: str, event: str) -> None:
        """A lifecycle notification (e.g. ``compute.instance.live_migration._post.end``)."""
        with self._transaction():
            record = self.instance(instance)
            self._notify(record, record, event)

    def _notify(self, old: InstanceRecord, new: InstanceRecord, event: str) -> None:
        changed = old.vm_state != new.vm_state or old.task_state != new.task_state
        self._db.execute(
            _NOTIFICATIONS.insert_sql,
            (
                self._clock(),
                new.name,
                event,
                old.vm_state,  # str enums: bound as their value
                new.vm_state,
                old.task_state,
                new.task_state,
                changed,
            ),
        )

    @property
    def notifications(self) -> list[Notification]:
        """Every notification, in the order emitted (a new list on each access)."""
        rows = self._db.execute(f"SELECT {_NOTIFICATIONS.columns} FROM notifications ORDER BY seq")
        return [_NOTIFICATIONS.record(row) for row in rows]

    # -- migrations -------------------------------------------------------
    def add_migration(self, **fields: Any) -> MigrationRecord:
        with self._transaction():
            number = self._db.execute("SELECT coalesce(max(id), 0) + 1 FROM migrations")
            record = MigrationRecord(id=number.fetchone()[0], **fields)
            self._db.execute(_MIGRATIONS.insert_sql, _MIGRATIONS.row(record))
        self._migration_cache[record.id] = record
        return record

    def migration(self, migration_id: int) -> MigrationRecord:
        self._fresh()
        record = self._migration_cache.get(migration_id)
        if record is None:
            record = self._read_migration(migration_id)
        return record

    def _read_migration(self, migration_id: int) -> MigrationRecord:
        row = self._db.execute(
            f"SELECT {_MIGRATIONS.columns} FROM migrations WHERE id = ?", (migration_id,)
        ).fetchone()
        if row is None:
            raise KeyError(f"no migration record {migration_id}")
        record: MigrationRecord = _MIGRATIONS.record(row)
        self._migration_cache[migration_id] = record
        return record

    def migrations(self) -> list[MigrationRecord]:
        """Every migration record, by id."""
        self._fresh()
        cache = self._migration_cache
        out = []
        for row in self._db.execute(f"SELECT {_MIGRATIONS.columns} FROM migrations ORDER BY id"):
            record = cache.get(row[0])
            if record is None:
                record = cache[row[0]] = _MIGRATIONS.record(row)
            out.append(record)
        return out

    def update_migration(
        self,
        migration_id: int,
        *,
        expected_status: MigrationStatus | Iterable[MigrationStatus] | None = None,
        **changes: Any,
    ) -> MigrationRecord:
        """Apply ``changes``; with ``expected_status`` (one or several), only from those.

        >>> store = StateStore(lambda: 0.0)
        >>> m = store.add_migration(instance="vm1", source="a", dest="b",
        ...     block_migration=False, disk_over_commit=False, requested_at=0.0)
        >>> store.update_migration(m.id, status=MigrationStatus.RUNNING,
        ...     expected_status=(MigrationStatus.ACCEPTED, MigrationStatus.QUEUED)).status.value
        'running'
        >>> store.update_migration(m.id, status=MigrationStatus.CANCELLED,
        ...     expected_status=MigrationStatus.QUEUED)
        ...     # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        MigrationStateConflict: migration 1: expected status queued but it is running
        """
        with self._transaction():
            old = self.migration(migration_id)
            if "id" in changes:
                raise ValueError("a migration record's id cannot change")
            new = _replace(old, changes)
            keys = tuple(changes)
            enc = _MIGRATIONS.encoders
            args = [enc[k](changes[k]) for k in keys]
            args.append(migration_id)
            where = "id = ?"
            expected: tuple[MigrationStatus, ...] = ()
            if expected_status is not None:
                expected = _statuses(expected_status)
                where += f" AND status IN ({', '.join('?' * len(expected))})"
                args.extend(s.value for s in expected)
            if keys:
                sql = self._update_sql.get((keys, where))
                if sql is None:
                    sets = ", ".join(f"{k} = ?" for k in keys)
                    sql = f"UPDATE migrations SET {sets} WHERE {where}"
                    self._update_sql[(keys, where)] = sql
                count = self._db.execute(sql, args).rowcount
            else:
                sql = f"SELECT count(*) FROM migrations WHERE {where}"
                count = self._db.execute(sql, args).fetchone()[0]
            if count != 1:
                row = self._db.execute(
                    "SELECT status FROM migrations WHERE id = ?", (migration_id,)
                ).fetchone()
                actual = MigrationStatus(row[0])
                raise MigrationStateConflict(migration_id, expected, actual)
            self._migration_cache[migration_id] = new
        return new

    # -- actions and run metadata -----------------------------------------
    def record_action(self, kind: str, target: str, outcome: str) -> ActionRecord:
        """Record a scenario event applied to the run, stamped with the clock."""
        record = ActionRecord(time=self._clock(), kind=kind, target=target, outcome=outcome)
        with self._transaction():
            self._db.execute(_ACTIONS.insert_sql, _ACTIONS.row(record))
        return record

    def actions(self) -> list[ActionRecord]:
        """Every action recorded, in order."""
        rows = self._db.execute(f"SELECT {_ACTIONS.columns} FROM actions ORDER BY seq")
        return [_ACTIONS.record(row) for row in rows]

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key`` (replacing any previous one)."""
        text = json.dumps(value, sort_keys=True, allow_nan=False)
        with self._transaction():
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, text),
            )

    def meta(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key``, or ``default``."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])


class _Transaction:
    """One write transaction: ``BEGIN IMMEDIATE`` .. ``COMMIT`` (nested: the outer one).

    On a file the write lock is taken first, then the cache checked against
    other connections' commits, so what is read inside is current.
    """

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.outer = False

    def __enter__(self) -> None:
        db = self.store._db
        if db.in_transaction:
            return
        self.outer = True
        db.execute("BEGIN IMMEDIATE")
        self.store._fresh()

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self.outer:
            return
        db = self.store._db
        if exc_type is None:
            try:
                db.execute("COMMIT")
            except BaseException:
                # the cache may hold what was not committed: forget it
                self.store._instance_cache.clear()
                self.store._migration_cache.clear()
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        elif db.in_transaction:
            # the cache is written only as a transaction's last step: it holds nothing undone
            db.execute("ROLLBACK")
