"""Real KVM hosts, on the fake libvirt (no root): one Ansible inventory for Ansible and
livemig, VMs booted from a disk image, adopted domains that livemig never destroys, and
faults refused unless the inventory asks Ansible to make them."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fakelibvirt import libvirt as fake
from fakelibvirt.driver import fake_ansible_inventory, fake_driver, two_host_world
from fakelibvirt.world import World
from fakes import poll_job

from livemig.core.errors import MigrationError
from livemig.core.flags import parse_flags
from livemig.core.model import HostSpec, MigrationPolicy, Policy, Scenario, Storage, VmSpec
from livemig.core.scenario import parse_scenario
from livemig.core.yaml_nodes import ScenarioError
from livemig.drivers import ansible_faults
from livemig.drivers.base import DriverSetupError, JobType
from livemig.drivers.guests import OWNER_NS, is_owned
from livemig.drivers.hosts_inventory import InventoryError, load_hosts_inventory

MiB = 1 << 20
GiB = 1 << 30
SRC, DEST = "kvm1", "kvm2"
IMAGE = "debian-12-genericcloud.qcow2"
POOL_PATH = "/var/lib/libvirt/instances"


# -- one inventory: Ansible's own parser --------------------------------------------------------

INI = """\
[kvm_hosts:children]
rack1

[rack1]
kvm1 ansible_host=10.0.0.1 libvirt_uri=qemu+tls://kvm1/system
kvm2 ansible_host=10.0.0.2 libvirt_uri=qemu+tls://kvm2/system storage=local

[rack1:vars]
migration_address=192.168.50.0

[kvm_hosts:vars]
storage=shared
instances_path=/var/lib/libvirt/instances

[all:vars]
livemig_faults=ansible
"""

YAML = """\
all:
  vars:
    livemig_faults: ansible
  children:
    kvm_hosts:
      vars:
        storage: shared
        instances_path: /var/lib/libvirt/instances
      children:
        rack1:
          vars:
            migration_address: 192.168.50.0
          hosts:
            kvm1: {ansible_host: 10.0.0.1, libvirt_uri: "qemu+tls://kvm1/system"}
            kvm2:
              ansible_host: 10.0.0.2
              libvirt_uri: qemu+tls://kvm2/system
              storage: local
