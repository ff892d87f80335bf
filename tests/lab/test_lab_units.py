"""The lab's pure parts (no root, no libvirt): names, domain XML, initramfs, inventory."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from livemig.drivers.lab.commands import configure_lab_parser
from livemig.drivers.lab.errors import LabError
from livemig.drivers.lab.guest import domain_xml
from livemig.drivers.lab.image import Newc
from livemig.drivers.lab.inventory import HostEntry, Inventory, load_inventory, write_inventory
from livemig.drivers.lab.layout import lab_layout
from livemig.drivers.lab.proc import Tracked, track


def test_layout_names_fit_linux_limits_and_stay_in_the_lab_range() -> None:
    lab = lab_layout("abcdefghi", hosts=50)
    names = [lab.bridge] + [h.veth for h in lab.hosts]
    assert max(len(n) for n in names) <= 15  # IFNAMSIZ - 1
    assert len(set(names)) == len(names)
    addresses = [h.address for h in lab.hosts]
    assert len(set(addresses)) == 50
    assert all(a.startswith("198.18.") for a in addresses)
    assert len({h.host_uuid for h in lab.hosts}) == 50


def test_layout_rejects_bad_values() -> None:
    with pytest.raises(LabError, match="hosts"):
        lab_layout("x", hosts=0)
    with pytest.raises(LabError, match="subnet"):
        lab_layout("x", hosts=2, subnet="10.0.0.0/24")


def test_distinct_labs_get_distinct_subnets_and_names() -> None:
    a, b = lab_layout("alpha"), lab_layout("beta")
    assert a.network != b.network
    assert {h.netns for h in a.hosts}.isdisjoint(h.netns for h in b.hosts)


def test_domain_xml_is_a_tcg_guest_with_console_file_and_optional_disk() -> None:
    xml = domain_xml("g", 256, 2, Path("/k"), Path("/i"), 32, 12.5, Path("/c/g.log"),
                     Path("/var/lib/libvirt/instances/g.qcow2"))  # fmt: skip
    dom = ET.fromstring(xml)
    assert dom.get("type") == "qemu"
    assert dom.findtext("memory") == "256" and dom.findtext("vcpu") == "2"
    cmdline = dom.findtext("os/cmdline") or ""
    assert "console=ttyS0" in cmdline
    assert "livemig.ws_mib=32" in cmdline and "livemig.rate_mib=12.5" in cmdline
    serial = dom.find("devices/serial")
    assert serial is not None and serial.get("type") == "file"
    assert serial.find("source").get("path") == "/c/g.log"  # type: ignore[union-attr]
    assert dom.find("devices/memballoon").get("model") == "none"  # type: ignore[union-attr]
    disk = dom.find("devices/disk")
    assert disk is not None and disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    no_disk = ET.fromstring(domain_xml("g", 128, 1, Path("/k"), Path("/i"), 8, 0, Path("/c")))
    assert no_disk.find("devices/disk") is None


def test_domain_xml_escapes_names() -> None:
    dom = ET.fromstring(domain_xml("a<b", 128, 1, Path("/k&"), Path("/i"), 8, 1, Path("/c")))
    assert dom.findtext("name") == "a<b" and dom.findtext("os/kernel") == "/k&"


def _parse_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    entries, off = {}, 0
    while True:
        assert data[off : off + 6] == b"070701"
        f = [int(data[off + 6 + 8 * i : off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rdev, namesize = f[1], f[6], (f[9], f[10]), f[11]
        name = data[off + 110 : off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        body = data[off : off + size]
        off += size
        off += -off % 4
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, body, rdev)


def test_newc_writer_produces_what_the_kernel_unpacks() -> None:
    cpio = Newc()
    cpio.dir("bin")
    cpio.file("bin/x", b"hello")
    cpio.symlink("bin/sh", "busybox")
    cpio.chardev("dev/console", 5, 1)
    entries = _parse_newc(cpio.finish())
    assert entries["bin"][0] == 0o040755
    assert entries["bin/x"] == (0o100755, b"hello", (0, 0))
    assert entries["bin/sh"][1] == b"busybox"
    assert entries["dev/console"][2] == (5, 1)


def test_inventory_round_trip(tmp_path: Path) -> None:
    inv = Inventory(
        lab="t", lab_dir="/x", storage="local", instances_path="/var/lib/libvirt/instances",
        console_dir="/x/consoles", storage_pool="instances", network="198.18.9.0/24",
        bridge={"name": "t-br", "address": "198.18.9.1"}, image={"kernel": "/k", "initrd": "/i"},
        hosts=[HostEntry(name="lab1", address="198.18.9.11", uri="qemu+tcp://198.18.9.11/system",
                         netns="t-lab1", host_uuid="u", instances_dir="/x/i1",
                         pids={"holder": 1})],
    )  # fmt: skip
    path = write_inventory(inv, tmp_path / "inventory.yaml")
    assert load_inventory(path) == inv
    assert load_inventory(path).host("lab1").uri.endswith("/system")
    with pytest.raises(LabError, match="no inventory"):
        load_inventory(tmp_path / "missing.yaml")


def test_tracked_process_is_recognised_by_start_time() -> None:
    me = track(os.getpid())
    assert me.alive()
    assert not Tracked(me.pid, me.start_time + 1).alive()  # a recycled pid is not ours


def test_cli_parses_every_action() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    configure_lab_parser(parser)
    args = parser.parse_args(["up", "--hosts", "3", "--storage", "local", "--shape-mbit", "100"])
    assert (args.hosts, args.storage, args.shape_mbit, args.name) == (3, "local", 100.0, "livemig")
    for action in ("status", "down", "image"):
        assert callable(parser.parse_args([action]).func)
