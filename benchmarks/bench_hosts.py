"""Wall time of ``livemig hosts`` on the namespace lab: provision from unconfigured libvirt
(first and second run), validate (with its per-pair test migrations).

    python benchmarks/bench_hosts.py [--hosts 2] [--name bhost] [--tcp]

As root, after ``scripts/setup-lab``. Brings up lab NAME with ``--ssh --unconfigured``
(TLS unless ``--tcp``), runs ``livemig hosts provision`` twice and ``livemig hosts
validate`` in new processes, prints each one's wall time, the second provision's changed
count (must be 0), each pair's migration seconds, and the load average before and after;
then takes the lab down. Each command must exit 0 to count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from livemig.drivers.lab.lab import lab_down, lab_up

LIVEMIG = str(Path(sys.executable).parent / "livemig")


def timed(action: str, hosts_yml: Path, run_dir: Path) -> tuple[float, dict]:
    t0 = time.monotonic()
    cp = subprocess.run([LIVEMIG, "hosts", action, "--inventory", str(hosts_yml),
                         "--run-dir", str(run_dir), "--quiet"], capture_output=True, text=True)
    wall = time.monotonic() - t0
    if cp.returncode != 0:
        sys.exit(f"livemig hosts {action} failed ({cp.returncode}):\n{cp.stdout}{cp.stderr}")
    return wall, json.loads((run_dir / "summary.json").read_text())


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--hosts", type=int, default=2)
    p.add_argument("--name", default="bhost")
    p.add_argument("--tcp", action="store_true", help="plain TCP instead of TLS")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (the lab needs namespaces)")
    print(f"load average before: {os.getloadavg()}")
    t0 = time.monotonic()
    inv = lab_up(args.name, hosts=args.hosts, tls=not args.tcp, ssh=True, unconfigured=True)
    print(f"lab up --ssh --unconfigured ({args.hosts} hosts): {time.monotonic() - t0:.1f} s")
    hosts_yml = inv.with_name("hosts.yml")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in (1, 2):
                wall, s = timed("provision", hosts_yml, Path(tmp) / f"p{n}")
                print(f"provision run {n}: {wall:.1f} s wall ({s['seconds']:.1f} s in the "
                      f"runner), changed={s['changed']}")
            wall, s = timed("validate", hosts_yml, Path(tmp) / "v")
            report = json.loads((Path(tmp) / "v" / "validate-report.json").read_text())
            print(f"validate: {wall:.1f} s wall ({s['seconds']:.1f} s in the runner)")
            for r in report["pairs"]:
                print(f"  migration {r['src']} -> {r['dst']}: {r['migrate_s']:.2f} s")
    finally:
        lab_down(args.name)
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
