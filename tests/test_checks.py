"""The pre-checks of core/checks.py, one behaviour per test, Nova's boundaries exactly."""

from __future__ import annotations

import pytest
from fakes import GiB, MiB, facts, instance

from livemig.core import checks
from livemig.core.errors import (
    BadRequest,
    ComputeServiceUnavailable,
    DestinationHypervisorTooOld,
    InstanceInvalidState,
    Invalid,
    InvalidCPUInfo,
    InvalidHypervisorType,
    InvalidLocalStorage,
    InvalidSharedStorage,
    MigrationPreCheckError,
    UnableToMigrateToSelf,
)
from livemig.core.model import TaskState, VmState

# -- request validation ------------------------------------------------------------


def test_full_body_is_accepted() -> None:
    req = checks.validate_request(
        {"host": "h2", "block_migration": True, "disk_over_commit": False}
    )
    assert req == checks.LiveMigrateRequest(host="h2", block_migration=True,
                                            disk_over_commit=False)


def test_null_host_means_scheduler_chooses() -> None:
    req = checks.validate_request(
        {"host": None, "block_migration": False, "disk_over_commit": True}
    )
    assert req.host is None and req.disk_over_commit is True


@pytest.mark.parametrize("missing", ["host", "block_migration", "disk_over_commit"])
def test_missing_field_is_bad_request(missing: str) -> None:
    body = {"host": "h2", "block_migration": False, "disk_over_commit": False}
    del body[missing]
    with pytest.raises(BadRequest) as err:
        checks.validate_request(body)
    assert str(err.value) == "host and block_migration must be specified."
    assert err.value.name == "BadRequest"


def test_empty_body_is_bad_request() -> None:
    with pytest.raises(BadRequest):
        checks.validate_request({})


@pytest.mark.parametrize(
    "field, value",
    [("host", 42), ("host", ["h2"]), ("block_migration", "true"), ("block_migration", 1),
     ("disk_over_commit", None), ("disk_over_commit", 0)],
)
def test_wrongly_typed_field_is_bad_request(field: str, value: object) -> None:
    body: dict[str, object] = {"host": "h2", "block_migration": False, "disk_over_commit": False}
    body[field] = value
    with pytest.raises(BadRequest) as err:
        checks.validate_request(body)
    assert repr(value) in str(err.value) or "boolean" in str(err.value)


def test_bad_request_is_an_invalid() -> None:
    assert issubclass(BadRequest, Invalid)


# -- instance state ----------------------------------------------------------------


@pytest.mark.parametrize("state", [VmState.ACTIVE, VmState.PAUSED])
def test_active_and_paused_instances_may_migrate(state: VmState) -> None:
    checks.check_instance_state(instance(vm_state=state))


@pytest.mark.parametrize("state", [VmState.STOPPED, VmState.ERROR])
def test_other_vm_states_are_refused(state: VmState) -> None:
    with pytest.raises(InstanceInvalidState) as err:
        checks.check_instance_state(instance(vm_state=state))
    message = str(err.value)
    assert "vm_state" in message and str(state) in message and "vm1" in message


def test_task_in_progress_is_refused() -> None:
    with pytest.raises(InstanceInvalidState) as err:
        checks.check_instance_state(instance(task_state=TaskState.MIGRATING))
    assert "task_state" in str(err.value) and "migrating" in str(err.value)


# -- service up/down ---------------------------------------------------------------


@pytest.mark.parametrize(
    "now, up",
    [
        (100.0, True),  # just reported
        (159.999, True),
        (160.0, True),  # age == service_down_time: still up (Nova's <=)
        (160.001, False),
        (1000.0, False),
        (40.0, True),  # heartbeat 60 s in the future (clock skew): abs() age
        (39.9, False),
    ],
)
def test_service_is_up_by_heartbeat_age(now: float, up: bool) -> None:
    f = facts("h2", last_heartbeat=100.0)
    assert checks.service_is_up(f, now=now, service_down_time=60.0) is up


def test_service_without_heartbeat_is_down() -> None:
    assert not checks.service_is_up(facts("h2", last_heartbeat=None), 0.0, 60.0)


def test_source_check_passes_for_live_source() -> None:
    checks.check_source("h1", facts("h1", last_heartbeat=0.0), now=60.0, service_down_time=60.0)


@pytest.mark.parametrize("source_facts", [None, facts("h1", last_heartbeat=0.0)])
def test_source_check_refuses_missing_or_stale_service(source_facts: object) -> None:
    with pytest.raises(ComputeServiceUnavailable) as err:
        checks.check_source("h1", source_facts, now=61.0, service_down_time=60.0)  # type: ignore[arg-type]
    assert "h1" in str(err.value)


