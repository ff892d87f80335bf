"""Pure pre-copy arithmetic: no SimPy, no I/O, unit-testable on its own.

Two models (``policy.migration.model``): ``qemu`` (:func:`plan_qemu`, the default),
which does what QEMU 10 does (start-up cost, the dirty bitmap synced whenever QEMU's
estimate dips under its threshold and the guest paused when it still fits after the
sync, the remainder flushed uncapped, syncs as iterations, QEMU's own auto-converge rule;
see its docstring), and ``textbook`` (:func:`plan`,
earlier releases), the classic round model that published comparisons used.

The textbook model, at a constant effective bandwidth ``B`` (bytes/s), for a guest
with ``U`` bytes of used (non-zero) memory, a working set of ``W`` bytes that it keeps
dirtying at ``D`` bytes/s, and a maximum downtime ``T`` seconds:

* round 0 sends ``d_0 = U`` in ``t_0 = U / B``;
* round ``i >= 1`` sends what the previous round left dirty,
  ``d_i = min(W, D * t_{i-1})``, in ``t_i = d_i / B``;
* after each round ``i`` the dirty remainder is ``r_i = min(W, D * t_i)``
  (:func:`dirty_after`). If ``r_i <= B * T`` (:func:`can_switch_over`) the guest
  is paused and the remainder sent: ``downtime = r_i / B + switchover_cost``,
  ``iterations = i + 1`` and ``total_time = sum(t) + downtime``.

Non-convergence (when :func:`plan` gives up, ``converged=False``):

* *not shrinking*: after round ``i`` the remainder cannot be switched over and
  ``r_i >= d_i``, i.e. the round just sent did not reduce what is dirty. With
  ``d_i <= W`` this happens exactly when ``D >= B`` (the guest dirties memory at
  least as fast as the link sends it: ``r`` stays at ``W`` or grows towards it),
  or at round 0 when ``W >= U`` as well. If ``D < B`` the remainder shrinks
  geometrically by ``D / B`` per round once below ``W``, so it always converges
  eventually when ``T > 0``.
* *max rounds*: ``max_rounds`` rounds (round 0 included) were sent and the
  remainder still cannot be switched over. QEMU itself never gives up (libvirt
  and Nova rely on timeouts, auto-converge and post-copy, which the core's
  policies model); the cap only bounds this arithmetic for slow geometric
  convergence (``D`` close to ``B``) or ``T == 0``. The default 30 follows
  Xen's classic pre-copy limit (``DEF_MAX_ITERS 29``, "30 times round loop").

When a plan gives up it reports the rounds sent so far, ``downtime=None`` (no
switchover happened), ``total_time = sum(round_times)`` and ``remaining`` = the
dirty bytes left.

Auto-converge (``auto_converge=True``, QEMU's CPU throttle for
``VIR_MIGRATE_AUTO_CONVERGE``): after the n-th round whose remainder could not be
switched over, the guest is throttled by ``throttle_after(n)`` percent (20, 30,
... 99) and, CPU-bound, dirties at ``D * (100 - throttle) / 100`` during the
rounds after it. A remainder that does not shrink is then no reason to give up
until the throttle is at its maximum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from livemig.core.policy import (
    THROTTLE_MAX,
    ThrottleJudge,
    responsive_dirty_rate,
    throttle_after,
    throttled_dirty_rate,
)
from livemig.drivers.ram_layout import RamLayout

DEFAULT_MAX_ROUNDS = 30


class StopReason(StrEnum):
    """Why :func:`plan` stopped iterating."""

    CONVERGED = "converged"  # the remainder fitted in the downtime: switched over
    NOT_SHRINKING = "not shrinking"  # r_i >= d_i: another round would not help
    MAX_ROUNDS = "max rounds"  # max_rounds rounds sent without converging


@dataclass(frozen=True, kw_only=True)
class PrecopyPlan:
    """The rounds of one pre-copy migration at constant bandwidth.

    ``rounds[i]`` bytes were sent in ``round_times[i]`` seconds; ``remaining`` is
    what was dirty after the last round (sent during the downtime when
    ``converged``); ``data_transferred`` counts every byte on the wire, the
    switchover remainder included.
    """

    rounds: tuple[float, ...]  # bytes sent per pre-copy round (round 0 first)
    round_times: tuple[float, ...]  # seconds per round
    remaining: float  # bytes dirty after the last round
    downtime: float | None  # seconds paused at switchover; None if not converged
    total_time: float  # seconds: sum(round_times) (+ downtime when converged)
    iterations: int  # rounds sent, round 0 counts as 1 (libvirt's memory_iteration)
    converged: bool
    reason: StopReason
    data_transferred: float  # bytes: sum(rounds) (+ remaining when converged)
    throttles: tuple[int, ...] = ()  # auto-converge percent in force during each round


def _check_non_negative(name: str, value: float, unit: str) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name}(={value} {unit}) must be a finite number >= 0")


def _check_plan_inputs(*, used_memory: float, working_set: float, dirty_rate: float,
                       max_downtime: float, switchover_cost: float,
                       speeds: dict[str, float], max_rounds: int) -> None:
    """The argument checks :func:`plan` and :func:`plan_qemu` share (ValueError)."""
    _check_non_negative("used_memory", used_memory, "B")
    _check_non_negative("working_set", working_set, "B")
    _check_non_negative("dirty_rate", dirty_rate, "B/s")
    _check_non_negative("max_downtime", max_downtime, "s")
    _check_non_negative("switchover_cost", switchover_cost, "s")
    for name, speed in speeds.items():
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"{name}(={speed} B/s) must be > 0")
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise ValueError(f"max_rounds(={max_rounds!r}) must be an int >= 1")


def dirty_after(round_seconds: float, working_set: float, dirty_rate: float) -> float:
    """Bytes dirtied while a round of ``round_seconds`` was being sent.

    The guest rewrites its working set at ``dirty_rate`` bytes/s, so the dirty
    amount is capped by the working set: ``min(W, D * t)``.

    >>> dirty_after(2.0, working_set=1 << 30, dirty_rate=100 * 2**20)
    209715200.0
    >>> dirty_after(60.0, working_set=1 << 30, dirty_rate=100 * 2**20)  # capped by W
    1073741824
    """
    _check_non_negative("round_seconds", round_seconds, "s")
    _check_non_negative("working_set", working_set, "B")
    _check_non_negative("dirty_rate", dirty_rate, "B/s")
    return min(working_set, dirty_rate * round_seconds)


def can_switch_over(remaining_bytes: float, bandwidth: float, max_downtime: float) -> bool:
    """Can ``remaining_bytes`` be sent within ``max_downtime`` at ``bandwidth``?

    True when ``remaining_bytes <= bandwidth * max_downtime``. A bandwidth of 0
    (a link that is down) only lets an empty remainder switch over.

    >>> can_switch_over(6.25e8, bandwidth=1.25e9, max_downtime=0.5)
    True
    >>> can_switch_over(6.25e8 + 1, bandwidth=1.25e9, max_downtime=0.5)
    False
    """
    _check_non_negative("remaining_bytes", remaining_bytes, "B")
    _check_non_negative("bandwidth", bandwidth, "B/s")
    _check_non_negative("max_downtime", max_downtime, "s")
    return remaining_bytes <= bandwidth * max_downtime


def plan(
    used_memory: float,
    working_set: float,
    dirty_rate: float,
    bandwidth: float,
    max_downtime: float,
    switchover_cost: float = 0.0,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    auto_converge: bool = False,
) -> PrecopyPlan:
    """Plan the pre-copy rounds of one migration at constant ``bandwidth``.

    Units: bytes, bytes/s and seconds. See the module docstring for the model
    and the exact non-convergence rule.

    A 4 GiB guest with a 1 GiB working set dirtied at 100 MiB/s over a
    10 Gbit/s link (1.25e9 B/s) with 0.5 s max downtime: round 0 takes
    3.436 s, during which 360 MB are dirtied; that fits in 0.5 s (625 MB).

    >>> GiB, MiB = 2**30, 2**20
    >>> p = plan(4 * GiB, GiB, 100 * MiB, bandwidth=1.25e9, max_downtime=0.5)
    >>> p.iterations, p.converged, p.rounds
    (1, True, (4294967296,))
    >>> round(p.round_times[0], 4), round(p.remaining), round(p.downtime, 4)
    (3.436, 360287970, 0.2882)
    >>> round(p.total_time, 4), round(p.data_transferred)
    (3.7242, 4655255266)

    With 10 ms max downtime (12.5 MB) it takes two more rounds: each one is
    D / B = 8.4 % of the one before.

    >>> p = plan(4 * GiB, GiB, 100 * MiB, bandwidth=1.25e9, max_downtime=0.01)
    >>> p.iterations, p.converged, [round(d) for d in p.rounds]
    (3, True, [4294967296, 360287970, 30223145])
    >>> [round(t, 5) for t in p.round_times], round(p.remaining), round(p.downtime, 6)
    ([3.43597, 0.28823, 0.02418], 2535301, 0.002028)
    >>> round(p.total_time, 5)
    3.75041

    A switchover cost is added to the downtime (and the total), not to the test:

    >>> p = plan(4 * GiB, GiB, 100 * MiB, 1.25e9, 0.01, switchover_cost=0.05)
    >>> p.iterations, round(p.downtime, 6), round(p.total_time, 5)
    (3, 0.052028, 3.80041)

    Dirtying at 2e9 B/s, faster than the link: after round 0 the whole working
    set is dirty (1 GiB > 625 MB); round 1 resends it and it is all dirty again,
    so the remainder does not shrink and the plan gives up after 2 rounds.

    >>> p = plan(4 * GiB, GiB, 2e9, bandwidth=1.25e9, max_downtime=0.5)
    >>> p.converged, str(p.reason), p.iterations, p.downtime
    (False, 'not shrinking', 2, None)
    >>> p.rounds, p.remaining, round(p.total_time, 4), p.data_transferred
    ((4294967296, 1073741824), 1073741824, 4.295, 5368709120.0)

    An idle guest (D = 0) switches over right after round 0 with no remainder:

    >>> p = plan(4 * GiB, GiB, 0.0, bandwidth=1.25e9, max_downtime=0.5)
    >>> p.iterations, p.remaining, p.downtime, round(p.total_time, 4)
    (1, 0.0, 0.0, 3.436)

    The same hopeless guest (2 GiB used) with auto-converge: it refills its 1 GiB
    working set at 100, 80, 70 and 60 % of its CPU, then the remainder shrinks and
    at a 60 % throttle it fits in the downtime.

    >>> p = plan(2 * GiB, GiB, 2e9, bandwidth=1.25e9, max_downtime=0.5, auto_converge=True)
    >>> p.converged, p.iterations, p.throttles
    (True, 6, (0, 20, 30, 40, 50, 60))
    >>> [round(d / 1e6) for d in p.rounds], round(p.remaining / 1e6), round(p.downtime, 4)
    ([2147, 1074, 1074, 1074, 1031, 825], 528, 0.4222)

    >>> plan(GiB, GiB, 0.0, bandwidth=0, max_downtime=0.5)
    Traceback (most recent call last):
    ...
    ValueError: bandwidth(=0 B/s) must be > 0
    """
    _check_plan_inputs(used_memory=used_memory, working_set=working_set,
                       dirty_rate=dirty_rate, max_downtime=max_downtime,
                       switchover_cost=switchover_cost, speeds={"bandwidth": bandwidth},
                       max_rounds=max_rounds)

    rounds: list[float] = []
    times: list[float] = []
    throttles: list[int] = []
    sent: float = used_memory
    throttle = 0
    while True:
        seconds = sent / bandwidth
        rounds.append(sent)
        times.append(seconds)
        throttles.append(throttle)
        rate = throttled_dirty_rate(dirty_rate, throttle) if throttle else dirty_rate
        dirty = min(working_set, rate * seconds)
        if dirty <= bandwidth * max_downtime:
            reason = StopReason.CONVERGED
            break
        if dirty >= sent and (not auto_converge or throttle >= THROTTLE_MAX):
            reason = StopReason.NOT_SHRINKING
            break
        if auto_converge:
            throttle = throttle_after(len(rounds))
        if len(rounds) >= max_rounds:
            reason = StopReason.MAX_ROUNDS
            break
        sent = dirty

    precopy_time = math.fsum(times)
    precopy_bytes = math.fsum(rounds)
    if reason is StopReason.CONVERGED:
        downtime: float | None = dirty / bandwidth + switchover_cost
        total_time = precopy_time + downtime
        transferred = precopy_bytes + dirty
    else:
        downtime = None
        total_time = precopy_time
        transferred = precopy_bytes
    return PrecopyPlan(
        rounds=tuple(rounds),
        round_times=tuple(times),
        remaining=dirty,
        downtime=downtime,
        total_time=total_time,
        iterations=len(rounds),
        converged=reason is StopReason.CONVERGED,
        reason=reason,
        data_transferred=transferred,
        throttles=tuple(throttles),
    )


# -- the qemu model ----------------------------------------------------------------


def sync_delay(unsent: float, bitmap: float, rate: float, threshold: float, *, step: float,
               layout: RamLayout | None = None, elapsed: float = 0.0,
               not_before: float = 0.0) -> float | None:
    """Seconds from now to QEMU's next dirty-bitmap sync while it sends at ``rate`` B/s
    (None when the rate is 0: nothing moves until it changes).

    QEMU checks between its RAM iterations, every ``step`` seconds counted from the first
    byte (``elapsed`` of them have gone by), and not before ``not_before`` seconds from now
    (no bandwidth measured yet, so no threshold; the first measurement is a check). It
    syncs at the first check at which its estimate, the pages left in its bitmap, is at
    most ``threshold``. Round 0's ``unsent`` non-zero bytes go first; the pages round 0
    has not walked yet, zero or not, are in the estimate too (``layout.estimate``,
    :class:`~livemig.drivers.ram_layout.RamLayout`; without a layout, the unsent bytes
    themselves); then the ``bitmap`` of pages to send again. Once everything is sent the
    estimate is 0 and QEMU checks at once.

    64 MiB to send again at 100 MiB/s, threshold 20 MiB: the estimate is under it after
    0.44 s, seen at the check at 0.5 s (every 100 ms); 0.07 s into the migration, at 0.6 s
    (0.53 s from now). With round 0's last 32 MiB still unsent first, spread evenly over the
    last 64 MiB of RAM (weighing 2): 2 (32 - 100 t) + 64 <= 20 never holds in round 0
    (0.32 s), then 64 - (100 t - 32) <= 20 at 0.76 s, seen at 0.8 s.

    >>> MiB = 2**20
    >>> round(sync_delay(0, 64 * MiB, 100 * MiB, 20 * MiB, step=0.1), 9)
    0.5
    >>> round(sync_delay(0, 64 * MiB, 100 * MiB, 20 * MiB, step=0.1, elapsed=0.07), 9)
    0.53
    >>> half = RamLayout.of(64 * MiB, 32 * MiB)
    >>> round(sync_delay(32 * MiB, 64 * MiB, 100 * MiB, 20 * MiB, step=0.1, layout=half), 9)
    0.8

    No bitmap yet, and those 64 MiB of RAM hold their 32 MiB of non-zero data in one half:
    the estimate is under 20 MiB once the walk is 44 MiB in. Data in the second half: the
    walk crosses the zero half at once, 12 MiB sent (0.12 s); evenly spread, 22 MiB; data in
    the first half: all 32 MiB, the zero half counted until then.

    >>> back = RamLayout.of(64 * MiB, 32 * MiB, (0, 1))
    >>> front = RamLayout.of(64 * MiB, 32 * MiB, (1, 0))
    >>> [round(sync_delay(32 * MiB, 0, 100 * MiB, 20 * MiB, step=0.01, layout=lay), 9)
    ...  for lay in (back, half, front)]
    [0.12, 0.22, 0.32]

    Already under the threshold, the next check; everything sent first, at once; no
    threshold yet, at the first measurement:

    >>> round(sync_delay(0, 10 * MiB, 100 * MiB, 20 * MiB, step=0.1, elapsed=0.05), 9)
    0.05
    >>> sync_delay(0, 5 * MiB, 100 * MiB, 20 * MiB, step=1.0, elapsed=0.3)
    0.05
    >>> sync_delay(0, 5 * MiB, 100 * MiB, 20 * MiB, step=0.1, not_before=0.2)
    0.2
    >>> sync_delay(0, 64 * MiB, 0.0, 20 * MiB, step=0.1) is None
    True
    """
    if step <= 0:
        raise ValueError(f"step(={step} s) must be > 0: QEMU checks between iterations")
    if rate <= 0:
        return None
    end = (unsent + bitmap) / rate
    if end <= not_before:
        return not_before
    layout = layout or RamLayout.of(None, unsent)
    if layout.estimate(unsent) + bitmap <= threshold:
        crossing = 0.0
    elif bitmap <= threshold:  # inside round 0
        crossing = (unsent - layout.unsent_within(threshold - bitmap)) / rate
    else:
        crossing = (unsent + bitmap - threshold) / rate
    if not_before > 0 and crossing <= not_before:
        at = not_before
    else:
        at = next_check(elapsed + crossing, step) - elapsed
    return min(at, end)


def after_sending(unsent: float, bitmap: float, sent: float) -> tuple[float, float]:
    """Round 0's unsent bytes and the bitmap's after ``sent`` more bytes: QEMU finishes
    round 0 before it sends pages again.

    >>> after_sending(10.0, 5.0, 4.0), after_sending(10.0, 5.0, 12.0)
    ((6.0, 5.0), (0.0, 3.0))
    """
    first = min(unsent, sent)
    return unsent - first, max(0.0, bitmap - (sent - first))


def after_sync(bitmap: float, dirtied: float, working_set: float) -> float:
    """The bitmap after a sync adds the ``dirtied`` bytes: pages of the working set, so at
    most the working set (a page dirtied again is still one page to send).

    >>> after_sync(10.0, 4.0, 16.0), after_sync(10.0, 8.0, 16.0)
    (14.0, 16.0)
    """
    return min(working_set, bitmap + dirtied)


def next_check(t: float, period: float) -> float:
    """The first multiple of ``period`` at or after ``t`` (within rounding).

    >>> round(next_check(0.55, 0.1), 9), next_check(0.1, 0.05), next_check(0.0, 0.05)
    (0.6, 0.1, 0.0)
    """
    k = math.ceil(t / period - 1e-9)
    return max(0, k) * period


class FlushSpeeds(NamedTuple):
    """The stop-and-copy's speed limits in B/s (None: the host link decides).

    ``first_copy`` is for pages sent for the first time in the flush (the rest of round 0
    when the guest pauses inside it), ``resend`` for the pages sent before and dirtied
    since (and a later pass's unsent part).
    """

    first_copy: float | None
    resend: float | None


def flush_speeds_for(cap: float | None, link_speed: float | None,
                     flush_speed: float | None) -> FlushSpeeds:
    """The stop-and-copy's speed limits for a migration capped at ``cap`` (None: uncapped).

    QEMU lifts the cap for the flush. A **capped** migration's remainder goes at
    ``flush_speed``, the pipe's own speed, whatever its pages (fitted from capped downtimes
    by ``livemig calibrate``; default ``link_speed``). An **uncapped** one re-sends its
    dirtied pages at ``flush_speed`` too (QEMU's traces: a remainder of pass 1 or 2 flushed
    at about 1.2 GiB/s, docs/uncapped-switchover-findings.md), but when the guest pauses
    inside round 0 the rest of round 0 goes at the speed round 0 ran, ``link_speed`` (the
    lab's idle uncapped guests: the flush line of their downtimes runs at the passes'
    speed, not the capped flush's). A cap at or above ``link_speed`` is no cap.

    >>> MiB = 2**20
    >>> [s / MiB for s in flush_speeds_for(None, 250 * MiB, 1000 * MiB)]  # uncapped
    [250.0, 1000.0]
    >>> [s / MiB for s in flush_speeds_for(20 * MiB, 250 * MiB, 1000 * MiB)]  # capped
    [1000.0, 1000.0]
    >>> [s / MiB for s in flush_speeds_for(20 * MiB, 250 * MiB, None)]  # no flush speed fitted
    [250.0, 250.0]
    >>> flush_speeds_for(20 * MiB, None, None), flush_speeds_for(None, None, None)
    (FlushSpeeds(first_copy=None, resend=None), FlushSpeeds(first_copy=None, resend=None))
    >>> [s / MiB for s in flush_speeds_for(400 * MiB, 250 * MiB, 1000 * MiB)]  # no cap
    [250.0, 1000.0]
    """
    resend = flush_speed or link_speed
    if cap is None or (link_speed is not None and cap >= link_speed):
        return FlushSpeeds(first_copy=link_speed, resend=resend)
    return FlushSpeeds(first_copy=resend, resend=resend)


RATE_LIMIT_WINDOW = 0.1
"""Seconds of QEMU's rate limiter's window (``BUFFER_DELAY``): a capped migration sends
its quota, ``cap x window``, then waits for the next window."""


def check_period_for(cap: float | None, link_speed: float | None,
                     check_period: float) -> float:
    """Seconds between QEMU's checks of the pending bytes (:func:`sync_delay`'s ``step``).

    The migration thread checks between RAM iterations. **Uncapped**, an iteration sends
    for up to 50 ms (``MAX_WAIT`` in migration/ram.c): ``check_period``. **Capped**, an
    iteration returns once the rate limiter's quota for its window is sent, and the thread
    waits for the next window: one check per :data:`RATE_LIMIT_WINDOW` (100 ms). A cap at
    or above ``link_speed`` is no cap.

    >>> MiB = 2**20
    >>> [check_period_for(cap, 250 * MiB, 0.05) for cap in (None, 20 * MiB, 400 * MiB)]
    [0.05, 0.1, 0.05]
    >>> check_period_for(20 * MiB, None, 0.05)
    0.1
    """
    if cap is None or (link_speed is not None and cap >= link_speed):
        return check_period
    return RATE_LIMIT_WINDOW


def plan_qemu(
    used_memory: float,
    working_set: float,
    dirty_rate: float,
    bandwidth: float,
    max_downtime: float,
    *,
    flush_speed: float,
    first_copy_speed: float | None = None,
    startup_cost: float = 0.0,
    switchover_cost: float = 0.0,
    bandwidth_window: float = 0.0,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    auto_converge: bool = False,
    throttle_response: float = 1.0,
    ram: float | None = None,
    layout: tuple[float, ...] = (),
    check_period: float = 0.05,
) -> PrecopyPlan:
    """Plan one migration as QEMU runs it, at constant ``bandwidth`` (the cap, or the
    uncapped speed ``link_speed``); units bytes, B/s, s.

    * ``startup_cost`` seconds pass before the first byte (libvirt's ``time_elapsed``
      counts them).
    * QEMU sends round 0 (the non-zero memory ``U``), then the pages its dirty bitmap
      holds. It checks every ``check_period`` seconds (the caller's
      :func:`check_period_for`), from the first measurement of its bandwidth
      (``bandwidth_window`` seconds) on. At the first check at which its estimate (the
      bitmap's pages; round 0's count the RAM it has not walked yet, zero pages included:
      :class:`~livemig.drivers.ram_layout.RamLayout` of the guest's ``ram`` and
      ``layout``, evenly spread when none is given) is at most the
      threshold ``bandwidth * max_downtime`` (:func:`sync_delay`), it **syncs** the
      bitmap: the pages dirtied since the last sync, ``min(W, D_eff * t)``, join it (at
      most ``W``). If the estimate is still at most the threshold, the guest pauses;
      else QEMU sends on. A sync therefore comes with up to a threshold's worth of pages
      unsent, and the guest pauses at the first sync whose newly dirtied pages fit in the
      margin left under the threshold at that check.
    * The pending pages are flushed, not at the cap: the rest of round 0 at
      ``first_copy_speed`` (default ``flush_speed``), the pages to send again at
      ``flush_speed`` (the caller's :func:`flush_speeds_for`); ``downtime`` = that
      flush + ``switchover_cost``.
    * ``rounds`` are the bytes sent between syncs (``round_times`` their seconds), the
      last one before the pause; ``iterations`` counts the syncs as libvirt's
      ``memory_iteration`` does: one at the start, one per sync, one at completion.
    * Auto-converge, QEMU's rule: at a sync at least ``THROTTLE_PERIOD`` (1 s) after the
      period began, if the bytes dirtied in the period exceed ``THROTTLE_TRIGGER`` (50 %)
      of those sent, a counter goes up; at 2 the throttle steps (20 %, then +10 %, at
      most 99 %) and the counter restarts. The guest then dirties at
      ``responsive_dirty_rate(D, throttle, throttle_response)``.
    * It gives up (QEMU never does; libvirt and Nova use timeouts) when a sync leaves as
      much to send again as the one before, with no throttle left to add (*not
      shrinking*: the guest dirties as fast as the link sends), or after ``max_rounds``
      syncs.

    The lab guest: 128 MiB RAM, 80 MiB non-zero, rewriting 16 MiB at 24 MiB/s, capped at
    50 MiB/s, limit 300 ms (threshold 15 MiB), checked every 100 ms, QEMU 10's costs,
    flushed at 330 MiB/s. Round 0's estimate counts its 48 MiB of zero pages as well: it
    is under 15 MiB at 1.41 s, seen at the check at 1.5 s with 5 MiB of round 0 unsent
    (8 in the estimate). The sync adds the whole working set (36 MiB dirtied): 8 + 16 MiB,
    go on. At 1.6 s round 0 is done, 16 MiB; at 1.7 s 11 MiB, a sync adds the 4.8 MiB
    dirtied since: 15.8 MiB, go on. At 1.8 s 10.8 MiB, and the 2.4 MiB dirtied since fit:
    the 13.2 MiB flush in 40 ms plus 20 ms. Five syncs, where pass-end syncs would count
    four.

    >>> MiB = 2**20
    >>> p = plan_qemu(80 * MiB, 16 * MiB, 24 * MiB, 50 * MiB, 0.3, flush_speed=330 * MiB,
    ...               startup_cost=0.285, switchover_cost=0.02, bandwidth_window=0.1,
    ...               check_period=0.1, ram=128 * MiB)
    >>> p.converged, p.iterations, [round(r / MiB, 3) for r in p.rounds]
    (True, 5, [75.0, 10.0, 5.0])
    >>> round(p.remaining / MiB, 3), round(p.downtime * 1000, 1), round(p.total_time, 4)
    (13.2, 60.0, 2.145)

    Uncapped (330 MiB/s, limit 300 ms: 99 MiB, checked every 50 ms) the estimate (128
    MiB, zero pages included) is under the threshold at the first measurement (0.1 s):
    the sync adds the 2.4 MiB dirtied, 1.6 x 47 + 2.4 = 77.6 MiB fit, and the guest
    pauses with 49.4 MiB to send: the 47 MiB left of round 0 at the passes' 330 MiB/s,
    the 2.4 MiB dirtied at 1.5 GiB/s.

    >>> p = plan_qemu(80 * MiB, 16 * MiB, 24 * MiB, 330 * MiB, 0.3, flush_speed=1536 * MiB,
    ...               first_copy_speed=330 * MiB, startup_cost=0.285, bandwidth_window=0.1,
    ...               ram=128 * MiB)
    >>> p.iterations, [round(r / MiB, 3) for r in p.rounds], round(p.remaining / MiB, 3)
    (3, [33.0], 49.4)
    >>> round(p.downtime * 1000, 1), round(p.total_time, 4)
    (144.0, 0.529)

    The same guest dirtying 60 MiB/s capped at 50 MiB/s never converges at 100 ms.
    With auto-converge, CPU-bound, the throttle rises at every second sync a second or
    more apart that saw more than half as much dirtied as sent, until the guest dirties
    slowly enough; paced by the clock (its writing needs 10 % of its CPU) it keeps
    dirtying 60 MiB/s until the throttle passes 90 %.

    >>> cpu = plan_qemu(80 * MiB, 16 * MiB, 60 * MiB, 50 * MiB, 0.1, flush_speed=330 * MiB,
    ...                 bandwidth_window=0.1, check_period=0.1, auto_converge=True,
    ...                 max_rounds=1000)
    >>> paced = plan_qemu(80 * MiB, 16 * MiB, 60 * MiB, 50 * MiB, 0.1, flush_speed=330 * MiB,
    ...                   bandwidth_window=0.1, check_period=0.1, auto_converge=True,
    ...                   max_rounds=1000, throttle_response=0.1)
    >>> cpu.converged, cpu.throttles[-1], cpu.iterations, round(cpu.total_time, 2)
    (True, 30, 29, 7.21)
    >>> paced.converged, paced.throttles[-1], round(paced.total_time, 2)
    (True, 99, 23.51)
    >>> plan_qemu(80 * MiB, 16 * MiB, 60 * MiB, 50 * MiB, 0.1, flush_speed=330 * MiB,
    ...           check_period=0.1).reason.value
    'not shrinking'
    """
    _check_plan_inputs(used_memory=used_memory, working_set=working_set,
                       dirty_rate=dirty_rate, max_downtime=max_downtime,
                       switchover_cost=switchover_cost,
                       speeds={"bandwidth": bandwidth, "flush_speed": flush_speed,
                               "first_copy_speed": first_copy_speed or flush_speed,
                               "check_period": check_period},
                       max_rounds=max_rounds)
    _check_non_negative("startup_cost", startup_cost, "s")
    _check_non_negative("bandwidth_window", bandwidth_window, "s")
    walk = RamLayout.of(ram, used_memory, layout)
    threshold = bandwidth * max_downtime

    rounds: list[float] = []
    times: list[float] = []
    throttles: list[int] = []
    unsent, bitmap = float(used_memory), 0.0  # round 0's rest; the pages to send again
    elapsed = 0.0  # since the first byte
    throttle = 0
    judge = ThrottleJudge()
    syncs = 1  # the sync that starts the migration
    before = math.inf  # what the previous sync left to send again
    while True:
        rate = responsive_dirty_rate(dirty_rate, throttle, throttle_response)
        throttles.append(throttle)
        delay = sync_delay(unsent, bitmap, bandwidth, threshold, step=check_period,
                           layout=walk, elapsed=elapsed,
                           not_before=max(0.0, bandwidth_window - elapsed))
        assert delay is not None  # bandwidth > 0
        sent = min(unsent + bitmap, bandwidth * delay)
        unsent, bitmap = after_sending(unsent, bitmap, sent)
        rounds.append(sent)
        times.append(delay)
        elapsed += delay
        dirtied = min(working_set, rate * delay)
        bitmap = after_sync(bitmap, dirtied, working_set)
        syncs += 1
        if walk.estimate(unsent) + bitmap <= threshold:
            reason = StopReason.CONVERGED
            break
        if auto_converge:
            throttle = judge.at_sync(elapsed, dirtied=dirtied, sent=sent, throttle=throttle)
        stuck = unsent == 0 and bitmap >= before
        if stuck and (not auto_converge or throttles[-1] >= THROTTLE_MAX):
            reason = StopReason.NOT_SHRINKING
            break
        if len(rounds) >= max_rounds:
            reason = StopReason.MAX_ROUNDS
            break
        if unsent == 0:
            before = bitmap

    precopy_time = math.fsum(times)
    precopy_bytes = math.fsum(rounds)
    pending = unsent + bitmap
    if reason is StopReason.CONVERGED:
        flush = unsent / (first_copy_speed or flush_speed) + bitmap / flush_speed
        downtime: float | None = flush + switchover_cost
        total_time = startup_cost + precopy_time + flush + switchover_cost
        transferred = precopy_bytes + pending
        syncs += 1  # the one at completion
    else:
        downtime = None
        total_time = startup_cost + precopy_time
        transferred = precopy_bytes
    return PrecopyPlan(
        rounds=tuple(rounds),
        round_times=tuple(times),
        remaining=pending,
        downtime=downtime,
        total_time=total_time,
        iterations=syncs,
        converged=reason is StopReason.CONVERGED,
        reason=reason,
        data_transferred=transferred,
        throttles=tuple(throttles),
    )
