"""The fluid network: topology, max-min fair rates, exact completion times, failures."""

from __future__ import annotations

import doctest
import math
import random
from collections.abc import Callable, Generator
from itertools import pairwise
from typing import Any

import networkx as nx
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from livemig.drivers import network
from livemig.drivers.network import (
    CORE_SWITCH,
    Flow,
    FlowCancelled,
    FlowState,
    FluidNetwork,
    build_topology,
    rack_switch,
)

LINK = 1.25e9  # 10 Gbit/s
GiB = 2**30


def two_hosts() -> tuple[simpy.Environment, FluidNetwork]:
    env = simpy.Environment()
    return env, FluidNetwork(env, build_topology([("a", None), ("b", None)], host_link=LINK))


def racks(per_rack: int, n_racks: int, uplink: float | None) -> list[tuple[str, str]]:
    return [(f"r{r}h{h}", f"r{r}") for r in range(n_racks) for h in range(per_rack)]


def at(env: simpy.Environment, when: float, action: Callable[[], Any]) -> None:
    """Run ``action`` at simulated time ``when``."""

    def proc() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(when - env.now)
        action()

    env.process(proc())


def finish_time(env: simpy.Environment, flow: Flow) -> float:
    env.run(flow.done)
    return env.now


def test_doctests() -> None:
    result = doctest.testmod(network)
    assert result.attempted > 0 and result.failed == 0


# -- topology ------------------------------------------------------------------------


def test_default_topology_is_one_switch_full_duplex() -> None:
    g = build_topology([("a", None), ("b", None), ("c", None)], host_link=LINK)
    assert set(g.nodes) == {"a", "b", "c", CORE_SWITCH}
    for host in "abc":
        assert g[host][CORE_SWITCH]["capacity"] == LINK
        assert g[CORE_SWITCH][host]["capacity"] == LINK
    assert g.number_of_edges() == 6
    assert g.nodes["a"]["kind"] == "host" and g.nodes[CORE_SWITCH]["kind"] == "switch"


def test_rack_topology() -> None:
    g = build_topology(racks(2, 3, None), host_link=LINK, uplink=5e9)
    assert g["r0h0"][rack_switch("r0")]["capacity"] == LINK
    assert g[rack_switch("r1")][CORE_SWITCH]["capacity"] == 5e9
    assert g[CORE_SWITCH][rack_switch("r1")]["capacity"] == 5e9
    assert nx.shortest_path(g, "r0h0", "r0h1") == ["r0h0", "sw:r0", "r0h1"]
    assert nx.shortest_path(g, "r0h0", "r2h1") == ["r0h0", "sw:r0", "sw:core", "sw:r2", "r2h1"]
    # no uplink given: a non-blocking (infinite) core
    g = build_topology(racks(2, 2, None), host_link=LINK)
    assert g["sw:r0"][CORE_SWITCH]["capacity"] == math.inf


def test_hosts_per_rack_fills_automatic_racks_in_order() -> None:
    hosts = [(f"h{i}", None) for i in range(5)]
    g = build_topology(hosts, host_link=LINK, uplink=5e9, hosts_per_rack=2)
    assert [g.nodes[f"h{i}"]["rack"] for i in range(5)] == [
        "rack0",
        "rack0",
        "rack1",
        "rack1",
        "rack2",
    ]
    assert g.has_edge("h4", "sw:rack2")


