"""``livemig calibrate``: run the matrix's cases on real hosts, record them, fit a profile.

Each case is a scenario (:func:`~livemig.calibration.matrix.case_scenario_text`) run with
:func:`~livemig.core.runner.run_scenario` on the ``libvirt`` driver, through the same Nova
flow as any run, its domains kept until the figures are read. Per case, into
``OUT_DIR``:

* ``real/CASE/``: the run's results directory (``migrations.csv``, ``summary.json`` ...);
* ``scenarios/CASE.yaml``: the case as a scenario whose VM has the guest's measured
  non-zero memory and write rate (to replay it on the simulator, then ``livemig compare``);
* a row of ``cases.csv``: what was asked, the record's figures, libvirt's completed-job
  statistics on the destination (``time_elapsed``, ``setup_time``, ``memory_bps`` ...) and
  the guest's truth from its console (real write rate, MemTotal - MemFree, MemFree, and
  the non-zero pages it found in its RAM through ``/proc/kcore``, ``guest_scan_nonzero_mib``).

Then :func:`~livemig.calibration.fit.fit_profile` fits the parameters and the profile
file is written (``profile_document``). The guest's non-zero memory as QEMU sees it is
MemTotal - MemFree plus memory the kernel reserved before MemTotal (its image, page
structures), the ``hidden_memory``: measured from the idle cases (dirty rate 0, where
round 0 is nearly all that is sent) as ``memory_normal_bytes`` minus the guest's figure.
Part of it grows with the RAM (the kernel's page structures, 64 bytes per 4 KiB page):
with idle cases of two RAM sizes or more it is a line in the RAM (:class:`HiddenMemory`).

MemTotal - MemFree misses the free pages that still hold old contents (the initramfs
unpacked then freed ...), which QEMU sends too: 7-13 MiB on small guests. So when the guest
scanned its RAM (``guest_scan_nonzero_mib``), that figure is the case's guest figure
(:func:`guest_nonzero_mib`) and the hidden memory is what the scan cannot see (RAM outside
the kernel's System RAM ranges, QEMU's other RAM blocks). A ``cases.csv`` recorded before
the scan existed has no such column: its cases keep MemTotal - MemFree.
"""

from __future__ import annotations

import csv
import datetime
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import yaml

from livemig.calibration.fit import (
    CaseMeasurement,
    Profile,
    completion_timeout,
    fit_profile,
    predict,
)
from livemig.calibration.matrix import Case, case_scenario_text
from livemig.calibration.repeats import real_dir_name, round_robin
from livemig.calibration.truth import GuestTruth, guest_truth, parse_shares

MiB = 2**20
CASE_COLUMNS = (
    "case", "repeat", "ram_mib", "working_set_mib", "dirty_rate_mibps", "bandwidth_mibps",
    "max_downtime_ms", "completion_timeout", "status", "error", "total_time_s", "downtime_ms",
    "iterations", "data_transferred_bytes", "time_elapsed_ms", "setup_time_ms",
    "memory_processed_bytes", "memory_normal_bytes", "memory_bps", "guest_rate_mibps",
    "guest_nonzero_mib", "guest_memfree_mib", "guest_ticks", "wall_s", "load1",
    "guest_scan_nonzero_mib", "guest_layout",
)


@dataclass(frozen=True, kw_only=True)
class CaseResult:
    """One case as recorded (a row of ``cases.csv``)."""

    case: Case
    status: str
    error: str | None
    record: dict[str, Any]  # total_time_s, downtime_ms, iterations, data_transferred_bytes
    stats: dict[str, Any]  # libvirt's completed-job statistics ({} when none)
    truth: GuestTruth
    wall_s: float
    load1: float
    repeat: int = 1  # which run of the case (``calibrate --repeat``)

    @property
    def completed(self) -> bool:
        return self.status == "completed" and bool(self.stats)

    def row(self) -> dict[str, Any]:
        c, s, t = self.case, self.stats, self.truth
        return {
            "case": c.name, "repeat": self.repeat,
            "ram_mib": c.ram // MiB, "working_set_mib": c.working_set / MiB,
            "dirty_rate_mibps": c.dirty_rate / MiB, "bandwidth_mibps": c.bandwidth / MiB,
            "max_downtime_ms": c.max_downtime * 1000, "completion_timeout": c.completion_timeout,
            "status": self.status, "error": self.error, **self.record,
            "time_elapsed_ms": s.get("time_elapsed"), "setup_time_ms": s.get("setup_time"),
            "memory_processed_bytes": s.get("memory_processed"),
            "memory_normal_bytes": s.get("memory_normal_bytes"), "memory_bps": s.get("memory_bps"),
            "guest_rate_mibps": t.rate_mibps, "guest_nonzero_mib": t.nonzero_mib,
            "guest_memfree_mib": t.memfree_mib, "guest_ticks": t.ticks,
            "wall_s": round(self.wall_s, 2), "load1": self.load1,
            "guest_scan_nonzero_mib": t.scan_nonzero_mib,
            "guest_layout": " ".join(f"{v:g}" for v in t.scan_layout) or None,
        }