# -- destination -------------------------------------------------------------------

INST = instance(ram=2048 * MiB)  # 2048 MiB on h1


def dest_check(dest: str = "h2", **fact_fields: object) -> None:
    fields: dict[str, object] = {"free_ram_mb": 8192, "last_heartbeat": 0.0}
    fields.update(fact_fields)
    checks.check_destination(INST, dest, facts(dest, **fields), now=10.0,
                             service_down_time=60.0)


def test_destination_with_room_passes() -> None:
    dest_check()


def test_migrating_to_own_host_is_refused() -> None:
    with pytest.raises(UnableToMigrateToSelf) as err:
        dest_check("h1")
    assert "vm1" in str(err.value) and "h1" in str(err.value)


def test_self_is_refused_before_anything_else() -> None:
    with pytest.raises(UnableToMigrateToSelf):
        checks.check_destination(INST, "h1", None, now=0.0, service_down_time=60.0)


def test_destination_without_service_record_is_unavailable() -> None:
    with pytest.raises(ComputeServiceUnavailable) as err:
        checks.check_destination(INST, "h9", None, now=0.0, service_down_time=60.0)
    assert "h9" in str(err.value)


def test_destination_with_stale_heartbeat_is_unavailable() -> None:
    with pytest.raises(ComputeServiceUnavailable) as err:
        checks.check_destination(INST, "h2", facts("h2", last_heartbeat=0.0, free_ram_mb=8192),
                                 now=60.5, service_down_time=60.0)
    assert "h2" in str(err.value)


def test_destination_heartbeat_exactly_service_down_time_old_is_up() -> None:
    checks.check_destination(INST, "h2", facts("h2", last_heartbeat=0.0, free_ram_mb=8192),
                             now=60.0, service_down_time=60.0)


def test_free_ram_equal_to_instance_ram_is_refused() -> None:
    """Havana's strict comparison: free RAM must exceed the instance's RAM."""
    with pytest.raises(MigrationPreCheckError) as err:
        dest_check(free_ram_mb=2048)
    assert "Lack of memory" in str(err.value)
    assert "2048 <= instance:2048" in str(err.value)


def test_one_mib_more_free_ram_passes() -> None:
    dest_check(free_ram_mb=2049)


def test_less_free_ram_is_refused() -> None:
    with pytest.raises(MigrationPreCheckError):
        dest_check(free_ram_mb=1024)


def test_instance_without_ram_is_refused() -> None:
    """Havana: ``if not mem_inst or avail <= mem_inst``."""
    tiny = instance(ram=512 * 1024)  # 0 MiB after // MiB
    with pytest.raises(MigrationPreCheckError):
        checks.check_destination(tiny, "h2", facts("h2"), now=0.0, service_down_time=60.0)


def test_memory_check_ignores_allocation_ratio_and_total() -> None:
    """Havana compares free RAM only: a huge host with little free RAM is refused."""
    with pytest.raises(MigrationPreCheckError):
        dest_check(memory_mb=1 << 20, free_ram_mb=1000)


# -- common checks -----------------------------------------------------------------


def test_same_type_and_version_pass() -> None:
    checks.check_common(facts("h1"), facts("h2"))


def test_newer_destination_passes() -> None:
    checks.check_common(facts("h1", hypervisor_version=1_002_000),
                        facts("h2", hypervisor_version=1_003_000))


def test_different_hypervisor_type_is_invalid() -> None:
    with pytest.raises(InvalidHypervisorType) as err:
        checks.check_common(facts("h1"), facts("h2", hypervisor_type="Xen"))
    assert "Xen" in str(err.value) and "QEMU" in str(err.value)


def test_type_is_checked_before_version() -> None:
    with pytest.raises(InvalidHypervisorType):
        checks.check_common(facts("h1", hypervisor_version=5),
                            facts("h2", hypervisor_type="Xen", hypervisor_version=1))


def test_older_destination_is_too_old() -> None:
    with pytest.raises(DestinationHypervisorTooOld) as err:
        checks.check_common(facts("h1", hypervisor_version=2_000_000),
                            facts("h2", hypervisor_version=1_999_999))
    assert "1999999 < 2000000" in str(err.value)


def test_common_failures_are_retryable_invalids() -> None:
    assert issubclass(InvalidHypervisorType, Invalid)
    assert issubclass(DestinationHypervisorTooOld, Invalid)
    assert issubclass(InvalidCPUInfo, Invalid)
    assert issubclass(UnableToMigrateToSelf, Invalid)


