"""The ``lab`` command line: ``up``, ``status``, ``down``, ``image``.

The main CLI registers it with :func:`add_lab_commands`; each parsed namespace carries
``func``, to be called as ``args.func(args)`` (it returns the exit code).
``python -m livemig.drivers.lab ACTION ...`` runs the same actions on their own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from livemig.drivers.lab.errors import LabError
from livemig.drivers.lab.image import build_image
from livemig.drivers.lab.lab import lab_down, lab_status, lab_up
from livemig.drivers.lab.layout import DEFAULT_BASE_DIR, DEFAULT_LAB, STORAGE_MODES


def _up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    path = lab_up(
        name=args.name,
        hosts=args.hosts,
        storage=args.storage,
        shaping_mbit=args.shape_mbit,
        base_dir=args.base_dir,
        subnet=args.subnet,
        tls=args.tls,
        ssh=args.ssh,
        unconfigured=args.unconfigured,
        hugepages_mib=args.hugepages,
    )
    print(path)
    print(f"lab {args.name} up in {time.monotonic() - t0:.1f} s; its Ansible inventory (for "
          f"ansible -i and livemig --inventory): {path.parent / 'hosts.yml'}", file=sys.stderr)
    return 0


def _down(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    lab_down(name=args.name, base_dir=args.base_dir)
    print(f"lab {args.name} down in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    status = lab_status(name=args.name, base_dir=args.base_dir)
    print(json.dumps(status, indent=2))
    return 0 if status["state"] == "up" else 3


def _image(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    image = build_image(args.cache_dir)
    print(f"kernel: {image.kernel}\ninitrd: {image.initrd}")
    print(f"image ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return 0


Action = Callable[[argparse.Namespace], int]


def _guard(func: Action) -> Action:
    """Turn a :class:`LabError` into a one-line message and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except LabError as exc:
            print(f"lab: error: {exc}", file=sys.stderr)
            return 1

    return run


def configure_lab_parser(parser: argparse.ArgumentParser) -> None:
    """Add the lab actions (``up``, ``status``, ``down``, ``image``) to ``parser``."""
    actions = parser.add_subparsers(dest="lab_action", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", default=DEFAULT_LAB, help="lab name (default: %(default)s)")
        p.add_argument(
            "--base-dir", default=str(DEFAULT_BASE_DIR), help="lab state (default: %(default)s)"
        )

    up = actions.add_parser("up", help="create the lab and write its inventory")
    common(up)
    up.add_argument("--hosts", type=int, default=2, help="number of hosts (default: 2)")
    up.add_argument("--storage", choices=STORAGE_MODES, default="shared")
    up.add_argument("--shape-mbit", type=float, default=None, help="cap each host's link")
    up.add_argument("--subnet", default=None, help="a /24 in 198.18.0.0/15")
    up.add_argument(
        "--tls", action="store_true", help="libvirtd over TLS only, certificates made for the lab"
    )
    up.add_argument(
        "--ssh", action="store_true",
        help="run sshd on each host, reachable with hosts.yml (Ansible)",
    )
    up.add_argument(
        "--unconfigured", action="store_true",
        help="with --ssh: no libvirt config or daemon; `livemig hosts provision` sets them up",
    )
    up.add_argument(
        "--hugepages", type=int, default=0, metavar="MIB",
        help="guests on huge pages from the machine's hugetlb pool, grown to MIB free and "
        "written once (for a virtual machine whose hypervisor reclaims free memory: "
        "fresh pages are slow to write there); default 0, none",
    )
    up.set_defaults(func=_guard(_up))

    status = actions.add_parser("status", help="what exists; exit 0 when the lab is up")
    common(status)
    status.set_defaults(func=_guard(_status))

    down = actions.add_parser("down", help="remove everything the lab made")
    common(down)
    down.set_defaults(func=_guard(_down))

    image = actions.add_parser("image", help="build (or find cached) the guest image")
    image.add_argument("--cache-dir", default=None, help="default: /var/cache/livemig")
    image.set_defaults(func=_guard(_image))


def add_lab_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register ``lab`` (with its actions) on the main CLI's sub-command set."""
    parser = subparsers.add_parser("lab", help="the namespace lab of libvirt hosts")
    configure_lab_parser(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m livemig.drivers.lab ACTION ...``."""
    parser = argparse.ArgumentParser(prog="python -m livemig.drivers.lab")
    configure_lab_parser(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))
