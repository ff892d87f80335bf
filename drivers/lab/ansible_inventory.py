"""The Ansible inventory that ``lab up`` writes beside the lab's own inventory
(``hosts.yml``; with SSH variables when the lab runs sshd, ``--ssh``).

A standard Ansible YAML inventory: group ``kvm_hosts``, one host per lab host with
``ansible_host``, ``libvirt_uri``, ``migration_address``, ``instances_path`` and ``storage``
(what ``livemig hosts ...`` and ``livemig run --inventory`` read on real hosts too), and
group variables for SSH (the lab's key and ``known_hosts``) and for the playbooks: the
transport (TLS unless the lab is plain TCP), where the controller keeps the CA and client
certificates, the lab-only qemu.conf settings (QEMU as root, no confinement, no cgroups),
and the lab's test guest for ``validate``.

>>> from livemig.drivers.lab.layout import lab_layout
>>> lab = lab_layout("t", 2, tls=True)
>>> inv = ansible_inventory(lab, "shared", Path("/k"), Path("/i"))
>>> h = inv["all"]["children"]["kvm_hosts"]["hosts"]["lab2"]
>>> h["ansible_host"], h["storage"], h["libvirt_uri"]
('198.18.243.12', 'shared', 'qemu+tls://198.18.243.12/system?pkipath=/var/tmp/livemig-lab/t/pki/client')
>>> inv["all"]["children"]["kvm_hosts"]["vars"]["libvirt_transport"]
'tls'
>>> no_ssh = ansible_inventory(lab, "local", Path("/k"), Path("/i"), ssh=False)
>>> "ansible_user" in no_ssh["all"]["children"]["kvm_hosts"]["vars"]
False
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from livemig.drivers.lab.layout import INSTANCES_PATH, LabLayout
from livemig.drivers.lab.sshd import client_key, known_hosts

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


def ansible_inventory_path(lab: LabLayout) -> Path:
    return lab.lab_dir / "hosts.yml"


def ansible_inventory(
    lab: LabLayout, storage: str, kernel: Path, initrd: Path, ssh: bool = True
) -> dict[str, Any]:
    """The inventory as a mapping (see the module's docstring); without ``ssh`` (a lab
    whose hosts run no sshd) it has no SSH variables, for livemig to read only."""
    hosts = {
        h.name: {
            "ansible_host": h.address,
            "libvirt_uri": h.uri,
            "migration_address": h.address,
            "instances_path": str(INSTANCES_PATH),
            "storage": storage,
            "host_uuid": h.host_uuid,
        }
        for h in lab.hosts
    }
    ssh_vars: dict[str, Any] = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(client_key(lab)),
        "ansible_ssh_common_args": (
            f"-o UserKnownHostsFile={known_hosts(lab)} -o StrictHostKeyChecking=yes"
        ),
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    group_vars: dict[str, Any] = {
        **(ssh_vars if ssh else {}),
        # what livemig reads besides the hosts (drivers/hosts_inventory.py on the realhosts
        # branch): the lab's own record (pids, guest image), its faults, TCG guests
        "livemig_lab": lab.name,
        "livemig_lab_record": str(lab.inventory_path),
        "livemig_faults": "lab",
        "livemig_accel": "qemu",  # a Linux guest does not boot under this machine's KVM
        "livemig_console_dir": str(lab.console_dir),
        "libvirt_tls": lab.tls,
        "libvirt_transport": "tls" if lab.tls else "tcp",
        # plain TCP without authentication: the lab's firewall admits only root's sockets
        "libvirt_auth_tcp": "none",
        "livemig_pki_dir": str(lab.pki_dir),
        "libvirt_qemu_settings": LAB_QEMU_SETTINGS,
        "firewall_allowed_network": str(lab.network),
        # the hosts share the machine's root filesystem: keep the rules in a private dir
        "firewall_rules_file": "/etc/libvirt/livemig-firewall.nft",
        "test_guest_kernel": str(kernel),
        "test_guest_initrd": str(initrd),
    }
    return {"all": {"children": {"kvm_hosts": {"hosts": hosts, "vars": group_vars}}}}


def write_lab_hosts_yml(
    lab: LabLayout, storage: str, kernel: Path, initrd: Path, ssh: bool = True
) -> Path:
    """Write the lab's Ansible inventory (atomically) and return its path."""
    path = ansible_inventory_path(lab)
    tmp = path.with_suffix(".tmp")
    data = ansible_inventory(lab, storage, kernel, initrd, ssh)
    tmp.write_text(
        "# Ansible inventory of livemig lab " + lab.name + " (written by `livemig lab up`)\n"
        + yaml.safe_dump(data, sort_keys=False)
    )
    tmp.replace(path)
    return path
