"""One playbook run through ansible-runner: live progress lines, per-host totals, the
runner's artifacts kept in the run directory.

Progress is one line per task result (``ok``, ``changed``, ``failed``, ``unreachable``;
skips are only counted), from the runner's events as they happen:

>>> ev = {"event": "runner_on_ok", "event_data": {"host": "kvm1", "task": "Packages",
...       "duration": 0.42, "res": {"changed": True}}}
>>> progress_line(ev)
'  changed      kvm1        Packages (0.4 s)'
>>> progress_line({"event": "runner_on_failed", "event_data": {"host": "kvm2",
...   "task": "libvirtd listens", "res": {"msg": "Timeout when waiting\\nfor 16514"}}})
'  FAILED       kvm2        libvirtd listens: Timeout when waiting for 16514'
>>> progress_line({"event": "runner_on_skipped", "event_data": {}}) is None
True
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where the playbooks are: ``vagrant/ansible`` of the checkout (``LIVEMIG_PLAYBOOKS``
#: overrides it).
PLAYBOOK_DIR = Path(
    os.environ.get("LIVEMIG_PLAYBOOKS", Path(__file__).resolve().parents[1] / "vagrant" / "ansible")
)
STATS_KEYS = ("ok", "changed", "failures", "dark", "skipped")


def _duration(data: Mapping[str, Any]) -> str:
    d = data.get("duration")
    return f" ({d:.1f} s)" if isinstance(d, int | float) else ""


def _msg(res: Mapping[str, Any]) -> str:
    text = res.get("msg") or res.get("stderr") or res.get("module_stderr") or ""
    if not text and res.get("results"):  # a loop: the first failed item's message
        text = next((_msg(r) for r in res["results"] if r.get("failed")), "")
    return " ".join(str(text).split())[:300]


def progress_line(event: Mapping[str, Any]) -> str | None:
    """The progress line of one runner event, or None for events not shown."""
    kind = event.get("event")
    data = event.get("event_data", {})
    host = str(data.get("host", "?"))
    task = str(data.get("task", "")).strip()
    res = data.get("res") or {}
    if kind == "runner_on_ok":
        word = "changed" if res.get("changed") else "ok"
        return f"  {word:<12} {host:<11} {task}{_duration(data)}"
    if kind == "runner_on_failed" and not data.get("ignore_errors"):
        return f"  {'FAILED':<12} {host:<11} {task}: {_msg(res)}"
    if kind == "runner_on_unreachable":
        return f"  {'UNREACHABLE':<12} {host:<11} {task}: {_msg(res)}"
    return None


@dataclass
class PlaybookResult:
    """What a run ended with: runner status and rc, per-host totals, wall time."""

    status: str
    rc: int
    seconds: float
    artifacts: Path
    hosts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    def changed(self) -> int:
        return sum(h["changed"] for h in self.hosts.values())


def host_totals(stats: Mapping[str, Mapping[str, int]] | None) -> dict[str, dict[str, int]]:
    """Per-host ``ok/changed/failures/dark/skipped`` from the runner's stats.

    >>> host_totals({"ok": {"a": 3, "b": 2}, "changed": {"a": 1}, "failures": {"b": 1}})
    {'a': {'ok': 3, 'changed': 1, 'failures': 0, 'dark': 0, 'skipped': 0}, \
'b': {'ok': 2, 'changed': 0, 'failures': 1, 'dark': 0, 'skipped': 0}}
    """
    stats = stats or {}
    names = sorted({h for key in STATS_KEYS for h in (stats.get(key) or {})})
    return {h: {k: int((stats.get(k) or {}).get(h, 0)) for k in STATS_KEYS} for h in names}


def summary(playbook: str, result: PlaybookResult) -> str:
    """The table printed after a run.

    >>> r = PlaybookResult("failed", 2, 12.3, Path("/r/artifacts"),
    ...     {"kvm1": {"ok": 9, "changed": 0, "failures": 1, "dark": 0, "skipped": 2}})
    >>> print(summary("validate", r))
    host        ok  changed  failed  unreachable  skipped
    kvm1         9        0       1            0        2
    validate: failed (rc 2) in 12.3 s; runner artifacts in /r/artifacts
    """
    lines = [f"{'host':<10} {'ok':>3} {'changed':>8} {'failed':>7} {'unreachable':>12} "
             f"{'skipped':>8}"]  # fmt: skip
    for host, t in result.hosts.items():
        lines.append(f"{host:<10} {t['ok']:>3} {t['changed']:>8} {t['failures']:>7} "
                     f"{t['dark']:>12} {t['skipped']:>8}")  # fmt: skip
    lines.append(f"{playbook}: {result.status} (rc {result.rc}) in {result.seconds:.1f} s; "
                 f"runner artifacts in {result.artifacts}")  # fmt: skip
    return "\n".join(lines)


def run_playbook(
    playbook: Path,
    inventory: Path,
    run_dir: Path,
    *,
    limit: str | None = None,
    extravars: Mapping[str, Any] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> PlaybookResult:
    """Run ``playbook`` on ``inventory`` with ansible-runner in ``run_dir`` (its private
    data directory: artifacts under ``run_dir/artifacts``). ``on_line`` gets each
    progress line as it happens. SSH pipelining on; ``ansible-playbook`` is the one next
    to this Python."""
    import ansible_runner

    bin_dir = str(Path(sys.executable).parent)
    envvars = {
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
    }

    def handler(event: dict[str, Any]) -> bool:
        line = progress_line(event)
        if line is not None and on_line is not None:
            on_line(line)
        return True  # keep the event in the artifacts

    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = envvars["PATH"]  # the runner looks ansible-playbook up on PATH
    t0 = time.monotonic()
    try:
        r = ansible_runner.run(
            private_data_dir=str(run_dir),
            playbook=str(playbook),
            inventory=str(inventory),
            limit=limit,
            extravars=dict(extravars or {}),
            envvars=envvars,
            quiet=True,
            event_handler=handler,
            ident="run",
        )
    finally:
        os.environ["PATH"] = old_path
    return PlaybookResult(
        status=str(r.status),
        rc=int(r.rc if r.rc is not None else 1),
        seconds=time.monotonic() - t0,
        artifacts=run_dir / "artifacts" / "run",
        hosts=host_totals(r.stats),
    )