@dataclass(frozen=True)
class HiddenMemory:
    """Non-zero memory the guest does not count, ``base + per_ram x RAM`` bytes.

    >>> h = HiddenMemory(30 * MiB, 0.025)
    >>> h.of(256 * MiB) / MiB, h.text()
    (36.4, '30.0MiB + 2.50% of RAM')
    >>> HiddenMemory.parse(h.text()) == h, round(HiddenMemory.parse("35.1MiB").of(MiB) / MiB, 3)
    (True, 35.1)
    """

    base: float  # bytes
    per_ram: float = 0.0  # bytes per byte of RAM

    def of(self, ram: float) -> float:
        return max(0.0, self.base + self.per_ram * ram)

    def text(self) -> str:
        text = f"{self.base / MiB:.1f}MiB"
        return f"{text} + {self.per_ram * 100:.2f}% of RAM" if self.per_ram else text

    @classmethod
    def parse(cls, text: str) -> HiddenMemory:
        """The inverse of :meth:`text` (a profile's ``measured.hidden_memory``)."""
        from livemig.core.units import parse_bytes

        base, _, share = text.partition(" + ")
        per_ram = float(share.removesuffix("% of RAM")) / 100 if share else 0.0
        return cls(float(parse_bytes(base)), per_ram)


def guest_nonzero_mib(truth: GuestTruth) -> float | None:
    """The guest's own figure of its non-zero memory in MiB: the pages its RAM scan found
    non-zero, else (no scan: an older image, or /proc/kcore unreadable) MemTotal - MemFree.

    >>> guest_nonzero_mib(GuestTruth(ticks=3, rate_mibps=0.0, nonzero_mib=30.2,
    ...                              memfree_mib=90.0, scan_nonzero_mib=41.5))
    41.5
    >>> guest_nonzero_mib(GuestTruth(ticks=3, rate_mibps=0.0, nonzero_mib=30.2,
    ...                              memfree_mib=90.0))
    30.2
    """
    return truth.nonzero_mib if truth.scan_nonzero_mib is None else truth.scan_nonzero_mib


def hidden_memory(results: Sequence[CaseResult]) -> HiddenMemory:
    """Non-zero memory the guest does not count (see the module docstring), from the
    completed idle cases' ``memory_normal_bytes`` minus the guest's figure
    (:func:`guest_nonzero_mib`): the least-squares line in the RAM when they have two RAM
    sizes or more and it does not fall, else their median; 0 without one."""
    points = [
        (float(r.case.ram), r.stats["memory_normal_bytes"] - guest * MiB)
        for r in results
        if r.completed and r.case.dirty_rate == 0
        and (guest := guest_nonzero_mib(r.truth)) is not None
        and "memory_normal_bytes" in r.stats
    ]
    if not points:
        return HiddenMemory(0.0)
    if len({ram for ram, _ in points}) >= 2:
        mx = sum(x for x, _ in points) / len(points)
        my = sum(y for _, y in points) / len(points)
        slope = (sum((x - mx) * (y - my) for x, y in points)
                 / sum((x - mx) ** 2 for x, _ in points))
        if slope >= 0 and my - slope * mx >= 0:
            return HiddenMemory(my - slope * mx, slope)
    return HiddenMemory(max(0.0, median(y for _, y in points)))


def non_zero(result: CaseResult, hidden: HiddenMemory) -> float:
    """The case's non-zero memory in bytes: the guest's figure (:func:`guest_nonzero_mib`)
    plus ``hidden`` at its RAM, at most its RAM (the working set plus 64 MiB when the guest
    reported nothing)."""
    guest = guest_nonzero_mib(result.truth)
    if guest is None:
        return float(result.case.working_set + 64 * MiB)
    ram = float(result.case.ram)
    return min(ram, guest * MiB + hidden.of(ram))


