"""The lab's pure parts (no root, no libvirt): names, domain XML, initramfs, inventory,
daemon configuration (TCP and TLS), the TLS certificates' layout (made with openssl in a
temporary directory), fault arguments, the pid records and the trust in the state
directory."""

from __future__ import annotations

import os
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from livemig.core.model import FaultKind
from livemig.drivers.lab import machine, statedir
from livemig.drivers.lab.commands import configure_lab_parser
from livemig.drivers.lab.daemons import libvirtd_conf, qemu_conf
from livemig.drivers.lab.errors import LabError
from livemig.drivers.lab.faults import inject_fault, layout_of
from livemig.drivers.lab.guest import domain_xml
from livemig.drivers.lab.image import Newc
from livemig.drivers.lab.inventory import HostEntry, Inventory, load_inventory, write_inventory
from livemig.drivers.lab.lab import lab_down
from livemig.drivers.lab.layout import ETC_PKI, LIBVIRT_TCP_PORT, LIBVIRT_TLS_PORT, lab_layout
from livemig.drivers.lab.pki import ca_config, host_files, is_key, leaf_extensions, make_lab_pki
from livemig.drivers.lab.proc import Tracked, track
from livemig.drivers.lab.records import load_pids, save_pid, sync_inventory


def test_layout_names_fit_linux_limits_and_stay_in_the_lab_range() -> None:
    lab = lab_layout("abcdefghi", hosts=50)
    names = [lab.bridge] + [h.veth for h in lab.hosts]
    assert max(len(n) for n in names) <= 15  # IFNAMSIZ - 1
    assert len(set(names)) == len(names)
    addresses = [h.address for h in lab.hosts]
    assert len(set(addresses)) == 50
    assert all(a.startswith("198.18.") for a in addresses)
    assert len({h.host_uuid for h in lab.hosts}) == 50


def test_layout_rejects_bad_values() -> None:
    with pytest.raises(LabError, match="hosts"):
        lab_layout("x", hosts=0)
    with pytest.raises(LabError, match="subnet"):
        lab_layout("x", hosts=2, subnet="10.0.0.0/24")


def test_distinct_labs_get_distinct_subnets_and_names() -> None:
    a, b = lab_layout("alpha"), lab_layout("beta")
    assert a.network != b.network
    assert {h.netns for h in a.hosts}.isdisjoint(h.netns for h in b.hosts)


def test_domain_xml_is_a_tcg_guest_with_console_file_and_optional_disk() -> None:
    xml = domain_xml("g", 256, 2, Path("/k"), Path("/i"), 32, 12.5, Path("/c/g.log"),
                     Path("/var/lib/libvirt/instances/g.qcow2"))  # fmt: skip
    dom = ET.fromstring(xml)
    assert dom.get("type") == "qemu"
    assert dom.findtext("memory") == "256" and dom.findtext("vcpu") == "2"
    cmdline = dom.findtext("os/cmdline") or ""
    assert "console=ttyS0" in cmdline
    assert "livemig.ws_mib=32" in cmdline and "livemig.rate_mib=12.5" in cmdline
    serial = dom.find("devices/serial")
    assert serial is not None and serial.get("type") == "file"
    assert serial.find("source").get("path") == "/c/g.log"  # type: ignore[union-attr]
    assert dom.find("devices/memballoon").get("model") == "none"  # type: ignore[union-attr]
    disk = dom.find("devices/disk")
    assert disk is not None and disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    no_disk = ET.fromstring(domain_xml("g", 128, 1, Path("/k"), Path("/i"), 8, 0, Path("/c")))
    assert no_disk.find("devices/disk") is None


def test_domain_xml_escapes_names() -> None:
    dom = ET.fromstring(domain_xml("a<b", 128, 1, Path("/k&"), Path("/i"), 8, 1, Path("/c")))
    assert dom.findtext("name") == "a<b" and dom.findtext("os/kernel") == "/k&"


