"""The Ansible path for real on the namespace lab (``ans``, 2 hosts, TLS): hosts that start
with sshd only (no libvirt configuration, no daemon), ``livemig hosts provision`` twice
(the second run changes nothing), ``validate`` with real test migrations checked inside
the guest, a validate that must fail (storage declared wrong), ``collect``, then a shipped
scenario through ``livemig run`` with the same Ansible inventory (``hosts.yml``); a shipped
fault scenario whose fault (libvirtd stopped on the destination, then started again) is
made through Ansible over SSH (``livemig_faults: ansible``, the pid-file commands of the
lab's ``hosts.yml``); and ``vagrant validate``.
Figures (wall times, per-pair migration seconds) are printed (``-s``).

Needs root and ``scripts/setup-lab``; a lab that cannot start fails the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from lablock import running_lab

from livemig.core import cli
from livemig.drivers.lab import sshd
from livemig.drivers.lab.lab import lab_status
from livemig.drivers.lab.layout import lab_layout

pytestmark = pytest.mark.lab

LAB = "ans"
REPO = Path(__file__).resolve().parents[2]
FIGURES: dict[str, object] = {}


@pytest.fixture(scope="module")
def ans_lab() -> Iterator[Path]:
    """The lab's directory, with ``hosts.yml`` and ``inventory.yaml``."""
    t0 = time.monotonic()  # lab_up_s: the lock and an earlier run's leftovers included
    with running_lab(LAB, hosts=2, storage="shared", tls=True, ssh=True,
                     unconfigured=True) as path:
        FIGURES["lab_up_s"] = round(time.monotonic() - t0, 1)
        try:
            yield path.parent
        finally:
            print("\nansible lab figures:", json.dumps(FIGURES))


