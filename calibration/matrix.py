"""The calibration matrix: the cases ``livemig calibrate`` runs, and each case's scenario.

A matrix file (``--matrix``) lists cases; sizes, rates and durations take units as
everywhere. ``bandwidth`` absent means uncapped; ``completion_timeout`` is Nova's, a
duration per GiB of data (0s: none; default 800s)::

    cases:
      - {name: idle-uncapped, ram: 128MiB, working_set: 16MiB, dirty_rate: 0MiB/s,
         max_downtime: 300ms}
      - {name: capped, ram: 256MiB, working_set: 32MiB, dirty_rate: 8MiB/s,
         bandwidth: 20MiB/s, max_downtime: 100ms}

>>> m = parse_matrix(EXAMPLE, "m.yaml")
>>> [(c.name, c.ram // MiB, c.bandwidth / MiB, c.max_downtime) for c in m]
[('idle-uncapped', 128, 0.0, 0.3), ('capped', 256, 20.0, 0.1)]
>>> parse_matrix("cases:\\n  - {name: x, ram: 128MiB, working_set: 100MiB, dirty_rate: 0MiB/s,"
...              " max_downtime: 1s}\\n", "m.yaml")
Traceback (most recent call last):
...
livemig.core.yaml_nodes.ScenarioError: m.yaml:2: cases[0].working_set: 100 MiB is too large; \
expected at most ram - 64 MiB (the guest kernel's room) = 64 MiB

Each case is one VM on the inventory's first host, migrated to its second one at 3 s (after
the guest has printed a couple of truth lines), through the same Nova flow as any scenario.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from livemig.core import yaml_nodes as Y
from livemig.core.units import format_bytes

MiB = 2**20
KERNEL_RESERVE = 64 * MiB  # the lab guest's room for its kernel (drivers/lab/guest.py)
MIGRATE_AT = 3.0  # seconds after the guests are up
CASE_KEYS = ("name", "ram", "working_set", "dirty_rate", "bandwidth", "max_downtime",
             "completion_timeout")
DEFAULT_COMPLETION_TIMEOUT = 800.0


@dataclass(frozen=True, kw_only=True)
class Case:
    """One real migration of the calibration."""

    name: str
    ram: int  # bytes
    working_set: int  # bytes
    dirty_rate: float  # bytes/s
    bandwidth: float = 0.0  # bytes/s, 0: uncapped
    max_downtime: float  # seconds
    completion_timeout: float = DEFAULT_COMPLETION_TIMEOUT  # seconds per GiB, 0: none

    @property
    def capped(self) -> bool:
        return self.bandwidth > 0


def _case(**kw: float | str) -> Case:
    return Case(
        name=str(kw["name"]), ram=int(kw["ram"]) * MiB, working_set=int(kw["ws"]) * MiB,
        dirty_rate=float(kw["rate"]) * MiB, bandwidth=float(kw.get("cap", 0)) * MiB,
        max_downtime=float(kw["limit"]) / 1000.0,
        completion_timeout=float(kw.get("timeout", DEFAULT_COMPLETION_TIMEOUT)),
    )


#: A dozen cases spanning RAM (128-512 MiB), working set (16-192 MiB), dirty rate
#: (0-32 MiB/s), cap (none, 10-50 MiB/s) and limit (100/300 ms); ``no-converge`` rewrites
#: 32 MiB at 24 MiB/s against an 8 MiB/s cap and is aborted by its completion timeout.
DEFAULT_MATRIX: tuple[Case, ...] = (
    _case(name="u128-idle", ram=128, ws=16, rate=0, limit=300),
    _case(name="u256-w64-r8", ram=256, ws=64, rate=8, limit=100),
    _case(name="u512-w128-r16", ram=512, ws=128, rate=16, limit=300),
    _case(name="u512-w192-r32", ram=512, ws=192, rate=32, limit=100),
    _case(name="c20-128-w16-r4", ram=128, ws=16, rate=4, cap=20, limit=300),
    _case(name="c20-256-w32-r8", ram=256, ws=32, rate=8, cap=20, limit=100),
    _case(name="c10-256-idle", ram=256, ws=64, rate=0, cap=10, limit=100),
    _case(name="c50-512-w64-r16", ram=512, ws=64, rate=16, cap=50, limit=300),
    _case(name="c10-128-w32-r2", ram=128, ws=32, rate=2, cap=10, limit=300),
    _case(name="c50-384-w128-r8", ram=384, ws=128, rate=8, cap=50, limit=100),
    _case(name="c20-256-w16-r12", ram=256, ws=16, rate=12, cap=20, limit=100),
    _case(name="no-converge", ram=192, ws=32, rate=24, cap=8, limit=100, timeout=4),
)

EXAMPLE = """\
cases:
  - {name: idle-uncapped, ram: 128MiB, working_set: 16MiB, dirty_rate: 0MiB/s,
     max_downtime: 300ms}
  - {name: capped, ram: 256MiB, working_set: 32MiB, dirty_rate: 8MiB/s,
     bandwidth: 20MiB/s, max_downtime: 100ms}
