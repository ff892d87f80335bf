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
it is counted as *unverifiable*, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