def _ssh(lab_dir: Path, host: int, command: str) -> str:
    lab = lab_layout(LAB, 2, lab_dir.parent, tls=True)
    cp = subprocess.run(sshd.ssh_command(lab, lab.hosts[host - 1], command),
                        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


def _hosts(action: str, lab_dir: Path, run_dir: Path, *extra: str) -> tuple[int, dict]:
    t0 = time.monotonic()
    code = cli.main(["hosts", action, "--inventory", str(lab_dir / "hosts.yml"),
                     "--run-dir", str(run_dir), "--quiet", *extra])  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    return code, summary


def test_hosts_start_unconfigured_behind_ssh(ans_lab: Path) -> None:
    inv = yaml.safe_load((ans_lab / "hosts.yml").read_text())
    hosts = inv["all"]["children"]["kvm_hosts"]["hosts"]
    assert sorted(hosts) == ["lab1", "lab2"]
    assert all(h["storage"] == "shared" and h["libvirt_uri"].startswith("qemu+tls://")
               for h in hosts.values())  # fmt: skip
    out = _ssh(ans_lab, 1, "hostname; ls -A /etc/libvirt | wc -l; ip route")
    lines = out.splitlines()
    assert lines[0] == "lab1"
    assert lines[1] == "0"  # no libvirt configuration at all
    assert not any(line.startswith("default") for line in lines)  # no default route
    comms = set(_ssh(ans_lab, 1, "ps -e -o comm=").split())
    assert "sshd" in comms and "sleep" not in comms  # its own PID namespace: not the holder
    assert "libvirtd" not in comms and "virtlogd" not in comms
    assert "libvirtd.pid" not in _ssh(ans_lab, 2, "ls /run").split()


def test_provision_twice_then_validate_then_run(ans_lab: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, first = _hosts("provision", ans_lab, tmp_path / "provision-1")
    assert code == 0 and first["status"] == "successful", capsys.readouterr().out
    assert first["changed"] > 0
    FIGURES["provision_first_s"] = first["seconds"]

    code, second = _hosts("provision", ans_lab, tmp_path / "provision-2")
    assert code == 0 and second["status"] == "successful"
    assert second["changed"] == 0, second["hosts"]  # idempotent
    FIGURES["provision_second_s"] = second["seconds"]

    # libvirt answers the controller over TLS with the certificates provisioning made
    lab_inv = yaml.safe_load((ans_lab / "inventory.yaml").read_text())
    uuids = set()
    for host in lab_inv["hosts"]:
        cp = subprocess.run(["virsh", "-c", host["uri"], "hostname"], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
        assert cp.returncode == 0 and cp.stdout.strip() == host["name"], cp.stderr
        caps = subprocess.run(["virsh", "-c", host["uri"], "capabilities"],
                              capture_output=True, text=True, timeout=60).stdout
        uuids.add(caps.split("<uuid>")[1].split("</uuid>")[0])
    assert len(uuids) == 2  # distinct host_uuid
    assert lab_status(LAB)["state"] == "up"  # libvirtd started over SSH answers
    capsys.readouterr()

    code, val = _hosts("validate", ans_lab, tmp_path / "validate")
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "validate" / "validate-report.json").read_text())
    pairs = {(r["src"], r["dst"]): r for r in report["pairs"]}
    assert set(pairs) == {("lab1", "lab2"), ("lab2", "lab1")}
    for r in pairs.values():
        assert r["ok"] and all(c["ok"] for c in r["checks"].values()), r
        assert r["checks"]["guest"]["detail"].startswith("guest ticks on")
    assert "lab1     lab2     ok   ok   ok   ok      ok      ok" in out
    FIGURES["validate_s"] = val["seconds"]
    FIGURES["migration_s"] = {f"{a}->{b}": round(r["migrate_s"], 2)
                              for (a, b), r in pairs.items()}  # fmt: skip

    # storage declared wrong: validate fails, and says which pair and why
    code, bad = _hosts("validate", ans_lab, tmp_path / "validate-bad", "-e", "storage=local")
    out = capsys.readouterr().out
    assert code == 1 and bad["status"] == "failed"
    report = json.loads((tmp_path / "validate-bad" / "validate-report.json").read_text())
    assert all(not r["ok"] and r["why"].startswith("storage: the peer sees this host's marker")
               for r in report["pairs"])  # fmt: skip
    assert "FAIL" in out

    code, _ = _hosts("collect", ans_lab, tmp_path / "collect")
    assert code == 0
    for host in ("lab1", "lab2"):
        d = tmp_path / "collect" / "collected" / host
        assert (d / "logs" / "libvirtd.log").stat().st_size > 0
        assert json.loads((d / "facts.json").read_text())["hostname"] == host

    # a shipped scenario on the provisioned hosts (TLS migration)
    out_dir = tmp_path / "run"
    t0 = time.monotonic()
    code = cli.main(["run", str(REPO / "scenarios" / "lab-tls.yaml"), "--driver", "libvirt",
                     "--inventory", str(ans_lab / "hosts.yml"), "--out", str(out_dir)])
    FIGURES["scenario_s"] = round(time.monotonic() - t0, 1)
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads((out_dir / "summary.json").read_text())
    assert all(d["met"] for d in summary["expectations"]["details"]), out
    assert "lab-vm1,lab2,active" in (out_dir / "instances.csv").read_text()


def _libvirtd_pid(lab_dir: Path, host: int) -> int | None:
    """libvirtd's pid on the host (its pid file in the host's /run), None if none runs."""
    out = _ssh(lab_dir, host, "pid=$(cat /run/libvirtd.pid 2>/dev/null) && kill -0 $pid "
                              "2>/dev/null && echo $pid || echo none").strip()
    return None if out == "none" else int(out)


def test_a_fault_through_ansible_over_ssh(ans_lab: Path, tmp_path: Path) -> None:
    """``lab-service-down`` with the lab's hosts.yml (``livemig_faults: ansible``): lab2's
    libvirtd, started over SSH by provisioning, is stopped through Ansible after the
    migration's checks (seen over SSH: its process is gone) and started again; the
    migration fails with the VM still on lab1, nothing lost or duplicated."""
    inv = yaml.safe_load((ans_lab / "hosts.yml").read_text())
    group_vars = inv["all"]["children"]["kvm_hosts"]["vars"]
    assert group_vars["livemig_faults"] == "ansible"
    before = _libvirtd_pid(ans_lab, 2)
    assert before is not None, "lab2 has no libvirtd (did provisioning run?)"
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "livemig.core.cli", "run",
           str(REPO / "scenarios" / "lab-service-down.yaml"), "--driver", "libvirt",
           "--inventory", str(ans_lab / "hosts.yml"), "--out", str(out), "--no-progress"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen_down = None
    try:
        while proc.poll() is None and time.monotonic() - t0 < 240:
            if _libvirtd_pid(ans_lab, 2) is None:
                seen_down = round(time.monotonic() - t0, 1)
                break
            time.sleep(0.2)
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    FIGURES["ansible_fault_run_s"] = round(time.monotonic() - t0, 1)
    assert seen_down is not None, f"lab2's libvirtd never went down:\n{output}"
    FIGURES["ansible_fault_down_seen_at_s"] = seen_down
    assert proc.returncode == 0, output
    after = _libvirtd_pid(ans_lab, 2)
    assert after is not None and after != before  # started again, a new process
    summary = json.loads((out / "summary.json").read_text())
    assert all(d["met"] for d in summary["expectations"]["details"]), output
    assert summary["invariants"]["violations"] == 0
    assert "lab-vm1,lab1,active" in (out / "instances.csv").read_text()
    actions = (out / "actions.csv").read_text()
    assert "service_down,lab2" in actions and "service_up,lab2" in actions, actions
    for host in ("lab1", "lab2"):  # the run removed its VM: none left anywhere
        uri = inv["all"]["children"]["kvm_hosts"]["hosts"][host]["libvirt_uri"]
        listed = subprocess.run(["virsh", "-c", uri, "list", "--all", "--name"],
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0 and "lab-vm1" not in listed.stdout, listed.stderr


def test_vagrantfile_validates(tmp_path: Path) -> None:
    """``vagrant validate`` (no box, no VM) on the shipped Vagrantfile, and on a copy with a
    misspelt provider setting, which it must reject."""
    vagrant = shutil.which("vagrant")
    assert vagrant is not None, "vagrant is missing: run scripts/setup-lab"
    env = {**os.environ, "VAGRANT_HOME": str(tmp_path / "vagrant-home")}
    src = REPO / "vagrant"
    copy = tmp_path / "vagrant"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns(".vagrant"))
    cp = subprocess.run([vagrant, "validate"], cwd=copy, env=env, capture_output=True,
                        text=True, timeout=120)  # fmt: skip
    assert cp.returncode == 0 and "validated successfully" in cp.stdout, cp.stderr
    vf = copy / "Vagrantfile"
    vf.write_text(vf.read_text().replace("lv.memory = memory", "lv.memroy = memory"))
    cp = subprocess.run([vagrant, "validate"], cwd=copy, env=env, capture_output=True,
                        text=True, timeout=120)  # fmt: skip
    assert cp.returncode != 0 and "memroy" in (cp.stdout + cp.stderr)