"""


@pytest.mark.parametrize(("name", "text"), [("hosts.ini", INI), ("hosts.yml", YAML)])
def test_an_ansible_inventory_gives_the_hosts_with_inherited_group_vars(
        tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    inv = load_hosts_inventory(path)
    assert [h.name for h in inv.hosts] == ["kvm1", "kvm2"]
    kvm1, kvm2 = inv.hosts
    assert (kvm1.uri, kvm1.address, kvm1.storage) == ("qemu+tls://kvm1/system", "10.0.0.1",
                                                      "shared")
    assert kvm2.storage == "local"  # the host's own value wins over its group's
    assert kvm1.migration_address == "192.168.50.0"  # from the child group rack1
    assert kvm1.instances_path == "/var/lib/libvirt/instances"  # from kvm_hosts
    assert inv.faults == "ansible"  # from all
    assert inv.lab is None and inv.lab_record is None


def test_group_vars_files_beside_the_inventory_count(tmp_path: Path) -> None:
    (tmp_path / "hosts.ini").write_text(
        "[kvm_hosts]\nkvm1 libvirt_uri=qemu+tcp://kvm1/system\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "kvm_hosts.yml").write_text(
        "storage: local\ninstances_path: /srv/instances\n")
    (host,) = load_hosts_inventory(tmp_path / "hosts.ini").hosts
    assert (host.storage, host.instances_path, host.address) == ("local", "/srv/instances",
                                                                 "kvm1")
    assert host.migration_address == "kvm1"  # default: the address Ansible reaches


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("hosts.ini", "[kvm_hosts]\nkvm1 storage=shared instances_path=/x\n",
     r"hosts.ini: host kvm1: no libvirt_uri; expected libvirt_uri = a libvirt URI"),
    ("hosts.ini", "[kvm_hosts]\nkvm1 libvirt_uri=qemu+tcp://kvm1/system instances_path=/x "
                  "storage=nfs\n",
     r"hosts.ini:2: host kvm1: storage='nfs'; expected shared or local"),
    ("hosts.yml", "all:\n  children:\n    kvm_hosts:\n      hosts:\n        kvm1:\n"
                  "          libvirt_uri: kvm1\n          storage: shared\n"
                  "          instances_path: /x\n",
     r"hosts.yml:6: host kvm1: libvirt_uri='kvm1'; expected a libvirt URI"),
    ("hosts.ini", "[computes]\nkvm1 libvirt_uri=qemu+tcp://kvm1/system\n",
     r"hosts.ini: no hosts in group 'kvm_hosts'; expected the KVM hosts in a group kvm_hosts"),
    ("hosts.ini", "[kvm_hosts\nkvm1\n",
     r"hosts.ini: not an Ansible inventory in INI: .*; expected group kvm_hosts"),
    ("hosts.yml", "all:\n  children:\n    kvm_hosts:\n      hosts: [kvm1]\n",
     r"hosts.yml: not an Ansible inventory in YAML: Invalid \"hosts\" entry"),
    ("hosts.ini", "[kvm_hosts]\nkvm1 libvirt_uri=qemu+tcp://kvm1/system storage=shared "
                  "instances_path=/x livemig_accel=hvf\n",
     r"hosts.ini:2: host kvm1: livemig_accel='hvf'; expected auto or kvm or qemu"),
])
def test_a_bad_inventory_is_one_line_naming_file_line_field_and_expectation(
        tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InventoryError, match=expected) as exc:
        load_hosts_inventory(path)
    assert "\n" not in str(exc.value) and str(path.parent) in str(exc.value)


def test_the_labs_own_record_still_reads_as_the_inventory_of_that_lab(tmp_path: Path) -> None:
    world = two_host_world((SRC, DEST))
    from fakelibvirt.driver import fake_inventory

    path = fake_inventory(world, tmp_path)
    inv = load_hosts_inventory(path)
    assert [h.name for h in inv.hosts] == [SRC, DEST]
    assert inv.lab_record == path and inv.faults == "lab" and inv.accel == "qemu"


# -- the driver on real hosts (the fake libvirt) ------------------------------------------------


def vm(name: str = "web1", **fields: Any) -> VmSpec:
    return VmSpec(**{"name": name, "host": SRC, "ram": 512 * MiB, "vcpus": 1,
                     "used_memory": 64 * MiB, "working_set": 8 * MiB, "dirty_rate": 0.0,
                     **fields})


def scenario(*vms: VmSpec) -> Scenario:
    return Scenario(
        name="real-hosts",
        hosts=tuple(HostSpec(name=n, ram=4 * GiB, vcpus=4, disk=20 * GiB,
                             storage=Storage.SHARED) for n in (SRC, DEST)),
        vms=vms,
        policy=Policy(migration=MigrationPolicy(completion_timeout=0.0, keepalive_interval=1.0,
                                                keepalive_count=1)),
    )


@pytest.fixture
def world() -> World:
    world = two_host_world((SRC, DEST))
    pool = world.hosts[SRC].pools["instances"]
    pool.volumes[IMAGE] = 300 * MiB
    pool.xml[IMAGE] = (f"<volume><name>{IMAGE}</name><capacity>{2 * GiB}</capacity>"
                       "<target><format type='qcow2'/></target></volume>")
    return world


@pytest.fixture
def make(world: World, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``make(scenario, group_vars=..., **driver options)`` on an Ansible inventory."""
    made: list[Any] = []

    def build(scn: Scenario, group_vars: dict[str, str] | None = None, **options: Any) -> Any:
        inventory = fake_ansible_inventory(world, tmp_path, group_vars=group_vars)
        drv = fake_driver(world, scn, tmp_path, inventory=inventory, **options)
        made.append(drv)
        return drv

    yield build
    for drv in reversed(made):
        drv.close()


def existing_domain(world: World, host: str, name: str = "web1", **extra: str) -> Any:
    """A running domain that livemig did not create (no mark), as an operator's guest."""
    cmdline = " ".join(f"livemig.{k}={v}" for k, v in extra.items())
    rec = world.define(world.hosts[host], (
        f"<domain type='kvm'><name>{name}</name><uuid>1f0e0e0e-0000-4000-8000-{host:0>12}"
        f"</uuid><memory unit='MiB'>512</memory><vcpu>1</vcpu><os><cmdline>{cmdline}"
        "</cmdline></os></domain>"))
    with world.cond:
        world.start(rec)
    return rec


