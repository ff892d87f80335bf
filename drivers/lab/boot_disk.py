"""A bootable disk image of the lab's guest: what a cloud image is to a real host, built
from Debian packages only (no cloud image can be downloaded here).

The lab image's kernel and initrd (:func:`~livemig.drivers.lab.image.build_image`) go on
a FAT file system that fills the disk (no partition table), with SYSLINUX in its boot
sector: SeaBIOS boots it from a virtio disk like any disk image, and the guest ticks on
its serial console, with the dirtier's working set and rate fixed on the kernel command
line. The tools (``mkfs.vfat``, ``syslinux``, ``mcopy``) are taken from their Debian
packages (``apt-get download``, unpacked into ``<cache>/boot-disk-tools``), so nothing
is installed on the machine. About 10 MiB as qcow2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from livemig.drivers.lab.errors import LabError
from livemig.drivers.lab.image import DEFAULT_CACHE_DIR, GuestImage
from livemig.drivers.lab.proc import run

TOOL_PACKAGES = ("dosfstools", "mtools", "syslinux", "syslinux-common")
DISK_MIB = 64


def syslinux_config(ws_mib: int, rate_mib: int) -> str:
    """SYSLINUX's configuration: boot the guest at once, serial console, the dirtier's
    working set and rate (MiB, MiB/s) on the command line.

    >>> print(syslinux_config(8, 1).splitlines()[-1])
      APPEND console=ttyS0 quiet panic=0 livemig.ws_mib=8 livemig.rate_mib=1
    """
    return ("DEFAULT guest\nPROMPT 0\nTIMEOUT 0\nSERIAL 0 115200\nLABEL guest\n"
            "  KERNEL vmlinuz\n  INITRD initrd.img\n"
            f"  APPEND console=ttyS0 quiet panic=0 livemig.ws_mib={ws_mib} "
            f"livemig.rate_mib={rate_mib}\n")


def _tools(cache: Path) -> dict[str, str]:
    """The environment in which mkfs.vfat, syslinux and mcopy are found (unpacked once)."""
    root = cache / "boot-disk-tools"
    done = root / ".unpacked"
    if not done.exists():
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="livemig-boot-disk-") as tmp:
            os.chmod(tmp, 0o755)  # apt's _apt user downloads into it
            run(["apt-get", "download", *TOOL_PACKAGES], cwd=tmp, timeout=300)
            for deb in Path(tmp).glob("*.deb"):
                run(["dpkg-deb", "-x", str(deb), str(root)])
        done.touch()
    path = os.pathsep.join([str(root / "usr/bin"), str(root / "sbin"), str(root / "usr/sbin"),
                            os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path}


def _run(argv: list[str], env: dict[str, str]) -> None:
    """``argv`` with the unpacked tools first on PATH; :class:`LabError` on failure."""
    try:
        cp = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{argv[0]}: {exc}") from exc
    if cp.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {cp.returncode}: "
                       f"{' '.join((cp.stderr or cp.stdout).split())}")


def build_boot_disk(image: GuestImage, dest: Path, *, ws_mib: int = 8, rate_mib: int = 1,
                    cache_dir: Path | str | None = None) -> Path:
    """Write a bootable qcow2 disk of the lab guest to ``dest`` and return it."""
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    env = _tools(cache)
    with tempfile.TemporaryDirectory(prefix="livemig-boot-disk-") as tmp:
        raw = Path(tmp) / "disk.img"
        config = Path(tmp) / "syslinux.cfg"
        config.write_text(syslinux_config(ws_mib, rate_mib))
        _run(["mkfs.vfat", "-C", str(raw), str(DISK_MIB * 1024)], env)
        _run(["syslinux", "--install", str(raw)], env)  # it calls mtools through PATH
        _run(["mcopy", "-i", str(raw), str(image.kernel), str(image.initrd), str(config),
              "::/"], env)
        if shutil.which("qemu-img") is None:
            raise LabError("qemu-img is missing (scripts/setup-lab installs qemu-utils)")
        tmp_dest = dest.with_name(dest.name + ".tmp")
        run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(tmp_dest)])
        tmp_dest.replace(dest)
    return dest
