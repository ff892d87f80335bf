"""What a target offers the real driver beyond libvirt: guests and faults.

A scenario VM on real hosts is one of three kinds (scenario fields, see ``core/scenario.py``):

* ``adopt: true``: an existing domain of that name, running on the VM's host. livemig
  migrates it and never destroys, undefines or deletes anything of it;
* ``image: NAME``: livemig creates the domain from a disk image, a volume ``NAME`` of the
  host's ``instances`` pool (a cloud image, qcow2 or raw): a qcow2 overlay per VM
  (``VM.qcow2``, backed by the image) and a domain with KVM acceleration where libvirt
  offers it (``/dev/kvm`` on the host), TCG otherwise (:class:`ImageGuests`);
* neither: the target's own guest (:attr:`Target.guests`). The namespace lab has one (its
  TCG test guest with a workload and a ticking console, ``drivers/lab/target.py``); real
  hosts have none, and the driver refuses such a VM.

Faults are a capability of a target (:attr:`Target.faults`): the lab makes them for real;
on real hosts they are refused unless the inventory sets ``livemig_faults: ansible``
(``drivers/ansible_faults.py``). :func:`target_for` picks both from the inventory; the
real driver never imports the lab package itself.

Every domain livemig creates carries :data:`OWNER_NS` in its ``<metadata>``
(:func:`mark_owned`); the driver destroys or undefines only domains with that mark.

>>> xml = ImageGuests().domain_xml(VmSpec(name="web1", host="kvm1", ram=512 * MiB,
...     vcpus=2, used_memory=0, working_set=0, dirty_rate=0.0),
...     disk=Path("/var/lib/libvirt/instances/web1.qcow2"), accel="kvm")
>>> ET.fromstring(xml).get("type"), "web1.qcow2" in xml, is_owned(xml), is_owned(mark_owned(xml))
('kvm', True, False, True)
"""

from __future__ import annotations

import importlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from livemig.core.model import FaultKind, VmSpec
from livemig.core.units import MiB
from livemig.drivers.hosts_inventory import HostsInventory

#: The XML namespace of livemig's mark in a domain's ``<metadata>``.
OWNER_NS = "https://livemig.invalid/xmlns/created-by-livemig/1"


class GuestProvider(Protocol):
    """How a scenario VM that livemig creates becomes a domain."""

    def domain_xml(self, vm: VmSpec, *, disk: Path | None, accel: str) -> str:
        """The domain XML; ``disk``: its disk (vda) or None; ``accel``: kvm or qemu."""

    def booted(self, vm: VmSpec) -> bool:
        """Whether the guest has come up (after its domain started)."""

    def console_log(self, name: str) -> Path | None:
        """Where the guest's serial console is written, if in a file."""


class FaultInjector(Protocol):
    def inject(self, kind: FaultKind, host: str) -> None:
        """Put ``kind`` into effect on ``host``; returns once it is (raises if it cannot)."""


@dataclass(frozen=True)
class Target:
    """The guests and faults a set of hosts offers (None: it has none)."""

    guests: GuestProvider | None = None
    faults: FaultInjector | None = None


def target_for(inventory: HostsInventory) -> Target:
    """The target an inventory describes: the namespace lab (its record named), else real
    hosts; faults through Ansible when the inventory asks for them."""
    target = Target()
    if inventory.lab_record is not None:
        lab = importlib.import_module("livemig.drivers.lab.target")  # a plug-in, by name
        target = lab.lab_target(inventory.lab_record, faults=inventory.faults == "lab")
    if inventory.faults == "ansible":
        from livemig.drivers.ansible_faults import AnsibleFaults

        target = Target(guests=target.guests, faults=AnsibleFaults(inventory))
    return target


class ImageGuests:
    """Guests booted from a disk image: an overlay disk, KVM or TCG; the serial console
    in ``console_dir/VM.log`` on the host when a directory is given, else on a pty."""

    def __init__(self, console_dir: Path | None = None) -> None:
        self.console_dir = console_dir

    def domain_xml(self, vm: VmSpec, *, disk: Path | None, accel: str) -> str:
        if disk is None:
            raise ValueError(f"VM {vm.name}: an image guest needs its disk")
        dom = ET.Element("domain", type=accel)
        ET.SubElement(dom, "name").text = vm.name
        ram_mib = str(max(1, vm.ram // MiB))
        ET.SubElement(dom, "memory", unit="MiB").text = ram_mib
        ET.SubElement(dom, "currentMemory", unit="MiB").text = ram_mib
        ET.SubElement(dom, "vcpu", placement="static").text = str(vm.vcpus)
        os_el = ET.SubElement(dom, "os")
        ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
        ET.SubElement(os_el, "boot", dev="hd")
        features = ET.SubElement(dom, "features")
        ET.SubElement(features, "acpi")
        ET.SubElement(features, "apic")
        if accel == "kvm":  # the host's CPU model, which compareCPU checks on the destination
            ET.SubElement(dom, "cpu", mode="host-model")
        ET.SubElement(dom, "clock", offset="utc")
        devices = ET.SubElement(dom, "devices")
        d = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(d, "driver", name="qemu", type="qcow2", cache="none")
        ET.SubElement(d, "source", file=str(disk))
        ET.SubElement(d, "target", dev="vda", bus="virtio")
        log = self.console_log(vm.name)
        kind = "pty" if log is None else "file"
        if log is not None:
            log.unlink(missing_ok=True)
        for tag, target in (("serial", {"port": "0"}),
                            ("console", {"type": "serial", "port": "0"})):
            el = ET.SubElement(devices, tag, type=kind)
            if log is not None:
                ET.SubElement(el, "source", path=str(log), append="on")
            ET.SubElement(el, "target", target)
        ET.SubElement(devices, "memballoon", model="none")
        ET.indent(dom)
        return ET.tostring(dom, encoding="unicode")

    def booted(self, vm: VmSpec) -> bool:
        return True  # a real guest's insides are its owner's: a running domain is up

    def console_log(self, name: str) -> Path | None:
        return None if self.console_dir is None else self.console_dir / f"{name}.log"


def mark_owned(xml: str) -> str:
    """``xml`` with livemig's mark in its ``<metadata>`` (created by livemig), the
    namespace declared on the mark itself (as libvirt keeps it).

    >>> mark_owned("<domain><name>g</name></domain>")[:60]
    '<domain><name>g</name><metadata><livemig:owner xmlns:livemig'
    """
    mark = f'<livemig:owner xmlns:livemig="{OWNER_NS}" created-by="livemig"/>'
    if "<metadata>" in xml:
        return xml.replace("<metadata>", f"<metadata>{mark}", 1)
    head, sep, tail = xml.partition("</name>")
    if not sep:
        raise ValueError("a domain XML without <name>")
    return f"{head}</name><metadata>{mark}</metadata>{tail}"


def is_owned(xml: str) -> bool:
    """Whether a domain's XML carries livemig's mark."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return False
    return root.find(f"metadata/{{{OWNER_NS}}}owner") is not None
