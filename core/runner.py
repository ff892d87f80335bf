"""Play a scenario's events against a driver and collect the records of the run.

The driver class decides the clock: ``REALTIME = True`` (real hosts) runs the
same processes in ``simpy.rt.RealtimeEnvironment``.

Two players share the clock:

* the **controller's** events (live migrations, drains, operator actions) go
  through the API of the orchestrator, one after the other; while the
  controller is down (``controller_restart`` with ``down_for``) they wait for it;
* the **world's** events (faults) happen at their time whatever the controller
  does. A fault with ``trigger: checks_passed`` fires when a migration to its
  host has passed its checks (before ``pre_live_migration``).

Every applied event is recorded as an action (``actions.csv``) with its outcome.
After the last migration has ended, the invariants (:mod:`livemig.core.invariants`)
are checked against the driver's world.

A run has a horizon, the scenario's ``until`` (24 h by default), on the run's own
clock (simulated or real). A run whose migrations all end before it stops then; one
that reaches it halts the controller (:meth:`Orchestrator.halt`: queued migrations
are cancelled, running pre-copy jobs aborted, both recorded as ``HorizonReached``;
post-copy ones finish) and stops as soon as every migration has ended. Generated
events after the horizon are not played (recorded as such).

A run with a ``run_dir`` keeps its records in ``RUN_DIR/state.sqlite`` and its
parameters in ``RUN_DIR/run.json`` while it runs, so that a controller killed
for real can be replaced by :func:`resume_run` (``livemig resume RUN_DIR``).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import simpy
import simpy.rt

from livemig.core.errors import InvalidMigrationState, MigrationNotFoundForInstance
from livemig.core.invariants import InvariantReport, check
from livemig.core.model import (
    DEFAULT_UNTIL,
    AbortEvent,
    ControllerRestartEvent,
    DrainEvent,
    Event,
    FaultEvent,
    FaultKind,
    FaultTrigger,
    ForceCompleteEvent,
    LiveMigrateEvent,
    Scenario,
)
from livemig.core.orchestrator import Orchestrator
from livemig.core.state import MigrationRecord, StateStore
from livemig.drivers import driver_class
from livemig.drivers.base import Driver

STATE_FILE = "state.sqlite"
RUN_FILE = "run.json"
APPLIED_KEY = "applied_events"  # store meta: indexes of the scenario events applied


@dataclass(frozen=True, kw_only=True)
class RunResult:
    scenario: Scenario
    driver: str
    seed: int
    store: StateStore
    final_hosts: dict[str, str | None]  # instance -> where the driver says it runs
    sim_time: float  # seconds of (simulated or real) time the run took
    wall_time: float  # seconds of wall-clock time
    sim_events: int  # SimPy events processed
    invariants: InvariantReport
    restarts: int = 0  # controller restarts (scenario events, or a resume)
    horizon: float = DEFAULT_UNTIL  # the scenario's until, seconds
    horizon_reached: bool = False  # the run was halted there


class _CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it processes."""

    def __init__(self, initial_time: float = 0.0) -> None:
        super().__init__(initial_time)
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        super().step()


class _CountingRealtimeEnvironment(simpy.rt.RealtimeEnvironment):
    def __init__(self, initial_time: float = 0.0) -> None:
        super().__init__(initial_time, strict=False)
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        super().step()


def expected_migrations(scenario: Scenario) -> int:
    """How many migrations the events will request (a drain: the host's VMs at start)."""
    count = 0
    for event in scenario.events:
        if isinstance(event, DrainEvent):
            count += sum(1 for vm in scenario.vms if vm.host == event.host)
        elif isinstance(event, LiveMigrateEvent):
            count += 1
    return count


def _environment(cls: Any, initial_time: float = 0.0) -> Any:
    if getattr(cls, "REALTIME", False):
        return _CountingRealtimeEnvironment(initial_time)
    return _CountingEnvironment(initial_time)


def run_scenario(
    scenario: Scenario,
    driver: str = "sim",
    *,
    seed: int | None = None,
    driver_options: dict[str, Any] | None = None,
    on_finish: Callable[[MigrationRecord], None] | None = None,
    run_dir: Path | None = None,
) -> RunResult:
    """Run every event of ``scenario``; returns when every migration has ended.

    With ``run_dir`` (an existing, empty directory) the records live in
    ``run_dir/state.sqlite`` and ``run_dir/run.json`` says how to resume.
    """
    cls = driver_class(driver)
    env = _environment(cls)
    seed = scenario.seed if seed is None else seed
    wall = time.perf_counter()
    state_path = None
    if run_dir is not None:
        state_path = run_dir / STATE_FILE
        _write_run_file(run_dir, scenario, driver, seed, driver_options)
    drv = cls(env, scenario, **(driver_options or {}))
    try:
        store = StateStore(lambda: env.now, state_path or ":memory:")
        store.add_instances(scenario.vms)
        run = _Run(env, scenario, drv, store, seed, on_finish, state_path)
        env.run(until=env.process(run.play(set())))
        return _result(run, driver, seed, wall)
    finally:
        drv.close()


