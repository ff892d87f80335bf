"""Faults on real hosts through Ansible: stop or start libvirtd, take a link down or up.

Enabled by ``livemig_faults: ansible`` in the inventory (see
:mod:`livemig.drivers.hosts_inventory`); livemig then runs one ad-hoc ``shell`` task on the
faulted host through ansible-runner (``pip install 'livemig[ansible]'``), over the
connection the inventory gives (SSH), with the inventory file itself.

* ``service_down``: ``systemctl stop 'libvirtd*'`` (the service and its sockets);
  variable ``livemig_fault_service_down`` replaces it (per host or group);
* ``service_up``: ``systemctl start libvirtd.service`` (``livemig_fault_service_up``), then
  waits until ``virsh -c qemu:///system uri`` answers on the host;
* ``link_down``: ``ip link set dev IFACE down`` (``livemig_fault_link_down``), started in
  the background one second later, so that the task returns first;
* ``link_up``: ``ip link set dev IFACE up`` (``livemig_fault_link_up``);
* ``host_down``/``host_up``: refused (powering a host off and on needs its BMC).

``IFACE`` is the host's ``livemig_fault_iface`` (required for link faults): the link that
carries libvirt and migration traffic. It must **not** be the one Ansible reaches the host
through (``ansible_host``), or ``link_up`` cannot reach the host to bring it back.

On the namespace lab over SSH (``lab up --ssh --unconfigured``, whose ``hosts.yml`` sets the
pid-file commands), ``tests/lab/test_lab_ansible.py`` stops and starts libvirtd this way.

>>> fault_command("service_down", {})
"systemctl stop 'libvirtd*'"
>>> fault_command("link_down", {"livemig_fault_iface": "eth1"})
'nohup sh -c "sleep 1; ip link set dev eth1 down" >/dev/null 2>&1 &'
>>> fault_command("service_down", {"livemig_fault_service_down": "kill $(cat /run/l.pid)"})
'kill $(cat /run/l.pid)'
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from livemig.core.model import FaultKind
from livemig.drivers.hosts_inventory import HostsInventory

WAIT_LIBVIRTD = ("i=0; until virsh -c qemu:///system uri >/dev/null 2>&1; do i=$((i+1)); "
                 "[ $i -ge 120 ] && exit 1; sleep 0.5; done")
DEFAULTS = {
    "service_down": "systemctl stop 'libvirtd*'",
    "service_up": "systemctl start libvirtd.service",
    "link_down": "ip link set dev {iface} down",
    "link_up": "ip link set dev {iface} up",
}
TIMEOUT = 120  # seconds for one fault's Ansible run


class AnsibleFaultError(RuntimeError):
    """A fault that cannot be made through Ansible, or whose run failed."""


def fault_command(kind: str | FaultKind, host_vars: dict[str, Any]) -> str:
    """The shell command that puts ``kind`` into effect on a host with ``host_vars``."""
    kind = FaultKind(kind).value
    if kind not in DEFAULTS:
        raise AnsibleFaultError(f"{kind} is not made through Ansible (powering a host off and "
                                "on needs its BMC); expected service_down/up or link_down/up")
    command = host_vars.get(f"livemig_fault_{kind}")
    if command is None:
        command = DEFAULTS[kind]
        if "{iface}" in command:
            iface = host_vars.get("livemig_fault_iface")
            if not iface:
                raise AnsibleFaultError(
                    f"{kind} through Ansible needs livemig_fault_iface (the libvirt and "
                    "migration link, not the one Ansible uses) on the host")
            command = command.format(iface=shlex.quote(str(iface)))
    command = str(command)
    if kind == "service_up":
        command = f"{command} && {WAIT_LIBVIRTD}"
    if kind == "link_down":  # the task must return before the link (maybe its own) goes
        command = f'nohup sh -c "sleep 1; {command}" >/dev/null 2>&1 &'
    return command


def runner_kwargs(inventory: Path, host: str, command: str, run_dir: Path) -> dict[str, Any]:
    """The arguments of ``ansible_runner.run`` for one ad-hoc shell task on ``host``.

    ansible-runner runs ``ansible`` found on the ``PATH`` it is given (a ``binary`` would
    make it drop the module and host): this Python's own bin directory comes first.
    """
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {
        "private_data_dir": str(run_dir),
        "inventory": str(inventory.resolve()),
        "host_pattern": host,
        "module": "ansible.builtin.shell",
        "module_args": command,
        "envvars": {"ANSIBLE_PIPELINING": "True", "PATH": path},
        "timeout": TIMEOUT,
        "quiet": True,
    }


class AnsibleFaults:
    """The fault method of real hosts whose inventory says ``livemig_faults: ansible``."""

    def __init__(self, inventory: HostsInventory) -> None:
        self.inventory = inventory

    def inject(self, kind: FaultKind, host: str) -> None:
        command = fault_command(kind, self.inventory.host(host).vars)
        try:
            import ansible_runner
        except ImportError as exc:
            raise AnsibleFaultError(f"faults through Ansible need ansible-runner "
                                    f"(pip install 'livemig[ansible]'): {exc}") from exc
        run_dir = Path(tempfile.mkdtemp(prefix="livemig-fault-"))
        try:
            result = ansible_runner.run(**runner_kwargs(self.inventory.path, host, command,
                                                        run_dir))
            if result.status != "successful":
                out = " ".join(result.stdout.read().split())[-300:] if result.stdout else ""
                raise AnsibleFaultError(f"{FaultKind(kind).value} on {host} through Ansible: "
                                        f"{result.status} (rc {result.rc}): {out}")
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
