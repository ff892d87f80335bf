"""The simulated hosts' books: capacity, resident usage, claims, status and heartbeats.

One row per host (scenario order), numpy columns updated in place, so the
scheduler's table over 10,000 hosts is a few array operations.

* **Usage**: Nova's ``memory_mb_used`` starts at ``reserved_host_memory_mb``;
  guests add their flavor's RAM and vCPUs, and their local disk when it lives on
  the host's own storage.
* **Claims**: what ``pre_live_migration`` reserved on a destination, per
  instance, until the switchover turns it into usage or a rollback drops it.
* **Status**: a host is *up* (the machine runs), its *service* is up (libvirtd
  answers) and its *link* is up. It is *reachable* (the controller can ask its
  libvirtd) when up with its service up.
* **Heartbeats**, computed rather than simulated: a host reports while up with
  its service and link up, at the moment it starts reporting and then at every
  multiple of ``report_interval``; a host that stopped keeps its last report.

>>> from livemig.core.model import HostSpec, MigrationPolicy
>>> books = HostBooks([HostSpec(name="h1", ram=2**34, vcpus=8, disk=2**40)],
...                   MigrationPolicy(report_interval=10.0))
>>> float(books.last_heartbeat(0, now=25.0))  # up since 0 s: reported at 0, 10, 20
20.0
>>> books.set_status(0, now=31.0, link=False)  # stops at 31 s: its last report stands
>>> float(books.last_heartbeat(0, now=95.0))
30.0
>>> books.set_status(0, now=95.0, link=True)  # reports again at once, then at 100 s
>>> float(books.last_heartbeat(0, now=99.0)), float(books.last_heartbeat(0, now=100.0))
(95.0, 100.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from livemig.core.model import HostSpec, MigrationPolicy
from livemig.core.units import MiB


@dataclass(frozen=True, kw_only=True)
class Claim:
    """Resources reserved on host ``row`` for one incoming instance."""

    row: int
    ram: int
    vcpus: int
    disk: int


class HostBooks:
    """Every host's capacity, usage, claims and status (see the module docstring)."""

    def __init__(self, specs: Sequence[HostSpec], policy: MigrationPolicy) -> None:
        n = len(specs)
        self.names = tuple(h.name for h in specs)
        self.row = {name: i for i, name in enumerate(self.names)}
        self.interval = policy.report_interval
        self.ram = np.array([h.ram for h in specs], dtype=np.int64)
        self.ram_used = np.full(n, policy.reserved_host_memory_mb * MiB, dtype=np.int64)
        self.vcpus = np.array([h.vcpus for h in specs], dtype=np.int64)
        self.vcpus_used = np.zeros(n, dtype=np.int64)
        self.disk = np.array([h.disk for h in specs], dtype=np.int64)
        self.disk_used = np.zeros(n, dtype=np.int64)
        self.claim_ram = np.zeros(n, dtype=np.int64)
        self.claim_vcpus = np.zeros(n, dtype=np.int64)
        self.claim_disk = np.zeros(n, dtype=np.int64)
        self.claims: dict[str, Claim] = {}  # instance -> its claim
        # status: plain lists, read on every poll
        self.up = [True] * n
        self.service = [True] * n
        self.link = [True] * n
        self._reporting_since = np.zeros(n, dtype=np.float64)  # NaN while not reporting
        self._last_report = np.zeros(n, dtype=np.float64)

    # -- usage and claims ---------------------------------------------------------
    def use(self, row: int, ram: int, vcpus: int, disk: int, sign: int = 1) -> None:
        """Add (``sign=1``) or remove (``sign=-1``) resident usage on ``row``."""
        self.ram_used[row] += sign * ram
        self.vcpus_used[row] += sign * vcpus
        self.disk_used[row] += sign * disk

    def use_many(self, rows: Sequence[int], ram: Sequence[int], vcpus: Sequence[int],
                 disk: Sequence[int]) -> None:
        """Add the usage of many guests at once (``rows[k]`` gets ``ram[k]``, ...)."""
        index = np.asarray(rows, dtype=np.int64)
        np.add.at(self.ram_used, index, np.asarray(ram, dtype=np.int64))
        np.add.at(self.vcpus_used, index, np.asarray(vcpus, dtype=np.int64))
        np.add.at(self.disk_used, index, np.asarray(disk, dtype=np.int64))

    def claim(self, instance: str, claim: Claim) -> None:
        """Reserve ``claim`` for ``instance`` (replacing any claim it had)."""
        self.release_claim(instance)
        self.claims[instance] = claim
        self.claim_ram[claim.row] += claim.ram
        self.claim_vcpus[claim.row] += claim.vcpus
        self.claim_disk[claim.row] += claim.disk

    def release_claim(self, instance: str) -> Claim | None:
        """Drop the instance's claim; returns it (None if it had none)."""
        claim = self.claims.pop(instance, None)
        if claim is not None:
            self.claim_ram[claim.row] -= claim.ram
            self.claim_vcpus[claim.row] -= claim.vcpus
            self.claim_disk[claim.row] -= claim.disk
        return claim

    # The derived facts below are computed for ``rows`` only: one host (an int, giving
    # a scalar) for a check, every host with a service for the scheduler's table.

    def free_ram(self, rows: Any) -> Any:
        """Bytes: total - reserved - resident instances - claims (Nova's free_ram_mb)."""
        return self.ram[rows] - self.ram_used[rows] - self.claim_ram[rows]

    def free_disk(self, rows: Any) -> Any:
        return np.maximum(0, self.disk[rows] - self.disk_used[rows] - self.claim_disk[rows])

    def overcommitted(self) -> list[int]:
        """Rows of reachable hosts whose usage + claims exceed their RAM or disk."""
        over = (self.ram_used + self.claim_ram > self.ram) | (
            self.disk_used + self.claim_disk > self.disk
        )
        return [int(i) for i in np.flatnonzero(over) if self.reachable(int(i))]

    # -- status and heartbeats ----------------------------------------------------
    def reachable(self, row: int) -> bool:
        """Can the controller ask this host's libvirtd (host up, service up)?"""
        return self.up[row] and self.service[row]

    def connected(self, row: int) -> bool:
        """Reachable and its link up: migrations may start to or from it."""
        return self.up[row] and self.service[row] and self.link[row]

    def set_status(
        self,
        row: int,
        *,
        now: float,
        up: bool | None = None,
        service: bool | None = None,
        link: bool | None = None,
    ) -> None:
        """Change what is given; the heartbeat stops or restarts accordingly."""
        was = self.up[row] and self.service[row] and self.link[row]
        if up is not None:
            self.up[row] = up
        if service is not None:
            self.service[row] = service
        if link is not None:
            self.link[row] = link
        now_reporting = self.up[row] and self.service[row] and self.link[row]
        if was and not now_reporting:
            self._last_report[row] = self.last_heartbeat(row, now)
            self._reporting_since[row] = math.nan
        elif now_reporting and not was:
            self._reporting_since[row] = now

    def last_heartbeat(self, rows: Any, now: float) -> Any:
        """Report times: a reporting host reported at every multiple of ``report_interval``
        since it started; a host that stopped keeps its last report.

        Example: reporting since 0 s, interval 10 s, now 25 s -> last heartbeat 20 s.
        """
        tick = math.floor(now / self.interval) * self.interval
        since = self._reporting_since[rows]
        return np.where(np.isnan(since), self._last_report[rows], np.maximum(since, tick))
