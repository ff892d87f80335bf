"""SSH into lab hosts (``lab up --ssh``): a key pair made for the lab, a host key per host,
and an ``sshd`` per host that is PID 1 of the host's own PID namespace.

Each host's sshd runs inside the host's network, mount and UTS namespaces (entered through
the namespace holder, so it sees the host's private ``/etc/libvirt``, ``/var/lib/libvirt``,
``/etc/pki`` and its ``/etc/hosts``), in a new PID namespace and a child mount namespace
with a private tmpfs on ``/run`` (``/run/libvirt`` bound back in): pid files under ``/run``
(``/run/libvirtd.pid``) are the host's own, and ``ps`` on the host shows only its
processes. Whatever a session starts (libvirtd, QEMU) stays in the host's network
namespace, where ``lab down`` finds and stops it. Password logins are refused; root logs
in with the lab's key only, and clients check the host keys against the lab's
``known_hosts``.

>>> print(sshd_config(Path("/lab/ssh")).splitlines()[1])
PermitRootLogin prohibit-password
>>> sshd_script(Path("/h/run"), Path("/cfg"), "198.18.2.11", Path("/h/key")).splitlines()[1]
'mount -n -t tmpfs -o mode=0755 livemig-run /run'
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from pathlib import Path

from livemig.drivers.lab.errors import LabError
from livemig.drivers.lab.layout import HostLayout, LabLayout
from livemig.drivers.lab.netns import nsenter
from livemig.drivers.lab.proc import Tracked, run, track, wait_for

SSH_PORT = 22
SSHD = "/usr/sbin/sshd"


def ssh_dir(lab: LabLayout) -> Path:
    """The lab's SSH files: client key, ``authorized_keys``, ``known_hosts``, config."""
    return lab.lab_dir / "ssh"


def client_key(lab: LabLayout) -> Path:
    return ssh_dir(lab) / "id_ed25519"


def known_hosts(lab: LabLayout) -> Path:
    return ssh_dir(lab) / "known_hosts"


def host_key(host: HostLayout) -> Path:
    return host.state_dir / "ssh_host_ed25519_key"


def sshd_config(ssh: Path) -> str:
    """The sshd configuration every lab host shares (address and keys come as options)."""
    return "\n".join(
        [
            f"# livemig lab sshd ({ssh})",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            f"AuthorizedKeysFile {ssh / 'authorized_keys'}",
            "# the lab's state directory is root's, under the world-writable /var/tmp",
            "StrictModes no",
            "UsePAM no",
            "PrintMotd no",
            "X11Forwarding no",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            "",
        ]
    )


def sshd_script(run_libvirt: Path, config: Path, address: str, key: Path) -> str:
    """The shell that becomes the host's sshd: a private /run, then ``exec sshd -D``."""
    sshd = [SSHD, "-D", "-e", "-f", str(config), "-h", str(key),
            "-o", f"ListenAddress={address}", "-o", "PidFile=/run/sshd.pid"]  # fmt: skip
    return "\n".join(
        [
            "set -e",
            "mount -n -t tmpfs -o mode=0755 livemig-run /run",
            "mkdir -p /run/sshd /run/libvirt /run/lock",
            f"mount -n --bind {shlex.quote(str(run_libvirt))} /run/libvirt",
            "exec " + shlex.join(sshd),
            "",
        ]
    )


def _keygen(path: Path, comment: str) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".pub").unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    os.chmod(path, 0o600)


def make_keys(lab: LabLayout) -> None:
    """The lab's client key pair, ``authorized_keys``, a host key per host and the
    ``known_hosts`` that names each host by address and by name."""
    ssh = ssh_dir(lab)
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    _keygen(client_key(lab), f"livemig-lab-{lab.name}")
    pub = client_key(lab).with_name("id_ed25519.pub").read_text()
    (ssh / "authorized_keys").write_text(pub)
    (ssh / "sshd_config").write_text(sshd_config(ssh))
    lines = []
    for host in lab.hosts:
        host.state_dir.mkdir(parents=True, exist_ok=True)
        _keygen(host_key(host), f"{host.name}@livemig-lab-{lab.name}")
        kind, blob = host_key(host).with_name(host_key(host).name + ".pub").read_text().split()[:2]
        lines.append(f"{host.address},{host.name} {kind} {blob}")
    known_hosts(lab).write_text("\n".join(lines) + "\n")


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.0) as s:
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def start_sshd(lab: LabLayout, host: HostLayout, holder: int) -> Tracked:
    """Start the host's sshd (PID 1 of a new PID namespace) and wait until it answers.

    Returns the tracked ``unshare`` process whose child is sshd: killing it (SIGKILL; it
    ignores SIGTERM) kills sshd and, with it, every process of the host's PID namespace.
    """
    script = sshd_script(host.private_dir("run"), ssh_dir(lab) / "sshd_config", host.address,
                         host_key(host))  # fmt: skip
    unshare = ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation",
               "private", "--mount-proc", "/bin/sh", "-c", script]  # fmt: skip
    log = (host.state_dir / "sshd.log").open("ab")
    try:
        proc = subprocess.Popen(
            nsenter(holder, unshare),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        log.close()

    def ready() -> bool:
        if proc.poll() is not None:
            tail = (host.state_dir / "sshd.log").read_text(errors="replace")[-800:]
            raise LabError(f"sshd of {host.name} exited with {proc.returncode}: {tail}")
        return _port_open(host.address, SSH_PORT)

    wait_for(f"sshd of {host.name} on {host.address}:{SSH_PORT}", ready, timeout=20)
    return track(proc.pid)


def ssh_command(lab: LabLayout, host: HostLayout, *cmd: str) -> list[str]:
    """``ssh`` argv that runs ``cmd`` on ``host`` as root with the lab's key."""
    return ["ssh", "-i", str(client_key(lab)), "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={known_hosts(lab)}", "-o", "StrictHostKeyChecking=yes",
            f"root@{host.address}", *cmd]  # fmt: skip
