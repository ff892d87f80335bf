"""The ``events:`` section of a scenario file: one reader per action, generators expanded.

Part of the loader of :mod:`livemig.core.scenario` (whose docstring is the schema):
:func:`read_events` turns the ``events`` list into concrete, time-ordered
:class:`~livemig.core.model.Event` objects, ``random_faults`` expanded with its seed.
A new kind of event is one reader and one line of :data:`_EVENT_KINDS`.
"""

from __future__ import annotations

import fnmatch
import heapq
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .model import (
    DEFAULT_UNTIL,
    AbortEvent,
    ControllerRestartEvent,
    DrainEvent,
    Event,
    FaultEvent,
    FaultKind,
    FaultTrigger,
    ForceCompleteEvent,
    HostSpec,
    LiveMigrateEvent,
)
from .yaml_nodes import (
    Field,
    Mapping,
    Reader,
    boolean,
    check_visible,
    choice,
    did_you_mean,
    duration,
    integer,
    show,
)

MAX_GROUP_COUNT = 100_000  # names of a group; also the most failures one generator draws
_GLOB_CHARS = re.compile(r"[*?\[]")

Hosts = dict[str, tuple[HostSpec, Field]]  # name -> (spec, the field that named it)


def _known(names: Iterable[str], what: str, *, null: bool = False) -> Reader:
    """A reader of a host or VM name that the scenario defines (or null, when ``null``)."""
    section = "hosts" if what == "host" else "vms"

    def read(f: Field) -> str | None:
        value = f.text(f"a {what} name", null=null)
        if value is not None:
            check_visible(f, value, what)
        if value is not None and value not in names:
            f.fail(
                f"unknown {what} {show(value)}{did_you_mean(value, names)}; "
                f"expected a {what} defined under {section}"
            )
        return value

    return read



_MOVE = {"block_migration": boolean, "disk_over_commit": boolean}
_TRIGGER = choice([t.value for t in FaultTrigger], "trigger", FaultTrigger)


@dataclass(frozen=True, kw_only=True)
class _Context:
    """What event readers check names against, and the seed generators default to."""

    hosts: Hosts
    vms: set[str]
    seed: int
    generators: int  # random_faults events read before this one


def matching_hosts(f: Field, hosts: Hosts) -> list[str]:
    pattern = f.text("a host name or a glob such as node-*")
    if not _GLOB_CHARS.search(pattern):
        if pattern not in hosts:
            f.fail(
                f"unknown host {show(pattern)}{did_you_mean(pattern, hosts)}; "
                "expected a host defined under hosts"
            )
        return [pattern]
    matches = [name for name in hosts if fnmatch.fnmatchcase(name, pattern)]
    if not matches:
        f.fail(f"the glob {show(pattern)} matches no host; expected a pattern matching host names")
    return matches


def _live_migrate(body: Mapping, at: float, ctx: _Context) -> list[Event]:
    instance = _known(ctx.vms, "VM")(body.require("instance", "the name of the VM to move"))
    dest = body.value("dest", _known(ctx.hosts, "host", null=True), None)
    return [LiveMigrateEvent(at=at, instance=instance, dest=dest, **body.read(_MOVE))]


def _drain(body: Mapping, at: float, ctx: _Context) -> list[Event]:
    host = _known(ctx.hosts, "host")(body.require("host", "the host to empty"))
    return [DrainEvent(at=at, host=host, **body.read(_MOVE))]


def _operator(cls: type[AbortEvent | ForceCompleteEvent]) -> Callable[..., list[Event]]:
    """A reader of ``abort`` / ``force_complete``: ``{instance: NAME}``."""

    def read(body: Mapping, at: float, ctx: _Context) -> list[Event]:
        f = body.require("instance", "the name of the VM whose migration to act on")
        return [cls(at=at, instance=_known(ctx.vms, "VM")(f))]

    return read


def _fault(kind: FaultKind) -> Callable[..., list[Event]]:
    """A reader of one fault: ``{host: NAME, trigger: at | checks_passed}``."""

    def read(body: Mapping, at: float, ctx: _Context) -> list[Event]:
        host = _known(ctx.hosts, "host")(body.require("host", f"the host of the {kind.value}"))
        trigger = body.value("trigger", _TRIGGER, FaultTrigger.AT)
        return [FaultEvent(at=at, kind=kind, host=host, trigger=trigger)]

    return read


def _controller_restart(body: Mapping, at: float, ctx: _Context) -> list[Event]:
    down_for = body.value("down_for", duration(non_negative=True), 0.0)
    return [ControllerRestartEvent(at=at, down_for=down_for)]


def _random_faults(body: Mapping, at: float, ctx: _Context) -> list[Event]:
    """Expand a ``random_faults`` generator (the scenario schema) into fault events."""
    hosts_field = body.require("hosts", "a host name or a glob such as node-*")
    targets = matching_hosts(hosts_field, ctx.hosts)
    count = integer(0, MAX_GROUP_COUNT)
    host_down = body.value("host_down", count, 0)
    link_down = body.value("link_down", count, 0)
    within = duration(positive=True)(body.require("within", "the time window, e.g. 10min"))
    repair = body.value("repair", duration(non_negative=True), 0.0)
    seed = body.value("seed", integer(0), ctx.seed + ctx.generators)
    rng = random.Random(seed)
    generated: list[tuple[float, int, int, FaultEvent]] = []
    for n, down, up in ((host_down, FaultKind.HOST_DOWN, FaultKind.HOST_UP),
                        (link_down, FaultKind.LINK_DOWN, FaultKind.LINK_UP)):  # fmt: skip
        for when, host in _draw_failures(rng, targets, n, at, within, repair):
            generated.append((when, 1, len(generated), FaultEvent(at=when, kind=down, host=host)))
            if repair > 0:
                generated.append(
                    (when + repair, 0, len(generated), FaultEvent(at=when + repair, kind=up,
                                                                  host=host))
                )
    generated.sort(key=lambda item: item[:3])  # by time; a repair before a failure at a tie
    return [event for *_, event in generated]