def running(world: World, name: str = "web1") -> dict[str, tuple[int, int]]:
    return {h: s for h, s in world.where(name).items() if s[0] != fake.VIR_DOMAIN_SHUTOFF}


def migrate(drv: Any, name: str = "web1") -> None:
    drv.pre_live_migration(name, DEST, False)
    drv.start_migration(name, DEST, uri=f"qemu+tcp://{DEST}/system",
                        flags=parse_flags(drv._policy.live_migration_flag), bandwidth_mib=0)


def test_an_image_vm_boots_from_a_qcow2_overlay_of_the_image_under_tcg_without_kvm(
        world: World, make: Callable[..., Any]) -> None:
    drv = make(scenario(vm(image=IMAGE)))
    rec = world.hosts[SRC].domains["web1"]
    assert rec.active and is_owned(rec.xml) and OWNER_NS in rec.xml
    assert ET.fromstring(rec.xml).get("type") == "qemu"  # the fake host offers no KVM
    assert f"<source file=\"{POOL_PATH}/web1.qcow2\"" in rec.xml
    pool = world.hosts[SRC].pools["instances"]
    overlay = pool.xml["web1.qcow2"]
    assert f"<backingStore><path>{POOL_PATH}/{IMAGE}</path><format type='qcow2'/>" in overlay
    assert f"<capacity unit='bytes'>{2 * GiB}</capacity>" in overlay  # the image's size
    drv.close()
    assert world.where("web1") == {}
    assert "web1.qcow2" not in pool.volumes and IMAGE in pool.volumes  # the image stays


def test_an_image_vm_gets_kvm_where_the_host_offers_it_unless_the_inventory_says_qemu(
        world: World, make: Callable[..., Any]) -> None:
    world.hosts[SRC].kvm = True
    drv = make(scenario(vm(image=IMAGE)))
    root = ET.fromstring(world.hosts[SRC].domains["web1"].xml)
    assert root.get("type") == "kvm" and root.find("cpu").get("mode") == "host-model"
    drv.close()
    make(scenario(vm(image=IMAGE)), group_vars={"livemig_accel": "qemu"})
    assert ET.fromstring(world.hosts[SRC].domains["web1"].xml).get("type") == "qemu"


def test_an_image_guests_console_goes_to_the_inventorys_console_dir(
        world: World, make: Callable[..., Any], tmp_path: Path) -> None:
    drv = make(scenario(vm(image=IMAGE)), group_vars={"livemig_console_dir": str(tmp_path)})
    root = ET.fromstring(world.hosts[SRC].domains["web1"].xml)
    serial = root.find("devices/serial")
    assert serial.get("type") == "file"
    assert serial.find("source").get("path") == str(tmp_path / "web1.log")
    assert drv.console_log("web1") == tmp_path / "web1.log"
    drv.close()
    drv = make(scenario(vm(image=IMAGE)))  # no directory: a pty
    assert ET.fromstring(world.hosts[SRC].domains["web1"].xml).find(
        "devices/serial").get("type") == "pty"
    assert drv.console_log("web1") is None


def test_an_image_missing_from_the_pool_or_a_vm_with_no_guest_stops_the_start(
        world: World, make: Callable[..., Any]) -> None:
    with pytest.raises(DriverSetupError, match=r"VM web1: no image 'nope.qcow2' in the "
                                               r"instances pool of kvm1"):
        make(scenario(vm(image="nope.qcow2")))
    with pytest.raises(DriverSetupError, match=r"VM web1: these hosts .* have no guest of "
                                               r"their own; expected image: VOLUME"):
        make(scenario(vm()))
    assert world.where("web1") == {}


