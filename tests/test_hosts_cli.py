"""``livemig hosts`` without real hosts: input errors (exit 2, one line, nothing written),
an unreachable host (exit 1, the runner's artifacts kept), and the playbooks' syntax.

The real runs (provision twice, validate with test migrations) are in
``tests/lab/test_lab_ansible.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from livemig.core import cli
from livemig.hosts.playbook_run import PLAYBOOK_DIR

BIN = Path(sys.executable).parent
GOOD_HOST = {"ansible_host": "127.0.0.1", "migration_address": "127.0.0.1",
             "instances_path": "/var/lib/libvirt/instances", "storage": "local"}


def _inventory(tmp_path: Path, hosts: dict[str, dict[str, object]], group: str = "kvm_hosts"
               ) -> Path:  # fmt: skip
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {group: {"hosts": hosts}}}}))
    return path


def _hosts(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["hosts", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("hosts", "group", "limit", "expected"),
    [
        ({"kvm1": GOOD_HOST}, "compute", None, "no hosts in group kvm_hosts"),
        ({"kvm1": {**GOOD_HOST, "storage": "nfs"}}, "kvm_hosts", None,
         "host kvm1: storage: expected shared or local, got 'nfs'"),
        ({"kvm1": {k: v for k, v in GOOD_HOST.items() if k != "migration_address"}},
         "kvm_hosts", None, "host kvm1: migration_address: missing"),
        ({"kvm1": {**GOOD_HOST, "instances_path": "instances"}}, "kvm_hosts", None,
         "host kvm1: instances_path: expected an absolute path, got 'instances'"),
        ({"kvm1": {**GOOD_HOST, "nfs_server": "nas"}}, "kvm_hosts", None,
         "host kvm1: nfs_server: expected a host of group kvm_hosts, got 'nas'"),
        ({"kvm1": GOOD_HOST}, "kvm_hosts", "kvm9",
         "--limit kvm9: kvm9 is not a host of group kvm_hosts"),
    ],
)
def test_bad_inventory_is_one_line_exit_2_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], hosts: dict[str, dict[str, object]],
    group: str, limit: str | None, expected: str,
) -> None:
    inv = _inventory(tmp_path, hosts, group)
    run_dir = tmp_path / "run"
    args = ["provision", "--inventory", str(inv), "--run-dir", str(run_dir)]
    code, out, err = _hosts(capsys, *args, *(["--limit", limit] if limit else []))
    assert code == 2
    assert err.startswith("livemig: error: ") and expected in err and err.count("\n") == 1
    assert not run_dir.exists() and out == ""


def test_unparsable_or_missing_inventory(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:  # fmt: skip
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  children: [unclosed\n")
    code, _, err = _hosts(capsys, "validate", "--inventory", str(bad))
    assert code == 2 and f"{bad}: not an Ansible inventory" in err and err.count("\n") == 1
    code, _, err = _hosts(capsys, "collect", "--inventory", str(tmp_path / "none.yml"))
    assert code == 2 and "none.yml: inventory file not found" in err


def test_validate_needs_two_hosts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = _inventory(tmp_path, {"kvm1": GOOD_HOST, "kvm2": GOOD_HOST})
    code, _, err = _hosts(capsys, "validate", "--inventory", str(inv), "--limit", "kvm2")
    assert code == 2 and "validate needs two hosts or more (got kvm2)" in err


def test_bad_extra_var_and_used_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:  # fmt: skip
    inv = _inventory(tmp_path, {"kvm1": GOOD_HOST})
    code, _, err = _hosts(capsys, "collect", "--inventory", str(inv), "-e", "novalue")
    assert code == 2 and "-e novalue: expected KEY=VALUE" in err
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("")
    code, _, err = _hosts(capsys, "collect", "--inventory", str(inv), "--run-dir", str(used))
    assert code == 2 and "run directory exists and is not empty" in err


def test_unreachable_host_fails_with_artifacts(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A host nobody answers for (SSH to a closed port): exit 1, reported per host, the
    runner's events kept."""
    inv = _inventory(tmp_path, {"kvm1": {**GOOD_HOST, "ansible_port": 9,
                                         "ansible_ssh_common_args": "-o ConnectTimeout=5"}})
    run_dir = tmp_path / "run"
    code, out, _ = _hosts(capsys, "collect", "--inventory", str(inv), "--run-dir", str(run_dir))
    assert code == 1
    assert "UNREACHABLE  kvm1" in out
    assert "collect: unreachable" in out or "collect: failed" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["hosts"]["kvm1"]["dark"] == 1 and summary["rc"] != 0
    events = list((run_dir / "artifacts" / "run" / "job_events").glob("*.json"))
    assert any(json.loads(e.read_text())["event"] == "runner_on_unreachable" for e in events)


@pytest.mark.parametrize("playbook", ["provision.yml", "validate.yml", "collect.yml"])
def test_playbook_syntax(tmp_path: Path, playbook: str) -> None:
    inv = _inventory(tmp_path, {"kvm1": GOOD_HOST})
    cp = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(inv),
                         str(PLAYBOOK_DIR / playbook)], capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr


def test_syntax_check_catches_a_broken_playbook(tmp_path: Path) -> None:
    """The syntax check above can fail: the same playbooks with one task misspelt."""
    copy = tmp_path / "ansible"
    shutil.copytree(PLAYBOOK_DIR, copy)
    tasks = copy / "roles" / "libvirt_host" / "tasks" / "daemons.yml"
    tasks.write_text(tasks.read_text().replace("ansible.builtin.wait_for:",
                                               "ansible.builtin.wait_fro:"))
    inv = _inventory(tmp_path, {"kvm1": GOOD_HOST})
    cp = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(inv),
                         str(copy / "provision.yml")], capture_output=True, text=True)
    assert cp.returncode != 0 and "wait_fro" in cp.stderr


def test_vagrantfile_names_existing_playbooks() -> None:
    text = (PLAYBOOK_DIR.parent / "Vagrantfile").read_text()
    assert '"provision.yml"' in text and '"validate.yml"' in text
    assert (PLAYBOOK_DIR / "provision.yml").is_file() and (PLAYBOOK_DIR / "validate.yml").is_file()
    assert '"kvm_hosts" => names' in text  # the group the playbooks run on
