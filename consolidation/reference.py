"""The reference experiment's setup (CloudSim 5.0's PlanetLab examples; see
``consolidation-reference.md``): 800 hosts alternating two SPECpower servers, four VM
types assigned by block, 300 s scheduling interval, 86,400 s limit.

>>> HOST_TYPES[0].mips * HOST_TYPES[0].pes, HOST_TYPES[1].power_model
(3720, 'hp-ml110-g5')
>>> [migration_seconds(t.ram_mb, HOST_BW_KBIT) for t in VM_TYPES]
[13.92, 27.84, 27.84, 9.808]
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostType:
    name: str
    pes: int
    mips: int  # per PE
    ram_mb: int
    bw_kbit: int
    power_model: str


@dataclass(frozen=True)
class VmType:
    mips: int
    ram_mb: int
    bw_kbit: int


HOST_BW_KBIT = 1_000_000
HOST_TYPES = (
    HostType("hp-ml110-g4", 2, 1860, 4096, HOST_BW_KBIT, "hp-ml110-g4"),
    HostType("hp-ml110-g5", 2, 2660, 4096, HOST_BW_KBIT, "hp-ml110-g5"),
)
VM_TYPES = (VmType(2500, 870, 100_000), VmType(2000, 1740, 100_000),
            VmType(1000, 1740, 100_000), VmType(500, 613, 100_000))
HOSTS = 800
INTERVAL = 300.0
LIMIT = 86_400.0
FIRST_UPDATE = 0.1  # the broker's creation delay: updates at 300.1, 600.1, ...


def migration_seconds(ram_mb: float, dest_bw_kbit: float) -> float:
    """CloudSim's migration time: RAM over half the destination's bandwidth (1 MB = 8000 kbit)."""
    return ram_mb / (dest_bw_kbit / (2 * 8000))
