"""Migration flag strings -> libvirt's virDomainMigrateFlags bitmask, and back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livemig.core import flags
from livemig.core.flags import FlagError, flag_names, parse_flags
from livemig.core.model import MigrationPolicy

# libvirt's values (include/libvirt/libvirt-domain.h), written out independently.
LIBVIRT = {
    "VIR_MIGRATE_LIVE": 1,
    "VIR_MIGRATE_PEER2PEER": 2,
    "VIR_MIGRATE_TUNNELLED": 4,
    "VIR_MIGRATE_PERSIST_DEST": 8,
    "VIR_MIGRATE_UNDEFINE_SOURCE": 16,
    "VIR_MIGRATE_PAUSED": 32,
    "VIR_MIGRATE_NON_SHARED_DISK": 64,
    "VIR_MIGRATE_NON_SHARED_INC": 128,
    "VIR_MIGRATE_CHANGE_PROTECTION": 256,
    "VIR_MIGRATE_UNSAFE": 512,
    "VIR_MIGRATE_OFFLINE": 1024,
    "VIR_MIGRATE_COMPRESSED": 2048,
    "VIR_MIGRATE_ABORT_ON_ERROR": 4096,
    "VIR_MIGRATE_AUTO_CONVERGE": 8192,
    "VIR_MIGRATE_RDMA_PIN_ALL": 16384,
    "VIR_MIGRATE_POSTCOPY": 32768,
    "VIR_MIGRATE_TLS": 65536,
    "VIR_MIGRATE_PARALLEL": 131072,
}


@pytest.mark.parametrize("name, bit", sorted(LIBVIRT.items(), key=lambda kv: kv[1]))
def test_each_name_is_its_libvirt_bit(name: str, bit: int) -> None:
    assert parse_flags(name) == bit


def test_table_is_exactly_libvirts() -> None:
    assert dict(flags.MIGRATE_FLAGS) == LIBVIRT


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        flags.MIGRATE_FLAGS["VIR_MIGRATE_FAST"] = 1 << 30  # type: ignore[index]


def test_named_constants() -> None:
    assert (flags.LIVE, flags.NON_SHARED_DISK, flags.NON_SHARED_INC) == (1, 64, 128)
    assert (flags.UNDEFINE_SOURCE, flags.POSTCOPY, flags.AUTO_CONVERGE) == (16, 32768, 8192)


# -- Nova's default strings ----------------------------------------------------------


def test_havana_live_migration_flag() -> None:
    assert parse_flags("VIR_MIGRATE_UNDEFINE_SOURCE, VIR_MIGRATE_PEER2PEER") == 16 | 2


def test_havana_block_migration_flag() -> None:
    text = "VIR_MIGRATE_UNDEFINE_SOURCE, VIR_MIGRATE_PEER2PEER, VIR_MIGRATE_NON_SHARED_INC"
    assert parse_flags(text) == 16 | 2 | 128 == 146


def test_modern_nova_flags() -> None:
    text = "VIR_MIGRATE_LIVE, VIR_MIGRATE_PEER2PEER, VIR_MIGRATE_UNDEFINE_SOURCE, " \
           "VIR_MIGRATE_PERSIST_DEST"
    assert parse_flags(text) == 27


def test_policy_defaults() -> None:
    policy = MigrationPolicy()
    live = parse_flags(policy.live_migration_flag)
    block = parse_flags(policy.block_migration_flag)
    assert live == 1 | 2 | 16 == 19
    assert block == live | 128 == 147
    assert flag_names(block) == [
        "VIR_MIGRATE_LIVE", "VIR_MIGRATE_PEER2PEER", "VIR_MIGRATE_UNDEFINE_SOURCE",
        "VIR_MIGRATE_NON_SHARED_INC",
    ]


# -- whitespace, empties, duplicates ----------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("", 0),
        ("   ", 0),
        (",", 0),
        (" , ,, ", 0),
        ("VIR_MIGRATE_LIVE,", 1),
        (",VIR_MIGRATE_LIVE", 1),
        ("  VIR_MIGRATE_LIVE ,\tVIR_MIGRATE_PEER2PEER\n", 3),
        ("VIR_MIGRATE_LIVE,,VIR_MIGRATE_TLS", 1 | 65536),
        ("VIR_MIGRATE_LIVE, VIR_MIGRATE_LIVE", 1),  # OR-ed: a repeat changes nothing
    ],
)
def test_whitespace_and_empty_items(text: str, value: int) -> None:
    assert parse_flags(text) == value


# -- unknown names -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, bad",
    [
        ("VIR_MIGRATE_LIVE, VIR_MIGRATE_FAST", "VIR_MIGRATE_FAST"),
        ("vir_migrate_live", "vir_migrate_live"),  # names are case-sensitive (getattr)
        ("VIR_MIGRATE LIVE", "VIR_MIGRATE LIVE"),  # inner whitespace is not stripped
        ("LIVE", "LIVE"),
        ("VIR_MIGRATE_LIVE; VIR_MIGRATE_PEER2PEER", "VIR_MIGRATE_LIVE; VIR_MIGRATE_PEER2PEER"),
    ],
)
def test_unknown_name_is_a_clear_error(text: str, bad: str) -> None:
    with pytest.raises(FlagError) as err:
        parse_flags(text)
    message = str(err.value)
    assert repr(bad) in message
    assert "VIR_MIGRATE_LIVE" in message and "VIR_MIGRATE_PARALLEL" in message  # lists names


def test_flag_error_is_a_value_error() -> None:
    assert issubclass(FlagError, ValueError)


# -- back to names -------------------------------------------------------------------


def test_flag_names_lowest_bit_first() -> None:
    assert flag_names(18) == ["VIR_MIGRATE_PEER2PEER", "VIR_MIGRATE_UNDEFINE_SOURCE"]
    assert flag_names(0) == []


@given(st.sets(st.sampled_from(sorted(LIBVIRT))))
def test_names_round_trip(names: set[str]) -> None:
    value = parse_flags(" , ".join(names))
    assert value == sum(LIBVIRT[n] for n in names)
    assert set(flag_names(value)) == names
    assert parse_flags(",".join(flag_names(value))) == value