def write_rate(result: CaseResult) -> float:
    """The guest's measured write rate in B/s (the asked one when it reported none)."""
    c = result.case
    return c.dirty_rate if result.truth.rate_mibps is None else result.truth.rate_mibps * MiB


def measurement(result: CaseResult, hidden: HiddenMemory) -> CaseMeasurement:
    s, c = result.stats, result.case
    return CaseMeasurement(
        name=c.name, capped=c.capped, bandwidth=c.bandwidth,
        max_downtime=c.max_downtime, completed=result.completed,
        time_elapsed=s.get("time_elapsed", 0) / 1000.0, downtime=s.get("downtime", 0) / 1000.0,
        memory_processed=float(s.get("memory_processed", 0)),
        memory_bps=float(s.get("memory_bps", 0)), non_zero=non_zero(result, hidden),
        ram=float(c.ram), working_set=float(c.working_set), dirty_rate=write_rate(result),
        layout=result.truth.scan_layout,
    )


def prediction_for(result: CaseResult, profile: Profile, hidden: HiddenMemory) -> Any:
    """The closed form (:func:`~livemig.calibration.fit.predict`) for a recorded case, with
    the guest's measured write rate (the asked one when it reported none)."""
    c = result.case
    return predict(
        profile, non_zero=non_zero(result, hidden), working_set=c.working_set,
        dirty_rate=write_rate(result), bandwidth=c.bandwidth, max_downtime=c.max_downtime,
        timeout=completion_timeout(c.completion_timeout, c.ram), ram=float(c.ram),
        layout=result.truth.scan_layout,
    )


# -- running the cases on real hosts -------------------------------------------------------


def _stats(inventory: Any, host: str, vm: str) -> dict[str, Any]:
    """libvirt's completed-job statistics of ``vm`` on ``host`` ({} when there are none)."""
    import libvirt

    flags = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
    conn = libvirt.open(inventory.host(host).uri)
    try:
        stats = conn.lookupByName(vm).jobStats(flags)
    except libvirt.libvirtError:
        return {}
    finally:
        conn.close()
    return dict(stats) if stats.get("type") == libvirt.VIR_DOMAIN_JOB_COMPLETED else {}


def versions(inventory_path: str | Path) -> dict[str, str]:
    """QEMU and libvirt versions of the inventory's first host."""
    import libvirt

    from livemig.drivers.hosts_inventory import load_hosts_inventory

    inv = load_hosts_inventory(inventory_path)
    conn = libvirt.open(inv.hosts[0].uri)
    try:
        def text(v: int) -> str:
            return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"

        return {"qemu": text(conn.getVersion()), "libvirt": text(conn.getLibVersion())}
    finally:
        conn.close()


def lab_hugepages(inventory_path: str | Path) -> bool | None:
    """Whether the inventory's lab gives its guests huge pages (``lab up --hugepages``);
    None for real hosts (not known)."""
    from livemig.drivers.hosts_inventory import load_hosts_inventory
    from livemig.drivers.lab.inventory import load_inventory

    inv = load_hosts_inventory(inventory_path)
    return None if inv.lab_record is None else load_inventory(inv.lab_record).hugepages


