"""The lab's hosts as a standard Ansible inventory (``hosts.yml``), which ``lab up`` writes
beside the lab's own record (``inventory.yaml``, :mod:`livemig.drivers.lab.inventory`);
the one file for ``ansible -i``, ``livemig hosts ...`` and ``livemig run --inventory``.

A YAML inventory with one group, ``kvm_hosts``: per host ``ansible_host``, ``libvirt_uri``,
``migration_address``, ``instances_path``, ``storage`` and ``host_uuid`` (what livemig reads
on real hosts too, :mod:`livemig.drivers.hosts_inventory`); as group variables what
livemig needs to find the lab's guest and faults (``livemig_lab_record``: the record;
``livemig_accel: qemu``, TCG guests) and what the playbooks need (the transport, TLS unless
the lab is plain TCP; where the controller keeps the CA and client certificates; the
lab-only qemu.conf settings; the firewall's network; the lab's test guest for ``validate``).

A lab that runs sshd (``--ssh``) also gets the SSH variables (the lab's key and
``known_hosts``) and the pid-file commands that stop and start libvirtd through Ansible
(``livemig_fault_service_down``/``_up``, :mod:`livemig.drivers.ansible_faults`: the hosts
have no systemd). Faults are the lab's own (``livemig_faults: lab``), except in an
``--unconfigured`` lab, whose libvirtd the playbook starts over SSH: there the lab holds no
pid of it, and faults go through Ansible (``livemig_faults: ansible``).

>>> inv = Inventory(lab="t", lab_dir="/l/t", storage="shared", instances_path="/i",
...     console_dir="/l/t/c", storage_pool="instances", network="198.18.9.0/24",
...     bridge={}, image={"kernel": "/k", "initrd": "/r"}, tls=True, hosts=[HostEntry(
...     name="lab1", address="198.18.9.11", uri="qemu+tls://198.18.9.11/system",
...     netns="t-lab1", host_uuid="u1", instances_dir="/l/t/instances")])
>>> group = ansible_inventory(inv, Path("/l/t/inventory.yaml"))["all"]["children"]["kvm_hosts"]
>>> group["hosts"]["lab1"]["libvirt_uri"], group["hosts"]["lab1"]["storage"]
('qemu+tls://198.18.9.11/system', 'shared')
>>> group["vars"]["libvirt_transport"], group["vars"]["livemig_faults"]
('tls', 'lab')
>>> "ansible_user" in group["vars"], "livemig_fault_service_down" in group["vars"]
(False, False)
>>> ssh = ansible_inventory(inv, Path("/l/t/inventory.yaml"), ssh=True, unconfigured=True)
>>> v = ssh["all"]["children"]["kvm_hosts"]["vars"]
>>> v["ansible_ssh_private_key_file"], v["livemig_faults"]
('/l/t/ssh/id_ed25519', 'ansible')
>>> v["livemig_fault_service_up"].endswith(
...     'libvirtd --listen -d -p /run/libvirtd.pid -f /etc/libvirt/libvirtd.conf')
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from livemig.drivers.lab.inventory import HostEntry, Inventory  # noqa: F401 (doctest)

#: qemu.conf settings a namespace host needs (no cgroups, no AppArmor, QEMU as root).
LAB_QEMU_SETTINGS: dict[str, Any] = {
    "user": "root",
    "group": "root",
    "security_driver": "none",
    "dynamic_ownership": 0,
    "remember_owner": 0,
    "cgroup_controllers": [],
    "namespaces": [],
}

#: libvirtd's pid file in a host's private ``/run`` as an SSH session sees it (the
#: playbook's ``libvirt_pid_dir``, see :mod:`livemig.drivers.lab.sshd`).
LIBVIRTD_PIDFILE = "/run/libvirtd.pid"

#: Seconds a pid-file stop waits for libvirtd to exit (it finishes its workers first: on a
#: busy machine that took more than 10 s), and a start for an exiting one to be gone.
LIBVIRTD_EXIT_WAIT_S = 60


def pidfile_fault_commands(pidfile: str, start: str,
                           wait_s: int = LIBVIRTD_EXIT_WAIT_S) -> dict[str, str]:
    """Shell commands that stop and start a daemon by its pid file (no systemd on a lab host).

    Stopping sends SIGTERM and waits (at most ``wait_s``) until the process is gone; starting
    first waits for a process still named in the pid file to exit (a stop that timed out
    under load), then runs ``start``.

    >>> c = pidfile_fault_commands("/run/d.pid", "d -p /run/d.pid", wait_s=2)
    >>> [command.count("$(seq 20)") for command in c.values()]
    [1, 1]
    >>> c["livemig_fault_service_up"].endswith("done; d -p /run/d.pid")
    True
    """
    ticks = wait_s * 10
    return {
        "livemig_fault_service_down": (
            f"pid=$(cat {pidfile}) && kill $pid && for i in $(seq {ticks}); do "
            "kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; exit 1"),
        "livemig_fault_service_up": (
            f"pid=$(cat {pidfile} 2>/dev/null); for i in $(seq {ticks}); do "
            '[ -n "$pid" ] && kill -0 $pid 2>/dev/null || break; sleep 0.1; done; '
            f"{start}"),
    }


PIDFILE_FAULTS = pidfile_fault_commands(
    LIBVIRTD_PIDFILE, f"libvirtd --listen -d -p {LIBVIRTD_PIDFILE} -f /etc/libvirt/libvirtd.conf")


def ansible_inventory(inv: Inventory, record_path: Path, *, ssh: bool = False,
                      unconfigured: bool = False) -> dict[str, Any]:
    """The inventory of the lab ``inv`` (its record at ``record_path``) as a mapping; see
    the module's docstring for ``ssh`` and ``unconfigured``."""
    hosts = {h.name: {"ansible_host": h.address, "libvirt_uri": h.uri,
                      "migration_address": h.address, "instances_path": inv.instances_path,
                      "storage": inv.storage, "host_uuid": h.host_uuid}
             for h in inv.hosts}
    lab_dir = Path(inv.lab_dir)
    ssh_vars: dict[str, Any] = {
        "ansible_user": "root",
        # the files of drivers/lab/sshd.py (ssh_dir, client_key, known_hosts)
        "ansible_ssh_private_key_file": str(lab_dir / "ssh" / "id_ed25519"),
        "ansible_ssh_common_args": (f"-o UserKnownHostsFile={lab_dir / 'ssh' / 'known_hosts'}"
                                    " -o StrictHostKeyChecking=yes"),
        "ansible_python_interpreter": "/usr/bin/python3",
        **PIDFILE_FAULTS,
    }
    image = inv.image or {}
    group_vars: dict[str, Any] = {
        **(ssh_vars if ssh else {}),
        "livemig_lab": inv.lab,
        "livemig_lab_record": str(record_path),
        "livemig_faults": "ansible" if unconfigured else "lab",
        "livemig_accel": "qemu",  # a Linux guest does not boot under this machine's KVM
        "livemig_console_dir": inv.console_dir,  # image guests' consoles, as the lab's
        "libvirt_tls": inv.tls,
        "libvirt_transport": "tls" if inv.tls else "tcp",
        # plain TCP without authentication: the lab's firewall admits only root's sockets
        "libvirt_auth_tcp": "none",
        "livemig_pki_dir": str(lab_dir / "pki"),
        "libvirt_qemu_settings": LAB_QEMU_SETTINGS,
        "firewall_allowed_network": inv.network,
        # the hosts share the machine's root filesystem: keep the rules in a private dir
        "firewall_rules_file": "/etc/libvirt/livemig-firewall.nft",
        **({"test_guest_kernel": image["kernel"], "test_guest_initrd": image["initrd"]}
           if image else {}),
    }
    return {"all": {"children": {"kvm_hosts": {"hosts": hosts, "vars": group_vars}}}}


def write_lab_hosts_yml(inv: Inventory, record_path: Path, path: Path, *, ssh: bool = False,
                        unconfigured: bool = False) -> Path:
    """Write :func:`ansible_inventory` as YAML to ``path`` (atomically); return the path."""
    data = ansible_inventory(inv, record_path, ssh=ssh, unconfigured=unconfigured)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"# Ansible inventory of livemig lab {inv.lab} (written by `livemig lab "
                   "up`; for ansible -i and livemig --inventory)\n"
                   + yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)
    return path