"""


def load_matrix(path: str | Path) -> list[Case]:
    """Read a matrix file (OSError, :class:`~livemig.core.yaml_nodes.ScenarioError`)."""
    return parse_matrix(Path(path).read_text(encoding="utf-8"), str(path))


def parse_matrix(text: str, source: str) -> list[Case]:
    node = Y.compose(text, source)
    if node is None:
        raise Y.ScenarioError(source, 1, "", "empty file; expected a mapping with key cases")
    top = Y.Field(node, "", source).mapping(("cases",))
    cases_field = top.require("cases", "a list of cases")
    cases: list[Case] = []
    seen: set[str] = set()
    for _, f in cases_field.items("a list of cases"):
        m = f.mapping(CASE_KEYS)
        name_field = m.require("name", "a case name")
        name = Y.check_name(name_field, name_field.text("a case name") or "", "case name")
        if name in seen:
            name_field.fail(f"duplicate case name {Y.show(name)}; expected a new name")
        seen.add(name)
        ram = Y.size(positive=True)(m.require("ram", "a size"))
        ws_field = m.require("working_set", "a size")
        ws = Y.size(positive=True)(ws_field)
        if ws > ram - KERNEL_RESERVE:
            ws_field.fail(
                f"{format_bytes(ws)} is too large; expected at most ram - 64 MiB (the guest "
                f"kernel's room) = {format_bytes(max(0, ram - KERNEL_RESERVE))}"
            )
        cases.append(Case(
            name=name, ram=ram, working_set=ws,
            dirty_rate=Y.rate(non_negative=True)(m.require("dirty_rate", "a rate")),
            bandwidth=m.value("bandwidth", Y.rate(non_negative=True), 0.0),
            max_downtime=Y.duration(positive=True)(m.require("max_downtime", "a duration")),
            completion_timeout=m.value("completion_timeout", Y.duration(non_negative=True),
                                       DEFAULT_COMPLETION_TIMEOUT),
        ))
    if not cases:
        cases_field.fail("an empty list; expected at least one case")
    return cases


def case_scenario_text(case: Case, source: str, dest: str, *, non_zero: int | None = None,
                       dirty_rate: float | None = None, profile: str | None = None,
                       layout: tuple[float, ...] = ()) -> str:
    """The scenario YAML of ``case``: its VM (named as the case) on ``source``, migrated
    to ``dest``. ``non_zero``/``dirty_rate`` replace the VM's ``used_memory`` (default:
    working set + 64 MiB) and dirty rate, e.g. with the guest's measured truth, ``layout``
    gives its ``memory_layout``; ``profile`` names a model profile file (relative to the
    scenario file).

    >>> c = DEFAULT_MATRIX[4]
    >>> text = case_scenario_text(c, "lab1", "lab2")
    >>> "bandwidth: 20MiB/s" in text, "live_migrate: {instance: c20-128-w16-r4, dest: lab2}" in text
    (True, True)
    """
    used = non_zero if non_zero is not None else case.working_set + KERNEL_RESERVE
    rate = case.dirty_rate if dirty_rate is None else dirty_rate
    ram_host = 4096  # MiB: room for the largest lab guest
    hosts = "\n".join(
        f"  - {{name: {h}, ram: {ram_host}MiB, vcpus: 2, disk: 20GiB, storage: shared}}"
        for h in (source, dest)
    )
    cap = f"\n    bandwidth: {case.bandwidth / MiB:g}MiB/s" if case.capped else ""
    if profile is not None:
        cap += f"\n    profile: {json.dumps(profile)}"
    where = f",\n     memory_layout: [{', '.join(f'{v:g}' for v in layout)}]" if layout else ""
    return f"""\
# livemig calibrate: case {case.name}
name: {case.name}
hosts:
{hosts}
vms:
  - {{name: {case.name}, host: {source}, ram: {case.ram // MiB}MiB,
     used_memory: {min(used, case.ram)}B, working_set: {case.working_set}B,
     dirty_rate: {rate!r}B/s{where}}}
policy:
  migration:{cap}
    max_downtime: {case.max_downtime * 1000:g}ms
    completion_timeout: {case.completion_timeout:g}s
events:
  - at: {MIGRATE_AT:g}s
    live_migrate: {{instance: {case.name}, dest: {dest}}}
"""
