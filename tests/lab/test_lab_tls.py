"""The lab in TLS mode for real (``ttls``, 2 hosts): libvirt over ``qemu+tls`` with the lab's
client certificate, plain TCP refused, a certificate-less TLS client rejected, a live
migration with ``VIR_MIGRATE_TLS`` whose stream is TLS on the wire (and, as the sniffer's
control, one without it whose stream is not), and no private key
bytes outside the key files (also after libvirtd restarts).

Needs root and ``scripts/setup-lab``; a lab that cannot start fails the tests.
"""

from __future__ import annotations

import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from labcheck import last_tick, wait_tick_above
from lablock import running_lab

from livemig.core.model import FaultKind
from livemig.drivers.lab.faults import inject_fault, port_open
from livemig.drivers.lab.guest import domain_xml
from livemig.drivers.lab.inventory import Inventory, load_inventory
from livemig.drivers.lab.lab import lab_status
from livemig.drivers.lab.layout import LIBVIRT_TCP_PORT, LIBVIRT_TLS_PORT, lab_layout

pytestmark = pytest.mark.lab

LAB = "ttls"
GUEST = f"{LAB}-g1"
BOOT_TIMEOUT = 120.0
MIGRATION_PORTS = range(49152, 49216)  # libvirt's default migration_port_min..max
QEMU_MAGIC = b"QEVM"  # first bytes of a plain QEMU migration stream
# The magic is looked for only where a plain stream has it, near the start of a connection:
# four bytes searched through ~90 MB of ciphertext match by chance about once in 50 runs.
STREAM_HEAD = 1 << 16
# The guest's RAM block id ("pc" machine), sent in clear with the pages of a plain stream; six
# bytes do not match ciphertext by chance (about 90e6 / 2**48).
RAM_BLOCK_ID = b"pc.ram"
TLS_HANDSHAKE = b"\x16\x03"  # a TLS record of type handshake
FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_TLS
)

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


@pytest.fixture(scope="module")
def tls_lab() -> Iterator[Inventory]:
    t0 = time.monotonic()
    with running_lab(LAB, hosts=2, storage="shared", tls=True) as path:
        print(f"lab up --tls (with its lock): {time.monotonic() - t0:.1f} s")
        yield load_inventory(path)


class Sniffer(threading.Thread):
    """First payload bytes of every TCP connection towards the migration ports, seen on a
    root-namespace interface (an AF_PACKET socket), and whether anything of a plain QEMU
    stream passed: its magic at the head of a connection, or the RAM block's id anywhere."""

    def __init__(self, iface: str) -> None:
        super().__init__(daemon=True)
        # ETH_P_ALL: frames leaving through the interface reach only "all protocol" taps
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((iface, 0))
        self.sock.settimeout(0.2)
        self.first: dict[tuple[bytes, int], bytes] = {}
        self.offset: dict[tuple[bytes, int], int] = {}
        self.magic_seen = False
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                frame = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            ip = frame[14:]
            if frame[12:14] != b"\x08\x00" or len(ip) < 20 or ip[9] != 6:  # TCP over IPv4
                continue
            ihl = (ip[0] & 0x0F) * 4
            total = int.from_bytes(ip[2:4], "big")
            tcp = ip[ihl:total]
            if len(tcp) < 20 or int.from_bytes(tcp[2:4], "big") not in MIGRATION_PORTS:
                continue
            payload = tcp[(tcp[12] >> 4) * 4 :]
            if not payload:
                continue
            key = (ip[12:16], int.from_bytes(tcp[0:2], "big"))
            self.first.setdefault(key, payload[:8])
            offset = self.offset.get(key, 0)
            head = payload[: max(0, STREAM_HEAD - offset)]
            self.magic_seen |= QEMU_MAGIC in head or RAM_BLOCK_ID in payload
            self.offset[key] = offset + len(payload)

    def finish(self) -> None:
        self.stop.set()
        self.join(5)
        self.sock.close()


def test_libvirtd_answers_over_tls_with_the_lab_client_certificate(tls_lab: Inventory) -> None:
    assert tls_lab.tls
    for host in tls_lab.hosts:
        assert host.uri.startswith(f"qemu+tls://{host.address}/system?pkipath=")
        conn = libvirt.open(host.uri)
        try:
            assert conn.getHostname() == host.name
            assert conn.getURI().startswith("qemu+tls://")
        finally:
            conn.close()
    status = lab_status(LAB)
    assert status["state"] == "up" and status["tls"]


