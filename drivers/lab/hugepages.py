"""Lab guests on huge pages: the machine's hugetlb pool, sized and warmed once.

Why: on a virtual machine whose hypervisor takes back the memory its guest kernel frees
(free page reporting: ``/sys/module/page_reporting``), the first write to a freshly
allocated page waits for the hypervisor. Measured here (2 CPUs, 24 GiB): 4 GiB of fresh
4 KiB pages written in 37 s (110 MiB/s), the same 4 GiB again at once in 0.6 s. A lab
destination QEMU writes every page it receives into fresh memory, so an uncapped lab
migration went at the speed of the hypervisor's page backing (55-90 MiB/s, the
destination's main thread 93 % in the kernel's ``clear_page_erms``), not at QEMU's: with
3 GiB of just-freed, backed memory released as the destination started, the same case ran
at 819 MiB/s. How much of the machine's free memory is backed changes by the minute.

Pages of the hugetlb pool never go back to the kernel's free lists, so they are never
reported: once written they stay backed (1 GiB rewritten in 0.14 s after 20 s idle, 10.2 s
the first time). :func:`ensure_pool` grows the pool to what the lab asks for and
:func:`warm_pool` writes each free page once; lab guests then take their RAM from the pool
(libvirt's ``<memoryBacking><hugepages/>``, the hosts' hugetlbfs at :data:`HUGETLBFS_MOUNT`).
The pool is the machine's: ``lab down`` leaves it (``sysctl vm.nr_hugepages=0`` frees it).

>>> pool_pages(1000, page_kib=2048)   # 1000 MiB in 2 MiB pages
500
>>> pool_pages(1001, page_kib=2048)   # rounded up
501
"""

from __future__ import annotations

import math
import mmap
from dataclasses import dataclass
from pathlib import Path

from livemig.drivers.lab.errors import LabError

#: Where each lab host mounts its hugetlbfs (inside its private /var/lib/libvirt) and
#: where its qemu.conf's ``hugetlbfs_mount`` points.
HUGETLBFS_MOUNT = Path("/var/lib/libvirt/hugepages")
NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
MEMINFO = Path("/proc/meminfo")
MAP_HUGETLB = 0x40000  # linux/mman.h
#: Present when this kernel reports free memory to its hypervisor (free page reporting).
PAGE_REPORTING = Path("/sys/module/page_reporting")


@dataclass(frozen=True)
class Pool:
    """The hugetlb pool as /proc/meminfo reports it."""

    total: int  # pages
    free: int  # pages
    page_kib: int

    @property
    def free_mib(self) -> float:
        return self.free * self.page_kib / 1024


def ordinary_memory_warning(lab_hugepages: bool, page_reporting: Path = PAGE_REPORTING
                            ) -> str | None:
    """What to tell someone about to measure migrations in a lab whose guests are on
    ordinary memory, on a machine that reports free memory to its hypervisor; else None.

    >>> ordinary_memory_warning(True) is None
    True
    >>> ordinary_memory_warning(False, Path("/nonexistent")) is None
    True
    >>> print(ordinary_memory_warning(False, Path("/")))  # doctest: +ELLIPSIS
    note: this machine reports free memory to its hypervisor (/) and the lab's guests ...
    """
    if lab_hugepages or not page_reporting.exists():
        return None
    return (f"note: this machine reports free memory to its hypervisor ({page_reporting}) and "
            "the lab's guests are on ordinary memory: an uncapped migration will go at the "
            "speed the hypervisor backs fresh pages, which changes by the minute "
            "(docs/lab-memory-backing.md); `livemig lab up --hugepages 1536` avoids it")


def pool_pages(mib: int, page_kib: int) -> int:
    """Pages of ``page_kib`` KiB that hold ``mib`` MiB (see the module's example)."""
    return math.ceil(mib * 1024 / page_kib)


def read_pool(meminfo: Path = MEMINFO) -> Pool:
    """The pool's size, free pages and page size."""
    fields: dict[str, int] = {}
    for line in meminfo.read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts:
            fields[key] = int(parts[0])
    return Pool(total=fields.get("HugePages_Total", 0), free=fields.get("HugePages_Free", 0),
                page_kib=fields.get("Hugepagesize", 2048))


def ensure_pool(mib: int) -> Pool:
    """Grow the machine's pool until ``mib`` MiB of it are free (never shrink it)."""
    pool = read_pool()
    need = pool_pages(mib, pool.page_kib)
    if pool.free >= need:
        return pool
    NR_HUGEPAGES.write_text(f"{pool.total + need - pool.free}\n")
    pool = read_pool()
    if pool.free < need:
        raise LabError(
            f"the hugetlb pool has {pool.free_mib:.0f} MiB free after asking the kernel for "
            f"{mib} MiB ({NR_HUGEPAGES} = {pool.total}): not enough contiguous free memory; "
            f"ask for less (--hugepages) or free memory"
        )
    return pool


def warm_pool() -> None:
    """Write every free page of the pool once (about 10 s per GiB the first time on this
    machine, 0.14 s after)."""
    pool = read_pool()
    if pool.free == 0:
        return
    size = pool.free * pool.page_kib * 1024
    step = pool.page_kib * 1024
    area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_HUGETLB)
    try:
        for offset in range(0, size, step):
            area[offset] = 1  # the fault clears (and so backs) the whole huge page
    finally:
        area.close()