def run_case(case: Case, inventory_path: str | Path, out_dir: Path,
             repeat: int = 1) -> CaseResult:
    """Run one case on the inventory's first two hosts; its results into ``out_dir/real``
    (``out_dir/real-rN`` for repeat N > 1, :func:`~livemig.calibration.repeats.real_dir_name`)."""
    import simpy.rt

    from livemig.core import results
    from livemig.core.runner import run_scenario
    from livemig.core.scenario import parse_scenario
    from livemig.drivers.guests import target_for
    from livemig.drivers.hosts_inventory import load_hosts_inventory
    from livemig.drivers.libvirt_real import LibvirtDriver

    inv = load_hosts_inventory(inventory_path)
    if len(inv.hosts) < 2:
        raise ValueError(f"{inventory_path}: calibration needs two hosts (it has "
                         f"{len(inv.hosts)})")
    guests = target_for(inv).guests
    if guests is None or guests.console_log(case.name) is None:
        raise ValueError(f"{inventory_path}: calibration needs the namespace lab's guest "
                         "(its console tells the guest's own truth)")
    source, dest = inv.hosts[0].name, inv.hosts[1].name
    text = case_scenario_text(case, source, dest)
    scenario = parse_scenario(text, source=f"calibration case {case.name}")
    load1 = os.getloadavg()[0]
    t0 = time.monotonic()
    try:
        result = run_scenario(scenario, "libvirt", driver_options={
            "inventory": str(inventory_path), "keep_domains": True})
        wall = time.monotonic() - t0
        (m,) = result.store.migrations()
        stats = _stats(inv, m.dest, case.name) if m.dest else {}
        log = guests.console_log(case.name)
        truth = guest_truth(log.read_text(errors="replace") if log.exists() else "")
        results.write_results(result, out_dir / real_dir_name(repeat) / case.name, force=True)
    finally:
        env = simpy.rt.RealtimeEnvironment(strict=False)
        LibvirtDriver(env, scenario, inventory=inventory_path, boot=False).close()
    record = {
        "total_time_s": m.total_time, "downtime_ms": None if m.downtime is None
        else m.downtime * 1000, "iterations": m.iterations,
        "data_transferred_bytes": m.data_transferred,
    }
    return CaseResult(case=case, status=m.status.value, error=m.error, record=record,
                      stats=stats, truth=truth, wall_s=wall, load1=load1, repeat=repeat)


