"""Domain XML for a lab guest: the image's kernel and initrd under TCG, the dirtier's
working set and rate (and, optionally, the CPU trace it burns) on the kernel command line,
the serial console into a file.

>>> xml = domain_xml("g1", 128, 1, Path("/k"), Path("/i"), 16, 8, Path("/c/g1.log"))
>>> "livemig.ws_mib=16 livemig.rate_mib=8" in xml and "<memballoon model=\\"none\\" />" in xml
True
>>> "cpu_trace" in xml  # no trace: the dirtier busy-waits through every tick (100 %)
False
>>> xml = domain_xml("g1", 128, 1, Path("/k"), Path("/i"), 16, 8, Path("/c/g1.log"),
...                  cpu_trace=(80, 20.4), cpu_trace_interval=30)
>>> "livemig.cpu_trace=80,20 livemig.cpu_interval=30" in xml  # whole percents
True
>>> domain_xml("g1", 128, 1, Path("/k"), Path("/i"), 200, 8, Path("/c/g1.log"))
Traceback (most recent call last):
...
livemig.drivers.lab.errors.LabError: ws_mib(=200) must be <= 64 (ram_mib - 64 for the kernel)
>>> domain_xml("g1", 128, 1, Path("/k"), Path("/i"), 16, 8, Path("/c/g1.log"),
...            cpu_trace=[50] * 600, cpu_trace_interval=1)
Traceback (most recent call last):
...
livemig.drivers.lab.errors.LabError: cpu_trace has 600 samples; the guest takes at most 400
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from livemig.drivers.lab.errors import LabError

#: Guest memory kept free for the kernel and busybox, beyond the dirtier's working set.
KERNEL_RESERVE_MIB = 64
#: CPU-trace samples a guest takes: x86's kernel command line holds 2048 characters
#: (COMMAND_LINE_SIZE); a sample is sent as a whole percent, at most 4 characters ("100,").
MAX_CPU_TRACE = 400


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def domain_xml(
    name: str,
    ram_mib: int,
    vcpus: int,
    kernel: Path,
    initrd: Path,
    ws_mib: float,
    rate_mib: float,
    console_log_path: Path,
    disk_path: Path | None = None,
    *,
    cpu_trace: Sequence[float] = (),
    cpu_trace_interval: float = 0.0,
    hugepages: bool = False,
) -> str:
    """libvirt domain XML of a lab guest (``type='qemu'``: TCG, since KVM does not boot here).

    ``ws_mib``/``rate_mib``: the dirtier's working set and write rate (MiB, MiB/s).
    ``cpu_trace``: percent of the vCPU the guest burns, one sample every
    ``cpu_trace_interval`` seconds from the moment its working set is filled, linear
    between samples, the last one holding (empty: busy through every tick, 100 %).
    ``console_log_path``: serial console file, appended to; it must be at a path that every
    host can write (e.g. the inventory's ``console_dir``) for the log to continue after a
    migration. ``disk_path``: an optional qcow2 disk (vda), for block migration.
    ``hugepages``: the guest's RAM on the host's huge pages (:mod:`.hugepages`).
    """
    if ram_mib < 64 or vcpus < 1:
        raise LabError(f"ram_mib(={ram_mib}) must be >= 64 and vcpus(={vcpus}) >= 1")
    if ws_mib < 1 or ws_mib > ram_mib - KERNEL_RESERVE_MIB:
        raise LabError(
            f"ws_mib(={ws_mib:g}) must be <= {ram_mib - KERNEL_RESERVE_MIB} "
            f"(ram_mib - {KERNEL_RESERVE_MIB} for the kernel)"
        )
    if rate_mib < 0:
        raise LabError(f"rate_mib(={rate_mib:g}) must be >= 0")
    if len(cpu_trace) > MAX_CPU_TRACE:
        raise LabError(
            f"cpu_trace has {len(cpu_trace)} samples; the guest takes at most {MAX_CPU_TRACE}"
        )
    if any(not 0 <= p <= 100 for p in cpu_trace):
        raise LabError(f"cpu_trace(={list(cpu_trace)}) must be percentages from 0 to 100")
    if len(cpu_trace) > 1 and not cpu_trace_interval > 0:
        raise LabError(f"cpu_trace_interval(={cpu_trace_interval:g}) must be > 0 for a trace "
                       f"of {len(cpu_trace)} samples")

    dom = ET.Element("domain", type="qemu")
    _sub(dom, "name", name)
    _sub(dom, "memory", str(ram_mib), unit="MiB")
    _sub(dom, "currentMemory", str(ram_mib), unit="MiB")
    if hugepages:
        _sub(_sub(dom, "memoryBacking"), "hugepages")
    _sub(dom, "vcpu", str(vcpus), placement="static")
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_el, "kernel", str(kernel))
    _sub(os_el, "initrd", str(initrd))
    cmdline = f"console=ttyS0 quiet panic=0 livemig.ws_mib={ws_mib:g} livemig.rate_mib={rate_mib:g}"
    if cpu_trace:
        samples = ",".join(str(round(p)) for p in cpu_trace)
        cmdline += f" livemig.cpu_trace={samples} livemig.cpu_interval={cpu_trace_interval:g}"
    _sub(os_el, "cmdline", cmdline)
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    dev = _sub(dom, "devices")
    if disk_path is not None:
        disk = _sub(dev, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type="qcow2", cache="none")
        _sub(disk, "source", file=str(disk_path))
        _sub(disk, "target", dev="vda", bus="virtio")
    serial = _sub(dev, "serial", type="file")
    _sub(serial, "source", path=str(console_log_path), append="on")
    _sub(serial, "target", port="0")
    console = _sub(dev, "console", type="file")
    _sub(console, "source", path=str(console_log_path), append="on")
    _sub(console, "target", type="serial", port="0")
    _sub(dev, "controller", type="usb", model="none")
    _sub(dev, "memballoon", model="none")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")