def test_an_adopted_domain_migrates_and_is_never_destroyed(
        world: World, make: Callable[..., Any]) -> None:
    rec = existing_domain(world, SRC)
    drv = make(scenario(vm(adopt=True)))
    assert world.hosts[SRC].domains["web1"] is rec and not is_owned(rec.xml)
    migrate(drv)
    readings = poll_job(drv, "web1", lambda i: i.type is not JobType.UNBOUNDED, timeout=10,
                        step=0.02)
    assert readings[-1].type is JobType.COMPLETED
    drv.post_live_migration("web1", SRC, DEST)
    drv.close()
    assert running(world) == {DEST: (fake.VIR_DOMAIN_RUNNING, fake.VIR_DOMAIN_RUNNING_MIGRATED)}
    assert world.hosts[DEST].domains["web1"].persistent


def test_an_aborted_migration_of_an_adopted_domain_leaves_it_running_on_its_source(
        world: World, make: Callable[..., Any]) -> None:
    world.link_mib_s = 4.0  # 512 MiB: minutes; the abort comes first
    existing_domain(world, SRC, ws_mib=64, rate_mib=32)
    drv = make(scenario(vm(adopt=True)))
    migrate(drv)
    poll_job(drv, "web1", lambda i: i.memory_processed > 0, timeout=10, step=0.02)
    drv.abort_job("web1")
    readings = poll_job(drv, "web1", lambda i: i.type is not JobType.UNBOUNDED, timeout=10,
                        step=0.02)
    assert readings[-1].type is JobType.CANCELLED
    drv.rollback_live_migration("web1", SRC, DEST, False)
    drv.close()
    assert set(running(world)) == {SRC}


def test_adopting_needs_a_running_domain_on_the_vms_host(
        world: World, make: Callable[..., Any]) -> None:
    existing_domain(world, DEST)  # on the wrong host
    with pytest.raises(DriverSetupError, match=r"VM web1 \(adopt: true\): no running domain "
                                               r"web1 on kvm1"):
        make(scenario(vm(adopt=True)))
    assert set(running(world)) == {DEST}


def test_a_domain_livemig_did_not_create_stops_the_start_and_stays(
        world: World, make: Callable[..., Any]) -> None:
    rec = existing_domain(world, DEST)
    with pytest.raises(DriverSetupError, match=r"a domain web1 that livemig did not create "
                                               r"exists on kvm2; livemig never destroys"):
        make(scenario(vm(image=IMAGE)))
    assert world.hosts[DEST].domains["web1"] is rec and rec.active


def test_a_leftover_of_an_earlier_livemig_run_is_replaced(
        world: World, make: Callable[..., Any]) -> None:
    make(scenario(vm(image=IMAGE)), keep_domains=True).close()  # a run that kept its guest
    old = world.hosts[SRC].domains["web1"]
    make(scenario(vm(image=IMAGE)))
    new = world.hosts[SRC].domains["web1"]
    assert new is not old and new.active and not old.active


def test_a_rollback_leaves_an_unrelated_domain_on_the_destination_alone(
        world: World, make: Callable[..., Any]) -> None:
    drv = make(scenario(vm(image=IMAGE)))
    other = existing_domain(world, DEST)  # not ours, same name, came after the start
    drv.rollback_live_migration("web1", SRC, DEST, False)
    assert world.hosts[DEST].domains["web1"] is other and other.active
    drv.close()
    assert world.hosts[DEST].domains["web1"] is other and other.active
    assert "web1" not in world.hosts[SRC].domains  # ours is gone