@pytest.mark.parametrize(
    ("hosts", "kwargs", "message"),
    [
        ([("a", None)], {"host_link": 0}, r"host_link\(=0 B/s\)"),
        ([("a", None)], {"host_link": LINK, "uplink": -1.0}, r"uplink\(=-1.0 B/s\)"),
        ([("a", None)], {"host_link": LINK, "hosts_per_rack": 0}, r"hosts_per_rack\(=0\)"),
        ([("a", None), ("a", None)], {"host_link": LINK}, r"'a'\) appears twice"),
        ([("sw:x", None)], {"host_link": LINK}, r"must not start with 'sw:'"),
        ([("a", "core")], {"host_link": LINK}, r"rack\(='core'\) of 'a'"),
    ],
)
def test_topology_validation(hosts: list, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_topology(hosts, **kwargs)


def test_paths_are_cached_by_switch_pair() -> None:
    env = simpy.Environment()
    net = FluidNetwork(env, build_topology(racks(10, 4, None), host_link=LINK, uplink=5e9))
    for src in range(10):
        for dst in range(10):
            net.path(f"r0h{src}", f"r3h{dst}")
    assert list(net._mid_paths) == [("sw:r0", "sw:r3")]
    assert net.path("r0h1", "r3h2") == ("r0h1", "sw:r0", "sw:core", "sw:r3", "r3h2")


def test_transfer_validation() -> None:
    env, net = two_hosts()
    with pytest.raises(ValueError, match="unknown node 'zz'"):
        net.transfer("a", "zz", 10)
    with pytest.raises(ValueError, match="same node"):
        net.transfer("a", "a", 10)
    with pytest.raises(ValueError, match=r"nbytes\(=-1 B\)"):
        net.transfer("a", "b", -1)
    with pytest.raises(ValueError, match=r"cap\(=0 B/s\)"):
        net.transfer("a", "b", 10, cap=0)
    with pytest.raises(ValueError, match="no link zz->a"):
        net.set_link_capacity("zz", "a", 0)


# -- rates ---------------------------------------------------------------------------


def test_two_flows_share_a_link_equally() -> None:
    env, net = two_hosts()
    f1 = net.transfer("a", "b", 1.25e9)
    f2 = net.transfer("a", "b", 1.25e9)
    assert f1.rate == f2.rate == 6.25e8
    assert finish_time(env, f1) == 2.0
    assert f2.state is FlowState.COMPLETED and f2.finished_at == 2.0
    assert f1.delivered() == f2.delivered() == 1.25e9
    assert f1.expected_finish == 2.0 and f1.rate == 0.0 and f1.remaining() == 0.0


def test_cap_leaves_the_rest_to_the_other_flow() -> None:
    env, net = two_hosts()
    f1 = net.transfer("a", "b", 1e10)
    f2 = net.transfer("a", "b", 1e10, cap=1e8)
    assert f2.rate == 1e8 and f1.rate == pytest.approx(1.15e9, rel=1e-15)
    assert f2.cap == 1e8 and f1.cap is None


def test_full_duplex_directions_do_not_share() -> None:
    env, net = two_hosts()
    ab = net.transfer("a", "b", 2.5e9)
    ba = net.transfer("b", "a", 2.5e9)
    assert ab.rate == ba.rate == LINK
    assert finish_time(env, ab) == 2.0 and ba.finished_at == 2.0


def test_rate_change_mid_transfer_by_hand() -> None:
    # A alone for 1 s (1.25e9 of its 2.5e9 bytes), then B (3.125e8 bytes) joins:
    # both at 6.25e8, B done at 1.5 s, A has 1.25e9 + 3.125e8 and sends the
    # last 9.375e8 alone at 1.25e9 in 0.75 s: A done at 2.25 s.
    env, net = two_hosts()
    a = net.transfer("a", "b", 2.5e9)
    b: list[Flow] = []
    at(env, 1.0, lambda: b.append(net.transfer("a", "b", 3.125e8)))
    env.run(until=1.25)
    assert a.rate == b[0].rate == 6.25e8
    assert a.delivered() == pytest.approx(1.25e9 + 0.25 * 6.25e8, rel=1e-15)
    assert a.expected_finish == pytest.approx(1.25 + (2.5e9 - a.delivered()) / 6.25e8)
    assert finish_time(env, b[0]) == pytest.approx(1.5, rel=1e-12)
    assert a.delivered() == pytest.approx(1.5625e9, rel=1e-15)
    assert finish_time(env, a) == pytest.approx(2.25, rel=1e-12)


def test_classic_max_min_with_two_bottlenecks() -> None:
    # X crosses links 1 (cap 10) and 2 (cap 4); Y only link 1, Z only link 2.
    # Link 2 saturates first at 2 each (X, Z); Y takes the rest of link 1: 8.
    g = nx.DiGraph()
    g.add_edge("A", "M", capacity=10.0)
    g.add_edge("M", "B", capacity=4.0)
    g.add_edge("M", "D", capacity=100.0)
    g.add_edge("E", "M", capacity=100.0)
    env = simpy.Environment()
    net = FluidNetwork(env, g)
    x = net.transfer("A", "B", 100)
    y = net.transfer("A", "D", 100)
    z = net.transfer("E", "B", 100)
    assert (x.rate, y.rate, z.rate) == (2.0, 8.0, 2.0)
    z.set_cap(1.0)  # now link 2 leaves 3 to X; link 1: Y gets 7
    assert (x.rate, y.rate, z.rate) == (3.0, 7.0, 1.0)
    z.set_cap(None)
    assert (x.rate, y.rate, z.rate) == (2.0, 8.0, 2.0)


def test_rack_uplink_is_the_bottleneck() -> None:
    # uplinks 2e9: two flows out of rack r0 get 1e9 each (< 1.25e9 host links);
    # a third one makes it 2e9/3; an intra-rack flow does not touch the uplink.
    env = simpy.Environment()
    net = FluidNetwork(env, build_topology(racks(4, 3, None), host_link=LINK, uplink=2e9))
    f1 = net.transfer("r0h0", "r1h0", 1e12)
    f2 = net.transfer("r0h1", "r1h1", 1e12)
    assert f1.rate == f2.rate == 1e9
    f3 = net.transfer("r0h2", "r2h0", 1e12)
    assert f1.rate == f2.rate == f3.rate == pytest.approx(2e9 / 3, rel=1e-15)
    local = net.transfer("r0h3", "r0h0", 1e12)
    assert local.rate == LINK
    assert f1.rate == pytest.approx(2e9 / 3, rel=1e-15)
    # the downlink into r1 carries f1, f2 only: no constraint below 2e9
    assert [f.id for f in net.link_flows("sw:core", "sw:r1")] == [f1.id, f2.id]
    f3.cancel()
    assert f1.rate == f2.rate == 1e9


def test_flows_limited_elsewhere_leave_the_shared_link_to_others() -> None:
    # one switch; a sends to b and c, d sends to c: c's downlink is shared by
    # a->c and d->c, a's uplink by a->b and a->c.
    env = simpy.Environment()
    hosts = [(h, None) for h in "abcd"]
    net = FluidNetwork(env, build_topology(hosts, host_link=LINK))
    ab = net.transfer("a", "b", 1e12, cap=2.5e8)
    ac = net.transfer("a", "c", 1e12)
    dc = net.transfer("d", "c", 1e12)
    # a's uplink: ab capped at 2.5e8 leaves 1e9; c's downlink splits 6.25e8/6.25e8
    assert (ab.rate, ac.rate, dc.rate) == (2.5e8, 6.25e8, 6.25e8)
    dc.cancel()
    assert (ab.rate, ac.rate) == (2.5e8, 1e9)


# -- completions, cancel, link failures --------------------------------------------


def test_zero_byte_flow_is_done_at_once() -> None:
    env, net = two_hosts()
    f = net.transfer("a", "b", 0)
    assert f.done.triggered and f.state is FlowState.COMPLETED and f.delivered() == 0
    env.run()
    assert env.now == 0


def test_done_value_is_the_flow_and_waiters_resume_at_the_exact_time() -> None:
    env, net = two_hosts()
    seen: list[tuple[float, Flow]] = []

    def waiter() -> Generator[simpy.Event, Any, None]:
        flow = net.transfer("a", "b", 3e9, cap=1e9)
        got = yield flow.done
        seen.append((env.now, got))

    env.process(waiter())
    env.run()
    assert seen[0][0] == 3.0 and seen[0][1].nbytes == 3e9


def test_cancel_fails_done_and_frees_the_link() -> None:
    env, net = two_hosts()
    a = net.transfer("a", "b", 2.5e9)
    b = net.transfer("a", "b", 2.5e9)
    caught: list[tuple[float, str]] = []

    def waiter() -> Generator[simpy.Event, Any, None]:
        try:
            yield b.done
        except FlowCancelled as exc:
            caught.append((env.now, str(exc)))

    env.process(waiter())
    at(env, 1.0, b.cancel)
    at(env, 1.5, b.cancel)  # idempotent
    env.run()
    assert caught == [(1.0, "flow 1 a->b cancelled")]
    assert b.state is FlowState.CANCELLED and b.finished_at == 1.0
    assert b.delivered() == 6.25e8 and b.rate == 0.0
    assert b.remaining() == 2.5e9 - 6.25e8
    # a: 6.25e8 by t=1, then 1.875e9 alone at 1.25e9 -> 1.5 s more
    assert a.finished_at == 2.5


def test_cancel_without_waiter_does_not_crash_the_simulation() -> None:
    env, net = two_hosts()
    f = net.transfer("a", "b", 1e9)
    f.cancel()
    env.run()
    assert not f.done.ok


def test_link_down_stalls_flows_and_up_resumes_them() -> None:
    env, net = two_hosts()
    f = net.transfer("a", "b", 1.25e9)
    other = net.transfer("b", "a", 1.25e9)  # other direction: unaffected
    at(env, 0.5, lambda: net.set_link_capacity("a", CORE_SWITCH, 0))
    at(env, 2.5, lambda: net.set_link_capacity("a", CORE_SWITCH, None))  # restore
    env.run(until=1.5)  # (events at exactly `until` are not processed)
    assert f.rate == 0.0 and f.delivered() == 6.25e8 and f.expected_finish == math.inf
    assert not f.done.triggered
    assert net.link_capacity("a", CORE_SWITCH) == 0
    assert other.state is FlowState.COMPLETED and other.finished_at == 1.0
    env.run(until=2.4)
    assert f.delivered() == 6.25e8
    assert finish_time(env, f) == 3.0
    assert net.link_capacity("a", CORE_SWITCH) == LINK


def test_link_down_shares_go_to_the_flows_still_moving() -> None:
    env = simpy.Environment()
    net = FluidNetwork(env, build_topology([(h, None) for h in "abc"], host_link=LINK))
    ab = net.transfer("a", "b", 1e12)
    ac = net.transfer("a", "c", 1e12)
    assert ab.rate == ac.rate == 6.25e8
    net.set_link_capacity(CORE_SWITCH, "c", 0, both_ways=True)
    assert ac.rate == 0.0 and ab.rate == LINK
    net.set_link_capacity(CORE_SWITCH, "c", 2.5e8)  # degraded, not down
    assert ac.rate == 2.5e8 and ab.rate == LINK - 2.5e8
    assert net.link_capacity("c", CORE_SWITCH) == 0


def test_set_cap_mid_transfer_keeps_the_bytes_sent() -> None:
    env, net = two_hosts()
    f = net.transfer("a", "b", 2e9, cap=5e8)
    at(env, 2.0, lambda: f.set_cap(1e9))  # 1e9 sent; 1e9 left at 1e9/s
    assert finish_time(env, f) == 3.0
    f.set_cap(1.0)  # no effect on a finished flow
    with pytest.raises(ValueError, match=r"cap\(=-5 B/s\)"):
        f.set_cap(-5)


def test_many_flows_finishing_together_complete_at_the_same_instant() -> None:
    env = simpy.Environment()
    net = FluidNetwork(env, build_topology([(f"h{i}", None) for i in range(6)], host_link=LINK))
    flows = [net.transfer(f"h{i}", "h0", 1e9) for i in range(1, 6)]
    assert all(f.rate == LINK / 5 for f in flows)
    env.run()
    assert {f.finished_at for f in flows} == {4.0}


def test_delivered_is_the_integral_of_the_rate() -> None:
    env, net = two_hosts()
    a = net.transfer("a", "b", 1e10)
    readings: list[tuple[float, float]] = []

    def sample() -> Generator[simpy.Event, Any, None]:
        for _ in range(8):
            yield env.timeout(0.5)
            readings.append((env.now, a.delivered()))

    env.process(sample())
    at(env, 1.0, lambda: net.transfer("a", "b", 1e9, cap=2.5e8))  # -> a at 1e9/s
    env.run(until=4.0)
    expected = {0.5: 6.25e8, 1.0: 1.25e9, 1.5: 1.75e9, 2.0: 2.25e9, 3.0: 3.25e9}
    for t, got in readings:
        if t in expected:
            assert got == pytest.approx(expected[t], rel=1e-15)
    # the capped flow is done at 1 + 4 = 5 s, so at 4 s a is still at 1e9/s
    assert a.delivered() == pytest.approx(4.25e9, rel=1e-15)


# -- reference model: naive global water-filling and event-driven simulation -----------


def reference_rates(
    paths: list[list[tuple[str, str]]], caps: list[float | None], capacity: dict
) -> list[float]:
    """Progressive filling over every link and flow, no shortcuts."""
    n = len(paths)
    rates = [0.0] * n
    frozen = [False] * n
    while not all(frozen):
        level = math.inf
        for link, cap in capacity.items():
            users = [i for i in range(n) if not frozen[i] and link in paths[i]]
            if users and cap != math.inf:
                used = sum(rates[i] for i in range(n) if frozen[i] and link in paths[i])
                level = min(level, max(0.0, cap - used) / len(users))
        for i in range(n):
            if not frozen[i] and caps[i] is not None:
                level = min(level, caps[i])
        assert level < math.inf
        tight = set()
        for link, cap in capacity.items():
            users = [i for i in range(n) if not frozen[i] and link in paths[i]]
            if users and cap != math.inf:
                used = sum(rates[i] for i in range(n) if frozen[i] and link in paths[i])
                if max(0.0, cap - used) / len(users) <= level * (1 + 1e-12):
                    tight.update(users)
        for i in range(n):
            if not frozen[i] and (
                i in tight or (caps[i] is not None and caps[i] <= level * (1 + 1e-12))
            ):
                rates[i] = level
                frozen[i] = True
    return rates


def assert_max_min_fair(net: FluidNetwork) -> None:
    """Feasible, and every flow is at its cap or has a saturated link where it is largest."""
    flows = net.active_flows()
    load: dict[tuple[str, str], float] = {}
    for f in flows:
        for u, v in pairwise(f.path):
            load[(u, v)] = load.get((u, v), 0.0) + f.rate
    for (u, v), total in load.items():
        assert total <= net.link_capacity(u, v) * (1 + 1e-9) + 1e-6
    for f in flows:
        if f.cap is not None and f.rate >= f.cap * (1 - 1e-9):
            continue
        links = list(pairwise(f.path))
        assert any(
            load[link] >= net.link_capacity(*link) * (1 - 1e-9)
            and all(g.rate <= f.rate * (1 + 1e-9) + 1e-6 for g in net.link_flows(*link))
            for link in links
        ), f"flow {f.id} has no bottleneck"


# A scenario: (time, action, args) with actions
#   "start" (i, src, dst, nbytes, cap), "cancel" (i,), "cap" (i, cap),
#   "link" ((u, v), capacity or None for the original)
Action = tuple[float, str, tuple]


def reference_run(graph: nx.DiGraph, actions: list[Action]) -> dict[int, tuple[str, float]]:
    """Event-driven fluid simulation recomputing every rate at every event.

    Returns flow i -> ("completed", time) / ("cancelled", time) / ("active", nan).
    """
    original = {(u, v): d["capacity"] for u, v, d in graph.edges(data=True)}
    capacity = dict(original)
    pending = sorted(actions, key=lambda a: a[0])
    paths: dict[int, list[tuple[str, str]]] = {}
    left: dict[int, float] = {}
    size: dict[int, float] = {}
    caps: dict[int, float | None] = {}
    active: list[int] = []
    outcome: dict[int, tuple[str, float]] = {}
    now = 0.0
    while pending or active:
        while pending and pending[0][0] <= now:
            _, action, args = pending.pop(0)
            if action == "start":
                i, src, dst, nbytes, cap = args
                p = nx.shortest_path(graph, src, dst)
                paths[i], left[i], size[i], caps[i] = list(pairwise(p)), nbytes, nbytes, cap
                active.append(i)
                outcome[i] = ("active", math.nan)
            elif action == "cancel" and args[0] in active:
                active.remove(args[0])
                outcome[args[0]] = ("cancelled", now)
            elif action == "cap" and args[0] in caps:
                caps[args[0]] = args[1]
            elif action == "link":
                link, value = args
                capacity[link] = original[link] if value is None else value
        rates = reference_rates([paths[i] for i in active], [caps[i] for i in active], capacity)
        horizon = pending[0][0] if pending else math.inf
        step = min([left[i] / r for i, r in zip(active, rates, strict=True) if r > 0] + [math.inf])
        dt = min(step, horizon - now)
        if dt == math.inf:
            break  # the rest is stalled for good
        now += dt
        still = []
        for i, r in zip(active, rates, strict=True):
            left[i] -= r * dt
            if left[i] <= 1e-9 * size[i]:
                outcome[i] = ("completed", now)
            else:
                still.append(i)
        active = still
    return outcome


def simulate(
    graph: nx.DiGraph, actions: list[Action], *, check: bool = True
) -> tuple[FluidNetwork, dict[int, Flow]]:
    env = simpy.Environment()
    net = FluidNetwork(env, graph)
    flows: dict[int, Flow] = {}

    def act(action: str, args: tuple) -> None:
        if action == "start":
            i, src, dst, nbytes, cap = args
            flows[i] = net.transfer(src, dst, nbytes, cap)
        elif action == "cancel" and args[0] in flows:
            flows[args[0]].cancel()
        elif action == "cap" and args[0] in flows:
            flows[args[0]].set_cap(args[1])
        elif action == "link":
            net.set_link_capacity(*args[0], args[1])
        if check:
            assert_max_min_fair(net)

    for when, action, args in sorted(actions, key=lambda a: a[0]):
        at(env, when, lambda a=action, x=args: act(a, x))
    env.run(until=1e5)
    return net, flows


def random_actions(
    rng: random.Random, graph: nx.DiGraph, n: int, disturbances: int = 0
) -> list[Action]:
    hosts = [h for h, kind in graph.nodes(data="kind") if kind == "host"]
    links = list(graph.edges)
    actions: list[Action] = []
    for i in range(n):
        src, dst = rng.sample(hosts, 2)
        cap = rng.choice([None, None, 3e8, 1e9])
        start = rng.choice([0.0, 0.0, 0.5, 1.0, 2.5]) if not disturbances else rng.random() * 10
        actions.append((start, "start", (i, src, dst, rng.randint(1, 8) * 1e9, cap)))
    for _ in range(disturbances):
        when = rng.random() * 20
        kind = rng.choice(["cancel", "cap", "link", "link"])
        if kind == "cancel":
            actions.append((when, "cancel", (rng.randrange(n),)))
        elif kind == "cap":
            actions.append((when, "cap", (rng.randrange(n), rng.choice([None, 1e8, 6e8]))))
        else:
            actions.append((when, "link", (rng.choice(links), rng.choice([0.0, 5e8, None]))))
    return actions


topologies = st.builds(
    lambda n_racks, per_rack, uplink, link: build_topology(
        racks(per_rack, n_racks, None), host_link=link, uplink=uplink
    ),
    st.integers(1, 3),
    st.integers(2, 4),
    st.sampled_from([None, 1e9, 2e9, 5e9]),
    st.sampled_from([1.25e9, 1e9]),
)


def assert_same_as_reference(graph: nx.DiGraph, actions: list[Action]) -> None:
    net, flows = simulate(graph, actions)
    want = reference_run(graph, actions)
    assert set(flows) == set(want)
    for i, flow in flows.items():
        state, when = want[i]
        assert flow.state == state, (i, flow)
        if state == "completed":
            assert flow.delivered() == flow.nbytes
            assert flow.finished_at == pytest.approx(when, rel=1e-9), i
        elif state == "cancelled":
            assert flow.finished_at == pytest.approx(when, rel=1e-12)
        else:
            assert flow.rate == 0.0  # stalled behind a link that stayed down


@settings(max_examples=40, deadline=None)
@given(graph=topologies, seed=st.integers(0, 10**6), n=st.integers(1, 12))
def test_matches_the_reference_simulation(graph: nx.DiGraph, seed: int, n: int) -> None:
    assert_same_as_reference(graph, random_actions(random.Random(seed), graph, n))


@settings(max_examples=60, deadline=None)
@given(graph=topologies, seed=st.integers(0, 10**6), n=st.integers(1, 15))
def test_matches_the_reference_with_cancels_caps_and_link_failures(
    graph: nx.DiGraph, seed: int, n: int
) -> None:
    rng = random.Random(seed)
    assert_same_as_reference(graph, random_actions(rng, graph, n, rng.randint(1, 6)))


def test_two_links_that_only_look_redundant_together() -> None:
    # Regression: f1 crosses uplinks r0->core and core->r1 (1e9 each) and f2 the
    # same two plus a host link that is down. Each uplink alone would be
    # redundant given the other; together they still limit f1 to 1e9.
    graph = build_topology(racks(2, 2, None), host_link=LINK, uplink=1e9)
    env = simpy.Environment()
    net = FluidNetwork(env, graph)
    f1 = net.transfer("r0h0", "r1h0", 1e12)
    f2 = net.transfer("r0h1", "r1h1", 1e12)
    assert f1.rate == f2.rate == 5e8
    net.set_link_capacity("r0h1", "sw:r0", 0)
    assert f2.rate == 0 and f1.rate == 1e9


@settings(max_examples=40, deadline=None)
@given(graph=topologies, seed=st.integers(0, 10**6), n=st.integers(1, 25))
def test_rates_are_max_min_fair(graph: nx.DiGraph, seed: int, n: int) -> None:
    rng = random.Random(seed)
    env = simpy.Environment()
    net = FluidNetwork(env, graph)
    for _, _, (_, src, dst, nbytes, cap) in random_actions(rng, graph, n):
        net.transfer(src, dst, nbytes, cap)
    assert_max_min_fair(net)
    flows = net.active_flows()
    capacity = {(u, v): d["capacity"] for u, v, d in graph.edges(data=True)}
    want = reference_rates(
        [list(pairwise(f.path)) for f in flows], [f.cap for f in flows], capacity
    )
    assert [f.rate for f in flows] == pytest.approx(want, rel=1e-9)


def test_deterministic_bit_for_bit() -> None:
    graph = build_topology(racks(5, 4, None), host_link=LINK, uplink=2.5e9)
    hosts = [h for h, _ in racks(5, 4, None)]

    def run() -> list[tuple[int, float, float]]:
        rng = random.Random(7)
        jobs = [
            (rng.random() * 20, *rng.sample(hosts, 2), rng.randint(1, 16) * GiB, None)
            for _ in range(150)
        ]
        env = simpy.Environment()
        net = FluidNetwork(env, graph)
        flows: list[Flow] = []
        for start, src, dst, size, cap in sorted(jobs):
            at(
                env,
                start,
                lambda s=src, d=dst, n=size, c=cap: flows.append(net.transfer(s, d, n, c)),
            )
        at(env, 10.0, lambda: net.set_link_capacity("sw:r1", CORE_SWITCH, 0))
        at(env, 15.0, lambda: net.set_link_capacity("sw:r1", CORE_SWITCH, None))
        at(env, 12.0, lambda: flows[3].cancel())
        env.run()
        return [(f.id, f.finished_at, f.delivered()) for f in flows]

    first, second = run(), run()
    assert first == second
    assert len(first) == 150


def test_flows_never_finish_early() -> None:
    # a long run with many rate changes: every flow's bytes add up exactly
    graph = build_topology(racks(4, 5, None), host_link=LINK, uplink=3e9)
    hosts = [h for h, _ in racks(4, 5, None)]
    rng = random.Random(3)
    actions: list[Action] = [
        (rng.random() * 50, "start", (i, *rng.sample(hosts, 2), rng.randint(1, 16) * GiB, None))
        for i in range(200)
    ]
    net, flows = simulate(graph, actions, check=False)
    assert net.active_flows() == ()
    for f in flows.values():
        assert f.delivered() == f.nbytes
        # no flow can beat its own host link
        assert f.finished_at - f.started_at >= f.nbytes / LINK * (1 - 1e-12)
    assert len(net._heap) <= 64  # stale completion entries do not pile up


def test_on_rate_is_called_with_the_current_rate_after_each_change() -> None:
    """The qemu model's switchover check listens: 1.25e9 alone, 6.25e8 while a second
    flow shares the link, 1.25e9 again once it ends; no call when the rate is unchanged."""
    env = simpy.Environment()
    net = FluidNetwork(env, build_topology([("a", None), ("b", None)], host_link=1.25e9))
    seen: list[tuple[float, float]] = []
    flow = net.transfer("a", "b", 5e9)
    flow.on_rate = lambda f: seen.append((env.now, f.rate))
    env.run(until=1.0)
    net.transfer("a", "b", 6.25e8)
    env.run(until=5.0)
    assert seen == [(0.0, 1.25e9), (1.0, 6.25e8), (2.0, 1.25e9)]
