"""Certificates of a TLS lab: a CA made for the lab, a server and a client certificate
per host, and a client certificate for the root namespace (where ``livemig`` runs).

Made with the ``openssl`` command line (ECDSA P-256 keys, instant to generate). The CA's
key is deleted once every certificate is issued, so nothing can sign for the lab later.
Private keys are created 0600 in 0700 directories before any key byte is written, and are
never printed: errors carry openssl's stderr, which holds no key material.

Each host's ``pki`` directory is bind-mounted over its ``/etc/pki``, where libvirt (as a
server, and as a client for peer-to-peer migration) and QEMU (migration TLS) look by
default:

>>> [str(p) for p, _ in host_files()][:3]
['CA/cacert.pem', 'libvirt/servercert.pem', 'libvirt/private/serverkey.pem']
>>> sorted(str(p) for p, _ in host_files() if p.parent.name == "qemu")
['qemu/ca-cert.pem', 'qemu/client-cert.pem', 'qemu/client-key.pem', \
'qemu/server-cert.pem', 'qemu/server-key.pem']
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from livemig.drivers.lab.errors import LabError
from livemig.drivers.lab.layout import HostLayout, LabLayout
from livemig.drivers.lab.proc import run

CA_CERT = "cacert.pem"
#: What each host's ``/etc/pki`` holds: (path inside it, what it is). Keys end in ``key.pem``.
_HOST_FILES: tuple[tuple[str, str], ...] = (
    ("CA/cacert.pem", "ca"),
    ("libvirt/servercert.pem", "server-cert"),
    ("libvirt/private/serverkey.pem", "server-key"),
    ("libvirt/clientcert.pem", "client-cert"),
    ("libvirt/private/clientkey.pem", "client-key"),
    ("qemu/ca-cert.pem", "ca"),
    ("qemu/server-cert.pem", "server-cert"),
    ("qemu/server-key.pem", "server-key"),
    ("qemu/client-cert.pem", "client-cert"),
    ("qemu/client-key.pem", "client-key"),
)
#: The root namespace's client directory (libvirt's ``pkipath`` layout).
CLIENT_FILES: tuple[tuple[str, str], ...] = (
    ("cacert.pem", "ca"),
    ("clientcert.pem", "client-cert"),
    ("clientkey.pem", "client-key"),
)
#: Paths inside a host's /etc/pki where libvirtd.conf and qemu.conf point.
LIBVIRT_SERVER_KEY = "/etc/pki/libvirt/private/serverkey.pem"
LIBVIRT_SERVER_CERT = "/etc/pki/libvirt/servercert.pem"
LIBVIRT_CA = "/etc/pki/CA/cacert.pem"
QEMU_TLS_DIR = "/etc/pki/qemu"
DAYS = 3650


def host_files() -> list[tuple[Path, str]]:
    """Files of a host's ``/etc/pki`` as (relative path, kind)."""
    return [(Path(p), kind) for p, kind in _HOST_FILES]


def is_key(path: Path) -> bool:
    """Whether a file of the lab's PKI is a private key (mode 0600, never printed)."""
    return path.name.endswith("key.pem")


def ca_config(lab_name: str) -> str:
    """openssl ``req`` config of the lab's self-signed CA.

    >>> print(ca_config("t").splitlines()[-3])
    basicConstraints = critical, CA:TRUE
    """
    return "\n".join(
        [
            "[req]",
            "prompt = no",
            "distinguished_name = dn",
            "x509_extensions = ca",
            "[dn]",
            f"O = livemig lab {lab_name}",
            f"CN = livemig lab {lab_name} CA",
            "[ca]",
            "basicConstraints = critical, CA:TRUE",
            "keyUsage = critical, keyCertSign, cRLSign",
            "subjectKeyIdentifier = hash",
            "",
        ]
    )


