"""The live-migration pre-checks of Nova, as pure functions over facts.

Each function raises the exception Nova raises, or returns. Which host facts
and driver answers to feed them is the orchestrator's business.

Sizes: Nova reasons in MiB (``*_mb``) and GiB (``disk_available_least``);
instance sizes here are bytes and are converted with ``// MiB``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from livemig.core.errors import (
    BadRequest,
    ComputeServiceUnavailable,
    DestinationHypervisorTooOld,
    InstanceInvalidState,
    InvalidCPUInfo,
    InvalidHypervisorType,
    InvalidLocalStorage,
    InvalidSharedStorage,
    MigrationPreCheckError,
    UnableToMigrateToSelf,
)
from livemig.core.model import VmState
from livemig.core.state import InstanceRecord
from livemig.core.units import MiB
from livemig.drivers.base import HostFacts, HostTable

MIGRATABLE_STATES = (VmState.ACTIVE, VmState.PAUSED)


@dataclass(frozen=True, kw_only=True)
class LiveMigrateRequest:
    """The body of ``os-migrateLive``; ``host`` None lets the scheduler choose."""

    host: str | None
    block_migration: bool
    disk_over_commit: bool


def validate_request(body: Mapping[str, object]) -> LiveMigrateRequest:
    """Nova's API validation: ``host`` and ``block_migration`` must be present.

    >>> validate_request({"host": None, "block_migration": False, "disk_over_commit": False})
    LiveMigrateRequest(host=None, block_migration=False, disk_over_commit=False)
    >>> validate_request({"block_migration": True})  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    BadRequest: host and block_migration must be specified.
    """
    if "host" not in body or "block_migration" not in body or "disk_over_commit" not in body:
        raise BadRequest()
    host, block, over = body["host"], body["block_migration"], body["disk_over_commit"]
    if host is not None and not isinstance(host, str):
        raise BadRequest(f"host must be a host name or null, not {host!r}")
    if not isinstance(block, bool) or not isinstance(over, bool):
        raise BadRequest("block_migration and disk_over_commit must be booleans")
    return LiveMigrateRequest(host=host, block_migration=block, disk_over_commit=over)


def check_instance_state(instance: InstanceRecord) -> None:
    """The instance must be ACTIVE or PAUSED with no task in progress."""
    if instance.vm_state not in MIGRATABLE_STATES:
        raise InstanceInvalidState(
            instance=instance.name, attr="vm_state", state=instance.vm_state,
            method="live_migrate",
        )
    if instance.task_state is not None:
        raise InstanceInvalidState(
            instance=instance.name, attr="task_state", state=instance.task_state,
            method="live_migrate",
        )


def service_is_up(facts: HostFacts | HostTable, now: float, service_down_time: float) -> Any:
    """Nova's DB servicegroup driver: up while the last heartbeat is recent enough.

    On a :class:`HostTable` it answers for every host at once (a bool array;
    a NaN heartbeat, never reported, is down).

    >>> f = HostFacts(name="a", hypervisor_type="QEMU", hypervisor_version=1, cpu_model="x",
    ...               memory_mb=1, free_ram_mb=1, vcpus=1, vcpus_used=0, local_gb=1,
    ...               disk_available_least=1, last_heartbeat=100.0)
    >>> service_is_up(f, now=160.0, service_down_time=60.0), service_is_up(f, 160.5, 60.0)
    (True, False)
    """
    beat = facts.last_heartbeat
    if beat is None:
        return False
    return abs(now - beat) <= service_down_time


def check_source(
    source: str, facts: HostFacts | None, now: float, service_down_time: float
) -> None:
    """``_live_migration_src_check``: the instance's host service must be up."""
    if facts is None or not service_is_up(facts, now, service_down_time):
        raise ComputeServiceUnavailable(host=source)


