"""What must hold after every run, checked against the driver's truth.

After a run (successful or not) the records and the world must agree:

1. ``placement``: every instance runs on exactly one host, the host its record
   names, or is in ERROR with its host known;
2. ``capacity``: no host's usage plus reservations exceeds its capacity;
3. ``leftover``: a migration that did not complete left no reservation and no
   domain on its destination;
4. ``paused``: no guest is left paused by the testbed;
5. ``migration``: no migration record is left unfinished.

A fact that needs an unreachable host (its libvirtd is down) cannot be checked:
it is counted as *unverifiable*, never guessed. A host the driver knows to be
powered off (``WorldFacts.powered_off``, e.g. every ``host_down`` in the
simulator) runs nothing: an instance recorded live there is a violation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from livemig.core.model import MigrationStatus, VmState
from livemig.core.state import InstanceRecord, MigrationRecord
from livemig.drivers.base import DomainFact, DomainState, WorldFacts


@dataclass(frozen=True, kw_only=True)
class Violation:
    rule: str  # placement, capacity, leftover, paused, migration
    subject: str  # the instance, host or migration concerned
    detail: str  # one line: what the records say and what the driver says

    def __str__(self) -> str:
        return f"{self.rule}: {self.subject}: {self.detail}"


@dataclass(frozen=True, kw_only=True)
class InvariantReport:
    violations: tuple[Violation, ...] = ()
    unverifiable: tuple[Violation, ...] = ()  # could not be checked (unreachable host)
    checked: dict[str, int] = field(default_factory=dict)  # rule -> subjects checked

    def as_dict(self) -> dict[str, object]:
        """The ``invariants`` block of ``summary.json``."""
        return {
            "violations": len(self.violations),
            "unverifiable": len(self.unverifiable),
            "checked": dict(self.checked),
            "details": [str(v) for v in self.violations],
            "unverifiable_details": [str(v) for v in self.unverifiable],
        }


def check(
    instances: Iterable[InstanceRecord],
    migrations: Iterable[MigrationRecord],
    world: WorldFacts,
) -> InvariantReport:
    """Compare the records with the driver's ``world``; see the module docstring.

    >>> import dataclasses
    >>> rec = InstanceRecord(name="vm1", host="h1", ram=1, vcpus=1, disk=0, disk_allocated=0)
    >>> world = WorldFacts(domains=(DomainFact(instance="vm1", host="h2",
    ...                                        state=DomainState.RUNNING),), claims={})
    >>> print(*check([rec], [], world).violations)
    placement: vm1: recorded on h1 (active) but runs on h2
    >>> lost = dataclasses.replace(rec, vm_state=VmState.ERROR)
    >>> check([lost], [], WorldFacts(domains=(), claims={})).violations
    ()
    >>> dead = WorldFacts(domains=(), claims={}, unreachable=("h1",))
    >>> check([rec], [], dead).violations, len(check([rec], [], dead).unverifiable)
    ((), 1)
    >>> print(*check([rec], [], dataclasses.replace(dead, powered_off=("h1",))).violations)
    placement: vm1: recorded on h1 (active) but runs nowhere (h1 is down)
    """
    instances = list(instances)
    records = {i.name: i for i in instances}
    unreachable = set(world.unreachable) - set(world.powered_off)  # cannot be asked
    where: dict[str, list[DomainFact]] = {}
    for fact in world.domains:
        where.setdefault(fact.instance, []).append(fact)
    bad: list[Violation] = []
    unknown: list[Violation] = []
    checked: dict[str, int] = {}

    def count(rule: str) -> None:
        checked[rule] = checked.get(rule, 0) + 1

    for inst in instances:
        count("placement")
        running = sorted(f.host for f in where.get(inst.name, ())
                         if f.state is not DomainState.SHUTOFF)
        state = f"{inst.host} ({inst.vm_state.value})"
        if inst.task_state is not None:
            bad.append(Violation(rule="placement", subject=inst.name,
                                 detail=f"task_state {inst.task_state.value} left set"))
        if inst.vm_state is VmState.ERROR:
            if not inst.host:
                bad.append(Violation(rule="placement", subject=inst.name,
                                     detail="in ERROR with no host recorded"))
            continue
        if running == [inst.host]:
            continue
        if len(running) > 1:
            bad.append(Violation(rule="placement", subject=inst.name,
                                 detail=f"recorded on {state} but runs on {', '.join(running)}"))
        elif running:
            bad.append(Violation(rule="placement", subject=inst.name,
                                 detail=f"recorded on {state} but runs on {running[0]}"))
        elif inst.host in unreachable:
            unknown.append(Violation(rule="placement", subject=inst.name,
                                     detail=f"recorded on {state}, which cannot be asked"))
        else:
            down = f" ({inst.host} is down)" if inst.host in world.powered_off else ""
            bad.append(Violation(rule="placement", subject=inst.name,
                                 detail=f"recorded on {state} but runs nowhere{down}"))

    for host in world.overcommitted:
        count("capacity")
        bad.append(Violation(rule="capacity", subject=host,
                             detail="usage plus reservations exceed its capacity"))
    checked.setdefault("capacity", 0)

    for mig in migrations:
        count("migration")
        if not mig.status.finished:
            bad.append(Violation(rule="migration", subject=f"migration {mig.id}",
                                 detail=f"{mig.instance} left {mig.status.value}"))
            continue
        if mig.status is MigrationStatus.COMPLETED or mig.dest is None:
            continue
        count("leftover")
        inst = records.get(mig.instance)
        if inst is not None and inst.host == mig.dest:
            continue  # the instance lives there now (a later migration, or a lost post-copy)
        subject = f"migration {mig.id}"
        if world.claims.get(mig.instance) == mig.dest:
            bad.append(Violation(rule="leftover", subject=subject,
                                 detail=f"{mig.status.value}, reservation for "
                                 f"{mig.instance} still held on {mig.dest}"))
        if any(f.host == mig.dest for f in where.get(mig.instance, ())):
            bad.append(Violation(rule="leftover", subject=subject,
                                 detail=f"{mig.status.value}, domain {mig.instance} "
                                 f"still on {mig.dest}"))
        elif mig.dest in unreachable:
            unknown.append(Violation(rule="leftover", subject=subject,
                                     detail=f"{mig.dest} cannot be asked"))

    for fact in world.domains:
        count("paused")
        inst = records.get(fact.instance)
        if fact.state is DomainState.PAUSED and (inst is None
                                                 or inst.vm_state is not VmState.PAUSED):
            bad.append(Violation(rule="paused", subject=fact.instance,
                                 detail=f"left paused on {fact.host}"))
    return InvariantReport(violations=tuple(bad), unverifiable=tuple(unknown), checked=checked)
