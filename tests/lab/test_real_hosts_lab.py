"""Real hosts as a lab engineer has them, on the namespace lab (lab ``rh``, shared storage):
the lab's Ansible inventory (``hosts.yml``) given to ``livemig run``, a domain that
existed before livemig adopted, migrated and left alive, and a VM booted from a bootable
disk image in the ``instances`` pool (a qcow2 overlay under TCG).

What is asked after each run is asked of libvirt itself (``virsh``) and, for the lab's
guests, of the guest (its console keeps ticking). A lab that cannot start fails.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import libvirt
import pytest
from labcheck import (
    SCENARIOS,
    assert_guest_keeps_ticking,
    hosts_running,
    virsh,
    wait_tick_above,
)
from lablock import running_lab

from livemig.core.model import MigrationStatus
from livemig.core.runner import run_scenario
from livemig.core.scenario import load_scenario
from livemig.drivers.guests import is_owned
from livemig.drivers.lab.boot_disk import build_boot_disk
from livemig.drivers.lab.guest import domain_xml
from livemig.drivers.lab.image import build_image
from livemig.drivers.lab.inventory import load_inventory

pytestmark = pytest.mark.lab

LAB = "rh"
LIVEMIG = [str(Path(sys.executable).parent / "livemig")]


@pytest.fixture(scope="module")
def lab() -> Iterator[SimpleNamespace]:
    """Lab ``rh``: its record (``inventory``), record path and Ansible inventory."""
    with running_lab(LAB, hosts=2, storage="shared") as record:
        yield SimpleNamespace(inventory=load_inventory(record), inventory_path=record,
                              ansible=record.parent / "hosts.yml")


def livemig(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LIVEMIG, *args], capture_output=True, text=True, timeout=600)


def migrations(out: Path) -> list[dict[str, str]]:
    with (out / "migrations.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_a_shipped_lab_scenario_runs_with_the_labs_ansible_inventory(
        lab: SimpleNamespace, tmp_path: Path) -> None:
    assert "kvm_hosts:" in lab.ansible.read_text()
    out = tmp_path / "out"
    cp = livemig("run", str(SCENARIOS / "lab-explicit.yaml"), "--driver", "libvirt",
                 "--inventory", str(lab.ansible), "--out", str(out))
    assert cp.returncode == 0, cp.stderr[-2000:]
    (row,) = migrations(out)
    assert (row["instance"], row["status"], row["dest"]) == ("lab-vm1", "completed", "lab2")
    with (out / "instances.csv").open() as fh:
        (instance,) = list(csv.DictReader(fh))
    assert (instance["host"], instance["vm_state"]) == ("lab2", "active")
    # livemig created it, so livemig removed it at the end, everywhere
    assert hosts_running(lab, "lab-vm1") == []
    assert all("lab-vm1" not in virsh(h.uri, "list", "--all", "--name").split()
               for h in lab.inventory.hosts)


ADOPT_SCENARIO = """\
name: rh-adopt
hosts:
  - {prefix: lab, count: 2, ram: 4GiB, vcpus: 2, disk: 20GiB, storage: shared}
vms:
  - {name: rh-adopted, host: lab1, ram: 128MiB, used_memory: 80MiB, working_set: 16MiB,
     dirty_rate: 2MiB/s, adopt: true}
policy:
  migration:
    live_migration_flag: "VIR_MIGRATE_UNDEFINE_SOURCE, VIR_MIGRATE_PEER2PEER, VIR_MIGRATE_LIVE"
    bandwidth: 32MiB/s
events:
  - at: 1s
    live_migrate: {instance: rh-adopted, dest: lab2}