def test_a_rollback_removes_our_incoming_domain_whose_state_lock_is_held(
        world: World, make: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab lane's source-link drop: the destination's incoming domain (our VM's UUID)
    holds its state lock, so reading its XML times out; the rollback still removes it, by
    its UUID, without asking for the XML."""
    drv = make(scenario(vm(image=IMAGE)))
    ours = world.hosts[SRC].domains["web1"]
    shell = world.define(world.hosts[DEST], ours.xml)  # the migration's incoming side
    with world.cond:
        shell.uuid = ours.uuid  # a migration keeps the domain's UUID
        world.start(shell)
        shell.state, shell.reason = fake.VIR_DOMAIN_PAUSED, fake.VIR_DOMAIN_PAUSED_MIGRATION
    real_xml = fake.virDomain.XMLDesc

    def locked(self: Any, flags: int = 0) -> str:
        if self._rec() is shell:
            raise fake.libvirtError("Timed out during operation: cannot acquire state change "
                                    "lock (held by monitor=remoteDispatchDomainMigratePrepare3"
                                    "Params)")
        return real_xml(self, flags)

    monkeypatch.setattr(fake.virDomain, "XMLDesc", locked)
    drv.rollback_live_migration("web1", SRC, DEST, False)
    assert "web1" not in world.hosts[DEST].domains
    assert world.hosts[SRC].domains["web1"] is ours and ours.active
    drv.close()


def test_faults_on_real_hosts_are_refused_unless_the_inventory_enables_ansible(
        world: World, make: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    drv = make(scenario(vm(image=IMAGE)))
    with pytest.raises(DriverSetupError, match="these hosts make no faults .* set "
                                               "livemig_faults: ansible"):
        drv.inject_fault("service_down", DEST)
    drv.close()
    calls: list[dict[str, Any]] = []
    import ansible_runner

    def run(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return SimpleNamespace(status="successful", rc=0, stdout=None)

    monkeypatch.setattr(ansible_runner, "run", run)
    drv = make(scenario(vm(image=IMAGE)), group_vars={"livemig_faults": "ansible"})
    drv.inject_fault("service_down", DEST)
    (call,) = calls
    assert call["host_pattern"] == DEST and call["module"] == "ansible.builtin.shell"
    assert call["module_args"] == "systemctl stop 'libvirtd*'"
    assert Path(call["inventory"]).name == "hosts.ini"


# -- the Ansible fault method: its commands -----------------------------------------------------


def test_the_ansible_fault_commands_and_their_overrides() -> None:
    cmd = ansible_faults.fault_command
    up = cmd("service_up", {})
    assert up.startswith("systemctl start libvirtd.service && ") and "virsh -c" in up
    assert cmd("service_up", {"livemig_fault_service_up": "libvirtd -d"}).startswith(
        "libvirtd -d && ")
    assert cmd("link_up", {"livemig_fault_iface": "ens2; reboot"}) == (
        "ip link set dev 'ens2; reboot' up")  # quoted: a value is never shell code
    assert cmd("link_down", {"livemig_fault_iface": "ens2"}) == (
        'nohup sh -c "sleep 1; ip link set dev ens2 down" >/dev/null 2>&1 &')
    with pytest.raises(ansible_faults.AnsibleFaultError, match="needs livemig_fault_iface"):
        cmd("link_down", {})
    for kind in ("host_down", "host_up"):
        with pytest.raises(ansible_faults.AnsibleFaultError, match="needs its BMC"):
            cmd(kind, {})


def test_the_ansible_run_uses_the_inventory_and_the_venvs_ansible(tmp_path: Path) -> None:
    kwargs = ansible_faults.runner_kwargs(Path("hosts.ini"), "kvm2", "true", tmp_path)
    assert kwargs["inventory"] == str(Path("hosts.ini").resolve())
    assert kwargs["private_data_dir"] == str(tmp_path) and kwargs["timeout"] > 0
    first = kwargs["envvars"]["PATH"].split(os.pathsep)[0]
    assert (Path(first) / "ansible").exists()  # this venv's ansible, found first


# -- the scenario fields -------------------------------------------------------------------------


def test_a_scenario_vm_names_an_image_or_adopts_not_both() -> None:
    text = ("name: s\nhosts: [{name: kvm1, ram: 4GiB, vcpus: 4}]\n"
            "vms:\n  - {name: web1, host: kvm1, ram: 1GiB, %s}\n")
    scn = parse_scenario(text % "image: debian.qcow2", source="s.yaml")
    assert (scn.vms[0].image, scn.vms[0].adopt) == ("debian.qcow2", False)
    assert parse_scenario(text % "adopt: true", source="s.yaml").vms[0].adopt
    with pytest.raises(ScenarioError, match=r"s.yaml:4: .*expected image or adopt: true, "
                                            r"not both"):
        parse_scenario(text % "adopt: true, image: debian.qcow2", source="s.yaml")


# -- the lab's inventory in Ansible's form -------------------------------------------------------


def test_the_labs_ansible_inventory_reads_as_the_same_hosts_with_the_labs_guest(
        tmp_path: Path) -> None:
    from fakelibvirt.driver import fake_inventory

    from livemig.drivers.guests import target_for
    from livemig.drivers.lab.ansible_inventory import write_lab_hosts_yml
    from livemig.drivers.lab.inventory import load_inventory

    world = two_host_world((SRC, DEST))
    record_path = fake_inventory(world, tmp_path)
    record = load_inventory(record_path)
    path = write_lab_hosts_yml(record, record_path, tmp_path / "hosts.yml")
    inv = load_hosts_inventory(path)
    assert [(h.name, h.uri, h.address) for h in inv.hosts] == [
        (h.name, h.uri, h.address) for h in record.hosts]
    assert {(h.storage, h.instances_path) for h in inv.hosts} == {
        (record.storage, record.instances_path)}
    assert inv.lab_record == record_path and inv.faults == "lab" and inv.accel == "qemu"
    target = target_for(inv)
    assert type(target.guests).__name__ == "LabGuests" and target.faults is not None
    assert target.guests.console_log("vm1") == Path(record.console_dir) / "vm1.log"


def test_an_ssh_labs_inventory_stops_and_starts_libvirtd_by_pid_file_through_ansible(
        tmp_path: Path) -> None:
    """``lab up --ssh``: one hosts.yml with the SSH variables and the pid-file fault
    commands; ``--unconfigured`` (libvirtd started over SSH): faults through Ansible."""
    from fakelibvirt.driver import fake_inventory

    from livemig.drivers.guests import target_for
    from livemig.drivers.lab.ansible_inventory import write_lab_hosts_yml
    from livemig.drivers.lab.inventory import load_inventory

    world = two_host_world((SRC, DEST))
    record_path = fake_inventory(world, tmp_path)
    record = load_inventory(record_path)
    plain = load_hosts_inventory(write_lab_hosts_yml(record, record_path, tmp_path / "a.yml"))
    assert plain.faults == "lab" and "ansible_user" not in plain.host(DEST).vars
    assert "livemig_fault_service_down" not in plain.host(DEST).vars
    path = write_lab_hosts_yml(record, record_path, tmp_path / "hosts.yml", ssh=True,
                               unconfigured=True)
    text = path.read_text()
    assert f"ansible_ssh_private_key_file: {tmp_path}/ssh/id_ed25519" in text
    assert f"UserKnownHostsFile={tmp_path}/ssh/known_hosts" in text
    inv = load_hosts_inventory(path)
    assert inv.faults == "ansible" and inv.lab_record == record_path
    host_vars = inv.host(DEST).vars
    assert ansible_faults.fault_command("service_down", host_vars).startswith(
        "pid=$(cat /run/libvirtd.pid) && kill $pid")
    up = ansible_faults.fault_command("service_up", host_vars)
    assert up.startswith("pid=$(cat /run/libvirtd.pid 2>/dev/null); ")  # an exiting one first
    assert "libvirtd --listen -d -p /run/libvirtd.pid -f /etc/libvirt/libvirtd.conf && " in up
    target = target_for(inv)
    assert type(target.faults).__name__ == "AnsibleFaults"
    assert type(target.guests).__name__ == "LabGuests"


def test_the_readmes_inventory_example_reads(tmp_path: Path) -> None:
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (example,) = re.findall(r"```ini\n(.*?)```", readme, re.S)
    (tmp_path / "hosts.ini").write_text(example)
    inv = load_hosts_inventory(tmp_path / "hosts.ini")
    assert [(h.name, h.storage) for h in inv.hosts] == [("compute-1", "shared"),
                                                        ("compute-2", "shared")]


def test_a_bad_inventory_is_one_line_and_exit_2_on_the_command_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from livemig.core.cli import main

    bad = tmp_path / "hosts.ini"
    bad.write_text("[kvm_hosts]\nkvm1 libvirt_uri=qemu+tcp://kvm1/system storage=nfs "
                   "instances_path=/x\n")
    code = main(["calibrate", "--inventory", str(bad), "--out", str(tmp_path / "p.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"livemig: error: {bad}:2: host kvm1: storage='nfs'; expected shared or local\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hosts.ini"]  # nothing written


def test_after_a_controller_restart_a_rollback_removes_the_adopted_domains_own_copy_only(
        world: World, make: Callable[..., Any]) -> None:
    rec = existing_domain(world, SRC)
    drv = make(scenario(vm(adopt=True)), boot=False)  # as livemig resume builds it
    shell = world.define(world.hosts[DEST], rec.xml)  # the migration's incoming side
    with world.cond:
        world.start(shell)
        shell.state, shell.reason = fake.VIR_DOMAIN_PAUSED, fake.VIR_DOMAIN_PAUSED_MIGRATION
    drv.rollback_live_migration("web1", SRC, DEST, False)
    assert "web1" not in world.hosts[DEST].domains  # same UUID: the adopted domain's copy
    drv.close()
    assert world.hosts[SRC].domains["web1"] is rec and rec.active


def test_an_ansible_fault_runs_its_command_on_the_host_through_ansible_runner(
        tmp_path: Path) -> None:
    """For real, through ansible-runner and ``ansible``, on this machine over Ansible's
    ``local`` connection (over SSH it is the lab's, once its hosts run sshd)."""
    import sys

    marker = tmp_path / "marker"
    (tmp_path / "hosts.ini").write_text(
        "[kvm_hosts]\n"
        f"kvm1 ansible_connection=local ansible_python_interpreter={sys.executable} "
        "libvirt_uri=qemu+tcp://kvm1/system\n"
        "[kvm_hosts:vars]\nstorage=shared\ninstances_path=/x\nlivemig_faults=ansible\n"
        f"livemig_fault_service_down='echo down $(hostname) > {marker}'\n"
        "livemig_fault_link_up='exit 3'\n")
    faults = ansible_faults.AnsibleFaults(load_hosts_inventory(tmp_path / "hosts.ini"))
    faults.inject("service_down", "kvm1")
    assert marker.read_text().startswith("down ")
    with pytest.raises(ansible_faults.AnsibleFaultError, match=r"link_up on kvm1 through "
                                                               r"Ansible: failed"):
        faults.inject("link_up", "kvm1")


def test_the_real_driver_does_not_import_the_lab() -> None:
    """The lab plugs its guest and faults in through ``guests.target_for``; the driver's
    modules never import ``livemig.drivers.lab``."""
    import ast

    drivers = Path(__file__).resolve().parents[1] / "drivers"
    files = [*drivers.glob("libvirt_*.py"), drivers / "guests.py",
             drivers / "hosts_inventory.py", drivers / "ansible_faults.py"]
    assert len(files) == 7
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.startswith("livemig.drivers.lab")], path.name


def test_block_migration_of_an_image_vm_creates_its_overlay_on_the_destination(
        tmp_path: Path) -> None:
    """Local storage: each host has its pool; the destination needs the image too (the
    overlay's backing file), and gets an overlay of the same size before the job."""
    from fakelibvirt.world import Pool

    world = World()
    for name in (SRC, DEST):
        world.add_host(name, pool=Pool())
    image_xml = (f"<volume><name>{IMAGE}</name><capacity>{GiB}</capacity>"
                 "<target><format type='qcow2'/></target></volume>")
    world.hosts[SRC].pools["instances"].xml[IMAGE] = image_xml
    world.hosts[SRC].pools["instances"].volumes[IMAGE] = 0
    inventory = fake_ansible_inventory(world, tmp_path, storage="local")
    drv = fake_driver(world, scenario(vm(image=IMAGE, disk=2 * GiB)), tmp_path,
                      inventory=inventory)
    try:
        dest_pool = world.hosts[DEST].pools["instances"]
        with pytest.raises(MigrationError, match=f"no image '{IMAGE}' in the instances pool "
                                                 f"of {DEST}"):
            drv.pre_live_migration("web1", DEST, True)
        dest_pool.xml[IMAGE], dest_pool.volumes[IMAGE] = image_xml, 0
        drv.pre_live_migration("web1", DEST, True)
        overlay = dest_pool.xml["web1.qcow2"]
        assert f"<capacity unit='bytes'>{2 * GiB}</capacity>" in overlay  # disk > image
        assert f"<path>{POOL_PATH}/{IMAGE}</path>" in overlay
        drv.rollback_live_migration("web1", SRC, DEST, True)
        assert "web1.qcow2" not in dest_pool.volumes and IMAGE in dest_pool.volumes
    finally:
        drv.close()
