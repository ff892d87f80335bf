"""The guest image: Debian's kernel plus an initramfs of busybox-static, an ``init`` script
and the static ``dirtier`` workload (sources in ``guest/``).

Built into ``<cache>/image/<key>/{vmlinuz,initrd.img}`` where ``key`` hashes every input
(kernel package and version, busybox binary, init script, dirtier source, gcc version), so
a second call returns at once and any change of input builds a new image. The kernel is
extracted once per kernel package version into ``<cache>/kernel/``.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from livemig.drivers.lab.errors import LabError
from livemig.drivers.lab.proc import run

DEFAULT_CACHE_DIR = Path("/var/cache/livemig")
GUEST_SRC = Path(__file__).resolve().parent / "guest"
BUSYBOX = Path("/bin/busybox")
IMAGE_FORMAT = "1"  # bump when the way the image is put together changes


@dataclass(frozen=True, kw_only=True)
class GuestImage:
    """Paths of a built guest image (the kernel and initrd a domain boots from)."""

    kernel: Path
    initrd: Path


def _apt_stamp() -> str:
    """Changes whenever apt's answer may change (package lists, sources, preferences)."""
    h = hashlib.sha256()
    for d in ("/var/lib/apt/lists", "/etc/apt/sources.list.d", "/etc/apt/preferences.d"):
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(os.scandir(d), key=lambda e: e.name):
                st = entry.stat()
                h.update(f"{entry.path} {st.st_mtime_ns} {st.st_size}\n".encode())
    return h.hexdigest()


def _kernel_package(cache: Path) -> tuple[str, str] | None:
    """(package, version) of the kernel that ``linux-image-amd64`` depends on, per apt.

    apt-cache takes seconds on a busy machine, so the answer is memoised in the cache
    until apt's lists or sources change.
    """
    memo = cache / "kernel" / "apt-answer.json"
    stamp = _apt_stamp()
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
        data = json.loads(memo.read_text())
        if data["stamp"] == stamp:
            return (data["package"], data["version"]) if data["package"] else None
    show = run(["apt-cache", "show", "--no-all-versions", "linux-image-amd64"], check=False)
    found = None
    for line in show.stdout.splitlines():
        m = re.match(r"Depends:.*?\b(linux-image-[0-9][^ ,]*-amd64) \(= ([^)]+)\)", line)
        if m:
            found = (m.group(1), m.group(2))
            break
    memo.parent.mkdir(parents=True, exist_ok=True)
    package, version = found if found else (None, None)
    memo.write_text(json.dumps({"stamp": stamp, "package": package, "version": version}))
    return found


def _kernel(cache: Path) -> Path:
    """vmlinuz of Debian's current 6.1 kernel, downloaded and extracted once."""
    found = _kernel_package(cache)
    if found is None:
        cached = sorted(glob.glob(str(cache / "kernel" / "*" / "vmlinuz")), key=os.path.getmtime)
        if cached:
            return Path(cached[-1])  # offline: the newest kernel already extracted
        raise LabError("apt knows no linux-image-amd64 (run apt-get update / scripts/setup-lab)")
    pkg, version = found
    dest = cache / "kernel" / f"{pkg}_{version.replace(':', '%')}"
    if (dest / "vmlinuz").exists():
        return dest / "vmlinuz"
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        run(["apt-get", "download", f"{pkg}={version}"], timeout=600, check=True, cwd=tmp)
        debs = glob.glob(os.path.join(tmp, "*.deb"))
        if len(debs) != 1:
            raise LabError(f"apt-get download {pkg} left {debs}")
        staged = Path(tmp) / "vmlinuz"
        _extract_vmlinuz(Path(debs[0]), staged)
        dest.mkdir(parents=True, exist_ok=True)
        staged.replace(dest / "vmlinuz")
    return dest / "vmlinuz"


def _extract_vmlinuz(deb: Path, out: Path) -> None:
    """Copy ``boot/vmlinuz-*`` out of a kernel .deb (``dpkg-deb --fsys-tarfile``)."""
    proc = subprocess.Popen(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    found = False
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            if member.isfile() and member.name.lstrip("./").startswith("boot/vmlinuz-"):
                src = tar.extractfile(member)
                assert src is not None
                with open(out, "wb") as f:
                    shutil.copyfileobj(src, f)
                found = True
                break
    proc.stdout.close()
    proc.wait()
    if not found:
        raise LabError(f"{deb.name} has no boot/vmlinuz-*")


class Newc:
    """A minimal writer of the ``newc`` cpio format the kernel unpacks as initramfs.

    Every entry is owned by root with mtime 0, so the same inputs give the same bytes.
    """

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        fields = [self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0]  # fmt: skip
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % v for v in fields)
        self._buf.write(header + name.encode() + b"\0")
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o755) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._buf.getvalue()


def _compile_dirtier(out: Path) -> None:
    run(["gcc", "-static", "-O2", "-Wall", "-o", str(out), str(GUEST_SRC / "dirtier.c")])


def _initrd_bytes(dirtier: Path) -> bytes:
    cpio = Newc()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "root"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)  # stdio of init before devtmpfs is mounted
    cpio.chardev("dev/null", 1, 3)
    cpio.file("bin/busybox", BUSYBOX.read_bytes())
    cpio.symlink("bin/sh", "busybox")
    cpio.file("bin/dirtier", dirtier.read_bytes())
    cpio.file("init", (GUEST_SRC / "init").read_bytes())
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


def image_key(cache: Path) -> str:
    """Hash of every input of the image (what decides whether a rebuild is needed)."""
    if not BUSYBOX.exists():
        raise LabError(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    h = hashlib.sha256()
    kernel = _kernel_package(cache)
    gcc = run(["gcc", "-dumpfullversion"]).stdout.strip()
    parts = [IMAGE_FORMAT, repr(kernel), gcc]
    for p in parts:
        h.update(p.encode() + b"\0")
    for f in (BUSYBOX, GUEST_SRC / "init", GUEST_SRC / "dirtier.c"):
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def build_image(cache_dir: Path | str | None = None) -> GuestImage:
    """Build the guest image, or return the cached one when no input has changed."""
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    out = cache / "image" / image_key(cache)
    image = GuestImage(kernel=out / "vmlinuz", initrd=out / "initrd.img")
    if image.kernel.exists() and image.initrd.exists():
        return image
    cache.mkdir(parents=True, exist_ok=True)
    vmlinuz = _kernel(cache)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        stage = Path(tmp) / "image"
        stage.mkdir()
        dirtier = Path(tmp) / "dirtier"
        _compile_dirtier(dirtier)
        (stage / "initrd.img").write_bytes(_initrd_bytes(dirtier))
        shutil.copyfile(vmlinuz, stage / "vmlinuz")
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            stage.rename(out)
        except OSError:
            if not (image.kernel.exists() and image.initrd.exists()):  # lost a race: fine
                raise
    return image
