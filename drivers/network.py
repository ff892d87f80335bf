"""Fluid link model: transfers share a networkx topology max-min fairly, on SimPy.

Every transfer is a *flow* along a fixed path of directed links. Links are full
duplex: each direction is its own directed edge with its own ``capacity``
(bytes/s), so A->B and B->A traffic never compete. At any instant the active
flows get max-min fair rates (progressive filling): every flow's rate grows at
the same pace until a link on its path is saturated or it reaches its own
``cap`` (the migration's bandwidth limit); then it is frozen and the others keep
growing. Rates are recomputed only when a flow starts, completes, is cancelled
or changes cap, or a link changes capacity, and only for the flows connected to
the change (flows sharing links, transitively; a link that can never be
saturated, given its flows' caps and the links they have to themselves, does
not connect them). All the changes of one simulated instant share one
recomputation, done at the end of the instant or as soon as a ``rate`` is read.
A flow's ``on_rate`` callback, when set, is called after each recomputation that
changed its rate (the migration job re-arms its switchover check with it).
Between recomputations a flow delivers at a constant rate, so ``delivered()``
is the exact integral of its rate, and its completion is an event at the
computed time, not a tick (exact up to float rounding of the clock).

Worked example: two flows on one 1.25e9 B/s (10 Gbit/s) link get 6.25e8 each;
capping one at 1e8 leaves 1.15e9 to the other. When the capped flow has sent
its 1e8 bytes (at t = 1 s) the other one, which has 1.15e9 of its 2.3e9 bytes
left, gets the whole link and finishes 0.92 s later.

>>> import simpy
>>> env = simpy.Environment()
>>> net = FluidNetwork(env, build_topology([("a", None), ("b", None)], host_link=1.25e9))
>>> f1, f2 = net.transfer("a", "b", 2.3e9), net.transfer("a", "b", 1e8)
>>> f1.rate, f2.rate
(625000000.0, 625000000.0)
>>> f2.set_cap(1e8)
>>> f1.rate, f2.rate
(1150000000.0, 100000000.0)
>>> _ = env.run(f2.done); env.now, f1.delivered(), f1.rate
(1.0, 1150000000.0, 1250000000.0)
>>> _ = env.run(f1.done); env.now
1.92

Reverse traffic uses the other direction of each link and does not slow f1:

>>> env = simpy.Environment()
>>> net = FluidNetwork(env, build_topology([("a", None), ("b", None)], host_link=1.25e9))
>>> net.transfer("a", "b", 1e9).rate, net.transfer("b", "a", 1e9).rate
(1250000000.0, 1250000000.0)

Cancel and link failure, the two ways a flow stops without completing:

* :meth:`Flow.cancel` stops the flow at once: ``delivered()`` is frozen at what
  had arrived, ``rate`` becomes 0 and ``done`` *fails* with
  :class:`FlowCancelled` (the failure is pre-defused, so a cancelled flow that
  nobody waits on does not crash the simulation; a process that yields on
  ``done`` gets the exception). Cancelling a finished flow does nothing.
* :meth:`FluidNetwork.set_link_capacity` with 0 takes a link down: the flows on
  it get rate 0 and make no progress (``done`` stays pending; nothing is divided
  by zero) until the link comes back up, then they resume where they stopped.
  Paths are fixed at :meth:`FluidNetwork.transfer` time: there is no rerouting
  (the topologies of :func:`build_topology` are trees and have no alternative).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from itertools import pairwise

import networkx as nx
import simpy

CORE_SWITCH = "sw:core"
SWITCH_PREFIX = "sw:"

_INF = math.inf


def rack_switch(rack: str) -> str:
    """The node name of ``rack``'s top-of-rack switch."""
    return f"{SWITCH_PREFIX}{rack}"


def _check_rate(name: str, value: float, *, allow_zero: bool, allow_inf: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0  # False for NaN
    if not ok or (math.isinf(value) and not allow_inf):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}(={value} B/s) must be a finite number {bound}")


# -- topology ---------------------------------------------------------------------


