"""``livemig hosts provision|validate|collect --inventory INV [--limit HOSTS]``.

Runs ``vagrant/ansible/{provision,validate,collect}.yml`` through ansible-runner on the
inventory's group ``kvm_hosts``: a progress line per task result, a per-host summary, the
runner's artifacts (events, stdout) in the run directory (``--run-dir``, default
``results/hosts/ACTION-UTCTIME``), exit code 1 when the playbook failed anywhere, 2 for
bad input (inventory, limit, run directory), checked before anything runs.
Registered by :mod:`livemig.core.cli` (``COMMAND_MODULES``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from livemig.core.cli import RESULTS_ROOT, CliError, echo, one_line, printable

ACTIONS = {
    "provision": "packages, libvirtd (TLS by default), host_uuid, storage pool, firewall",
    "validate": "every host to every other: URI, CPU, storage, ports, a test migration",
    "collect": "libvirt and QEMU logs and the hosts' facts into the run directory",
}
EXIT_FAILED = 1


def _parse_extra(items: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs of ``-e``.

    >>> _parse_extra(["a=1", "b=x=y"])
    {'a': '1', 'b': 'x=y'}
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"-e {printable(item)}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def validate_table(report: dict[str, Any]) -> str:
    """The per-pair table of ``validate-report.json``.

    >>> ok = {"ok": True, "detail": ""}
    >>> row = {"src": "a", "dst": "b", "ok": False, "migrate_s": None, "why": "uri: refused",
    ...        "checks": {"port": ok, "uri": {"ok": False}, "cpu": ok, "storage": ok,
    ...                   "migrate": {"ok": False}, "guest": {"ok": False}}}
    >>> print(validate_table({"pairs": [row]}))
    from     to       port uri  cpu  storage migrate guest  seconds  why
    a        b        ok   FAIL ok   ok      FAIL    FAIL         -  uri: refused
    """
    cols = ("port", "uri", "cpu", "storage", "migrate", "guest")
    lines = [f"{'from':<8} {'to':<8} port uri  cpu  storage migrate guest  seconds  why"]
    for r in report.get("pairs", []):
        marks = ["ok" if r["checks"][c]["ok"] else "FAIL" for c in cols]
        secs = "-" if r.get("migrate_s") is None else f"{r['migrate_s']:.2f}"
        lines.append(f"{r['src']:<8} {r['dst']:<8} {marks[0]:<4} {marks[1]:<4} {marks[2]:<4} "
                     f"{marks[3]:<7} {marks[4]:<7} {marks[5]:<6} {secs:>7}  {r.get('why', '')}")
    return "\n".join(lines)


def _run_dir(args: argparse.Namespace) -> Path:
    if args.run_dir is not None:
        run_dir = Path(args.run_dir)
    else:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        run_dir = RESULTS_ROOT / "hosts" / f"{args.hosts_action}-{stamp}"
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise CliError(f"{printable(str(run_dir))}: run directory exists and is not empty")
    return run_dir


def cmd_hosts(args: argparse.Namespace) -> int:
    """Check the input, run the action's playbook, print progress and the summary."""
    from livemig.hosts import inventory_check, playbook_run

    try:
        import ansible_runner  # noqa: F401
    except ImportError as exc:
        raise CliError("ansible-runner is not installed: pip install -e '.[ansible]' "
                       "(scripts/setup does)") from exc
    playbook = playbook_run.PLAYBOOK_DIR / f"{args.hosts_action}.yml"
    if not playbook.is_file():
        raise CliError(f"{playbook}: playbook not found (set LIVEMIG_PLAYBOOKS)")
    inventory = Path(args.inventory).resolve()
    extra = _parse_extra(args.extra_vars)
    try:
        hosts, hostvars = inventory_check.read_inventory(inventory, Path(sys.executable).parent)
        inventory_check.check_hosts(args.inventory, hosts, hostvars)
        chosen = inventory_check.select(hosts, args.limit, args.inventory)
    except inventory_check.InventoryError as exc:
        raise CliError(printable(str(exc))) from exc
    if args.hosts_action == "validate" and len(chosen) < 2:
        raise CliError(f"validate needs two hosts or more (got {', '.join(chosen)})")
    run_dir = _run_dir(args)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(one_line(exc)) from exc
    run_dir = run_dir.resolve()
    if args.hosts_action == "validate":
        extra.setdefault("validate_report", str(run_dir / "validate-report.json"))
    if args.hosts_action == "collect":
        extra.setdefault("collect_dir", str(run_dir / "collected"))
    echo(f"{args.hosts_action}: {len(chosen)} hosts ({', '.join(chosen)}) from "
         f"{printable(args.inventory)}; run directory {run_dir}")
    result = playbook_run.run_playbook(
        playbook, inventory, run_dir, limit=args.limit, extravars=extra,
        on_line=None if args.quiet else echo,
    )
    echo(playbook_run.summary(args.hosts_action, result))
    report = run_dir / "validate-report.json"
    if args.hosts_action == "validate" and report.is_file():
        echo(validate_table(json.loads(report.read_text())))
    if args.hosts_action == "collect":
        echo(f"collected into {run_dir / 'collected'}")
    (run_dir / "summary.json").write_text(json.dumps(
        {"action": args.hosts_action, "inventory": str(inventory), "limit": args.limit,
         "status": result.status, "rc": result.rc, "seconds": round(result.seconds, 3),
         "changed": result.changed(), "hosts": result.hosts}, indent=1) + "\n")
    return 0 if result.ok else EXIT_FAILED


def add_commands(sub: Any) -> None:
    """Register ``hosts`` and its actions on the main CLI's sub-command set."""
    hosts = sub.add_parser(
        "hosts", help="provision, validate and collect real KVM hosts (Ansible)",
        description="Run the Ansible playbooks of vagrant/ansible/ on an inventory's "
        "kvm_hosts through ansible-runner (pip install -e '.[ansible]').",
    )
    actions = hosts.add_subparsers(dest="hosts_action", required=True, metavar="ACTION")
    for name, text in ACTIONS.items():
        p = actions.add_parser(name, help=text, description=text)
        p.add_argument("--inventory", metavar="INV", required=True,
                       help="Ansible inventory (INI or YAML) with group kvm_hosts")
        p.add_argument("--limit", metavar="HOSTS", default=None,
                       help="comma-separated hosts of kvm_hosts (default: all)")
        p.add_argument("--run-dir", metavar="DIR", default=None,
                       help="where the runner's artifacts go (default: results/hosts/...)")
        p.add_argument("-e", "--extra-vars", metavar="KEY=VALUE", action="append", default=[],
                       help="a playbook variable (repeatable), e.g. -e libvirt_transport=tcp")
        p.add_argument("--quiet", action="store_true", help="no progress lines")
        p.set_defaults(func=cmd_hosts)