def test_plain_tcp_is_refused_and_tls_without_a_client_certificate_too(
    tls_lab: Inventory, tmp_path: Path
) -> None:
    host = tls_lab.host("lab1")
    assert not port_open(host.address, LIBVIRT_TCP_PORT)
    assert port_open(host.address, LIBVIRT_TLS_PORT)
    with pytest.raises(libvirt.libvirtError, match="Connection refused"):
        libvirt.open(f"qemu+tcp://{host.address}/system")
    # Trusting the lab's CA is not enough: the server wants a certificate the CA signed.
    ca = Path(tls_lab.lab_dir) / "pki" / "cacert.pem"
    (tmp_path / "cacert.pem").write_bytes(ca.read_bytes())
    with pytest.raises(libvirt.libvirtError):
        libvirt.open(f"qemu+tls://{host.address}/system?pkipath={tmp_path}").close()
    # libvirtd listens on the host's lab address only, TLS only.
    out = subprocess.run(["ip", "netns", "exec", host.netns, "ss", "-ltnH"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    local = {line.split()[3] for line in out.splitlines() if line.strip()}
    assert f"{host.address}:{LIBVIRT_TLS_PORT}" in local
    assert not {a for a in local if a.endswith((f":{LIBVIRT_TCP_PORT}", f"*:{LIBVIRT_TLS_PORT}"))}


def _sniffed_migration(
    tls_lab: Inventory, dom: libvirt.virDomain, to: int, flags: int
) -> tuple[Sniffer, float]:
    """Migrate ``dom`` to lab host number ``to`` while sniffing that host's link."""
    target = tls_lab.hosts[to]
    sniffer = Sniffer(lab_layout(LAB, 2, Path(tls_lab.lab_dir).parent).hosts[to].veth)
    sniffer.start()
    try:
        t0 = time.monotonic()
        dom.migrateToURI(f"qemu+tls://{target.address}/system", flags, None, 0)
        return sniffer, time.monotonic() - t0
    finally:
        sniffer.finish()


def test_live_migration_with_migrate_tls_is_encrypted_on_the_wire(tls_lab: Inventory) -> None:
    lab1, lab2 = tls_lab.hosts
    assert tls_lab.image is not None
    console = Path(tls_lab.console_dir) / f"{GUEST}.log"
    xml = domain_xml(GUEST, 128, 1, Path(tls_lab.image["kernel"]),
                     Path(tls_lab.image["initrd"]), 16, 4, console)  # fmt: skip
    src = libvirt.open(lab1.uri)
    dst = libvirt.open(lab2.uri)
    try:
        dom = src.createXML(xml, 0)
        wait_tick_above(console, 1, BOOT_TIMEOUT)
        # The control: without VIR_MIGRATE_TLS the stream goes in clear, and the sniffer sees it.
        plain, took = _sniffed_migration(tls_lab, dom, 1, FLAGS & ~libvirt.VIR_MIGRATE_TLS)
        print(f"plain migration lab1 -> lab2: {took:.1f} s")
        assert plain.first, "no migration connection was seen on lab2's link"
        assert plain.magic_seen, "the sniffer did not recognise a plain QEMU stream"

        before = last_tick(console)
        back = dst.lookupByName(GUEST)
        sniffer, took = _sniffed_migration(tls_lab, back, 0, FLAGS)
        print(f"TLS migration lab2 -> lab1: {took:.1f} s; connections seen: {len(sniffer.first)}")

        assert GUEST not in [d.name() for d in dst.listAllDomains()]
        moved = src.lookupByName(GUEST)
        assert moved.isActive()
        stats = moved.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        assert stats["type"] == libvirt.VIR_DOMAIN_JOB_COMPLETED
        assert stats["memory_processed"] > 0
        # On the wire: the migration connection opened with a TLS handshake, and nothing of a
        # plain QEMU stream passed in clear.
        assert sniffer.first, "no migration connection was seen on lab1's link"
        assert all(first.startswith(TLS_HANDSHAKE) for first in sniffer.first.values())
        assert not sniffer.magic_seen
        switched = last_tick(console)
        assert switched >= before
        wait_tick_above(console, switched + 2, 60)  # the guest runs on lab1
    finally:
        src.close()
        dst.close()


def test_a_restarted_libvirtd_serves_tls_again_and_keeps_its_guest(tls_lab: Inventory) -> None:
    path = Path(tls_lab.lab_dir) / "inventory.yaml"
    inject_fault(load_inventory(path), FaultKind.SERVICE_DOWN, "lab1")
    lab1 = load_inventory(path).host("lab1")
    assert "libvirtd" not in lab1.pids and not port_open(lab1.address, LIBVIRT_TLS_PORT)
    inject_fault(load_inventory(path), FaultKind.SERVICE_UP, "lab1")
    conn = libvirt.open(load_inventory(path).host("lab1").uri)
    try:
        assert conn.lookupByName(GUEST).isActive()  # the migrated guest, re-attached
    finally:
        conn.close()
    assert lab_status(LAB)["state"] == "up"


def _pem_body_lines(path: Path) -> list[bytes]:
    return [
        line
        for line in path.read_bytes().splitlines()
        if line and not line.startswith(b"-----") and len(line) >= 32
    ]


def test_keys_are_private_and_never_copied_into_inventory_or_logs(tls_lab: Inventory) -> None:
    lab_dir = Path(tls_lab.lab_dir)
    keys = [p for p in lab_dir.rglob("*key.pem") if p.is_file()]
    # per host: libvirt server + client, QEMU server + client; and the root client's key
    assert len(keys) == 4 * len(tls_lab.hosts) + 1
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert b"PRIVATE KEY" in key.read_bytes()
    assert not list(lab_dir.rglob("cakey*")), "the CA key must not outlive lab up"
    secrets = {line for key in keys for line in _pem_body_lines(key)}
    assert secrets
    others = [p for p in lab_dir.rglob("*") if p.is_file() and p not in keys]
    assert lab_dir / "inventory.yaml" in others
    assert any(p.name == "libvirtd.log" for p in others)
    for path in others:
        data = path.read_bytes()
        assert b"PRIVATE KEY" not in data, path
        assert not any(s in data for s in secrets), path
    assert "key" not in (lab_dir / "inventory.yaml").read_text().lower()