"""


def test_an_adopted_domain_is_migrated_and_left_alive(
        lab: SimpleNamespace, tmp_path: Path) -> None:
    """A guest the operator started (not livemig: no mark) is migrated by a scenario that
    adopts it; after the run (no --keep-domains) it still runs, on lab2, and ticks."""
    image = lab.inventory.image
    log = Path(lab.inventory.console_dir) / "rh-adopted.log"
    xml = domain_xml("rh-adopted", 128, 1, Path(image["kernel"]), Path(image["initrd"]),
                     16, 2, log)
    conn = libvirt.open(lab.inventory.host("lab1").uri)
    try:
        conn.defineXML(xml).create()
    finally:
        conn.close()
    deadline = time.monotonic() + 90
    while "tick" not in (log.read_text(errors="replace") if log.exists() else ""):
        assert time.monotonic() < deadline, f"the operator's guest never ticked ({log})"
        time.sleep(0.2)
    scenario = tmp_path / "adopt.yaml"
    scenario.write_text(ADOPT_SCENARIO)
    out = tmp_path / "out"
    try:
        cp = livemig("run", str(scenario), "--driver", "libvirt", "--inventory",
                     str(lab.ansible), "--out", str(out))
        assert cp.returncode == 0, cp.stderr[-2000:]
        (row,) = migrations(out)
        assert (row["status"], row["dest"]) == ("completed", "lab2")
        assert hosts_running(lab, "rh-adopted") == ["lab2"]  # alive after livemig closed
        dest_xml = virsh(lab.inventory.host("lab2").uri, "dumpxml", "rh-adopted")
        assert not is_owned(dest_xml)  # still the operator's domain, unmarked
        assert "rh-adopted" in virsh(lab.inventory.host("lab2").uri, "list", "--all",
                                     "--persistent", "--name").split()  # definition kept
        assert_guest_keeps_ticking(lab, "rh-adopted")
    finally:
        for host in lab.inventory.hosts:
            conn = libvirt.open(host.uri)
            try:
                dom = conn.lookupByName("rh-adopted")
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
            except libvirt.libvirtError:
                pass
            finally:
                conn.close()


IMAGE_SCENARIO = """\
name: rh-image
hosts:
  - {prefix: lab, count: 2, ram: 4GiB, vcpus: 2, disk: 20GiB, storage: shared}
vms:
  - {name: rh-img1, host: lab1, ram: 128MiB, used_memory: 64MiB, working_set: 8MiB,
     dirty_rate: 1MiB/s, image: rh-base.qcow2}
policy:
  migration:   # UNSAFE: libvirt cannot tell that the lab's bind-mounted directory is shared
    live_migration_flag: "VIR_MIGRATE_UNDEFINE_SOURCE, VIR_MIGRATE_PEER2PEER, VIR_MIGRATE_LIVE,
      VIR_MIGRATE_UNSAFE"
    bandwidth: 32MiB/s
events:
  - at: 1s
    live_migrate: {instance: rh-img1, dest: lab2}
"""


def test_an_image_vm_boots_from_its_overlay_migrates_and_is_cleaned_up(
        lab: SimpleNamespace, tmp_path: Path) -> None:
    """The image is a bootable disk of the lab guest (SYSLINUX, the lab's kernel and
    initrd: no cloud image can be downloaded here), put in the instances pool as an
    engineer puts a cloud image. livemig boots an overlay of it under TCG (the lab's
    inventory says qemu), the guest ticks on its console before and after the migration,
    and livemig removes its domain and overlay at the end, never the image."""
    pool_dir = Path(lab.inventory.hosts[0].instances_dir)
    base = build_boot_disk(build_image(), pool_dir / "rh-base.qcow2")
    scenario = tmp_path / "image.yaml"
    scenario.write_text(IMAGE_SCENARIO)
    log = Path(lab.inventory.console_dir) / "rh-img1.log"
    try:
        result = run_scenario(load_scenario(scenario), "libvirt", driver_options={
            "inventory": str(lab.ansible), "keep_domains": True})
        (record,) = result.store.migrations()
        assert (record.status, record.dest) == (MigrationStatus.COMPLETED, "lab2"), (
            record.error_message)
        assert hosts_running(lab, "rh-img1") == ["lab2"]
        info = subprocess.run(["qemu-img", "info", "-U", str(pool_dir / "rh-img1.qcow2")],
                              capture_output=True, text=True, check=True).stdout
        assert "backing file: /var/lib/libvirt/instances/rh-base.qcow2" in info, info
        dom = ET.fromstring(virsh(lab.inventory.host("lab2").uri, "dumpxml", "rh-img1"))
        assert dom.get("type") == "qemu"  # the lab's inventory says TCG
        assert dom.find("os/kernel") is None  # booted from its disk, not by libvirt
        assert dom.find("devices/disk/source").get("file").endswith("/rh-img1.qcow2")
        assert "SYSLINUX" in log.read_text(errors="replace")  # the disk's boot loader ran
        # the migration came while it booted (livemig waits for no OS it does not know):
        # it goes on booting on lab2, then keeps ticking there
        wait_tick_above(log, 0, timeout=120)
        assert_guest_keeps_ticking(lab, "rh-img1")  # inside the guest, after the migration
        cp = livemig("run", str(scenario), "--driver", "libvirt", "--inventory",
                     str(lab.ansible), "--out", str(tmp_path / "again"))
        assert cp.returncode == 0, cp.stderr[-2000:]  # replaces its own leftover, then ends
        assert hosts_running(lab, "rh-img1") == []
        assert not (pool_dir / "rh-img1.qcow2").exists() and base.exists()
    finally:
        (pool_dir / "rh-base.qcow2").unlink(missing_ok=True)
