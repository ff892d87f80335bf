"""A lab whose guests take their RAM from the machine's hugetlb pool (``lab up
--hugepages``): the domain's memory is on the hosts' hugetlbfs, on both sides of a live
migration, and goes back to the pool when the guest is gone.

Why the lab offers it (:mod:`livemig.drivers.lab.hugepages`): on this virtual machine a
freshly allocated page is slow to write, and an uncapped migration went at that speed.
The migration's speed is printed (a figure, not asserted: speeds are for benchmarks).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labcheck import last_tick, virsh, wait_tick_above
from lablock import running_lab

from livemig.core.model import VmSpec
from livemig.core.units import MiB
from livemig.drivers.lab.hugepages import HUGETLBFS_MOUNT, read_pool
from livemig.drivers.lab.inventory import Inventory, load_inventory
from livemig.drivers.lab.layout import lab_layout
from livemig.drivers.lab.target import LabGuests

pytestmark = pytest.mark.lab

LAB = "thuge"
GUEST = f"{LAB}-g1"
RAM_MIB = 128
BOOT_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def lab() -> Iterator[Inventory]:
    with running_lab(LAB, hosts=2, storage="shared", hugepages_mib=2 * RAM_MIB) as record:
        yield load_inventory(record)


def _qemu_cmdline(name: str) -> str:
    """The command line of the one QEMU that runs guest ``name``."""
    out = subprocess.run(["pgrep", "-f", f"guest={name},"], capture_output=True, text=True)
    pids = out.stdout.split()
    assert len(pids) == 1, f"QEMUs of {name}: {pids}"
    return Path(f"/proc/{pids[0]}/cmdline").read_text().replace("\0", " ")


def _wait_pool_free(pages: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while (free := read_pool().free) != pages and time.monotonic() < deadline:
        time.sleep(0.2)
    return free


def test_guest_ram_is_on_the_pool_on_both_sides_of_a_migration(lab: Inventory) -> None:
    lab1, lab2 = lab.hosts
    assert lab.hugepages
    conf = lab_layout(LAB, hosts=2).hosts[0].backing_path(Path("/etc/libvirt/qemu.conf"))
    assert f'hugetlbfs_mount = "{HUGETLBFS_MOUNT}"' in conf.read_text()
    free_before = read_pool().free
    assert free_before * read_pool().page_kib >= 2 * RAM_MIB * 1024  # ensured by lab up

    guests = LabGuests(lab)
    vm = VmSpec(name=GUEST, host="lab1", ram=RAM_MIB * MiB, used_memory=0,
                working_set=16 * MiB, dirty_rate=4 * MiB)
    xml = guests.domain_xml(vm, disk=None, accel="qemu")
    assert "<hugepages />" in xml
    xml_file = Path(lab.lab_dir) / f"{GUEST}.xml"
    xml_file.write_text(xml)
    virsh(lab1.uri, "define", str(xml_file))
    virsh(lab1.uri, "start", GUEST)
    console = guests.console_log(GUEST)
    before = wait_tick_above(console, 1, BOOT_TIMEOUT)
    pages = RAM_MIB * 1024 // read_pool().page_kib
    assert read_pool().free == free_before - pages  # the guest's RAM, preallocated
    assert str(HUGETLBFS_MOUNT) in _qemu_cmdline(GUEST)

    t0 = time.monotonic()
    virsh(lab1.uri, "migrate", "--live", "--p2p", "--undefinesource", "--persistent",
          GUEST, lab2.uri)  # fmt: skip
    print(f"migration of a {RAM_MIB} MiB guest on huge pages: {time.monotonic() - t0:.2f} s "
          f"(virsh)")
    assert virsh(lab2.uri, "domstate", GUEST).strip() == "running"
    assert GUEST not in virsh(lab1.uri, "list", "--all", "--name").split()
    assert str(HUGETLBFS_MOUNT) in _qemu_cmdline(GUEST)  # the destination's QEMU
    # the source's pages went back to the pool; the destination holds the guest's
    assert _wait_pool_free(free_before - pages) == free_before - pages
    wait_tick_above(console, max(before, last_tick(console)) + 2, 60)
    text = console.read_text(errors="replace")
    assert "Kernel panic" not in text and "dirtier exited" not in text

    virsh(lab2.uri, "destroy", GUEST)
    virsh(lab2.uri, "undefine", GUEST)
    assert _wait_pool_free(free_before) == free_before
