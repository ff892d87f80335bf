"""The lab's firewall (nftables): only root reaches the lab's unauthenticated daemons.

A plain lab's libvirtd listens on TCP with ``auth_tcp = "none"``, and QEMU's migration
streams are not authenticated either. The controller runs in the root network namespace
and must reach them, so the lab cannot hide them from that namespace; instead:

* **root namespace**, table ``inet livemig_<lab>`` (one per lab, removed by ``lab down``):
  in the output path, a packet to the lab's subnet from a socket whose owner is not root
  (``meta skuid != 0``) is rejected. Root could read each host's UNIX socket anyway; any
  other user of the machine gets "connection refused" from every lab address and port
  (libvirtd 16509/16514, QEMU migration and NBD ports, everything). Forwarded traffic to
  the lab's subnet from outside the bridge is dropped (in case IP forwarding is on).
* **each host's namespace**, table ``inet livemig_host``: input from an address outside
  the lab's subnet is dropped (loopback aside), so nothing but the lab's own hosts and the
  bridge's address can open a connection to the host.

>>> from livemig.drivers.lab.layout import lab_layout
>>> print(root_ruleset(lab_layout("demo", hosts=2)))  # doctest: +NORMALIZE_WHITESPACE
table inet livemig_demo {
  chain output {
    type filter hook output priority 0; policy accept;
    ip daddr 198.18.154.0/24 meta skuid != 0 counter reject with icmpx type admin-prohibited
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    ip daddr 198.18.154.0/24 iifname != "demo-br" counter drop
  }
}
"""

from __future__ import annotations

import shutil

from livemig.drivers.lab.errors import LabError
from livemig.drivers.lab.layout import HostLayout, LabLayout
from livemig.drivers.lab.proc import run

HOST_TABLE = "livemig_host"


def root_table(lab: LabLayout) -> str:
    """The name of the lab's table in the root namespace (``inet`` family).

    >>> from livemig.drivers.lab.layout import lab_layout
    >>> root_table(lab_layout("t-1", hosts=1))
    'livemig_t_1'
    """
    return "livemig_" + lab.name.replace("-", "_")


def root_ruleset(lab: LabLayout) -> str:
    """Root namespace: only root's sockets reach the lab; nothing forwarded into it."""
    net = lab.network
    return (
        f"table inet {root_table(lab)} {{\n"
        "  chain output {\n"
        "    type filter hook output priority 0; policy accept;\n"
        f"    ip daddr {net} meta skuid != 0 counter reject with icmpx type admin-prohibited\n"
        "  }\n"
        "  chain forward {\n"
        "    type filter hook forward priority 0; policy accept;\n"
        f'    ip daddr {net} iifname != "{lab.bridge}" counter drop\n'
        "  }\n"
        "}\n"
    )


def host_ruleset(lab: LabLayout) -> str:
    """A host's namespace: connections only from the lab's subnet (and loopback).

    >>> from livemig.drivers.lab.layout import lab_layout
    >>> "ip saddr != 198.18.154.0/24 counter drop" in host_ruleset(lab_layout("demo", 1))
    True
    """
    return (
        f"table inet {HOST_TABLE} {{\n"
        "  chain input {\n"
        "    type filter hook input priority 0; policy accept;\n"
        '    iifname "lo" accept\n'
        f"    ip saddr != {lab.network} counter drop\n"
        "    meta nfproto ipv6 counter drop\n"
        "  }\n"
        "}\n"
    )


def _nft() -> str:
    nft = shutil.which("nft")
    if nft is None:
        raise LabError("nft: command not found (the lab's firewall needs nftables: run "
                       "scripts/setup-lab)")
    return nft


def install_root(lab: LabLayout) -> None:
    """Add (or replace) the lab's table in the root namespace."""
    nft = _nft()
    remove_root(lab)
    run([nft, "-f", "-"], input=root_ruleset(lab))


def install_host(lab: LabLayout, host: HostLayout) -> None:
    """Add the input filter inside ``host``'s network namespace (it dies with it)."""
    run(["ip", "netns", "exec", host.netns, _nft(), "-f", "-"], input=host_ruleset(lab))


def remove_root(lab: LabLayout) -> None:
    """Delete the lab's table from the root namespace, if it is there."""
    nft = shutil.which("nft")
    if nft is None:
        return  # no nft: no table of ours either
    if root_table(lab) in listed_tables():
        run([nft, "delete", "table", "inet", root_table(lab)])


def listed_tables(netns: str | None = None) -> list[str]:
    """Names of the ``inet`` tables in the root namespace (or in ``netns``)."""
    nft = shutil.which("nft")
    if nft is None:
        return []
    cmd = [nft, "list", "tables", "inet"]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    out = run(cmd, check=False).stdout
    return [line.split()[2] for line in out.splitlines() if line.startswith("table inet ")]
