"""The namespace lab: several libvirtd hosts on one Linux machine.

Public API (see ``README.md`` beside this file)::

    lab_up(name="livemig", hosts=2, storage="shared", shaping_mbit=None, tls=False, ...) -> Path
    lab_down(name="livemig")
    lab_status(name="livemig") -> dict
    inject_fault(inventory, kind: FaultKind, host)   # host/link/service down and up
    load_inventory(path) -> Inventory
    build_image(cache_dir=None) -> GuestImage(kernel, initrd)
    domain_xml(name, ram_mib, vcpus, kernel, initrd, ws_mib, rate_mib, console_log_path,
               disk_path=None) -> str
    add_lab_commands(subparsers)   # the `livemig lab ...` sub-command
"""

from livemig.drivers.lab.commands import add_lab_commands
from livemig.drivers.lab.errors import LabError
from livemig.drivers.lab.faults import inject_fault
from livemig.drivers.lab.guest import domain_xml
from livemig.drivers.lab.image import GuestImage, build_image
from livemig.drivers.lab.inventory import HostEntry, Inventory, load_inventory
from livemig.drivers.lab.lab import lab_down, lab_status, lab_up

__all__ = [
    "GuestImage",
    "HostEntry",
    "Inventory",
    "LabError",
    "add_lab_commands",
    "build_image",
    "domain_xml",
    "inject_fault",
    "lab_down",
    "lab_status",
    "lab_up",
    "load_inventory",
]