def _draw_failures(
    rng: random.Random, hosts: list[str], n: int, at: float, within: float, repair: float
) -> list[tuple[float, str]]:
    """``n`` failure times in ``[at, at + within)``, each with a host not down at that time.

    A host is down from its failure until ``+ repair`` (forever when ``repair`` is 0). A
    failure with no host left is skipped. Same ``rng`` state, same draws.

    >>> _draw_failures(random.Random(1), ["a", "b"], 3, 0.0, 10.0, 0.0)
    [(1.3436424411240122, 'b'), (7.6377461897661405, 'a')]
    """
    times = sorted(at + rng.random() * within for _ in range(n))
    available = list(hosts)  # order changes by swap-removal, deterministically
    down: list[tuple[float, int, str]] = []  # (back up at, order, host)
    drawn: list[tuple[float, str]] = []
    for when in times:
        while down and down[0][0] <= when:
            available.append(heapq.heappop(down)[2])
        if not available:
            continue
        index = rng.randrange(len(available))
        available[index], available[-1] = available[-1], available[index]
        host = available.pop()
        drawn.append((when, host))
        if repair > 0:
            heapq.heappush(down, (when + repair, len(drawn), host))
    return drawn


_FAULT_KEYS = ("host", "trigger")
_AT = {"at": "(the time goes beside the action: {at: 2s, ACTION: {...}})"}
_FAULT_HINTS = {"instance": "(a fault names a host)", **_AT}
_OPERATOR_HINTS = {"host": "(it names the VM: 'instance')", **_AT}

# action key -> (keys of its body, hints for wrong keys, reader). New kinds go here.
_EVENT_KINDS: dict[str, tuple[tuple[str, ...], dict[str, str], Callable[..., list[Event]]]] = {
    "live_migrate": (("instance", "dest", *_MOVE),
                     {"host": "(the destination is called 'dest')", **_AT}, _live_migrate),
    "drain": (("host", *_MOVE), {"instance": "(drain moves every VM of 'host')", **_AT}, _drain),
    "abort": (("instance",), _OPERATOR_HINTS, _operator(AbortEvent)),
    "force_complete": (("instance",), _OPERATOR_HINTS, _operator(ForceCompleteEvent)),
    **{kind.value: (_FAULT_KEYS, _FAULT_HINTS, _fault(kind)) for kind in FaultKind},
    "controller_restart": (("down_for",), _AT, _controller_restart),
    "random_faults": (("hosts", "host_down", "link_down", "within", "repair", "seed"),
                      {"host": "(the hosts that may fail are called 'hosts')", **_AT},
                      _random_faults),
}  # fmt: skip


def read_events(f: Field | None, hosts: Hosts, vms: set[str], seed: int,
                until: float = DEFAULT_UNTIL) -> list[Event]:
    """The events as written (in non-decreasing time order), generators expanded, by time.

    A written event after ``until`` is an error, as is a controller still down then."""
    timed: list[tuple[float, int, int, Event]] = []  # (at, file index, index within, event)
    previous: tuple[float, int] | None = None
    kinds = tuple(_EVENT_KINDS)
    generators = 0
    for index, entry_field in f.items("a list of events") if f is not None else ():
        entry = entry_field.mapping(
            ("at", *kinds), "an event: at: TIME and one action of " + ", ".join(kinds)
        )
        at_field = entry.require("at", "the event time, e.g. at: 2s")
        at = duration(non_negative=True)(at_field)
        kind = entry.only_one_of(*kinds)
        if kind is None:
            entry.field.fail(f"no action; expected one of {', '.join(kinds)}")
        if previous is not None and at < previous[0]:
            at_field.fail(
                f"{at:g} s is before the previous event ({previous[0]:g} s, line "
                f"{previous[1]}); expected events in non-decreasing time order"
            )
        if at > until:
            at_field.fail(f"{at:g} s is after until ({until:g} s); expected events within "
                          "the run's horizon (raise until:)")
        previous = (at, at_field.line)
        allowed, hints, read = _EVENT_KINDS[kind]
        ctx = _Context(hosts=hosts, vms=vms, seed=seed, generators=generators)
        body = entry.require(kind, "").mapping(allowed, hints=hints)
        for within, event in enumerate(read(body, at, ctx)):
            if isinstance(event, ControllerRestartEvent) and at + event.down_for > until:
                (body.get("down_for") or body.field).fail(
                    f"the controller would still be down at until ({until:g} s); expected "
                    "at + down_for <= until")
            timed.append((event.at, index, within, event))
        generators += kind == "random_faults"
    timed.sort(key=lambda item: item[:3])
    return [event for *_, event in timed]
