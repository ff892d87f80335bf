#!/usr/bin/env python3
"""Checks between two KVM hosts, run ON a host by validate.yml (standard library + virsh).

  validate_pair.py peer    --peer-address A --transport tls|tcp --instances DIR --pool P
                           --storage shared|local --marker NAME
  validate_pair.py migrate --name N --peer-address A --transport T --dir D --type qemu|kvm|auto
  validate_pair.py verify  --name N --dir D --tick-before K

Each prints one JSON object on stdout and exits 0: a failed check is a result, reported
in the per-pair table, not an error of the script.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

PORTS = {"tls": 16514, "tcp": 16509}
TICK = re.compile(rb"^tick (\d+) ", re.M)


def virsh(uri: str, *args: str, timeout: float = 30.0) -> tuple[bool, str]:
    try:
        cp = subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True,
                            timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"virsh {args[0]}: no answer within {timeout:g} s"
    text = (cp.stdout if cp.returncode == 0 else (cp.stderr or cp.stdout)).strip()
    return cp.returncode == 0, " ".join(text.split())


def peer_uri(address: str, transport: str) -> str:
    return f"qemu+{transport}://{address}/system"


def check(ok: bool, detail: str) -> dict[str, object]:
    return {"ok": ok, "detail": detail[:300]}


def cmd_peer(a: argparse.Namespace) -> dict[str, object]:
    uri = peer_uri(a.peer_address, a.transport)
    out: dict[str, object] = {}
    port = PORTS[a.transport]
    try:
        socket.create_connection((a.peer_address, port), timeout=5).close()
        out["port"] = check(True, f"{a.peer_address}:{port} open")
    except OSError as exc:
        out["port"] = check(False, f"{a.peer_address}:{port}: {exc.strerror or exc}")
    ok, text = virsh(uri, "hostname", timeout=20)
    out["uri"] = check(ok, f"{uri} answers as {text}" if ok else f"{uri}: {text}")
    if not ok:
        for name in ("cpu", "storage"):
            out[name] = check(False, "not checked: the libvirt URI does not answer")
        return out
    ok, caps = virsh("qemu:///system", "capabilities")
    m = re.search(r"<host>.*?(<cpu>.*?</cpu>)", caps, re.S) if ok else None
    if m is None:
        out["cpu"] = check(False, "no host CPU in the local capabilities")
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as f:
            f.write(m.group(1))
        try:
            ok, text = virsh(uri, "cpu-compare", f.name)
        finally:
            os.unlink(f.name)
        compatible = ok and ("identical" in text or "superset" in text)
        out["cpu"] = check(compatible, text)
    marker = os.path.join(a.instances, a.marker)
    try:
        with open(marker, "w") as f:
            f.write("livemig shared-storage marker\n")
        virsh(uri, "pool-refresh", a.pool)
        seen, _ = virsh(uri, "vol-info", "--pool", a.pool, a.marker)
    finally:
        if os.path.exists(marker):
            os.unlink(marker)
    declared = a.storage == "shared"
    what = "sees" if seen else "does not see"
    out["storage"] = check(seen == declared,
                           f"the peer {what} this host's marker in pool {a.pool} "
                           f"(declared {a.storage})")
    return out


def domain_xml(name: str, kind: str, d: str) -> str:
    console = os.path.join(d, f"console-{name}.log")
    return f"""<domain type='{kind}'>
  <name>{name}</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{d}/vmlinuz</kernel><initrd>{d}/initrd.img</initrd>
    <cmdline>console=ttyS0 quiet panic=0 livemig.ws_mib=8 livemig.rate_mib=2</cmdline></os>
  <features><acpi/><apic/></features><on_poweroff>destroy</on_poweroff>
  <devices>
    <serial type='file'><source path='{console}' append='on'/><target port='0'/></serial>
    <console type='file'><source path='{console}' append='on'/>
      <target type='serial' port='0'/></console>
    <controller type='usb' model='none'/><memballoon model='none'/>
  </devices>
</domain>"""


def last_tick(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            ticks = TICK.findall(f.read())
    except FileNotFoundError:
        return None
    return int(ticks[-1]) if ticks else None


def wait_tick(path: str, above: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = last_tick(path)
        if t is not None and t > above:
            return t
        time.sleep(0.2)
    return None


def cmd_migrate(a: argparse.Namespace) -> dict[str, object]:
    local = "qemu:///system"
    console = os.path.join(a.dir, f"console-{a.name}.log")
    virsh(local, "destroy", a.name)  # a leftover of an interrupted run
    if os.path.exists(console):
        os.unlink(console)
    kind = a.type
    if kind == "auto":  # KVM where the host has it, TCG otherwise
        kind = "kvm" if os.path.exists("/dev/kvm") else "qemu"
    with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as f:
        f.write(domain_xml(a.name, kind, a.dir))
    try:
        ok, text = virsh(local, "create", f.name, timeout=60)
    finally:
        os.unlink(f.name)
    if not ok:
        return {"ok": False, "detail": f"test guest does not start: {text}"}
    before = wait_tick(console, -1, 90)
    if before is None:
        virsh(local, "destroy", a.name)
        return {"ok": False, "detail": "test guest booted but never ticked on its console"}
    flags = ["--live", "--p2p"] + (["--tls"] if a.transport == "tls" else [])
    t0 = time.monotonic()
    ok, text = virsh(local, "migrate", *flags, a.name, peer_uri(a.peer_address, a.transport),
                     timeout=180)
    seconds = time.monotonic() - t0
    if not ok:
        virsh(local, "destroy", a.name)
        return {"ok": False, "detail": f"migration failed: {text}", "seconds": seconds}
    still, _ = virsh(local, "domstate", a.name)
    if still:
        return {"ok": False, "detail": "the guest is still on the source after migrating",
                "seconds": seconds}
    return {"ok": True, "detail": "migrated", "seconds": seconds, "tick_before": before}


def cmd_verify(a: argparse.Namespace) -> dict[str, object]:
    local = "qemu:///system"
    console = os.path.join(a.dir, f"console-{a.name}.log")
    ok, state = virsh(local, "domstate", a.name)
    if not ok or state != "running":
        return {"ok": False, "detail": f"guest not running on the destination ({state})"}
    tick = wait_tick(console, a.tick_before, 30)
    virsh(local, "destroy", a.name)
    if tick is None:
        return {"ok": False, "detail": f"guest stopped ticking after tick {a.tick_before}"}
    return {"ok": True, "detail": f"guest ticks on: {a.tick_before} -> {tick}"}


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    peer = sub.add_parser("peer")
    for opt in ("--peer-address", "--instances", "--pool", "--marker"):
        peer.add_argument(opt, required=True)
    peer.add_argument("--transport", choices=PORTS, required=True)
    peer.add_argument("--storage", choices=["shared", "local"], required=True)
    mig = sub.add_parser("migrate")
    for opt in ("--name", "--peer-address", "--dir"):
        mig.add_argument(opt, required=True)
    mig.add_argument("--transport", choices=PORTS, required=True)
    mig.add_argument("--type", choices=["qemu", "kvm", "auto"], required=True)
    ver = sub.add_parser("verify")
    ver.add_argument("--name", required=True)
    ver.add_argument("--dir", required=True)
    ver.add_argument("--tick-before", type=int, required=True)
    a = p.parse_args()
    result = {"peer": cmd_peer, "migrate": cmd_migrate, "verify": cmd_verify}[a.cmd](a)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