def _parse_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    entries, off = {}, 0
    while True:
        assert data[off : off + 6] == b"070701"
        f = [int(data[off + 6 + 8 * i : off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rdev, namesize = f[1], f[6], (f[9], f[10]), f[11]
        name = data[off + 110 : off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        body = data[off : off + size]
        off += size
        off += -off % 4
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, body, rdev)


def test_newc_writer_produces_what_the_kernel_unpacks() -> None:
    cpio = Newc()
    cpio.dir("bin")
    cpio.file("bin/x", b"hello")
    cpio.symlink("bin/sh", "busybox")
    cpio.chardev("dev/console", 5, 1)
    entries = _parse_newc(cpio.finish())
    assert entries["bin"][0] == 0o040755
    assert entries["bin/x"] == (0o100755, b"hello", (0, 0))
    assert entries["bin/sh"][1] == b"busybox"
    assert entries["dev/console"][2] == (5, 1)


def test_inventory_round_trip(tmp_path: Path) -> None:
    inv = Inventory(
        lab="t", lab_dir="/x", storage="local", instances_path="/var/lib/libvirt/instances",
        console_dir="/x/consoles", storage_pool="instances", network="198.18.9.0/24",
        bridge={"name": "t-br", "address": "198.18.9.1"}, image={"kernel": "/k", "initrd": "/i"},
        hosts=[HostEntry(name="lab1", address="198.18.9.11", uri="qemu+tcp://198.18.9.11/system",
                         netns="t-lab1", host_uuid="u", instances_dir="/x/i1",
                         pids={"holder": 1})],
    )  # fmt: skip
    path = write_inventory(inv, tmp_path / "inventory.yaml")
    assert load_inventory(path) == inv
    assert load_inventory(path).host("lab1").uri.endswith("/system")
    with pytest.raises(LabError, match="no inventory"):
        load_inventory(tmp_path / "missing.yaml")


def test_tracked_process_is_recognised_by_start_time() -> None:
    me = track(os.getpid())
    assert me.alive()
    assert not Tracked(me.pid, me.start_time + 1).alive()  # a recycled pid is not ours


def test_cli_parses_every_action() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    configure_lab_parser(parser)
    args = parser.parse_args(["up", "--hosts", "3", "--storage", "local", "--shape-mbit", "100"])
    assert (args.hosts, args.storage, args.shape_mbit, args.name) == (3, "local", 100.0, "livemig")
    for action in ("status", "down", "image"):
        assert callable(parser.parse_args([action]).func)


# --- TLS mode: configuration text and certificate layout ---------------------------------


def test_tcp_config_listens_without_auth_on_the_lab_address_only() -> None:
    host = lab_layout("t", hosts=2).hosts[1]
    conf = libvirtd_conf(host)
    assert f'listen_addr = "{host.address}"' in conf
    assert "listen_tcp = 1" in conf and "listen_tls = 0" in conf and 'auth_tcp = "none"' in conf
    assert "tls" not in qemu_conf(host).replace("listen_tls", "")
    assert host.uri == f"qemu+tcp://{host.address}/system" and host.port == LIBVIRT_TCP_PORT


def test_tls_config_is_tls_only_with_the_host_certificates() -> None:
    lab = lab_layout("t", hosts=2, base_dir="/b", tls=True)
    host = lab.hosts[0]
    conf = dict(
        line.split(" = ", 1) for line in libvirtd_conf(host).splitlines() if " = " in line
    )
    assert (conf["listen_tls"], conf["listen_tcp"]) == ("1", "0")
    assert "auth_tcp" not in conf
    assert conf["listen_addr"] == f'"{host.address}"'
    assert conf["tls_no_verify_certificate"] == "0"
    files = {str(ETC_PKI / rel): kind for rel, kind in host_files()}
    assert files[conf["key_file"].strip('"')] == "server-key"
    assert files[conf["cert_file"].strip('"')] == "server-cert"
    assert files[conf["ca_file"].strip('"')] == "ca"
    qconf = qemu_conf(host)
    assert 'migrate_tls_x509_cert_dir = "/etc/pki/qemu"' in qconf
    assert "migrate_tls_x509_verify = 1" in qconf
    qemu_names = {Path(p).name for p, _ in host_files() if Path(p).parent.name == "qemu"}
    assert qemu_names == {"ca-cert.pem", "server-cert.pem", "server-key.pem",
                          "client-cert.pem", "client-key.pem"}  # fmt: skip
    assert host.uri == f"qemu+tls://{host.address}/system?pkipath=/b/t/pki/client"
    assert host.port == LIBVIRT_TLS_PORT and lab.client_pki_dir == Path("/b/t/pki/client")


def test_certificate_extensions_name_the_host_and_its_role() -> None:
    server = leaf_extensions("server", "198.18.5.11", "lab1")
    assert "extendedKeyUsage = serverAuth" in server
    assert "subjectAltName = IP:198.18.5.11, DNS:lab1" in server
    assert "keyUsage = critical, digitalSignature, keyEncipherment" in server
    client = leaf_extensions("client", None, None)
    assert "clientAuth" in client and "subjectAltName" not in client
    assert "CA:TRUE" in ca_config("t") and "keyCertSign" in ca_config("t")


def _openssl(*args: str | Path) -> str:
    cp = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


def test_lab_pki_files_modes_and_chain(tmp_path: Path) -> None:
    lab = lab_layout("t", hosts=2, base_dir=tmp_path, tls=True)
    make_lab_pki(lab)
    for host in lab.hosts:
        for rel, _kind in host_files():
            path = host.pki_dir / rel
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o600 if is_key(path) else 0o644), path
        assert stat.S_IMODE((host.pki_dir / "libvirt" / "private").stat().st_mode) == 0o700
        ca = host.pki_dir / "CA" / "cacert.pem"
        for cert in ("libvirt/servercert.pem", "libvirt/clientcert.pem",
                     "qemu/server-cert.pem", "qemu/client-cert.pem"):  # fmt: skip
            assert ": OK" in _openssl("verify", "-CAfile", ca, host.pki_dir / cert)
        text = _openssl("x509", "-noout", "-text", "-in", host.pki_dir / "qemu/server-cert.pem")
        assert f"IP Address:{host.address}" in text and f"DNS:{host.name}" in text
        assert "TLS Web Server Authentication" in text
        # the key matches its certificate
        assert _openssl("pkey", "-pubout", "-in", host.pki_dir / "qemu/server-key.pem") == \
            _openssl("x509", "-noout", "-pubkey", "-in", host.pki_dir / "qemu/server-cert.pem")
    client = sorted(p.name for p in lab.client_pki_dir.iterdir())
    assert client == ["cacert.pem", "clientcert.pem", "clientkey.pem"]
    assert stat.S_IMODE((lab.client_pki_dir / "clientkey.pem").stat().st_mode) == 0o600
    ca = lab.pki_dir / "cacert.pem"
    assert ": OK" in _openssl("verify", "-CAfile", ca, lab.client_pki_dir / "clientcert.pem")
    assert not [p for p in tmp_path.rglob("*") if "cakey" in p.name or p.suffix == ".csr"]


def test_inventory_tls_flag_defaults_to_false(tmp_path: Path) -> None:
    data = {
        "lab": "t", "lab_dir": "/x", "storage": "shared", "instances_path": "/i",
        "console_dir": "/c", "storage_pool": "instances", "network": "198.18.9.0/24",
        "bridge": {"name": "t-br", "address": "198.18.9.1"}, "image": None, "hosts": [],
    }  # fmt: skip
    assert Inventory.from_dict(data).tls is False
    inv = Inventory.from_dict({**data, "tls": True})
    assert load_inventory(write_inventory(inv, tmp_path / "inventory.yaml")).tls is True


def test_cli_up_takes_tls() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    configure_lab_parser(parser)
    assert parser.parse_args(["up", "--tls"]).tls is True
    assert parser.parse_args(["up"]).tls is False


def test_cli_up_takes_ssh_and_unconfigured() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    configure_lab_parser(parser)
    args = parser.parse_args(["up", "--ssh", "--unconfigured"])
    assert args.ssh is True and args.unconfigured is True
    assert parser.parse_args(["up"]).ssh is False


def test_unconfigured_lab_needs_ssh() -> None:
    from livemig.drivers.lab.lab import lab_up

    with pytest.raises(LabError, match="unconfigured lab is configured over SSH"):
        lab_up("tunits", hosts=1, unconfigured=True)


def test_sshd_keys_and_known_hosts(tmp_path: Path) -> None:
    """The lab's key pair, one host key per host, ``known_hosts`` naming each host by
    address and name, and a private client key."""
    from livemig.drivers.lab import sshd

    lab = lab_layout("tkeys", 2, tmp_path)
    sshd.make_keys(lab)
    assert stat.S_IMODE(sshd.client_key(lab).stat().st_mode) == 0o600
    known = sshd.known_hosts(lab).read_text().splitlines()
    assert [line.split()[0] for line in known] == [f"{h.address},{h.name}" for h in lab.hosts]
    pubs = {sshd.host_key(h).with_name("ssh_host_ed25519_key.pub").read_text().split()[1]
            for h in lab.hosts}  # fmt: skip
    assert len(pubs) == 2 and {line.split()[2] for line in known} == pubs
    auth = (sshd.ssh_dir(lab) / "authorized_keys").read_text()
    assert auth == sshd.client_key(lab).with_name("id_ed25519.pub").read_text()
    conf = (sshd.ssh_dir(lab) / "sshd_config").read_text()
    assert "PasswordAuthentication no" in conf and "PermitRootLogin prohibit-password" in conf


# --- faults: argument checks and records -------------------------------------------------


def _inventory(lab_dir: Path) -> Inventory:
    return Inventory(
        lab="t", lab_dir=str(lab_dir), storage="shared", instances_path="/i",
        console_dir="/c", storage_pool="instances", network="198.18.9.0/24",
        bridge={"name": "t-br", "address": "198.18.9.1"}, image=None,
        hosts=[HostEntry(name="lab1", address="198.18.9.11", uri="qemu+tcp://198.18.9.11/system",
                         netns="t-lab1", host_uuid="u", instances_dir="/i", pids={"holder": 1})],
    )  # fmt: skip


def test_inject_fault_names_a_bad_kind_or_host(tmp_path: Path) -> None:
    inv = _inventory(tmp_path / "t")
    with pytest.raises(LabError, match=r"fault kind\(='reboot'\) must be one of host_down"):
        inject_fault(inv, "reboot", "lab1")  # type: ignore[arg-type]
    with pytest.raises(LabError, match="has no host 'lab7'"):
        inject_fault(inv, FaultKind.HOST_DOWN, "lab7")
    with pytest.raises(LabError, match="no live namespace holder"):
        inject_fault(inv, FaultKind.LINK_DOWN, "lab1")  # nothing of lab t exists


def test_records_follow_restarts_into_the_inventory(tmp_path: Path) -> None:
    lab_dir = tmp_path / "t"
    lab_dir.mkdir()
    path = write_inventory(_inventory(lab_dir), lab_dir / "inventory.yaml")
    host = layout_of(load_inventory(path)).hosts[0]
    assert host.pids_file.parent.is_relative_to(lab_dir)
    me = track(os.getpid())
    save_pid(host, "holder", me)
    save_pid(host, "libvirtd", Tracked(me.pid + 1, 7))
    assert load_pids(host) == {"holder": me, "libvirtd": Tracked(me.pid + 1, 7)}
    sync_inventory(path, host)
    assert load_inventory(path).host("lab1").pids == {"holder": me.pid, "libvirtd": me.pid + 1}
    save_pid(host, "libvirtd", None)  # the service went down
    sync_inventory(path, host)
    assert load_inventory(path).host("lab1").pids == {"holder": me.pid}
    assert sorted(p.name for p in lab_dir.iterdir()) == ["hosts", "inventory.yaml",
                                                         "inventory.yaml.lock"]  # fmt: skip


# -- the state directory: only root may have written it (issue 8, S2) ----------------------


def not_roots(path: Path) -> None:
    """Make ``path`` someone else's (as root: nobody's; otherwise it already is)."""
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)


def test_lab_down_refuses_a_state_dir_others_may_write(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "t" / "hosts" / "lab1").mkdir(parents=True)
    os.chmod(base, 0o777)
    with pytest.raises(LabError, match=rf"refusing to trust .* at {base}: mode 0777"):
        lab_down("t", base_dir=base)
    os.chmod(base, 0o755)
    os.chmod(base / "t", 0o757)
    with pytest.raises(LabError, match=rf"at {base / 't'}: mode 0757 lets group or others"):
        lab_down("t", base_dir=base)


@pytest.mark.root  # chown to another user, /etc/netns
def test_lab_down_refuses_a_state_dir_not_owned_by_root(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "t").mkdir(parents=True)
    not_roots(base / "t")
    with pytest.raises(LabError, match=rf"at {base / 't'}: it is owned by uid \d+, not root"):
        lab_down("t", base_dir=base)


@pytest.mark.root  # chown to another user, /etc/netns
def test_pid_files_others_could_have_written_are_refused(tmp_path: Path) -> None:
    host = lab_layout("t", hosts=1, base_dir=tmp_path / "base").hosts[0]
    me = track(os.getpid())
    assert me is not None
    save_pid(host, "holder", me)
    assert stat.S_IMODE(host.pids_file.stat().st_mode) == 0o644
    assert stat.S_IMODE(host.state_dir.stat().st_mode) == 0o755
    assert load_pids(host) == {"holder": me}
    os.chmod(host.pids_file, 0o666)
    with pytest.raises(LabError, match="pids.json: mode 0666"):
        load_pids(host)
    os.chmod(host.pids_file, 0o644)
    os.chmod(host.state_dir, 0o775)
    with pytest.raises(LabError, match="mode 0775"):
        load_pids(host)
    os.chmod(host.state_dir, 0o755)
    not_roots(host.pids_file)
    with pytest.raises(LabError, match="not root"):
        load_pids(host)
    host.pids_file.unlink()
    (host.state_dir / "elsewhere.json").write_text("{}")
    host.pids_file.symlink_to(host.state_dir / "elsewhere.json")
    with pytest.raises(LabError, match="symbolic link"):
        load_pids(host)


@pytest.mark.root  # chown to another user, /etc/netns
def test_a_sticky_shared_parent_is_fine_a_plain_writable_one_is_not(tmp_path: Path) -> None:
    shared = tmp_path / "vartmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /var/tmp
    old = os.umask(0o002)  # a permissive umask changes nothing the lab makes
    try:
        machine.prepare(shared / "livemig-lab")
    finally:
        os.umask(old)
    base = shared / "livemig-lab"
    assert stat.S_IMODE(base.stat().st_mode) == 0o755
    assert stat.S_IMODE((base / "machine.json").stat().st_mode) == 0o644
    statedir.require_trusted(base, strict_levels=1)
    os.chmod(shared, 0o777)  # anyone could rename livemig-lab away and put their own
    with pytest.raises(LabError, match="not sticky"):
        statedir.require_trusted(base / "t", strict_levels=2)
    os.chmod(shared, 0o1777)
    (base / "machine.json").chmod(0o666)
    with pytest.raises(LabError, match="machine.json: mode 0666"):
        machine.prepare(base)