def resume_run(
    run_dir: Path,
    *,
    driver_options: dict[str, Any] | None = None,
    on_finish: Callable[[MigrationRecord], None] | None = None,
) -> RunResult:
    """A new controller for the run in ``run_dir`` whose controller died.

    Every unfinished migration is resolved by asking the driver (see
    :meth:`Orchestrator.recover`); the scenario's events not yet applied are
    played at their times (counted from the original start; late ones at once).
    Raises ``ValueError`` when ``run_dir`` holds no resumable run.
    """
    from livemig.core.scenario import parse_scenario

    info = read_run_file(run_dir)
    scenario = parse_scenario(info["scenario_text"], source=info["scenario_source"])
    cls = driver_class(info["driver"])
    if not getattr(cls, "REALTIME", False):
        raise ValueError(
            f"{run_dir}: a {info['driver']!r} run cannot be resumed: its simulated world "
            "ended with the process that ran it"
        )
    started = float(info["started_at_wall"])
    env = _environment(cls, initial_time=max(0.0, time.time() - started))
    if isinstance(env, simpy.rt.RealtimeEnvironment):
        env.sync()
    seed = int(info["seed"])
    options = {**info.get("driver_options", {}), **(driver_options or {}), "boot": False}
    wall = time.perf_counter()
    drv = cls(env, scenario, **options)
    try:
        store = StateStore.open(run_dir / STATE_FILE, lambda: env.now)
        applied = set(store.meta(APPLIED_KEY, []))
        store.record_action("controller_restart", "", "a new controller resumed the run")
        run = _Run(env, scenario, drv, store, seed, on_finish, run_dir / STATE_FILE,
                   recovering=True)
        env.run(until=env.process(run.play(applied)))
        return _result(run, info["driver"], seed, wall)
    finally:
        drv.close()


def _write_run_file(
    run_dir: Path, scenario: Scenario, driver: str, seed: int,
    driver_options: dict[str, Any] | None,
) -> None:
    source = Path(scenario.source)
    text = source.read_text() if source.is_file() else None
    if text is None:
        raise ValueError(f"{scenario.source}: a run with a run directory needs the scenario "
                         "file (to resume from)")
    info = {
        "scenario_source": scenario.source,
        "scenario_text": text,
        "driver": driver,
        "driver_options": driver_options or {},
        "seed": seed,
        "started_at_wall": time.time(),
    }
    tmp = run_dir / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    tmp.replace(run_dir / RUN_FILE)