def build_topology(
    hosts: Sequence[tuple[str, str | None]],
    host_link: float = 1.25e9,
    uplink: float | None = None,
    hosts_per_rack: int | None = None,
) -> nx.DiGraph:
    """A switched tree: hosts -> (rack switches ->) the core switch, full duplex.

    ``hosts`` are ``(name, rack)`` pairs in scenario order. A host with a rack is
    linked to its rack switch ``sw:<rack>`` (``host_link`` bytes/s each way) and
    every rack switch to the core switch ``sw:core`` (``uplink`` bytes/s each
    way; ``None`` is a non-blocking fabric, an infinite-capacity edge that never
    limits a flow). A host without a rack is put in an automatic rack
    ``rack0``, ``rack1``, ... (``hosts_per_rack`` consecutive unracked hosts
    each; they join an explicit rack of the same name) when ``hosts_per_rack``
    is given, else linked straight to the core switch, so the default is every
    host on one switch.

    Each direction of a link is its own edge with a ``capacity`` attribute;
    nodes have ``kind`` ("host" or "switch") and ``rack`` attributes.

    >>> g = build_topology([("h1", "r1"), ("h2", "r1"), ("h3", "r2")], 1.25e9, 5e9)
    >>> g["h1"]["sw:r1"]["capacity"], g["sw:r1"]["h1"]["capacity"], g["sw:r1"]["sw:core"]
    (1250000000.0, 1250000000.0, {'capacity': 5000000000.0})
    >>> nx.shortest_path(g, "h1", "h3")
    ['h1', 'sw:r1', 'sw:core', 'sw:r2', 'h3']
    >>> sorted(build_topology([("a", None), ("b", None)]).nodes)
    ['a', 'b', 'sw:core']
    >>> [g.nodes[h]["rack"] for h in ("x", "y", "z") for g in [build_topology(
    ...     [("x", None), ("y", None), ("z", None)], hosts_per_rack=2, uplink=5e9)]]
    ['rack0', 'rack0', 'rack1']
    """
    _check_rate("host_link", host_link, allow_zero=False)
    if uplink is not None:
        _check_rate("uplink", uplink, allow_zero=False)
    if hosts_per_rack is not None and (
        isinstance(hosts_per_rack, bool)
        or not isinstance(hosts_per_rack, int)
        or hosts_per_rack < 1
    ):
        raise ValueError(f"hosts_per_rack(={hosts_per_rack!r}) must be an int >= 1 or None")

    graph = nx.DiGraph()
    graph.add_node(CORE_SWITCH, kind="switch", rack=None)
    up = _INF if uplink is None else float(uplink)
    link = float(host_link)
    unracked = 0
    for entry in hosts:
        name, rack = entry
        if not isinstance(name, str) or not name:
            raise ValueError(f"host name(={name!r}) must be a non-empty string")
        if name.startswith(SWITCH_PREFIX):
            raise ValueError(f"host name(={name!r}) must not start with {SWITCH_PREFIX!r}")
        if name in graph:
            raise ValueError(f"host name(={name!r}) appears twice")
        if rack is None and hosts_per_rack is not None:
            rack = f"rack{unracked // hosts_per_rack}"
            unracked += 1
        if rack is not None and rack_switch(rack) == CORE_SWITCH:
            raise ValueError(f"rack(={rack!r}) of {name!r}: the name is the core switch's")
        graph.add_node(name, kind="host", rack=rack)
        if rack is None:
            switch = CORE_SWITCH
        else:
            switch = rack_switch(rack)
            if switch not in graph:
                graph.add_node(switch, kind="switch", rack=rack)
                graph.add_edge(switch, CORE_SWITCH, capacity=up)
                graph.add_edge(CORE_SWITCH, switch, capacity=up)
        graph.add_edge(name, switch, capacity=link)
        graph.add_edge(switch, name, capacity=link)
    return graph


# -- flows ------------------------------------------------------------------------


class FlowCancelled(Exception):
    """The value ``Flow.done`` fails with when the flow is cancelled."""