# -- CPU ---------------------------------------------------------------------------


def test_compatible_cpu_passes() -> None:
    checks.check_cpu(True, facts("h1"), facts("h2"))


def test_incompatible_cpu_is_invalid_cpu_info() -> None:
    with pytest.raises(InvalidCPUInfo) as err:
        checks.check_cpu(False, facts("h1", cpu_model="Icelake-Server"),
                         facts("h2", cpu_model="Nehalem"))
    message = str(err.value)
    assert "Icelake-Server" in message and "Nehalem" in message and "h2" in message


# -- disk arithmetic ---------------------------------------------------------------


@pytest.mark.parametrize(
    "least_gb, reserved_mb, expected",
    [(20, 1024, 19456), (20, 0, 20480), (0, 0, 0), (1, 1, 1023), (0, 512, -512)],
)
def test_disk_available_mb(least_gb: int, reserved_mb: int, expected: int) -> None:
    f = facts("h2", disk_available_least=least_gb)
    assert checks.disk_available_mb(f, reserved_host_disk_mb=reserved_mb) == expected


# -- source-side storage -----------------------------------------------------------


def storage(inst: object = None, *, block: bool, shared: bool, available_mb: int | None = None,
            over_commit: bool = False) -> None:
    checks.check_source_storage(
        inst or instance(), block_migration=block, shared=shared,  # type: ignore[arg-type]
        available_mb=available_mb, disk_over_commit=over_commit,
    )


def test_block_migration_on_shared_storage_is_invalid_local_storage() -> None:
    with pytest.raises(InvalidLocalStorage) as err:
        storage(block=True, shared=True, available_mb=1 << 30)
    assert "Block migration can not be used with shared storage." in str(err.value)
    assert str(err.value).startswith("h1 ")


def test_live_migration_without_shared_storage_is_invalid_shared_storage() -> None:
    with pytest.raises(InvalidSharedStorage) as err:
        storage(block=False, shared=False)
    assert "Live migration can not be used without shared storage." in str(err.value)


def test_volume_backed_instance_needs_no_shared_storage() -> None:
    storage(instance(volume_backed=True), block=False, shared=False)


def test_live_migration_on_shared_storage_passes() -> None:
    storage(block=False, shared=True)


def test_block_migration_with_room_passes() -> None:
    storage(block=True, shared=False, available_mb=20 * 1024)


def test_block_migration_disk_exactly_fitting_passes() -> None:
    storage(instance(disk=10 * GiB), block=True, shared=False, available_mb=10 * 1024)


def test_block_migration_disk_one_byte_too_large_is_precheck_error() -> None:
    with pytest.raises(MigrationPreCheckError) as err:
        storage(instance(disk=10 * GiB + 1, disk_allocated=GiB), block=True, shared=False,
                available_mb=10 * 1024)
    assert "Disk of instance is too large" in str(err.value)
    assert str(10 * GiB + 1) in str(err.value)


def test_disk_over_commit_counts_allocated_not_virtual_size() -> None:
    sparse = instance(disk=20 * GiB, disk_allocated=5 * GiB)
    with pytest.raises(MigrationPreCheckError):
        storage(sparse, block=True, shared=False, available_mb=10 * 1024, over_commit=False)
    storage(sparse, block=True, shared=False, available_mb=10 * 1024, over_commit=True)


def test_disk_over_commit_still_refuses_too_large_allocation() -> None:
    fat = instance(disk=20 * GiB, disk_allocated=15 * GiB)
    with pytest.raises(MigrationPreCheckError):
        storage(fat, block=True, shared=False, available_mb=10 * 1024, over_commit=True)


def test_block_migration_with_unknown_space_counts_none_available() -> None:
    with pytest.raises(MigrationPreCheckError):
        storage(block=True, shared=False, available_mb=None)
    storage(instance(disk=0, disk_allocated=0), block=True, shared=False, available_mb=None)


def test_block_migration_with_negative_space_is_refused_even_for_empty_disk() -> None:
    with pytest.raises(MigrationPreCheckError):
        storage(instance(disk=0, disk_allocated=0), block=True, shared=False, available_mb=-1)


def test_storage_failures_are_not_retryable() -> None:
    """Nova's InvalidLocalStorage / InvalidSharedStorage are not ``Invalid``."""
    assert not issubclass(InvalidLocalStorage, Invalid)
    assert not issubclass(InvalidSharedStorage, Invalid)