def write_cases(path: Path, results: Sequence[CaseResult]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CASE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in results:
            writer.writerow({k: "" if v is None else v for k, v in r.row().items()})


def replay_scenario(result: CaseResult, hidden: HiddenMemory, source: str, dest: str,
                    profile: str | None = None) -> str:
    """The case as a scenario with the guest's truth (for the simulator), naming the
    fitted ``profile`` (a path relative to the scenario file)."""
    rate = None if result.truth.rate_mibps is None else result.truth.rate_mibps * MiB
    return case_scenario_text(result.case, source, dest, profile=profile,
                              non_zero=round(non_zero(result, hidden)), dirty_rate=rate,
                              layout=result.truth.scan_layout)


def profile_document(
    name: str, profile: Profile, results: Sequence[CaseResult], fitted_on: Sequence[str],
    hidden: HiddenMemory, provenance: dict[str, Any],
) -> dict[str, Any]:
    """The profile file's content: the parameters in units, and how they were measured.

    >>> p = Profile(startup_cost=0.2854, switchover_cost=0.005, link_speed=330 * MiB,
    ...             flush_speed=1000 * MiB)
    >>> doc = profile_document("lab", p, [], [], HiddenMemory(0.0), {})
    >>> [doc[k] for k in ("startup_cost", "switchover_cost", "link_speed", "flush_speed",
    ...                   "bandwidth_window", "check_period")]
    ['285.4ms', '5.0ms', '330.0MiB/s', '1000.0MiB/s', '100ms', '50ms']
    """
    residuals = []
    for r in results:
        if not r.completed:
            continue
        pred = prediction_for(r, profile, hidden)
        real_t, real_d = r.stats["time_elapsed"] / 1000.0, r.stats["downtime"] / 1000.0
        residuals.append({
            "case": r.case.name, **({"repeat": r.repeat} if r.repeat > 1 else {}),
            "fitted": r.case.name in fitted_on,
            "total_time_s": [round(real_t, 3), round(pred.total_time, 3)],
            "downtime_ms": [round(real_d * 1000, 1), round(pred.downtime * 1000, 1)],
        })
    capped = [r.stats["memory_bps"] / r.case.bandwidth for r in results
              if r.completed and r.case.capped and r.stats.get("memory_bps")]
    return {
        "name": name,
        "startup_cost": f"{profile.startup_cost * 1000:.1f}ms",
        **({"startup_cost_per_gib": f"{profile.startup_cost_per_gib * 1000:.1f}ms"}
           if profile.startup_cost_per_gib else {}),
        "switchover_cost": f"{profile.switchover_cost * 1000:.1f}ms",
        "link_speed": f"{profile.link_speed / MiB:.1f}MiB/s",
        **({"flush_speed": f"{profile.flush_speed / MiB:.1f}MiB/s"}
           if profile.flush_speed else {}),
        "bandwidth_window": f"{profile.bandwidth_window * 1000:g}ms",
        "check_period": f"{profile.check_period * 1000:g}ms",
        "measured": {
            **provenance,
            "cases": len({r.case.name for r in results}),
            "runs": len(results),
            "completed": sum(1 for r in results if r.completed),
            "fitted_on": list(fitted_on),
            "hidden_memory": hidden.text(),
            "capped_rate_ratio": round(median(capped), 4) if capped else None,
            "residuals": residuals,
        },
    }


def calibrate(
    inventory_path: str | Path,
    cases: Sequence[Case],
    out_dir: Path,
    profile_path: Path,
    *,
    name: str | None = None,
    fit_names: Sequence[str] | None = None,
    on_case: Callable[[CaseResult], None] | None = None,
    repeat: int = 1,
) -> tuple[list[CaseResult], Profile]:
    """Run ``cases`` ``repeat`` times each (round-robin, :func:`round_robin`), write
    ``out_dir/cases.csv`` (a row per run) and the profile; ``fit_names``: the cases the fit
    may use (default all; the others are held out, their residuals reported)."""
    from livemig.drivers.hosts_inventory import load_hosts_inventory

    inv = load_hosts_inventory(inventory_path)
    started = datetime.datetime.now(datetime.UTC)
    provenance: dict[str, Any] = {"date": started.isoformat(timespec="seconds"),
                                  "inventory": str(inventory_path), **versions(inventory_path),
                                  "load_average_start": list(os.getloadavg())}
    if (huge := lab_hugepages(inventory_path)) is not None:
        provenance["lab_hugepages"] = huge
    out_dir.mkdir(parents=True, exist_ok=True)
    done: list[CaseResult] = []
    for number, case in round_robin(cases, repeat):
        result = run_case(case, inventory_path, out_dir, number)
        done.append(result)
        write_cases(out_dir / "cases.csv", done)  # after every case: a crash keeps the rest
        if on_case is not None:
            on_case(result)
    provenance["load_average_end"] = list(os.getloadavg())
    profile = fit_and_write(done, out_dir, profile_path,
                            name=name or f"calibrated-{inv.lab or inv.path.stem}",
                            fit_names=fit_names, hosts=(inv.hosts[0].name, inv.hosts[1].name),
                            provenance=provenance)
    return done, profile


def fit_and_write(
    done: Sequence[CaseResult], out_dir: Path, profile_path: Path, *, name: str,
    fit_names: Sequence[str] | None, hosts: tuple[str, str], provenance: dict[str, Any],
) -> Profile:
    """Fit the profile on the ``fit_names`` cases of ``done`` (default all; every run of
    them), write it to ``profile_path`` and every case's replay scenario to
    ``out_dir/scenarios`` (naming it; the guest's truth: the median over the case's runs)."""
    fitted = [r for r in done if fit_names is None or r.case.name in fit_names]
    hidden = hidden_memory(fitted)
    profile = fit_profile([measurement(r, hidden) for r in fitted])
    scen_dir = out_dir / "scenarios"
    scen_dir.mkdir(exist_ok=True)
    relative_profile = os.path.relpath(profile_path.resolve(), scen_dir.resolve())
    for r in typical_runs(done):
        (scen_dir / f"{r.case.name}.yaml").write_text(
            replay_scenario(r, hidden, *hosts, relative_profile))
    doc = profile_document(name, profile, done, list(dict.fromkeys(r.case.name for r in fitted)),
                           hidden, provenance)
    tmp = profile_path.with_name(profile_path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False, width=100))
    tmp.replace(profile_path)
    return profile


def _number(text: str) -> float | None:
    return float(text) if text.strip() else None


def _repeat(text: str | None, cases_csv: Path, line: int) -> int:
    """A row's ``repeat`` (1 when absent or empty)."""
    if text is None or not text.strip():
        return 1
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{cases_csv}:{line}: repeat {text!r}: expected a whole number >= 1")
    return value