def leaf_extensions(role: str, address: str | None, dns: str | None) -> str:
    """openssl extension section ``[leaf]`` of a ``server`` or ``client`` certificate.

    libvirt and QEMU require digitalSignature + keyEncipherment and the matching extended
    key usage; clients check the server's name against its subjectAltName.

    >>> leaf_extensions("server", "198.18.0.11", "lab1").splitlines()[3:5]
    ['extendedKeyUsage = serverAuth', 'subjectAltName = IP:198.18.0.11, DNS:lab1']
    >>> leaf_extensions("admin", None, None)
    Traceback (most recent call last):
    ...
    livemig.drivers.lab.errors.LabError: certificate role(='admin') must be server or client
    """
    if role not in ("server", "client"):
        raise LabError(f"certificate role(={role!r}) must be server or client")
    lines = [
        "[leaf]",
        "basicConstraints = critical, CA:FALSE",
        "keyUsage = critical, digitalSignature, keyEncipherment",
        f"extendedKeyUsage = {'serverAuth' if role == 'server' else 'clientAuth'}",
    ]
    sans = ([f"IP:{address}"] if address else []) + ([f"DNS:{dns}"] if dns else [])
    if sans:
        lines.append("subjectAltName = " + ", ".join(sans))
    lines += ["subjectKeyIdentifier = hash", "authorityKeyIdentifier = keyid", ""]
    return "\n".join(lines)


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _new_key(path: Path) -> Path:
    """An ECDSA P-256 key in a file that is 0600 before openssl writes into it."""
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", path])  # fmt: skip
    return path


class _Ca:
    """The lab's CA while certificates are issued (its key lives in ``work`` only)."""

    def __init__(self, lab_name: str, work: Path) -> None:
        self.work = _private_dir(work)
        self.key = _new_key(work / "cakey.pem")
        conf = work / "ca.cnf"
        conf.write_text(ca_config(lab_name))
        self.cert = work / CA_CERT
        run(["openssl", "req", "-x509", "-new", "-config", conf, "-key", self.key,
             "-sha256", "-days", str(DAYS), "-out", self.cert])  # fmt: skip
        self.lab_name = lab_name

    def issue(self, stem: str, role: str, cn: str, address: str | None, dns: str | None
              ) -> tuple[Path, Path]:  # fmt: skip
        """A key and a certificate signed by the CA; returns (cert, key) in ``work``."""
        key = _new_key(self.work / f"{stem}-key.pem")
        csr = self.work / f"{stem}.csr"
        subject = f"/O=livemig lab {self.lab_name}/CN={cn}"
        run(["openssl", "req", "-new", "-key", key, "-subj", subject, "-out", csr])
        ext = self.work / f"{stem}.ext"
        ext.write_text(leaf_extensions(role, address, dns))
        cert = self.work / f"{stem}-cert.pem"
        serial = "0x" + secrets.token_hex(15)
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
             "-set_serial", serial, "-sha256", "-days", str(DAYS),
             "-extfile", ext, "-extensions", "leaf", "-out", cert])  # fmt: skip
        return cert, key


def _install(files: dict[str, Path], layout: tuple[tuple[str, str], ...], dest: Path) -> None:
    """Copy the issued files into ``dest`` under ``layout``; keys 0600, dirs 0700."""
    for rel, kind in layout:
        target = dest / rel
        _private_dir(target.parent)
        target.unlink(missing_ok=True)
        if is_key(target):
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            with files[kind].open("rb") as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)
        else:
            shutil.copyfile(files[kind], target)
            target.chmod(0o644)


def make_lab_pki(lab: LabLayout) -> None:
    """Issue every certificate of a TLS lab: the CA (its certificate in ``pki/``), each
    host's ``pki`` tree, and the root namespace's client directory."""
    _private_dir(lab.pki_dir)
    work = lab.pki_dir / "work"
    try:
        ca = _Ca(lab.name, work)
        shutil.copyfile(ca.cert, lab.pki_dir / CA_CERT)
        for host in lab.hosts:
            _make_host(ca, host)
        cert, key = ca.issue("root-client", "client", "livemig client", None, None)
        files = {"ca": ca.cert, "client-cert": cert, "client-key": key}
        _install(files, CLIENT_FILES, lab.client_pki_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _make_host(ca: _Ca, host: HostLayout) -> None:
    server, server_key = ca.issue(f"{host.name}-server", "server", host.name, host.address,
                                  host.name)  # fmt: skip
    client, client_key = ca.issue(f"{host.name}-client", "client", host.name, host.address,
                                  host.name)  # fmt: skip
    files = {"ca": ca.cert, "server-cert": server, "server-key": server_key,
             "client-cert": client, "client-key": client_key}  # fmt: skip
    _install(files, _HOST_FILES, host.pki_dir)
    host.pki_dir.chmod(0o755)  # a host's /etc/pki: readable like the real one; keys are not
