"""Checks of an Ansible inventory before a playbook runs on it: the ``kvm_hosts`` group
and the host variables the playbooks need, and a ``--limit`` that names its hosts.

The inventory is read by Ansible itself (``ansible-inventory --list``, so INI and YAML,
groups, ``group_vars`` and host patterns all work as they will in the run); these
functions judge the resulting mapping.

>>> hostvars = {"kvm1": {"migration_address": "10.0.0.1", "instances_path": "/var/lib/i",
...                      "storage": "shared"}}
>>> check_hosts("inv.yml", ["kvm1"], hostvars)
>>> check_hosts("inv.yml", ["kvm1"], {"kvm1": {"storage": "nfs"}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
livemig...InventoryError: inv.yml: host kvm1: migration_address: missing (an address ...)
>>> hostvars["kvm1"]["storage"] = "nfs"
>>> check_hosts("inv.yml", ["kvm1"], hostvars)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
livemig...InventoryError: inv.yml: host kvm1: storage: expected shared or local, got 'nfs'
>>> check_hosts("inv.yml", [], {})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
livemig...InventoryError: inv.yml: no hosts in group kvm_hosts (the playbooks run on that group)
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

GROUP = "kvm_hosts"
STORAGE_KINDS = ("shared", "local")
TRANSPORTS = ("tls", "tcp")


class InventoryError(Exception):
    """The inventory cannot serve the playbooks (one line: file, host, field, expected)."""


def check_hosts(
    source: str, hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]]
) -> None:
    """Raise :class:`InventoryError` for the first host whose variables the playbooks
    cannot use: ``migration_address``, an absolute ``instances_path``, ``storage``
    (shared|local), ``libvirt_transport`` (tls|tcp, if set), ``nfs_server`` (a host of
    the group, if set)."""
    if not hosts:
        raise InventoryError(f"{source}: no hosts in group {GROUP} (the playbooks run on "
                             f"that group)")
    for host in hosts:
        v = hostvars.get(host, {})

        def bad(field: str, what: str, host: str = host) -> InventoryError:
            return InventoryError(f"{source}: host {host}: {field}: {what}")

        if not str(v.get("migration_address") or "").strip():
            raise bad("migration_address", "missing (an address the other hosts reach)")
        path = v.get("instances_path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise bad("instances_path", f"expected an absolute path, got {path!r}")
        if v.get("storage") not in STORAGE_KINDS:
            raise bad("storage", f"expected shared or local, got {v.get('storage')!r}")
        transport = v.get("libvirt_transport", "tls")
        if transport not in TRANSPORTS:
            raise bad("libvirt_transport", f"expected tls or tcp, got {transport!r}")
        nfs = v.get("nfs_server")
        if nfs is not None and nfs not in hosts:
            raise bad("nfs_server", f"expected a host of group {GROUP}, got {nfs!r}")


def select(hosts: Sequence[str], limit: str | None, source: str) -> list[str]:
    """The hosts of ``hosts`` that a comma-separated ``limit`` names (all when None).

    >>> select(["a", "b", "c"], "c,a", "inv")
    ['a', 'c']
    >>> select(["a", "b"], "a,x", "inv")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    livemig...InventoryError: --limit a,x: x is not a host of group kvm_hosts in inv (a, b)
    """
    if limit is None:
        return list(hosts)
    names = [n.strip() for n in limit.split(",") if n.strip()]
    unknown = [n for n in names if n not in hosts]
    if unknown or not names:
        raise InventoryError(f"--limit {limit}: {', '.join(unknown) or 'no host'} is not a "
                             f"host of group {GROUP} in {source} ({', '.join(hosts)})")
    return [h for h in hosts if h in names]


def read_inventory(path: Path, ansible_bin: Path) -> tuple[list[str], dict[str, Any]]:
    """(hosts of ``kvm_hosts``, hostvars) as Ansible reads ``path``."""
    if not path.is_file():
        raise InventoryError(f"{path}: inventory file not found")
    env = {**os.environ, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
           "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True"}  # fmt: skip
    try:
        cp = subprocess.run([str(ansible_bin / "ansible-inventory"), "-i", str(path), "--list"],
                            capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    except FileNotFoundError as exc:
        raise InventoryError(f"{ansible_bin / 'ansible-inventory'}: not found (install "
                             f"livemig[ansible]; scripts/setup does)") from exc
    if cp.returncode != 0:
        lines = [ln.strip() for ln in cp.stderr.splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "ERROR" in ln or "error" in ln.lower()),
                      lines[-1] if lines else "unreadable")  # fmt: skip
        raise InventoryError(f"{path}: not an Ansible inventory: {' '.join(detail.split())}")
    data = json.loads(cp.stdout)
    hosts = list(data.get(GROUP, {}).get("hosts", []))
    for child in data.get(GROUP, {}).get("children", []):
        hosts += [h for h in data.get(child, {}).get("hosts", []) if h not in hosts]
    return hosts, data.get("_meta", {}).get("hostvars", {})
