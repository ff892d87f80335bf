"""libvirt migration flags from Nova-style configuration strings.

The bit values are libvirt's ``virDomainMigrateFlags`` (core does not import
libvirt; a real-driver test checks this table against the binding).

>>> parse_flags("VIR_MIGRATE_UNDEFINE_SOURCE, VIR_MIGRATE_PEER2PEER")
18
>>> flag_names(18)
['VIR_MIGRATE_PEER2PEER', 'VIR_MIGRATE_UNDEFINE_SOURCE']
"""

from __future__ import annotations

from types import MappingProxyType

MIGRATE_FLAGS = MappingProxyType(
    {
        "VIR_MIGRATE_LIVE": 1 << 0,
        "VIR_MIGRATE_PEER2PEER": 1 << 1,
        "VIR_MIGRATE_TUNNELLED": 1 << 2,
        "VIR_MIGRATE_PERSIST_DEST": 1 << 3,
        "VIR_MIGRATE_UNDEFINE_SOURCE": 1 << 4,
        "VIR_MIGRATE_PAUSED": 1 << 5,
        "VIR_MIGRATE_NON_SHARED_DISK": 1 << 6,
        "VIR_MIGRATE_NON_SHARED_INC": 1 << 7,
        "VIR_MIGRATE_CHANGE_PROTECTION": 1 << 8,
        "VIR_MIGRATE_UNSAFE": 1 << 9,
        "VIR_MIGRATE_OFFLINE": 1 << 10,
        "VIR_MIGRATE_COMPRESSED": 1 << 11,
        "VIR_MIGRATE_ABORT_ON_ERROR": 1 << 12,
        "VIR_MIGRATE_AUTO_CONVERGE": 1 << 13,
        "VIR_MIGRATE_RDMA_PIN_ALL": 1 << 14,
        "VIR_MIGRATE_POSTCOPY": 1 << 15,
        "VIR_MIGRATE_TLS": 1 << 16,
        "VIR_MIGRATE_PARALLEL": 1 << 17,
    }
)

LIVE = MIGRATE_FLAGS["VIR_MIGRATE_LIVE"]
NON_SHARED_DISK = MIGRATE_FLAGS["VIR_MIGRATE_NON_SHARED_DISK"]
NON_SHARED_INC = MIGRATE_FLAGS["VIR_MIGRATE_NON_SHARED_INC"]
UNDEFINE_SOURCE = MIGRATE_FLAGS["VIR_MIGRATE_UNDEFINE_SOURCE"]
POSTCOPY = MIGRATE_FLAGS["VIR_MIGRATE_POSTCOPY"]
AUTO_CONVERGE = MIGRATE_FLAGS["VIR_MIGRATE_AUTO_CONVERGE"]


class FlagError(ValueError):
    """A flag string names something that is not a libvirt migration flag."""


def parse_flags(text: str) -> int:
    """OR together the comma-separated flag names of ``text``, as Nova does.

    Blank items are ignored; an unknown name is an error naming it.

    >>> parse_flags("VIR_MIGRATE_LIVE,VIR_MIGRATE_NON_SHARED_INC")
    129
    >>> parse_flags("VIR_MIGRATE_LIVE, VIR_MIGRATE_FAST")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    FlagError: unknown migration flag 'VIR_MIGRATE_FAST'; expected one of VIR_MIGRATE_LIVE, ...
    """
    value = 0
    for item in text.split(","):
        name = item.strip()
        if not name:
            continue
        if name not in MIGRATE_FLAGS:
            known = ", ".join(MIGRATE_FLAGS)
            raise FlagError(f"unknown migration flag {name!r}; expected one of {known}")
        value |= MIGRATE_FLAGS[name]
    return value


def flag_names(value: int) -> list[str]:
    """The names of the bits set in ``value``, lowest bit first."""
    return [name for name, bit in MIGRATE_FLAGS.items() if value & bit]