def check_destination(
    instance: InstanceRecord,
    dest: str,
    facts: HostFacts | None,
    now: float,
    service_down_time: float,
) -> None:
    """``_live_migration_dest_check`` for an explicit destination.

    Memory uses Havana's strict comparison: a host whose free RAM equals the
    instance's RAM is refused.

    >>> inst = InstanceRecord(name="vm", host="a", ram=2048 * MiB, vcpus=1, disk=0,
    ...                       disk_allocated=0)
    >>> f = HostFacts(name="b", hypervisor_type="QEMU", hypervisor_version=1, cpu_model="x",
    ...               memory_mb=4096, free_ram_mb=2048, vcpus=4, vcpus_used=0, local_gb=1,
    ...               disk_available_least=1, last_heartbeat=0.0)
    >>> check_destination(inst, "b", f, 0.0, 60.0)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    MigrationPreCheckError: Unable to migrate vm to b: Lack of memory(host:2048 <= instance:2048)
    """
    if dest == instance.host:
        raise UnableToMigrateToSelf(instance=instance.name, host=dest)
    if facts is None:
        raise ComputeServiceUnavailable(host=dest)
    if not service_is_up(facts, now, service_down_time):
        raise ComputeServiceUnavailable(host=dest)
    need_mb = instance.ram // MiB
    if need_mb == 0 or facts.free_ram_mb <= need_mb:
        raise MigrationPreCheckError(
            reason=f"Unable to migrate {instance.name} to {dest}: Lack of memory"
            f"(host:{facts.free_ram_mb} <= instance:{need_mb})"
        )


def check_common(source: HostFacts, dest: HostFacts) -> None:
    """``_live_migration_common_check``: same hypervisor type, dest not older."""
    if source.hypervisor_type != dest.hypervisor_type:
        raise InvalidHypervisorType(
            f"The supplied hypervisor type of {dest.name} ({dest.hypervisor_type}) is "
            f"invalid: the source {source.name} runs {source.hypervisor_type}."
        )
    if source.hypervisor_version > dest.hypervisor_version:
        raise DestinationHypervisorTooOld(
            f"The instance requires a newer hypervisor version than {dest.name} provides "
            f"({dest.hypervisor_version} < {source.hypervisor_version})."
        )


def check_cpu(compatible: bool, source: HostFacts, dest: HostFacts) -> None:
    """The answer of libvirt's compareCPU (source CPU on dest) as Nova treats it."""
    if not compatible:
        raise InvalidCPUInfo(
            reason=f"CPU {source.cpu_model} of {source.name} is not compatible with "
            f"{dest.cpu_model} of {dest.name}"
        )


def disk_available_mb(dest: HostFacts, reserved_host_disk_mb: int) -> int:
    """What block migration may use on dest.

    >>> f = HostFacts(name="b", hypervisor_type="QEMU", hypervisor_version=1, cpu_model="x",
    ...               memory_mb=1, free_ram_mb=1, vcpus=1, vcpus_used=0, local_gb=100,
    ...               disk_available_least=20, last_heartbeat=0.0)
    >>> disk_available_mb(f, reserved_host_disk_mb=1024)  # 20 * 1024 - 1024
    19456
    """
    return dest.disk_available_least * 1024 - reserved_host_disk_mb


def check_source_storage(
    instance: InstanceRecord,
    *,
    block_migration: bool,
    shared: bool,
    available_mb: int | None,
    disk_over_commit: bool,
) -> None:
    """``check_can_live_migrate_source`` of the libvirt driver.

    With ``disk_over_commit`` the disk is counted at its allocated size, else
    at its virtual size (Havana's ``_assert_dest_node_has_enough_disk``).
    """
    source = instance.host
    if block_migration:
        if shared:
            raise InvalidLocalStorage(
                reason="Block migration can not be used with shared storage.", path=source
            )
        necessary = instance.disk_allocated if disk_over_commit else instance.disk
        available = (available_mb or 0) * MiB
        if available - necessary < 0:
            raise MigrationPreCheckError(
                reason=f"Unable to migrate {instance.name}: Disk of instance is too large"
                f"(available on destination host:{available} < need:{necessary})"
            )
    elif not shared and not instance.volume_backed:
        raise InvalidSharedStorage(
            reason="Live migration can not be used without shared storage.", path=source
        )
