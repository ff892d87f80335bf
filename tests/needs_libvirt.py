"""Collection without libvirt-python: lab modules that import it become one lab item each.

The real-lab modules (``tests/lab``, ``contract/test_libvirt_contract.py``, the helper
``labcheck.py``) import ``libvirt`` (or the real driver) at their top, so without
libvirt-python installed they cannot even be collected. Where it is missing,
:func:`pytest_collect_file` (a conftest hook) replaces such a module's collectors with one
:class:`LibvirtMissing` item marked ``lab``: the sim lane (``-m "not lab"``) deselects it
and collection succeeds; a lab run fails it with the reason (never a skip). Only modules
marked ``lab`` (``pytestmark``) or without tests of their own are treated so: any other
module that needs libvirt at import still fails to collect, loudly.

>>> import ast
>>> tree = ast.parse("import libvirt\\nfrom livemig.drivers.libvirt_real import X")
>>> sorted(top_level_imports(tree))
['libvirt', 'livemig.drivers.libvirt_real']
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
#: Modules that import libvirt-python at their top (the real driver's).
LIBVIRT_MODULES = {"libvirt", *(f"livemig.drivers.libvirt_{m}"
                                for m in ("conn", "domains", "jobs", "real"))}


@cache
def libvirt_missing() -> bool:
    return importlib.util.find_spec("libvirt") is None


def top_level_imports(tree: ast.Module) -> set[str]:
    """The modules a file imports when it is imported (not those imported in functions)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@cache
def needs_libvirt(path: Path) -> bool:
    """Does importing ``path`` import libvirt-python (itself, or through a tests module)?"""
    tree = ast.parse(path.read_text())
    for name in top_level_imports(tree):
        if name in LIBVIRT_MODULES:
            return True
        local = TESTS.joinpath(*name.split(".")).with_suffix(".py")
        if local.is_file() and local != path and needs_libvirt(local):
            return True
    return False


def lab_only(path: Path) -> bool:
    """Is the module marked ``lab`` as a whole, or a helper without tests of its own?"""
    tree = ast.parse(path.read_text())
    tests = False
    for node in tree.body:
        if isinstance(node, ast.Assign) and "lab" in ast.unparse(node.value) and any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            return True
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name.lower().startswith(
                "test"):
            tests = True
    return not tests


class LibvirtMissing(pytest.Item):
    """Stands for a lab module that could not be imported without libvirt-python."""

    def runtest(self) -> None:
        pytest.fail(f"{self.path.relative_to(TESTS)} needs libvirt-python, which is not "
                    f"installed (pip install -e '.[libvirt]')", pytrace=False)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.path.name}: needs libvirt-python"


class LibvirtMissingFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        item = LibvirtMissing.from_parent(self, name="needs-libvirt")
        item.add_marker(pytest.mark.lab)
        yield item


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path: Path, parent: Any) -> Any:
    collectors = yield
    if (collectors and file_path.suffix == ".py" and libvirt_missing()
            and needs_libvirt(file_path) and lab_only(file_path)):
        return [LibvirtMissingFile.from_parent(parent, path=file_path)]
    return collectors