class FlowState(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class _Link:
    """One direction of a link: its capacity and the active flows on it."""

    __slots__ = (
        "index",
        "u",
        "v",
        "capacity",
        "flows",
        "_seen",
        "_couples",
        "_coupled",
        "_floors",
        "_floors_epoch",
        "_binds",
        "_binds_epoch",
        "_res",
        "_cnt",
        "_lvl",
    )

    def __init__(self, index: int, u: str, v: str, capacity: float) -> None:
        self.index = index
        self.u = u
        self.v = v
        self.capacity = capacity
        self.flows: dict[int, Flow] = {}  # flow id -> flow, in arrival order
        # scratch space of one rate recomputation (valid while == its epoch)
        self._seen = 0
        self._couples = 0  # can bind: its flows' ceilings add up to >= capacity
        self._coupled = False  # the status the flows' current rates were computed with
        self._floors = 0.0  # sum of its flows' fair floors (see _fair_floor)
        self._floors_epoch = 0
        self._binds = False  # see _can_bind
        self._binds_epoch = 0
        self._res = 0.0  # capacity minus the rates frozen so far
        self._cnt = 0  # flows not frozen yet
        self._lvl = 0.0  # _res / _cnt


class Flow:
    """One transfer of ``nbytes`` from ``src`` to ``dst``; made by :meth:`FluidNetwork.transfer`.

    ``done`` succeeds (value: the flow) at the exact time the last byte arrives,
    or fails with :class:`FlowCancelled` if the flow is cancelled. ``rate`` is
    the current rate in bytes/s; ``delivered()`` the bytes arrived by
    ``env.now`` (the integral of the rate, never more than ``nbytes``).
    """

    __slots__ = (
        "id",
        "src",
        "dst",
        "nbytes",
        "done",
        "started_at",
        "finished_at",
        "state",
        "on_rate",
        "_net",
        "_links",
        "_cap",
        "_rate",
        "_base",
        "_t0",
        "_gen",
        "_finish",
        "_seen",
        "_pos",
        "_bound",
        "_bound_epoch",
        "_floor",
        "_floor_epoch",
        "_ceiling",
        "_ceiling_epoch",
    )

    def __init__(
        self,
        net: FluidNetwork,
        fid: int,
        src: str,
        dst: str,
        nbytes: float,
        cap: float | None,
        links: tuple[_Link, ...],
    ) -> None:
        self.id = fid
        self.src = src
        self.dst = dst
        self.nbytes = float(nbytes)
        self.done: simpy.Event = net.env.event()
        self.started_at: float = net.env.now
        self.finished_at: float | None = None  # completion or cancellation time
        self.state = FlowState.ACTIVE
        # called with the flow after each recomputation that changed its rate (the
        # rate is then current); None: nobody listens
        self.on_rate: Callable[[Flow], None] | None = None
        self._net = net
        self._links = links
        self._cap = cap
        self._rate = 0.0
        self._base = 0.0  # bytes delivered by time _t0
        self._t0 = net.env.now
        self._gen = 0  # bumped on every rate change; stale completion entries are skipped
        self._finish = _INF
        self._seen = 0  # epoch of the last recomputation that reached this flow
        self._pos = 0  # index in that recomputation's component
        self._bound = 0.0  # see _private_bound
        self._bound_epoch = 0
        self._floor = 0.0  # see _fair_floor
        self._floor_epoch = 0
        self._ceiling = 0.0  # see _ceiling
        self._ceiling_epoch = 0

    def __repr__(self) -> str:
        return (
            f"Flow(id={self.id}, {self.src}->{self.dst}, nbytes={self.nbytes}, "
            f"state={self.state}, rate={self._rate})"
        )

    @property
    def active(self) -> bool:
        return self.state is FlowState.ACTIVE

    @property
    def rate(self) -> float:
        """Current rate in bytes/s (0 once finished, or while a link on the path is down)."""
        if self._net._dirty:
            self._net._flush()
        return self._rate

    @property
    def cap(self) -> float | None:
        """The flow's own rate limit in bytes/s; None is uncapped."""
        return self._cap

    @property
    def path(self) -> tuple[str, ...]:
        """The nodes the flow crosses, ``src`` first."""
        return (self._links[0].u, *(link.v for link in self._links))

    @property
    def expected_finish(self) -> float:
        """When the flow completes if nothing changes: inf while stalled at rate 0
        or once cancelled, ``finished_at`` once completed."""
        if self.state is FlowState.COMPLETED:
            return self.finished_at  # type: ignore[return-value]
        if self._net._dirty:
            self._net._flush()
        return self._finish if self.state is FlowState.ACTIVE else _INF

    def delivered(self) -> float:
        """Bytes arrived at ``dst`` by ``env.now``."""
        if self._rate == 0.0:
            return self._base
        got = self._base + self._rate * (self._net.env.now - self._t0)
        return got if got < self.nbytes else self.nbytes

    def remaining(self) -> float:
        """Bytes still to deliver (0 once completed)."""
        return self.nbytes - self.delivered()

    def set_cap(self, cap: float | None) -> None:
        """Change the flow's rate limit (None: uncapped) from now on.

        Bytes already delivered stay; the rest go at the new rate. No effect on a
        finished flow. Raises ``ValueError`` unless ``cap`` is None or > 0.
        """
        self._net._set_cap(self, cap)

    def cancel(self) -> None:
        """Stop the flow now: ``done`` fails with :class:`FlowCancelled` (defused).

        ``delivered()`` keeps what had arrived. No effect on a finished flow.
        """
        self._net._cancel(self)


# -- the network ------------------------------------------------------------------


class FluidNetwork:
    """Flows over ``graph`` (a ``networkx.DiGraph`` whose edges have ``capacity``).

    Paths are shortest paths, computed once and cached: for a host with a single
    link each way (every host of :func:`build_topology`), by the pair of switches
    the endpoints hang off, so N hosts in R racks need at most R*R path lookups.

    The graph is read once; change capacities through :meth:`set_link_capacity`.
    """

    def __init__(self, env: simpy.Environment, graph: nx.DiGraph) -> None:
        self.env = env
        self.graph = graph
        self._links: dict[tuple[str, str], _Link] = {}
        for u, v, data in graph.edges(data=True):
            if "capacity" not in data:
                raise ValueError(f"link {u}->{v} has no 'capacity' attribute")
            capacity = float(data["capacity"])
            _check_rate(f"capacity of {u}->{v}", capacity, allow_zero=True, allow_inf=True)
            self._links[(u, v)] = _Link(len(self._links), u, v, capacity)
        self._original = {key: link.capacity for key, link in self._links.items()}
        self._mid_paths: dict[tuple[str, str], tuple[_Link, ...]] = {}
        self._pair_paths: dict[tuple[str, str], tuple[_Link, ...]] = {}
        self._active: dict[int, Flow] = {}
        self._next_id = 0
        self._epoch = 0
        self._dirty = False  # changes wait for a recomputation at this instant
        self._seed_flows: list[Flow] = []
        self._seed_links: list[_Link] = []
        self._heap: list[tuple[float, int, int]] = []  # (finish time, flow id, generation)
        self._armed: list[float] = []  # target times of pending wake-up timeouts
        self.recomputations = 0  # how many times rates were recomputed (for benchmarks)

    # -- public API -----------------------------------------------------------------

    def transfer(self, src: str, dst: str, nbytes: float, cap: float | None = None) -> Flow:
        """Start sending ``nbytes`` from ``src`` to ``dst`` now, at most ``cap`` B/s.

        Returns the :class:`Flow` (ids count up from 0 in call order). Its rate,
        and those of the flows it slows down, are recomputed at the end of this
        instant, together with any other change made at this instant, or at once
        when a ``rate`` is read. A flow of 0 bytes is done at once. Raises
        ``ValueError`` for unknown nodes, ``src == dst``, a size that is negative
        or not finite, or a cap that is not > 0 (libvirt's "0 = unlimited" is
        ``None`` here).
        """
        if not (nbytes >= 0 and math.isfinite(nbytes)):
            raise ValueError(f"nbytes(={nbytes} B) must be a finite number >= 0")
        if cap is not None:
            _check_rate("cap", cap, allow_zero=False)
            cap = float(cap)
        links = self._route(src, dst)
        if cap is None and all(link.capacity == _INF for link in links):
            raise ValueError(f"flow {src}->{dst} would be unbounded: no finite link and no cap")
        flow = Flow(self, self._next_id, src, dst, nbytes, cap, links)
        self._next_id += 1
        if nbytes == 0:
            self._finish_now(flow, FlowState.COMPLETED)
            flow.done.succeed(flow)
            return flow
        self._active[flow.id] = flow
        for link in links:
            link.flows[flow.id] = flow
        self._changed((flow,), ())
        return flow

    def set_link_capacity(
        self, u: str, v: str, capacity: float | None, *, both_ways: bool = False
    ) -> None:
        """Set the capacity (bytes/s) of link ``u -> v`` from now on.

        0 takes it down: its flows get rate 0 and wait. ``None`` restores the
        capacity the graph had. ``both_ways`` also sets ``v -> u`` (a cable cut).
        """
        keys = [(u, v), (v, u)] if both_ways else [(u, v)]
        targets: list[tuple[_Link, float]] = []
        for key in keys:
            link = self._links.get(key)
            if link is None:
                raise ValueError(f"no link {key[0]}->{key[1]} in the topology")
            new = self._original[key] if capacity is None else float(capacity)
            _check_rate(f"capacity of {key[0]}->{key[1]}", new, allow_zero=True, allow_inf=True)
            if new == _INF:
                for flow in link.flows.values():
                    if flow._cap is None and all(
                        other is link or other.capacity == _INF for other in flow._links
                    ):
                        raise ValueError(
                            f"capacity of {key[0]}->{key[1]} cannot be inf: flow {flow.id} "
                            "would be unbounded"
                        )
            targets.append((link, new))
        seeds = [link for link, _ in targets]
        for link, new in targets:
            link.capacity = new
        self._changed([flow for link in seeds for flow in link.flows.values()], seeds)

    def link_capacity(self, u: str, v: str) -> float:
        """The current capacity of link ``u -> v`` in bytes/s."""
        return self._links[(u, v)].capacity

    def link_flows(self, u: str, v: str) -> tuple[Flow, ...]:
        """The active flows crossing link ``u -> v``, in arrival order."""
        return tuple(self._links[(u, v)].flows.values())

    def active_flows(self) -> tuple[Flow, ...]:
        """Every active flow (rate 0 ones included), in arrival order."""
        return tuple(self._active.values())

    def path(self, src: str, dst: str) -> tuple[str, ...]:
        """The nodes a flow from ``src`` to ``dst`` crosses."""
        links = self._route(src, dst)
        return (links[0].u, *(link.v for link in links))

    # -- routing --------------------------------------------------------------------

    def _route(self, src: str, dst: str) -> tuple[_Link, ...]:
        pair = (src, dst)
        cached = self._pair_paths.get(pair)
        if cached is not None:
            return cached
        graph = self.graph
        for node in pair:
            if node not in graph:
                raise ValueError(f"unknown node {node!r}: not in the topology")
        if src == dst:
            raise ValueError(f"src and dst are the same node ({src!r})")
        succ, pred = graph.succ[src], graph.pred[dst]
        if len(succ) == 1 and len(pred) == 1:
            (up,) = succ
            (down,) = pred
            if up != dst and down != src:
                # a single-homed host: every path leaves through `up` and enters
                # through `down`, so cache the switch part by switch pair.
                key = (up, down)
                mid = self._mid_paths.get(key)
                if mid is None:
                    mid = self._links_along(self._shortest(up, down))
                    self._mid_paths[key] = mid
                return (self._links[(src, up)], *mid, self._links[(down, dst)])
        links = self._links_along(self._shortest(src, dst))
        self._pair_paths[pair] = links
        return links

    def _shortest(self, a: str, b: str) -> list[str]:
        try:
            return nx.shortest_path(self.graph, a, b)
        except nx.NetworkXNoPath:
            raise ValueError(f"no path from {a!r} to {b!r}") from None

    def _links_along(self, nodes: list[str]) -> tuple[_Link, ...]:
        return tuple(self._links[(u, v)] for u, v in pairwise(nodes))

    # -- flow changes -----------------------------------------------------------------

    def _finish_now(self, flow: Flow, state: FlowState) -> None:
        now = self.env.now
        if state is FlowState.COMPLETED:
            flow._base = flow.nbytes
        elif flow._rate:
            flow._base = min(flow.nbytes, flow._base + flow._rate * (now - flow._t0))
        flow._t0 = now
        flow._rate = 0.0
        flow._gen += 1
        flow._finish = _INF
        flow.state = state
        flow.finished_at = now
        if self._active.pop(flow.id, None) is not None:
            for link in flow._links:
                del link.flows[flow.id]

    def _set_cap(self, flow: Flow, cap: float | None) -> None:
        if cap is not None:
            _check_rate("cap", cap, allow_zero=False)
            cap = float(cap)
        if cap is None and all(link.capacity == _INF for link in flow._links):
            raise ValueError(f"flow {flow.id} would be unbounded: no finite link and no cap")
        flow._cap = cap
        if flow.state is FlowState.ACTIVE:
            self._changed((flow,), ())

    def _cancel(self, flow: Flow) -> None:
        if flow.state is not FlowState.ACTIVE:
            return
        self._finish_now(flow, FlowState.CANCELLED)
        flow.done.defused = True  # nobody has to wait for a cancelled flow
        flow.done.fail(FlowCancelled(f"flow {flow.id} {flow.src}->{flow.dst} cancelled"))
        self._changed((), flow._links)

    # -- rates ------------------------------------------------------------------------

    def _changed(self, flows: Iterable[Flow], links: Iterable[_Link]) -> None:
        """Note a change; rates are recomputed once at the end of this instant.

        Batching matters: a completion and the transfer it triggers, or many
        transfers started together, cost one recomputation. Reading ``rate`` or
        ``expected_finish`` recomputes at once; ``delivered()`` needs no
        recomputation (no time has passed since the change).
        """
        self._seed_flows.extend(flows)
        self._seed_links.extend(links)
        if not self._dirty:
            self._dirty = True
            flush = self.env.event()
            flush.callbacks.append(self._flush)
            flush.succeed()

    def _flush(self, _event: simpy.Event | None = None) -> None:
        """Recompute the rates of every flow connected to the changes noted."""
        if not self._dirty:
            return
        self._dirty = False
        flows, links = self._seed_flows, self._seed_links
        self._seed_flows, self._seed_links = [], []
        self._epoch += 1
        component, coupling = _component(self._epoch, flows, links)
        if component:
            self.recomputations += 1
            rates = _max_min_rates(self._epoch, component, coupling)
            now = self.env.now
            heap = self._heap
            listeners: list[Flow] = []
            for flow, rate in zip(component, rates, strict=True):
                if rate == flow._rate:
                    continue
                if flow._rate:
                    got = flow._base + flow._rate * (now - flow._t0)
                    flow._base = got if got < flow.nbytes else flow.nbytes
                flow._t0 = now
                flow._rate = rate
                flow._gen += 1
                if rate > 0.0:
                    flow._finish = now + (flow.nbytes - flow._base) / rate
                    heapq.heappush(heap, (flow._finish, flow.id, flow._gen))
                else:
                    flow._finish = _INF
                if flow.on_rate is not None:
                    listeners.append(flow)
            for flow in listeners:  # every rate is current by now
                flow.on_rate(flow)  # type: ignore[misc]
        self._arm()

    # -- completions ------------------------------------------------------------------

    def _arm(self) -> None:
        """Make sure a wake-up is pending for the earliest live completion."""
        heap, active = self._heap, self._active
        while heap:
            _, fid, gen = heap[0]
            flow = active.get(fid)
            if flow is not None and flow._gen == gen:
                break
            heapq.heappop(heap)
        if len(heap) > 64 + 4 * len(active):  # drop stale entries in bulk
            self._heap = heap = [
                (f._finish, f.id, f._gen) for f in active.values() if f._finish < _INF
            ]
            heapq.heapify(heap)
        if not heap:
            return
        target = heap[0][0]
        if self._armed and self._armed[0] <= target:
            return
        heapq.heappush(self._armed, target)
        timer = self.env.timeout(max(0.0, target - self.env.now))
        timer.callbacks.append(self._wake)

    def _wake(self, _event: simpy.Event) -> None:
        heapq.heappop(self._armed)
        now = self.env.now
        horizon = now + 8 * math.ulp(now)  # absorbs now + (t - now) != t rounding
        heap, active = self._heap, self._active
        due: list[Flow] = []
        while heap and heap[0][0] <= horizon:
            _, fid, gen = heapq.heappop(heap)
            flow = active.get(fid)
            if flow is not None and flow._gen == gen:
                due.append(flow)
        if not due:
            self._arm()
            return
        for flow in due:
            self._finish_now(flow, FlowState.COMPLETED)
        for flow in due:  # before the flush event, so that what the waiters start
            flow.done.succeed(flow)  # at this instant joins the same recomputation
        self._changed((), [link for flow in due for link in flow._links])


def _private_bound(flow: Flow, epoch: int) -> float:
    """The least of ``flow``'s cap and the capacities of the links it is alone on.

    Those constraints are the flow's own: :func:`_max_min_rates` always applies
    them (as the flow's *limit*), so a link they make redundant can be dropped.
    """
    if flow._bound_epoch != epoch:
        bound = _INF if flow._cap is None else flow._cap
        for link in flow._links:
            if link.capacity < bound and len(link.flows) == 1:
                bound = link.capacity
        flow._bound = bound
        flow._bound_epoch = epoch
    return flow._bound


def _fair_floor(flow: Flow, epoch: int) -> float:
    """A lower bound of ``flow``'s max-min rate: the least of its cap and of
    ``capacity / flows`` over its links (max-min gives every flow at least the
    smallest equal share along its path).

    Example: alone on a 10 Gbit/s host link but sharing a 40 Gbit/s uplink with
    7 others: at least min(1.25e9 / 1, 5e9 / 8) = 6.25e8 B/s.
    """
    if flow._floor_epoch != epoch:
        floor = bound = _INF if flow._cap is None else flow._cap
        for link in flow._links:  # one pass for the floor and the private bound
            capacity, n = link.capacity, len(link.flows)
            if capacity / n < floor:
                floor = capacity / n
            if n == 1 and capacity < bound:
                bound = capacity
        flow._floor = floor
        flow._floor_epoch = epoch
        flow._bound = bound
        flow._bound_epoch = epoch
    return flow._floor


def _floors(link: _Link, epoch: int) -> float:
    """The sum of the fair floors of ``link``'s flows (cached per recomputation)."""
    if link._floors_epoch != epoch:
        total = 0.0
        for flow in link.flows.values():
            total += flow._floor if flow._floor_epoch == epoch else _fair_floor(flow, epoch)
        link._floors = total
        link._floors_epoch = epoch
    return link._floors


def _ceiling(flow: Flow, epoch: int) -> float:
    """An upper bound of ``flow``'s max-min rate: its own bound (cap, links it is
    alone on) and, on each shared link, the capacity left once every other flow
    there has its fair floor.

    Example: two flows share a 1.25e9 B/s host link, each with a floor of
    6.25e8: neither can exceed 1.25e9 - 6.25e8 = 6.25e8 B/s.
    """
    if flow._ceiling_epoch != epoch:
        floor = _fair_floor(flow, epoch)
        ceiling = flow._bound  # set with the floor
        for link in flow._links:
            if len(link.flows) > 1 and link.capacity < _INF:
                floors = link._floors if link._floors_epoch == epoch else _floors(link, epoch)
                room = link.capacity - (floors - floor)
                if room < ceiling:
                    ceiling = room
        flow._ceiling = ceiling
        flow._ceiling_epoch = epoch
    return flow._ceiling


_SLACK = 1e-9  # relative margin that keeps a link coupling when its ceilings only just fit


def _can_bind(link: _Link, epoch: int) -> bool:
    """Can ``link`` be saturated in the max-min allocation?

    Not when its flows' ceilings add up to strictly less than its capacity: then
    it is saturated in no allocation the flows can have, so it is nobody's
    bottleneck and dropping it leaves the max-min rates as they are.
    """
    if link._binds_epoch == epoch:
        return link._binds
    capacity = link.capacity
    binds = False
    if capacity != _INF and len(link.flows) > 1:
        demand = 0.0
        for flow in link.flows.values():
            demand += flow._ceiling if flow._ceiling_epoch == epoch else _ceiling(flow, epoch)
        binds = demand >= capacity * (1.0 - _SLACK)
    link._binds = binds
    link._binds_epoch = epoch
    return binds


def _component(
    epoch: int, flows: Iterable[Flow], links: Iterable[_Link]
) -> tuple[list[Flow], list[_Link]]:
    """The active flows whose max-min rates may change after a change to ``flows``
    (started, ended, re-capped) and ``links`` (new capacity).

    Every flow on a changed flow's link or a changed link is affected; from
    them the search spreads through the links that can bind (:func:`_can_bind`,
    judged by bounds that hold for the true max-min rates, so no circularity).
    A link's status depends on its flows' ceilings, which move only when the
    fair floor of a flow sharing one of their links moves, and floors move only
    for flows on changed links. So the links of the flows sharing a link with
    an affected flow whose floor moved are re-examined, and a link whose status
    flipped brings its flows in too (they gained or lost a constraint). Every
    other link keeps the status the current rates were computed with, so flows
    outside the result keep exactly their rates. Order: discovery order
    (deterministic).

    Returns the flows and the coupling links; the latter are marked
    ``_couples = epoch`` and set up for :func:`_max_min_rates`.
    """
    component: list[Flow] = []
    coupling: list[_Link] = []

    def take(flow: Flow) -> None:
        if flow._seen != epoch:
            flow._seen = epoch
            flow._pos = len(component)
            component.append(flow)

    def examine(link: _Link) -> bool:
        """Judge ``link`` once; True when its flows belong to the component."""
        if link._seen == epoch:
            return False
        link._seen = epoch
        binds = _can_bind(link, epoch)
        was = link._coupled
        link._coupled = binds
        if binds:
            link._couples = epoch
            n = len(link.flows)
            link._res = link.capacity
            link._cnt = n
            link._lvl = link.capacity / n
            coupling.append(link)
        return binds or was

    changed: list[_Link] = list(links)
    for flow in flows:
        changed.extend(flow._links)
    for link in changed:  # the changed links: all their flows are affected
        for flow in link.flows.values():
            take(flow)
    affected = component[:]
    before = [f._floor if f._floor_epoch else None for f in affected]  # None: a new flow
    for flow, old in zip(affected, before, strict=True):  # links whose status may flip
        if old is not None and _fair_floor(flow, epoch) == old:
            continue  # its floor, hence its neighbours' ceilings, did not move
        for link in flow._links:
            for neighbour in link.flows.values():
                for suspect in neighbour._links:
                    if suspect._binds_epoch != epoch and (
                        _can_bind(suspect, epoch) != suspect._coupled
                    ):
                        for flow in suspect.flows.values():
                            take(flow)
    stack: list[_Link] = []
    for flow in component:
        stack.extend(flow._links)
    while stack:
        link = stack.pop()
        if examine(link):
            for flow in link.flows.values():
                if flow._seen != epoch:
                    take(flow)
                    stack.extend(flow._links)
    return component, coupling


def _max_min_rates(epoch: int, flows: list[Flow], coupling: list[_Link]) -> list[float]:
    """Max-min fair rates of ``flows`` (a closed component), by progressive filling.

    All unfrozen flows grow together. The next event is either a coupling link
    whose fair level ``(capacity - frozen rates) / unfrozen flows`` is the
    lowest (its unfrozen flows freeze at that level) or a flow reaching its
    *limit* (it freezes there). A flow's limit is the least of its cap and the
    capacities of the links it has to itself (those behave exactly like caps).
    Link levels only rise as flows freeze, so a heap whose keys are lower
    bounds suffices: a stale top is re-keyed, a current top is the minimum.
    O(flows * path length + pops * log(links)). ``flow._pos`` must index
    ``flows`` and the coupling links be set up (both by :func:`_component`).
    """
    rates = [-1.0] * len(flows)  # -1: not frozen yet
    heap = [(link._lvl, link.index, link) for link in coupling]
    limits: list[tuple[float, int]] = []
    for pos, flow in enumerate(flows):
        limit = flow._bound if flow._bound_epoch == epoch else _private_bound(flow, epoch)
        if limit < _INF:
            limits.append((limit, pos))
    heapq.heapify(heap)
    limits.sort()
    next_limit, n_limits = 0, len(limits)
    unfrozen = len(flows)
    heappop, heapreplace = heapq.heappop, heapq.heapreplace

    while unfrozen:
        while heap:  # make the top current: its key is then the least level
            lvl, index, link = heap[0]
            if not link._cnt:
                heappop(heap)
            elif lvl != link._lvl:
                heapreplace(heap, (link._lvl, index, link))
            else:
                break
        link_level = heap[0][0] if heap else _INF
        # flows whose limit is reached first (ties: limits first) freeze at it;
        # levels only rise, so a stale link_level is still a safe threshold
        frozen_any = False
        while next_limit < n_limits:
            limit, pos = limits[next_limit]
            if limit > link_level:
                break
            next_limit += 1
            if rates[pos] >= 0.0:
                continue
            rates[pos] = limit
            unfrozen -= 1
            frozen_any = True
            for link in flows[pos]._links:
                if link._couples == epoch:
                    n = link._cnt - 1
                    link._cnt = n
                    left = link._res - limit
                    link._res = left
                    if n:
                        link._lvl = (left if left > 0.0 else 0.0) / n
        if frozen_any or not unfrozen:
            continue
        if not heap:  # only unbounded flows left; transfer() forbids them
            raise RuntimeError("flow with no finite link and no cap")
        _, _, bottleneck = heappop(heap)
        for flow in bottleneck.flows.values():
            pos = flow._pos
            if rates[pos] >= 0.0:
                continue
            rates[pos] = link_level
            unfrozen -= 1
            for link in flow._links:
                if link._couples == epoch:
                    n = link._cnt - 1
                    link._cnt = n
                    left = link._res - link_level
                    link._res = left
                    if n:
                        link._lvl = (left if left > 0.0 else 0.0) / n
    return rates
