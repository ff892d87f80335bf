"""What the namespace lab offers the real driver: its TCG test guest and real faults.

The real driver (``drivers/libvirt_real.py``) knows neither; it asks
:func:`livemig.drivers.guests.target_for`, which loads this module by name when the
inventory names the lab's record (``livemig_lab_record``, or the record itself).

* :class:`LabGuests`: the lab image's kernel and initrd under TCG, the dirtier's working
  set and rate from the scenario (:func:`~livemig.drivers.lab.guest.domain_xml`), the
  serial console in the lab's ``console_dir``; a guest is up once it ticks there (a
  ``tick N`` line: the dirtier prints its RAM scan before the first one, so a migration
  starts after the scan, and a kernel message that mentions "tick" does not count).
* :class:`LabFaults`: :func:`~livemig.drivers.lab.faults.inject_fault`, with the lab's
  record read again each time (the fault module records the daemons' new pids there).
"""

from __future__ import annotations

import re
from pathlib import Path

from livemig.core.model import FaultKind, VmSpec
from livemig.core.units import MiB
from livemig.drivers.guests import Target
from livemig.drivers.lab.errors import LabError
from livemig.drivers.lab.guest import domain_xml
from livemig.drivers.lab.inventory import Inventory, load_inventory

TICK_LINE = re.compile(r"^tick \d+ ", re.MULTILINE)  # the dirtier's once-a-second line


class LabGuests:
    """The lab's test guest (see the module docstring)."""

    def __init__(self, record: Inventory) -> None:
        self.record = record
        self.console_dir = Path(record.console_dir)

    def domain_xml(self, vm: VmSpec, *, disk: Path | None, accel: str) -> str:
        image = self.record.image
        if not image:
            raise LabError(f"the record of lab {self.record.lab!r} ({self.record.lab_dir}) "
                           "names no guest image (scripts/setup-lab builds it)")
        log = self.console_log(vm.name)
        log.unlink(missing_ok=True)
        return domain_xml(vm.name, vm.ram // MiB, vm.vcpus, Path(image["kernel"]),
                          Path(image["initrd"]),
                          max(1, round(vm.working_set / MiB)), vm.dirty_rate / MiB, log, disk,
                          cpu_trace=vm.cpu_trace, cpu_trace_interval=vm.cpu_trace_interval,
                          hugepages=self.record.hugepages)

    def booted(self, vm: VmSpec) -> bool:
        try:
            text = self.console_log(vm.name).read_text(errors="replace")
            return TICK_LINE.search(text) is not None
        except FileNotFoundError:
            return False

    def console_log(self, name: str) -> Path:
        return self.console_dir / f"{name}.log"


class LabFaults:
    """Faults made for real in the lab whose record is at ``record_path``."""

    def __init__(self, record_path: Path) -> None:
        self.record_path = record_path

    def inject(self, kind: FaultKind, host: str) -> None:
        from livemig.drivers.lab.faults import inject_fault

        record = load_inventory(self.record_path)
        if not record.lab or not all(h.netns for h in record.hosts):
            raise LabError(f"{self.record_path}: faults are only injected in the namespace "
                           "lab (this record has no lab name or network namespaces)")
        inject_fault(record, kind, host)


def lab_target(record_path: Path, *, faults: bool) -> Target:
    """The lab's guests, and its faults when ``faults``."""
    record = load_inventory(record_path)
    return Target(guests=LabGuests(record), faults=LabFaults(record_path) if faults else None)
