"""The simulated migration job: disk copy, pre-copy rounds, auto-converge, post-copy.

One SimPy process per job, driven by the guest's memory model
(:mod:`livemig.drivers.precopy`) over fluid flows
(:mod:`livemig.drivers.network`). The model's start-up (``startup_cost`` plus
``startup_cost_per_gib`` per GiB of the guest's RAM) passes first (nothing
on the wire; an abort or a post-copy request is taken as during the disk copy). With
the **qemu** model (``precopy.plan_qemu``) pre-copy sends round 0, then QEMU's dirty
bitmap, as one flow per stretch between two syncs. Whenever the flow's rate changes (its
``on_rate``) or the limit changes, the next sync is recomputed (``precopy.sync_delay``:
the first check, every ``precopy.check_period_for`` seconds from the first byte, at which
QEMU's estimate is at most ``rate * max_downtime``; round 0 counts the RAM it has not
walked yet, ``ram_layout.RamLayout`` of the VM's ``memory_layout``) and a timer armed. At
the sync the pages the guest dirtied since the last one join the bitmap; if the count
still fits the guest is held and the pending bytes flushed (not at the cap:
``precopy.flush_speeds_for``; the rest of round 0 first, then the pages to send again),
then ``switchover_cost``.
Iterations count bitmap syncs and auto-converge follows QEMU's rule (``plan_qemu``'s
docstring). What follows describes
the **textbook** model; disk copy, post-copy and the end of a job are the same for both
(post-copy pulls at ``link_speed`` when the qemu model has one).

1. **Disk** (block migration): the allocated disk as one flow.
2. **Pre-copy**: round 0 sends the used memory; every later round what the
   guest dirtied while the round before was sent, ``min(W, D_eff * t_run)``,
   where ``t_run`` is the time the guest ran (not paused) during that round and
   ``D_eff`` its dirty rate under the auto-converge throttle in force. After
   each round the switchover test uses the bandwidth measured over that round
   (as QEMU does). Without ``VIR_MIGRATE_LIVE`` the guest is held paused for the
   whole job, so round 0 is the only one. A job that cannot converge iterates
   until the core acts (timeout, abort, force-complete), or until it has sent
   :data:`MAX_PRECOPY_ROUNDS` rounds: it then fails (the simulator's bound, not
   QEMU's; a working set just above what ``max_downtime`` allows, rewritten in
   about a millisecond per round, would otherwise cost millions of rounds), and
   the guest stays on its source.
3. **Auto-converge** (``VIR_MIGRATE_AUTO_CONVERGE``): after the n-th round that
   did not allow the switchover, the guest's CPU is throttled by
   ``throttle_after(n)`` percent (20, 30, ... 99), and a CPU-bound guest dirties
   memory at ``throttled_dirty_rate(D, throttle)`` in the rounds after it.
4. **Switchover**: the guest is held paused, the remainder sent, then
   ``switchover_cost`` seconds; downtime = both (counted from the suspension
   when the guest was already suspended, as QEMU does). The guest then runs on
   dest.
5. **Post-copy** (``start_postcopy`` on a job started with
   ``VIR_MIGRATE_POSTCOPY``): the round under way stops; the guest is held for
   ``switchover_cost`` (the downtime), then runs on dest, which pulls the pages
   it lacks (what the round had not sent yet plus what the guest dirtied since
   the round began, at most its used memory) with no bandwidth cap. The job
   completes when the pull ends. Requested during the disk copy, it happens
   as soon as the disk is copied (nothing of the memory was sent).

A job ends early only through :meth:`MigrationJob.end` (abort, faults): the
end is recorded at once and the process is stopped.

Auto-converge worked example (``precopy.plan``'s, checked by
``test_sim_convergence``): a 2 GiB guest rewriting its 1 GiB working set at
2e9 B/s over 1.25e9 B/s never converges at 0.5 s (625 MB) without a throttle.
With one, the rounds send 2 GiB, then 1 GiB three times (dirtying at 2e9, 1.6e9
and 1.4e9 B/s the guest refills its working set while each is sent), then
1.031e9 B (dirtied at 1.2e9 B/s) and 8.25e8 B (at 1e9 B/s); at 8e8 B/s the
guest then leaves 5.28e8 B <= 6.25e8 B dirty: switchover after 6 rounds at a
60 % throttle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import simpy

from livemig.core.cpu_trace import utilisation_at
from livemig.core.flags import AUTO_CONVERGE, LIVE
from livemig.core.model import MigrationModel, VmSpec
from livemig.core.policy import (
    ThrottleJudge,
    responsive_dirty_rate,
    throttle_after,
    throttled_dirty_rate,
)
from livemig.core.profile import TEXTBOOK_DEFAULTS, ModelParams
from livemig.drivers.base import JobInfo, JobType
from livemig.drivers.network import Flow, FlowCancelled, FluidNetwork
from livemig.drivers.precopy import (
    after_sending,
    after_sync,
    can_switch_over,
    check_period_for,
    dirty_after,
    flush_speeds_for,
    sync_delay,
)
from livemig.drivers.ram_layout import RamLayout

TEXTBOOK = ModelParams(model=MigrationModel.TEXTBOOK, **TEXTBOOK_DEFAULTS)  # type: ignore[arg-type]

Process = Generator[simpy.Event, Any, None]


@dataclass(kw_only=True, eq=False)
class Guest:
    """One scenario VM: where its domain runs and whether it is paused.

    ``user_paused`` is an operator's ``suspend`` (only ``resume`` ends it);
    ``held`` is the pause of a migration job (non-live, switchover), which the
    job ends. The time spent paused either way is accounted so that a round's
    dirtying counts only the seconds the guest ran.
    """

    spec: VmSpec
    host: str | None  # where its domain runs; None once lost (its host died)
    local_disk: int = 0  # bytes counted on its host's local disk (0: shared or volume)
    user_paused: bool = False
    held: bool = False
    _paused_total: float = field(default=0.0, init=False)  # seconds paused before _paused_at
    _paused_at: float | None = field(default=None, init=False)

    @property
    def paused(self) -> bool:
        return self.user_paused or self.held

    def set_paused(self, now: float, *, user: bool | None = None,
                   held: bool | None = None) -> None:
        """Change either pause; the paused-time account follows the combined state."""
        before = self.paused
        if user is not None:
            self.user_paused = user
        if held is not None:
            self.held = held
        if self.paused and not before:
            self._paused_at = now
        elif before and not self.paused and self._paused_at is not None:
            self._paused_total += now - self._paused_at
            self._paused_at = None

    def paused_since(self, now: float) -> float:
        """When the current pause began (``now`` if the guest is running)."""
        return now if self._paused_at is None else self._paused_at

    def paused_seconds(self, now: float) -> float:
        """Seconds this guest has been paused (either way) up to ``now``."""
        if self._paused_at is None:
            return self._paused_total
        return self._paused_total + (now - self._paused_at)


class Phase(Enum):
    STARTUP = "start-up"  # the model's startup_cost: nothing on the wire yet
    DISK = "disk"
    PRECOPY = "pre-copy"
    SWITCHOVER = "switchover"  # held paused, the remainder on the wire
    POSTCOPY_SWITCH = "post-copy switch"  # held paused for switchover_cost
    POSTCOPY = "post-copy"  # running on dest, pulling the missing pages
    ENDED = "ended"


POSTCOPY_REQUESTED = "post-copy requested"  # the interrupt cause of start_postcopy
MAX_PRECOPY_ROUNDS = 100_000  # a job still iterating after this many rounds fails
NOT_CONVERGED = ("operation failed: migration did not converge in {rounds} pre-copy "
                 "iterations (the simulator's bound)")


_DIRTYING = (Phase.STARTUP, Phase.DISK, Phase.PRECOPY)  # the guest runs and dirties
SWITCH = "switch"  # the value of a pass's wake-up event when the guest is to pause


def _pass_sent(wake: simpy.Event) -> Callable[[simpy.Event], None]:
    """A callback of a pass's flow: wake the job when its last byte arrived (a cancelled
    flow wakes nobody: whoever cancelled it interrupts the job)."""

    def done(event: simpy.Event) -> None:
        if event.ok and not wake.triggered:
            wake.succeed(None)

    return done


class MigrationJob:
    """One migration job; its counters are what ``jobStats()`` would report.

    ``switch_over(job)`` is called when the guest moves to dest (the driver's
    accounting).
    """

    def __init__(
        self,
        *,
        env: simpy.Environment,
        network: FluidNetwork,
        guest: Guest,
        dest: str,
        flags: int,
        cap: float | None,
        max_downtime: float,
        switchover_cost: float,
        disk_total: int,
        switch_over: Callable[[MigrationJob], None],
        source_row: int = 0,
        params: ModelParams = TEXTBOOK,
    ) -> None:
        assert guest.host is not None
        self.env = env
        self.network = network
        self.guest = guest
        self.source: str = guest.host
        self.source_row = source_row  # the source's row in the driver's host books
        self.dest = dest
        self.flags = flags
        self.cap = cap
        self.max_downtime = max_downtime
        self.switchover_cost = switchover_cost
        self.params = params
        self.qemu = params.model is MigrationModel.QEMU
        if self.qemu and params.link_speed is not None:  # QEMU's own speed bounds it
            self.cap = params.link_speed if cap is None else min(cap, params.link_speed)
        self._uncapped = params.link_speed if self.qemu else None  # post-copy pull
        # qemu: the stop-and-copy's limits, for the rest of round 0 and the pages sent again
        self._flush_caps = flush_speeds_for(cap, params.link_speed, params.flush_speed)
        # qemu: seconds between QEMU's checks of its estimate
        self._check_period = (check_period_for(cap, params.link_speed, params.check_period)
                              if self.qemu else 0.0)
        self._switch_over = switch_over
        self.started = env.now
        self.type = JobType.UNBOUNDED
        self.startup = params.startup_for(guest.spec.ram)
        self.phase = Phase.STARTUP if self.startup else Phase.DISK
        self.ended: float | None = None
        self.memory_total = guest.spec.used_memory
        self.disk_total = disk_total
        self.memory_done = 0.0  # bytes of finished memory transfers
        self.disk_done = 0.0
        self.iteration = 0
        self.downtime: float | None = None
        self.error: str | None = None
        self.flow: Flow | None = None  # the transfer under way
        self.flow_is_disk = False
        self.dirty = 0.0  # bytes dirty after the last round (post-copy: still missing)
        self.throttle = 0  # auto-converge percent in force
        self.not_converged = 0  # rounds after which the switchover was not possible
        self.postcopy = False  # the guest switched to dest in post-copy
        self.postcopy_requested = False
        self._round_start = 0.0
        self._round_paused = 0.0
        # qemu: QEMU's dirty bitmap and the next sync
        self._first_byte = 0.0  # when pre-copy began (the checks' time grid starts there)
        self._measured_at = 0.0  # when QEMU has its first bandwidth measurement
        self._switch: simpy.Event | None = None  # succeeds at the next sync
        self._check = 0  # bumped whenever the next sync's time is recomputed
        self._walk = RamLayout.of(None, 0.0)  # round 0's pending estimate (ram_layout.py)
        self._unsent = 0.0  # round 0's non-zero bytes not yet sent, when the flow began
        self._bitmap = 0.0  # pages to send again, when the flow began
        self._measured_rate = 0.0  # the transfer's last rate (QEMU's bandwidth measurement)
        # keepalive: silent while a link of source or dest is down
        self.silent_since: float | None = None
        self.silence = 0  # bumped whenever a silence starts or ends
        self.process = env.process(self._run())

    # -- readings -----------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.type is JobType.UNBOUNDED

    @property
    def in_postcopy(self) -> bool:
        """From ``start_postcopy`` taking effect on: no abort, a failure loses the guest."""
        return self.phase in (Phase.POSTCOPY_SWITCH, Phase.POSTCOPY) or self.postcopy

    def info(self) -> JobInfo:
        """The job's reading now (the poll's hot path: no further calls)."""
        guest, phase, flow = self.guest, self.phase, self.flow
        if guest.user_paused or guest.held or phase not in _DIRTYING:
            rate = 0.0
        else:
            rate = self._dirty_rate()
        in_flight = flow.delivered() if flow is not None else 0.0
        disk_flow = self.flow_is_disk
        memory = self.memory_done + (0.0 if disk_flow else in_flight)
        disk = self.disk_done + (in_flight if disk_flow else 0.0)
        end = self.ended if self.ended is not None else self.env.now
        if self.type is JobType.COMPLETED:
            memory_remaining = 0
        elif flow is not None and not disk_flow:
            memory_remaining = int(flow.nbytes - in_flight)  # this round's pages left
        elif self.iteration == 0 and phase is not Phase.POSTCOPY_SWITCH:
            memory_remaining = self.memory_total  # still copying the disk
        else:
            memory_remaining = int(self.dirty)  # between rounds: what is dirty (or missing)
        disk_remaining = max(0, self.disk_total - int(disk))
        return JobInfo(
            type=self.type,
            time_elapsed=end - self.started,
            data_total=self.memory_total + self.disk_total,
            data_processed=int(memory) + int(disk),
            data_remaining=memory_remaining + disk_remaining,
            memory_total=self.memory_total,
            memory_processed=int(memory),
            memory_remaining=memory_remaining,
            disk_total=self.disk_total,
            disk_processed=int(disk),
            disk_remaining=disk_remaining,
            memory_iteration=self.iteration,
            memory_dirty_rate=rate,
            downtime=self.downtime,
            error=self.error,
            postcopy=self.postcopy,
            auto_converge_throttle=self.throttle,
        )

    # -- actions ------------------------------------------------------------------
    def request_postcopy(self) -> None:
        """Switch to post-copy now (pre-copy), after the disk copy, or not at all
        (already switching over, or in post-copy). The caller checked the flag."""
        if self.phase in (Phase.STARTUP, Phase.DISK):
            self.postcopy_requested = True
        elif self.phase is Phase.PRECOPY:
            self.postcopy_requested = True
            self._enter_postcopy()
            self.process.interrupt(POSTCOPY_REQUESTED)

    def set_max_downtime(self, seconds: float) -> None:
        self.max_downtime = seconds
        self.recheck()

    def recheck(self) -> None:
        """The guest's pause, or the limit, changed: recompute when it can switch over."""
        if self.flow is not None and self._switch is not None:
            self._arm_switch(self.flow)

    def end(self, kind: JobType, error: str) -> None:
        """End the job now (CANCELLED or FAILED): the transfer under way stops and the
        job's pause of the guest ends. Where the guest is left is the caller's call."""
        self._check += 1
        self._settle_flow()
        self.type = kind
        self.error = error
        self.ended = self.env.now
        if not self.postcopy:
            self.downtime = None  # no switchover happened
        self.phase = Phase.ENDED
        self.guest.set_paused(self.env.now, held=False)
        if self.process.is_alive and self.env.active_process is not self.process:
            self.process.interrupt(error)

    # -- the process --------------------------------------------------------------
    def _run(self) -> Process:
        with contextlib.suppress(simpy.Interrupt, FlowCancelled):
            yield from self._precopy()
        if not self.running or not self.postcopy_requested:
            return
        try:
            yield from self._postcopy()
        except (simpy.Interrupt, FlowCancelled):
            return  # ended by a fault

    def _precopy(self) -> Process:
        spec, now = self.guest.spec, self.env.now
        live = bool(self.flags & LIVE)
        if not live:
            self.guest.set_paused(now, held=True)
        if self.startup:
            yield self.env.timeout(self.startup)
            self.phase = Phase.DISK
        if self.disk_total:
            yield from self._send(self.disk_total, disk=True)
        if self.postcopy_requested:  # asked for during the start-up or the disk copy
            self._enter_postcopy()
            return
        if self.qemu:
            yield from self._precopy_qemu()
            return
        self.phase = Phase.PRECOPY
        self.iteration = 1
        t = yield from self._round(spec.used_memory)
        sent = spec.used_memory
        converge = bool(self.flags & AUTO_CONVERGE)
        while True:
            dirty = self._dirtied() if live else 0.0
            self.dirty = dirty
            if t == 0 or not live or can_switch_over(dirty, sent / t, self.max_downtime):
                break
            if self.iteration >= MAX_PRECOPY_ROUNDS:
                self.end(JobType.FAILED, NOT_CONVERGED.format(rounds=self.iteration))
                return
            if converge:
                self.not_converged += 1
                self.throttle = throttle_after(self.not_converged)
            self.iteration += 1
            t = yield from self._round(dirty)
            sent = dirty
        self.phase = Phase.SWITCHOVER
        # downtime runs from when the guest stopped: now, or earlier when it was already
        # suspended (force-complete's pause), as QEMU counts it
        pause = self.guest.paused_since(self.env.now)
        self.guest.set_paused(self.env.now, held=True)
        yield from self._send(dirty)
        self.dirty = 0.0  # all sent: only the switchover's fixed cost is left
        self.downtime = self.env.now - pause + self.switchover_cost
        if self.switchover_cost:
            yield self.env.timeout(self.switchover_cost)
        self._switch_over(self)
        self._complete()

    def _precopy_qemu(self) -> Process:
        """QEMU's pre-copy (drivers/precopy.plan_qemu): send round 0, then the dirty
        bitmap; sync it at the first check at which its estimate fits the threshold;
        pause when it still fits after the sync."""
        spec = self.guest.spec
        self.phase = Phase.PRECOPY
        self.iteration = 1  # the sync that starts the migration
        start = self._first_byte = self.env.now
        self._measured_at = start + self.params.bandwidth_window
        converge = bool(self.flags & AUTO_CONVERGE)
        judge = ThrottleJudge(period_start=start)
        self._unsent, self._bitmap = float(spec.used_memory), 0.0
        self._walk = RamLayout.of(spec.ram, self._unsent, spec.memory_layout)
        working_set = float(spec.working_set)
        self._restart_dirtying()  # counted from sync to sync
        while True:
            size = self._unsent + self._bitmap
            self._switch = wake = self.env.event()
            if size > 0:
                flow = self.flow = self.network.transfer(self.source, self.dest, size,
                                                         cap=self.cap)
                self.flow_is_disk = False
                flow.on_rate = self._arm_switch
                flow.done.callbacks.append(_pass_sent(wake))
                yield wake
                sent = flow.delivered()
                if flow.rate > 0:
                    self._measured_rate = flow.rate
                self._settle_flow()
            else:
                sent = 0.0
            wait = self._measured_at - self.env.now  # all sent: QEMU checks once it has a
            if wait > 0:  # bandwidth measurement
                yield self.env.timeout(wait)
            self._switch = None
            self._unsent, self._bitmap = after_sending(self._unsent, self._bitmap, sent)
            dirtied = self._dirtied()
            self._restart_dirtying()
            self._bitmap = after_sync(self._bitmap, dirtied, working_set)
            self.iteration += 1  # the sync
            self.dirty = self._unsent + self._bitmap
            pending = self._walk.estimate(self._unsent) + self._bitmap
            if (self.env.now >= self._measured_at - 1e-12
                    and pending <= self._measured_rate * self.max_downtime):
                break
            if converge:
                self.throttle = judge.at_sync(self.env.now, dirtied=dirtied, sent=sent,
                                              throttle=self.throttle)
            if self.iteration >= MAX_PRECOPY_ROUNDS:  # counted in syncs, as libvirt does
                self.end(JobType.FAILED, NOT_CONVERGED.format(rounds=self.iteration))
                return
        # the guest pauses: what is pending is flushed, not at the cap
        self._check += 1
        self.phase = Phase.SWITCHOVER
        pause = self.guest.paused_since(self.env.now)
        self.guest.set_paused(self.env.now, held=True)
        first_copy, again = self._unsent, self._bitmap  # never sent; to send again
        self.dirty = first_copy + again
        yield from self._send(first_copy, cap=self._flush_caps.first_copy)
        self.dirty = again
        yield from self._send(again, cap=self._flush_caps.resend)
        self.dirty = 0.0
        self.iteration += 1  # the sync at completion
        self.downtime = self.env.now - pause + self.switchover_cost
        if self.switchover_cost:
            yield self.env.timeout(self.switchover_cost)
        self._switch_over(self)
        self._complete()

    def _arm_switch(self, flow: Flow) -> None:
        """(Re)compute when QEMU syncs next (:func:`precopy.sync_delay`), from the rate the
        transfer gets now: QEMU's measured bandwidth, and so its threshold (the rate is
        constant between recomputations, so a window's average is the current rate but
        within a window of a change, which this ignores)."""
        self._check += 1
        switch = self._switch
        if flow is not self.flow or switch is None or switch.triggered:
            return
        if flow.rate > 0:
            self._measured_rate = flow.rate
        now = self.env.now
        unsent, bitmap = after_sending(self._unsent, self._bitmap, flow.delivered())
        delay = sync_delay(unsent, bitmap, flow.rate, flow.rate * self.max_downtime,
                           step=self._check_period, layout=self._walk,
                           elapsed=now - self._first_byte,
                           not_before=max(0.0, self._measured_at - now))
        if delay is None:
            return
        check = self._check

        def fire(_event: simpy.Event) -> None:
            if check == self._check and not switch.triggered:
                switch.succeed(SWITCH)

        if delay <= 0:
            switch.succeed(SWITCH)
        else:
            self.env.timeout(delay).callbacks.append(fire)

    def _dirty_rate(self) -> float:
        """The guest's dirty rate under the throttle in force (while it runs); one that
        follows its CPU is its rate at 100 % x its trace's utilisation now (taken as
        constant within a pass: a trace changes over minutes, a pass takes seconds)."""
        spec = self.guest.spec
        rate = spec.dirty_rate
        if spec.dirty_rate_follows_cpu:
            rate *= utilisation_at(spec.cpu_trace, spec.cpu_trace_interval, float(self.env.now))
        if not self.throttle:
            return rate
        if self.qemu:
            return responsive_dirty_rate(rate, self.throttle, self.guest.spec.throttle_response)
        return throttled_dirty_rate(rate, self.throttle)

    def _postcopy(self) -> Process:
        if self.switchover_cost:
            yield self.env.timeout(self.switchover_cost)
        self._switch_over(self)
        self.postcopy = True
        self.phase = Phase.POSTCOPY
        yield from self._send(self.dirty, cap=self._uncapped)
        self._complete()

    def _enter_postcopy(self) -> None:
        """Stop the round under way; what dest still lacks is its unsent part plus what
        the guest dirtied since it began (at most the used memory)."""
        self._check += 1  # no switchover check any more
        self._switch = None
        unsent = self.flow.remaining() if self.flow is not None else 0.0
        if self.iteration == 0:
            unsent = float(self.memory_total)  # nothing of the memory was sent
        dirtied = self._dirtied() if self.iteration and self.flags & LIVE else 0.0
        self._settle_flow()
        self.dirty = min(float(self.memory_total), unsent + dirtied)
        self.phase = Phase.POSTCOPY_SWITCH
        self.downtime = self.switchover_cost
        self.guest.set_paused(self.env.now, held=True)

    def _complete(self) -> None:
        self.type = JobType.COMPLETED
        self.phase = Phase.ENDED
        self.ended = self.env.now

    def _dirtied(self) -> float:
        """Bytes the guest dirtied since the current round began (its running time only)."""
        now = self.env.now
        seconds = (now - self._round_start) - (
            self.guest.paused_seconds(now) - self._round_paused
        )
        return dirty_after(max(0.0, seconds), self.guest.spec.working_set, self._dirty_rate())

    def _restart_dirtying(self) -> None:
        """Count what the guest dirties (:meth:`_dirtied`) from now on."""
        self._round_start = self.env.now
        self._round_paused = self.guest.paused_seconds(self.env.now)

    def _round(self, nbytes: float) -> Generator[simpy.Event, Any, float]:
        self._restart_dirtying()
        return (yield from self._send(nbytes))

    def _send(self, nbytes: float, *, disk: bool = False,
              cap: float | bool | None = True) -> Generator[simpy.Event, Any, float]:
        """Send ``nbytes`` source -> dest as one flow, at most ``cap`` B/s (True: the job's
        bandwidth limit; None: uncapped); returns the seconds it took."""
        start = self.env.now
        if nbytes <= 0:
            return 0.0
        self.flow = self.network.transfer(
            self.source, self.dest, nbytes, cap=self.cap if cap is True else cap
        )
        self.flow_is_disk = disk
        yield self.flow.done
        self.flow = None
        if disk:
            self.disk_done += nbytes
        else:
            self.memory_done += nbytes
        return self.env.now - start

    def _settle_flow(self) -> None:
        """Count what the transfer under way delivered, and stop it."""
        flow = self.flow
        if flow is None:
            return
        if self.flow_is_disk:
            self.disk_done += flow.delivered()
        else:
            self.memory_done += flow.delivered()
        flow.cancel()
        self.flow = None