def typical_runs(results: Sequence[CaseResult]) -> list[CaseResult]:
    """One run per case (in first-run order) standing for all its runs: the first run, with
    the guest's truth the median over the runs that report it (the replay's inputs)."""
    from dataclasses import replace

    by_case: dict[str, list[CaseResult]] = {}
    for r in results:
        by_case.setdefault(r.case.name, []).append(r)
    out = []
    for runs in by_case.values():
        first = min(runs, key=lambda r: r.repeat)
        if len(runs) == 1:
            out.append(first)
            continue

        def mid(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return median(known) if known else None

        truth = replace(first.truth, rate_mibps=mid([r.truth.rate_mibps for r in runs]),
                        nonzero_mib=mid([r.truth.nonzero_mib for r in runs]),
                        memfree_mib=mid([r.truth.memfree_mib for r in runs]),
                        scan_nonzero_mib=mid([r.truth.scan_nonzero_mib for r in runs]),
                        scan_layout=median_layout([r.truth.scan_layout for r in runs]))
        out.append(replace(first, truth=truth))
    return out


def median_layout(layouts: Sequence[tuple[float, ...]]) -> tuple[float, ...]:
    """Slice by slice, the median of the runs' layouts of the most common length (() when
    none reported one).

    >>> median_layout([(0.5, 0.1), (0.7, 0.0), (0.6, 0.2), ()])
    (0.6, 0.1)
    """
    known = [t for t in layouts if t]
    if not known:
        return ()
    n = max({len(t) for t in known}, key=[len(t) for t in known].count)
    return tuple(median(t[i] for t in known if len(t) == n) for i in range(n))


def _layout(text: str | None, cases_csv: Path, line: int) -> tuple[float, ...]:
    """A ``guest_layout`` cell: shares separated by spaces (() when empty or absent)."""
    if not text or not text.strip():
        return ()
    shares = parse_shares(text, None)
    if not shares:
        raise ValueError(f"{cases_csv}:{line}: guest_layout {text!r}: expected shares from "
                         "0 to 1 separated by spaces")
    return shares


def load_results(cases_csv: Path, matrix: Sequence[Case]) -> list[CaseResult]:
    """The recorded cases of ``cases_csv`` (as :func:`write_cases` wrote them), each with
    its case from ``matrix`` (repeat 1 when the file has no ``repeat`` column, as before
    ``--repeat``); ValueError naming the row of a case the matrix lacks."""
    by_name = {c.name: c for c in matrix}
    results = []
    with cases_csv.open(newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            case = by_name.get(row["case"])
            if case is None:
                raise ValueError(f"{cases_csv}:{line}: case {row['case']!r} is not in the "
                                 "matrix; expected the matrix the calibration ran")
            stats: dict[str, Any] = {}
            if row["time_elapsed_ms"]:
                stats = {key: _number(row[column]) for key, column in (
                    ("time_elapsed", "time_elapsed_ms"), ("downtime", "downtime_ms"),
                    ("setup_time", "setup_time_ms"),
                    ("memory_processed", "memory_processed_bytes"),
                    ("memory_normal_bytes", "memory_normal_bytes"),
                    ("memory_bps", "memory_bps"))}
                stats = {k: v for k, v in stats.items() if v is not None}
            record = {key: _number(row[key]) for key in
                      ("total_time_s", "downtime_ms", "iterations", "data_transferred_bytes")}
            truth = GuestTruth(ticks=int(_number(row["guest_ticks"]) or 0),
                               rate_mibps=_number(row["guest_rate_mibps"]),
                               nonzero_mib=_number(row["guest_nonzero_mib"]),
                               memfree_mib=_number(row["guest_memfree_mib"]),
                               scan_nonzero_mib=_number(row.get("guest_scan_nonzero_mib") or ""),
                               scan_layout=_layout(row.get("guest_layout"), cases_csv, line))
            repeat = _repeat(row.get("repeat"), cases_csv, line)
            results.append(CaseResult(case=case, status=row["status"],
                                      error=row["error"] or None, record=record, stats=stats,
                                      truth=truth, wall_s=_number(row["wall_s"]) or 0.0,
                                      load1=_number(row["load1"]) or 0.0, repeat=repeat))
    return results


def replay_on_simulator(cases_dir: Path) -> tuple[str, dict[str, Any]]:
    """Run every ``cases_dir/scenarios/*.yaml`` on the simulator into ``cases_dir/sim/CASE``
    and compare them with ``cases_dir/real`` into ``cases_dir/compare`` (``--replay``);
    returns the error table and its summary (:func:`livemig.calibration.compare.compare`)."""
    from livemig.calibration.compare import compare
    from livemig.core import results
    from livemig.core.runner import run_scenario
    from livemig.core.scenario import load_scenario

    for path in sorted((cases_dir / "scenarios").glob("*.yaml")):
        result = run_scenario(load_scenario(path), "sim")
        results.write_results(result, cases_dir / "sim" / path.stem, force=True)
    return compare(cases_dir / "real", cases_dir / "sim", cases_dir / "compare")
