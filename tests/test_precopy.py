"""Pre-copy arithmetic: closed-form examples, edge cases and properties."""

from __future__ import annotations

import doctest
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livemig.drivers import precopy
from livemig.drivers.precopy import (
    DEFAULT_MAX_ROUNDS,
    StopReason,
    can_switch_over,
    dirty_after,
    plan,
)

GiB, MiB = 2**30, 2**20
B = 1.25e9  # 10 Gbit/s


def test_doctests() -> None:
    result = doctest.testmod(precopy)
    assert result.attempted > 0 and result.failed == 0


def test_dirty_after_is_capped_by_the_working_set() -> None:
    assert dirty_after(0.5, working_set=GiB, dirty_rate=100 * MiB) == 50 * MiB
    assert dirty_after(100.0, working_set=GiB, dirty_rate=100 * MiB) == GiB
    assert dirty_after(3.0, working_set=GiB, dirty_rate=0.0) == 0.0
    with pytest.raises(ValueError, match=r"dirty_rate\(=-1"):
        dirty_after(1.0, GiB, -1)


def test_can_switch_over_boundary_and_zero_bandwidth() -> None:
    assert can_switch_over(6.25e8, B, 0.5)
    assert not can_switch_over(6.25e8 + 1, B, 0.5)
    assert can_switch_over(0, 0.0, 0.5)  # a down link lets only nothing through
    assert not can_switch_over(1, 0.0, 0.5)
    with pytest.raises(ValueError, match=r"bandwidth\(=-3"):
        can_switch_over(1, -3, 0.5)


def test_one_round_when_round_zero_dirties_little() -> None:
    # t0 = 4 GiB / 1.25e9 = 3.4359738368 s; r0 = 100 MiB/s * t0 = 360287970.1898 B
    p = plan(4 * GiB, GiB, 100 * MiB, B, 0.5)
    t0 = 4 * GiB / B
    r0 = 100 * MiB * t0
    assert p.converged and p.reason is StopReason.CONVERGED
    assert p.iterations == 1
    assert p.rounds == (4 * GiB,)
    assert p.round_times == (t0,)
    assert p.remaining == r0
    assert p.downtime == pytest.approx(r0 / B, rel=1e-15)
    assert p.total_time == pytest.approx(t0 + r0 / B, rel=1e-15)
    assert p.data_transferred == 4 * GiB + r0


def test_several_rounds_by_hand() -> None:
    # T = 10 ms -> B*T = 12.5 MB. Each round is D/B = 0.08388608 of the previous one.
    p = plan(4 * GiB, GiB, 100 * MiB, B, 0.01)
    t0 = 4 * GiB / B
    d1 = 100 * MiB * t0  # 360 MB > 12.5 MB
    t1 = d1 / B
    d2 = 100 * MiB * t1  # 30.2 MB > 12.5 MB
    t2 = d2 / B
    r2 = 100 * MiB * t2  # 2.5 MB <= 12.5 MB: switch over
    assert p.iterations == 3 and p.converged
    assert p.rounds == (4 * GiB, d1, d2)
    assert p.round_times == (t0, t1, t2)
    assert p.remaining == r2
    assert p.downtime == pytest.approx(r2 / B)
    assert p.total_time == pytest.approx(t0 + t1 + t2 + r2 / B)


def test_switchover_cost_adds_to_downtime_not_to_the_test() -> None:
    base = plan(4 * GiB, GiB, 100 * MiB, B, 0.01)
    costly = plan(4 * GiB, GiB, 100 * MiB, B, 0.01, switchover_cost=0.05)
    assert costly.rounds == base.rounds
    assert costly.downtime == pytest.approx(base.downtime + 0.05)
    assert costly.total_time == pytest.approx(base.total_time + 0.05)
    assert costly.data_transferred == base.data_transferred


def test_working_set_cap_then_geometric_shrink() -> None:
    # D*t0 = 5e8*3.44 s >> W, so round 1 sends exactly W; then D/B = 0.4 per round.
    p = plan(4 * GiB, GiB, 5e8, B, 0.05)
    assert p.rounds[1] == GiB
    assert p.rounds[2] == pytest.approx(GiB * 0.4)
    assert p.converged
    assert p.remaining <= B * 0.05