def read_run_file(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of a run directory; ``ValueError`` naming the file and what is wrong."""
    path = run_dir / RUN_FILE
    try:
        present = (run_dir / STATE_FILE).is_file() and path.is_file()
    except OSError as exc:  # e.g. a name too long for the system
        raise ValueError(f"{run_dir}: {exc.strerror or exc}") from None
    if not present:
        raise ValueError(f"{run_dir}: not a resumable run directory (expected {RUN_FILE} and "
                         f"{STATE_FILE}, written by `livemig run` for a real-time driver)")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(info).__name__}")
    kinds: dict[str, type | tuple[type, ...]] = {
        "scenario_source": str, "scenario_text": str, "driver": str, "seed": int,
        "started_at_wall": (int, float), "driver_options": dict,
    }
    for key, kind in kinds.items():
        if key not in info:
            if key == "driver_options":
                continue
            raise ValueError(f"{path}: missing {key}")
        if not isinstance(info[key], kind) or isinstance(info[key], bool):
            raise ValueError(f"{path}: {key} has the wrong type ({type(info[key]).__name__})")
    return dict(info)


def _result(run: _Run, driver: str, seed: int, wall: float) -> RunResult:
    drv, store = run.driver, run.store
    final: dict[str, str | None] = {}
    for vm in run.scenario.vms:
        try:
            final[vm.name] = drv.instance_host(vm.name)
        except Exception:  # noqa: BLE001 - an unreachable host: unknown
            final[vm.name] = None
    report = check(store.instances(), store.migrations(), drv.world())
    return RunResult(
        scenario=run.scenario,
        driver=driver,
        seed=seed,
        store=store,
        final_hosts=final,
        sim_time=run.env.now,
        wall_time=time.perf_counter() - wall,
        sim_events=run.env.steps,
        invariants=report,
        restarts=run.restarts,
        horizon=run.scenario.until,
        horizon_reached=run.horizon_reached,
    )


Process = Generator[simpy.Event, Any, None]


def _kind_and_target(event: Event) -> tuple[str, str]:
    """How ``actions.csv`` names an event: its kind and the host or instance it targets."""
    if isinstance(event, FaultEvent):
        return event.kind.value, event.host
    if isinstance(event, DrainEvent):
        return "drain", event.host
    if isinstance(event, ControllerRestartEvent):
        return "controller_restart", ""
    kind = {LiveMigrateEvent: "live_migrate", AbortEvent: "abort"}.get(type(event),
                                                                       "force_complete")
    return kind, getattr(event, "instance", "")


class _Run:
    """One run's players, its current controller and what is still pending."""

    def __init__(
        self,
        env: Any,
        scenario: Scenario,
        driver: Driver,
        store: StateStore,
        seed: int,
        on_finish: Callable[[MigrationRecord], None] | None,
        state_path: Path | None,
        recovering: bool = False,
    ) -> None:
        self.env = env
        self.scenario = scenario
        self.driver = driver
        self.store = store
        self.seed = seed
        self.on_finish = on_finish
        self.state_path = state_path
        self.rng = random.Random(seed)
        self.processes: list[simpy.Process] = []
        self.triggers: list[tuple[int, FaultEvent]] = []  # armed checks_passed faults
        self.while_away: list[tuple[FaultKind, str]] = []  # host faults with no controller
        self.restarts = 1 if recovering else 0
        self.horizon_reached = False
        self.up = env.event()
        self.orchestrator = self._controller()
        if recovering:
            self.processes.extend(self.orchestrator.recover())

    def _controller(self) -> Orchestrator:
        orchestrator = Orchestrator(
            self.driver, self.store, self.scenario.policy, self.rng, on_finish=self.on_finish,
            disabled_hosts=self.store.meta("disabled_hosts", []),
            failed_hosts=self.store.meta("failed_hosts", []),
            drains=self.store.meta("drains", {}),
        )
        orchestrator.checks_passed_hooks.append(self._checks_passed)
        orchestrator.spawn_hooks.append(self.processes.append)
        self.up.succeed()
        return orchestrator

    # -- the players ----------------------------------------------------------
    def play(self, applied: set[int]) -> Process:
        env = self.env
        pending = sorted(  # stable: file order at equal times
            ((i, e) for i, e in enumerate(self.scenario.events) if i not in applied),
            key=lambda item: item[1].at,
        )
        until = self.scenario.until
        late = [(i, e) for i, e in pending if e.at > until]  # from a file: generated faults
        pending = [(i, e) for i, e in pending if e.at <= until]
        world = [(i, e) for i, e in pending if isinstance(e, FaultEvent)]
        control = [(i, e) for i, e in pending if not isinstance(e, FaultEvent)]
        players = [env.process(self._play_world(world)),
                   env.process(self._play_control(control))]
        horizon = env.process(self._horizon(until))
        yield env.all_of(players)
        while alive := [p for p in self.processes if p.is_alive]:
            yield env.all_of(alive)
        if horizon.is_alive:
            horizon.interrupt()  # everything ended before the horizon
        for index, event in late:
            kind, target = _kind_and_target(event)
            self.store.record_action(kind, target,
                                     f"not applied: after the horizon (until: {until:g} s)")
            self._applied(index)
        for _, event in self.triggers:
            self._record(event, f"never fired: no migration to {event.host} passed its checks")

    def _horizon(self, until: float) -> Process:
        """At ``until``: halt the controller (see the module doc)."""
        try:
            yield from self._wait(until)
        except simpy.Interrupt:
            return
        self.horizon_reached = True
        if self.orchestrator.alive:
            self.orchestrator.halt(until)
        # a controller still down comes back halted (see _restart)

    def _wait(self, at: float) -> Process:
        if at > self.env.now:
            yield self.env.timeout(at - self.env.now)

    def _play_world(self, events: list[tuple[int, Event]]) -> Process:
        for index, event in events:
            assert isinstance(event, FaultEvent)
            yield from self._wait(event.at)
            if event.trigger is FaultTrigger.CHECKS_PASSED:
                self.triggers.append((index, event))
                self._applied(index)
            else:
                self._fault(index, event)

    def _play_control(self, events: list[tuple[int, Event]]) -> Process:
        for index, event in events:
            yield from self._wait(event.at)
            if not self.orchestrator.alive:
                yield self.up  # the API waits for the controller to come back
            self._control(index, event)

    def _control(self, index: int, event: Event) -> None:
        orchestrator = self.orchestrator
        if isinstance(event, LiveMigrateEvent):
            body = {"host": event.dest, "block_migration": event.block_migration,
                    "disk_over_commit": event.disk_over_commit}
            self.processes.append(orchestrator.live_migrate(event.instance, body))
        elif isinstance(event, DrainEvent):
            self.processes.extend(
                orchestrator.drain(event.host, event.block_migration, event.disk_over_commit)
            )
            self.store.set_meta("disabled_hosts", sorted(orchestrator.disabled_hosts))
            self.store.set_meta("drains", orchestrator.drains)
        elif isinstance(event, AbortEvent | ForceCompleteEvent):
            kind = "abort" if isinstance(event, AbortEvent) else "force_complete"
            act = orchestrator.abort if isinstance(event, AbortEvent) else (
                orchestrator.force_complete)
            try:
                act(event.instance)
                outcome = "ok"
            except (InvalidMigrationState, MigrationNotFoundForInstance) as exc:
                outcome = f"refused: {exc.name}: {exc}"
            self.store.record_action(kind, event.instance, outcome)
        elif isinstance(event, ControllerRestartEvent):
            orchestrator.stop()
            self.up = self.env.event()
            self.store.record_action("controller_restart", "",
                                     f"controller died; back after {event.down_for:g} s")
            self.processes.append(self.env.process(self._restart(event.down_for)))
        self._applied(index)

    def _restart(self, down_for: float) -> Process:
        if down_for > 0:
            yield self.env.timeout(down_for)
        if self.state_path is not None:  # the new process reads the records from disk
            self.store.close()
            self.store = StateStore.open(self.state_path, lambda: self.env.now)
        self.orchestrator = self._controller()
        self.restarts += 1
        for kind, host in self.while_away:
            self._host_event(kind, host)
        self.while_away.clear()
        self.processes.extend(self.orchestrator.recover())
        if self.horizon_reached:
            self.orchestrator.halt(self.scenario.until)

    # -- faults ---------------------------------------------------------------
    def _checks_passed(self, instance: str, source: str, dest: str) -> None:
        fired = [(i, e) for i, e in self.triggers if e.host == dest]
        for armed in fired:
            self.triggers.remove(armed)
            _, event = armed
            outcome = self._inject(event)
            self._record(event, f"{outcome} (fired after the checks of {instance}'s "
                         f"migration {source} -> {dest})")

    def _fault(self, index: int, event: FaultEvent) -> None:
        self._record(event, self._inject(event))
        self._applied(index)

    def _inject(self, event: FaultEvent) -> str:
        try:
            self.driver.inject_fault(event.kind, event.host)
        except Exception as exc:  # noqa: BLE001 - a fault that could not be made is a result
            return f"failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
        if event.kind in (FaultKind.HOST_DOWN, FaultKind.HOST_UP):
            failed = set(self.store.meta("failed_hosts", []))
            if event.kind is FaultKind.HOST_DOWN:
                failed.add(event.host)
            else:
                failed.discard(event.host)
            self.store.set_meta("failed_hosts", sorted(failed))
            if not self.orchestrator.alive:
                self.while_away.append((event.kind, event.host))
                return "ok"
            lost = self._host_event(event.kind, event.host)
            if lost:
                return f"ok; instances lost: {', '.join(lost)}"
        return "ok"

    def _host_event(self, kind: FaultKind, host: str) -> list[str]:
        """Tell the controller (the testbed's oracle for a host's death or return)."""
        if kind is FaultKind.HOST_DOWN:
            return self.orchestrator.host_failed(host)
        return self.orchestrator.host_recovered(host)

    def _record(self, event: FaultEvent, outcome: str) -> None:
        self.store.record_action(event.kind.value, event.host, outcome)

    def _applied(self, index: int) -> None:
        """Remember (in a run directory's records) that event ``index`` was applied."""
        if self.state_path is None:
            return
        applied = self.store.meta(APPLIED_KEY, [])
        applied.append(index)
        self.store.set_meta(APPLIED_KEY, applied)
