"""Play a scenario's events against a driver and collect the records of the run.

The driver class decides the clock: ``REALTIME = True`` (real hosts) runs the
same processes in ``simpy.rt.RealtimeEnvironment``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import simpy
import simpy.rt

from livemig.core.model import DrainEvent, LiveMigrateEvent, Scenario
from livemig.core.orchestrator import Orchestrator
from livemig.core.state import MigrationRecord, StateStore
from livemig.drivers import driver_class


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


class _CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it processes."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        super().step()


class _CountingRealtimeEnvironment(simpy.rt.RealtimeEnvironment):
    def __init__(self) -> None:
        super().__init__(strict=False)
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
        else:
            count += 1
    return count


def run_scenario(
    scenario: Scenario,
    driver: str = "sim",
    *,
    seed: int | None = None,
    driver_options: dict[str, Any] | None = None,
    on_finish: Callable[[MigrationRecord], None] | None = None,
) -> RunResult:
    """Run every event of ``scenario``; returns when every migration has ended."""
    cls = driver_class(driver)
    env: _CountingEnvironment | _CountingRealtimeEnvironment = (
        _CountingRealtimeEnvironment() if getattr(cls, "REALTIME", False)
        else _CountingEnvironment()
    )
    seed = scenario.seed if seed is None else seed
    wall = time.perf_counter()
    drv = cls(env, scenario, **(driver_options or {}))
    try:
        store = StateStore(lambda: env.now)
        store.add_instances(scenario.vms)
        orchestrator = Orchestrator(
            drv, store, scenario.policy, random.Random(seed), on_finish=on_finish
        )
        player = env.process(_play(env, scenario, orchestrator))
        env.run(until=player)
        final = {vm.name: drv.instance_host(vm.name) for vm in scenario.vms}
    finally:
        drv.close()
    return RunResult(
        scenario=scenario,
        driver=driver,
        seed=seed,
        store=store,
        final_hosts=final,
        sim_time=env.now,
        wall_time=time.perf_counter() - wall,
        sim_events=env.steps,
    )


def _play(
    env: simpy.Environment, scenario: Scenario, orchestrator: Orchestrator
) -> Generator[simpy.Event, Any, None]:
    processes: list[simpy.Process] = []
    for event in sorted(scenario.events, key=lambda e: e.at):  # stable: file order at ties
        if event.at > env.now:
            yield env.timeout(event.at - env.now)
        if isinstance(event, LiveMigrateEvent):
            body = {
                "host": event.dest,
                "block_migration": event.block_migration,
                "disk_over_commit": event.disk_over_commit,
            }
            processes.append(orchestrator.live_migrate(event.instance, body))
        else:
            processes.extend(
                orchestrator.drain(event.host, event.block_migration, event.disk_over_commit)
            )
    yield env.all_of(processes)