def test_not_converging_when_dirty_rate_reaches_bandwidth() -> None:
    p = plan(4 * GiB, GiB, 2e9, B, 0.5)
    assert not p.converged and p.reason is StopReason.NOT_SHRINKING
    assert p.iterations == 2  # round 1 resent W and W was dirty again
    assert p.rounds == (4 * GiB, GiB)
    assert p.remaining == GiB
    assert p.downtime is None
    assert p.total_time == pytest.approx((4 * GiB + GiB) / B)
    assert p.data_transferred == 5 * GiB

    # D == B exactly, small working set: round 1 resends W, W is dirty again
    p = plan(4 * GiB, GiB // 2, B, B, 0.01)
    assert p.reason is StopReason.NOT_SHRINKING
    assert p.iterations == 2 and p.remaining == p.rounds[1] == GiB // 2


def test_not_shrinking_already_after_round_zero() -> None:
    # W >= U and D >= B: round 0 leaves all of U dirty
    p = plan(GiB, GiB, 3e9, B, 0.1)
    assert p.reason is StopReason.NOT_SHRINKING
    assert p.iterations == 1 and p.remaining == GiB


def test_max_rounds_caps_slow_convergence() -> None:
    # D/B = 0.99: converges in theory but needs hundreds of rounds
    p = plan(4 * GiB, GiB, 0.99 * B, B, 0.001)
    assert p.reason is StopReason.MAX_ROUNDS and not p.converged
    assert p.iterations == DEFAULT_MAX_ROUNDS == len(p.rounds)
    assert p.downtime is None
    assert p.total_time == pytest.approx(sum(p.round_times))
    assert plan(4 * GiB, GiB, 0.99 * B, B, 0.001, max_rounds=3).iterations == 3


def test_zero_max_downtime_never_converges_while_dirtying() -> None:
    p = plan(GiB, GiB, 1e8, B, 0.0)
    assert p.reason is StopReason.MAX_ROUNDS


def test_idle_guest_and_empty_guest() -> None:
    p = plan(4 * GiB, GiB, 0.0, B, 0.0)  # D = 0: nothing dirty, even T = 0 fits
    assert p.converged and p.iterations == 1 and p.remaining == 0 and p.downtime == 0
    assert p.total_time == 4 * GiB / B
    p = plan(0, GiB, 1e9, B, 0.5, switchover_cost=0.02)  # U = 0
    assert p.converged and p.iterations == 1 and p.round_times == (0.0,)
    assert p.downtime == 0.02 and p.total_time == 0.02 and p.data_transferred == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bandwidth": 0}, r"bandwidth\(=0 B/s\) must be > 0"),
        ({"bandwidth": -3e6}, r"bandwidth\(=-3000000.0 B/s\) must be > 0"),
        ({"bandwidth": math.nan}, r"bandwidth\(=nan B/s\)"),
        ({"used_memory": -1}, r"used_memory\(=-1 B\)"),
        ({"max_downtime": -0.1}, r"max_downtime\(=-0.1 s\)"),
        ({"switchover_cost": -1.0}, r"switchover_cost\(=-1.0 s\)"),
        ({"max_rounds": 0}, r"max_rounds\(=0\)"),
    ],
)
def test_invalid_arguments_name_the_value(kwargs: dict, message: str) -> None:
    args = {
        "used_memory": GiB,
        "working_set": GiB,
        "dirty_rate": 1e8,
        "bandwidth": B,
        "max_downtime": 0.5,
    }
    with pytest.raises(ValueError, match=message):
        plan(**(args | kwargs))


sizes = st.integers(min_value=0, max_value=64 * GiB)
rates = st.floats(min_value=0.0, max_value=5e9, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(
    used=sizes,
    working=sizes,
    dirty=rates,
    bandwidth=st.floats(min_value=1e6, max_value=5e9),
    downtime=st.floats(min_value=0.0, max_value=2.0),
    cost=st.floats(min_value=0.0, max_value=0.5),
    max_rounds=st.integers(min_value=1, max_value=40),
)
def test_plan_properties(
    used: int,
    working: int,
    dirty: float,
    bandwidth: float,
    downtime: float,
    cost: float,
    max_rounds: int,
) -> None:
    p = plan(used, working, dirty, bandwidth, downtime, cost, max_rounds)
    assert 1 <= p.iterations == len(p.rounds) == len(p.round_times) <= max_rounds
    assert p.rounds[0] == used
    for i, (sent, seconds) in enumerate(zip(p.rounds, p.round_times, strict=True)):
        assert seconds == sent / bandwidth
        if i:
            assert sent == dirty_after(p.round_times[i - 1], working, dirty)
            assert sent < p.rounds[i - 1]  # a round is only sent if the last one shrank
    assert p.remaining == dirty_after(p.round_times[-1], working, dirty)
    assert p.converged == can_switch_over(p.remaining, bandwidth, downtime)
    precopy_time = sum(p.rounds) / bandwidth
    if p.converged:
        assert p.reason is StopReason.CONVERGED
        assert p.downtime == pytest.approx(p.remaining / bandwidth + cost, rel=1e-12)
        assert p.downtime <= downtime + cost + 1e-12
        assert p.total_time == pytest.approx(precopy_time + p.downtime, rel=1e-12)
        assert p.data_transferred == pytest.approx(sum(p.rounds) + p.remaining, rel=1e-12)
    else:
        assert p.downtime is None
        assert p.remaining > bandwidth * downtime
        assert p.total_time == pytest.approx(precopy_time, rel=1e-12)
        if p.reason is StopReason.NOT_SHRINKING:
            assert p.remaining >= p.rounds[-1]
        else:
            assert p.reason is StopReason.MAX_ROUNDS and p.iterations == max_rounds
    if dirty < bandwidth and downtime > 0 and max_rounds >= DEFAULT_MAX_ROUNDS:
        # shrinking geometrically by D/B: only slow ratios may hit the cap
        assert p.reason is not StopReason.NOT_SHRINKING
