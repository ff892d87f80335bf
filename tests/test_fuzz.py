"""Bad input, fuzzed (issue 4, section 6): scenario files and ``livemig`` arguments.

Every malformed input must end in exit code 2 and one line ``livemig: error: ...`` on
stderr (naming the file, for a scenario), never a traceback, and ``run`` must leave
nothing behind: no output directory, no hidden temporary sibling. Valid input must
succeed (exit 0; ``run`` writes a complete directory). Any other exception fails.

The examples are derandomized (the same on every run, as CI needs). ``livemig lab`` and
the libvirt driver are never reached: they would touch the machine. Plots are replaced
by empty files of the same names in ``run`` (they are slow, and covered by test_cli).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, assume, event, given, settings
from hypothesis import strategies as st

from livemig.core import cli, plots, scenario_commands

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
QUICKSTART = (SCENARIOS / "quickstart.yaml").read_text()

# Small enough to run in a blink; uses the issue-4 policy fields.
SMALL = """\
name: small
seed: 7
hosts:
  - {prefix: h, count: 3, ram: 16GiB, vcpus: 8, disk: 200GiB, storage: local}
  - {name: spare, ram: 32GiB, vcpus: 8, disk: 1TB, storage: local, cpu_model: Icelake-Server}
network: {host_link: 10Gbit/s}
vms:
  - {prefix: v, count: 3, host: "h*", ram: 2GiB, vcpus: 2, disk: 10GiB, used_memory: 1GiB,
     working_set: 128MiB, dirty_rate: 10MiB/s}
  - {name: big, host: spare, ram: 8GiB, dirty_rate: 100MiB/s, volume_backed: true}
policy:
  scheduler: {filters: [RamFilter, ComputeFilter], heuristic: first_fit, max_retries: 2}
  migration:
    max_downtime: 300ms
    completion_timeout: 100s
    downtime_steps: 3
    downtime_delay: 10s
    timeout_action: abort
    permit_post_copy: false
    permit_auto_converge: true
    keepalive_interval: 5s
    keepalive_count: 5
events:
  - {at: 0s, live_migrate: {instance: v1, dest: spare, block_migration: true}}
  - {at: 1s, live_migrate: {instance: big}}
  - {at: 2s, drain: {host: h2, block_migration: true}}
"""

# SMALL with every issue-4 event.
SMALL_EVENTS = SMALL + """\
  - {at: 3s, abort: {instance: v1}}
  - {at: 3s, force_complete: {instance: big}}
  - {at: 4s, host_down: {host: h3, trigger: checks_passed}}
  - {at: 5s, host_up: {host: h3}}
  - {at: 5s, link_down: {host: spare}}
  - {at: 6s, link_up: {host: spare, trigger: at}}
  - {at: 6s, service_down: {host: h1}}
  - {at: 7s, service_up: {host: h1}}
  - {at: 8s, controller_restart: {down_for: 2s}}
  - {at: 8s, controller_restart: {}}
  - at: 9s
    random_faults: {hosts: "h*", host_down: 2, link_down: 1, within: 30s, repair: 10s, seed: 3}
"""

BASES = {"small-events": SMALL_EVENTS, "quickstart": QUICKSTART, "small": SMALL}

RESULT_FILES = {"migrations.csv", "instances.csv", "events.csv", "summary.json",
                "timeline.png", "cdf_total_time.png", "cdf_downtime.png"}  # fmt: skip

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- values a mutation puts somewhere: wrong types, negative, zero, huge, garbage -------

WEIRD = st.one_of(
    st.text(max_size=12),  # garbage and unicode
    st.integers(min_value=-1000, max_value=1000),
    st.sampled_from([0, -1, 10**9, 2**64, -(2**63), 10**30, 1e308, -0.0, 0.5]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=3),
    st.lists(st.lists(st.integers(), max_size=2), min_size=1, max_size=2),  # nested list
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
    st.sampled_from(
        ["0", "-1s", "0s", "0ms", "-5MiB/s", "0Gbit/s", "-1GiB", "1e999GiB", "1e30s", "1PiB",
         "4GiB", "300ms", "2s", "10Gbit/s", "n*", "*", "[", "node-1", "h1", "v1", "web-01",
         "spare", "%s", "RamFilter", "VIR_MIGRATE_LIVE", "abort", "force_complete",
         "checks_passed", "at", "ünïcødé", "\U0001f680", "\u202e", "\u2028", "a b", "~",
         "null", "yes", "10.0.2", "-0", "0x10", ".inf", "1_000", "!!python/name:os.system"]
    ),
)  # fmt: skip


def _mutate(data: st.DataObject, node: object) -> object:
    """A copy of ``node`` with one change somewhere inside (delete, replace, add, ...)."""
    if isinstance(node, dict) and node and data.draw(st.integers(0, 4)):
        key = data.draw(st.sampled_from(sorted(node, key=str)))
        copy = dict(node)
        action = data.draw(st.sampled_from(["delete", "replace", "descend", "descend", "add"]))
        if action == "delete":
            del copy[key]
        elif action == "replace":
            copy[key] = data.draw(WEIRD)
        elif action == "add":
            new_key = data.draw(st.one_of(st.text(max_size=10), st.sampled_from(
                ["trigger", "seed", "host", "instance", "down_for", "x-note", "within"])))
            copy[new_key] = data.draw(WEIRD)
        else:
            copy[key] = _mutate(data, node[key])
        return copy
    if isinstance(node, list) and node and data.draw(st.integers(0, 4)):
        index = data.draw(st.integers(0, len(node) - 1))
        copy = list(node)
        action = data.draw(st.sampled_from(["delete", "replace", "descend", "descend",
                                            "duplicate"]))  # fmt: skip
        if action == "delete":
            del copy[index]
        elif action == "replace":
            copy[index] = data.draw(WEIRD)
        elif action == "duplicate":
            copy.insert(index, node[index])
        else:
            copy[index] = _mutate(data, node[index])
        return copy
    return data.draw(WEIRD)


def mutated_document(data: st.DataObject, bases: dict[str, str]) -> bytes:
    """A base scenario, parsed, changed one to three times, written back as YAML."""
    doc = yaml.safe_load(bases[data.draw(st.sampled_from(sorted(bases)))])
    for _ in range(data.draw(st.integers(1, 3))):
        doc = _mutate(data, doc)
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode()


# Values of the right kind, extremes included: these mostly load, so the runs happen.
_KINDS = (
    (re.compile(r"[0-9.]+ ?(?:[kMG]bit|[KMG]iB|[kMG]B|B)/s"),
     ["0", "1bit/s", "1MiB/s", "1Gbit/s", "10Gbit/s", "100GiB/s", "1e30GiB/s"]),
    (re.compile(r"[0-9.]+ ?(?:us|ms|s|min|h)"),
     ["0s", "50ms", "1s", "30s", "10min", "1h", "1e30s"]),
    (re.compile(r"[0-9.]+ ?(?:[KMGT]iB|[kMGT]B|B)"),
     ["0", "1MiB", "512MiB", "4GiB", "64GiB", "1TiB", "8192TiB"]),
)
_INTS = [0, 1, 2, 3, 7, 64, 1000, 1048576, -1]


def _tweak(data: st.DataObject, node: object) -> object:
    """A copy of ``node`` with one leaf replaced by another value of its kind."""
    if isinstance(node, dict) and node:
        key = data.draw(st.sampled_from(sorted(node, key=str)))
        return {**node, key: _tweak(data, node[key])}
    if isinstance(node, list) and node:
        index = data.draw(st.integers(0, len(node) - 1))
        return [*node[:index], _tweak(data, node[index]), *node[index + 1 :]]
    if isinstance(node, bool):
        return not node
    if isinstance(node, int):
        return data.draw(st.sampled_from(_INTS))
    if isinstance(node, str):
        for pattern, values in _KINDS:
            if pattern.fullmatch(node):
                return data.draw(st.sampled_from(values))
    return node


def tweaked_document(data: st.DataObject, bases: dict[str, str]) -> bytes:
    """A base scenario with one to four leaves set to other values of their kind."""
    doc = yaml.safe_load(bases[data.draw(st.sampled_from(sorted(bases)))])
    for _ in range(data.draw(st.integers(1, 4))):
        doc = _tweak(data, doc)
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode()


_HOSTS = ["h1", "h2", "h3", "spare"]
_VMS = ["v1", "v2", "v3", "big"]
_FAULTS = ["host_down", "host_up", "link_down", "link_up", "service_down", "service_up"]


def _action(data: st.DataObject) -> dict[str, object]:
    kind = data.draw(st.sampled_from(["live_migrate", "drain", "abort", "force_complete",
                                      "controller_restart", "random_faults", *_FAULTS]))
    host, vm = data.draw(st.sampled_from(_HOSTS)), data.draw(st.sampled_from(_VMS))
    if kind == "live_migrate":
        body: dict[str, object] = {"instance": vm, "dest": data.draw(st.sampled_from(
            [None, *_HOSTS])), "block_migration": data.draw(st.booleans())}
    elif kind == "drain":
        body = {"host": host, "block_migration": data.draw(st.booleans())}
    elif kind in ("abort", "force_complete"):
        body = {"instance": vm}
    elif kind == "controller_restart":
        body = {"down_for": data.draw(st.sampled_from(["0s", "1s", "30s"]))}
    elif kind == "random_faults":
        body = {"hosts": data.draw(st.sampled_from(["*", _HOSTS[0][:-1] + "*", host])),
                "host_down": data.draw(st.integers(0, 3)), "link_down": data.draw(
                    st.integers(0, 3)), "within": "20s", "repair": data.draw(
                    st.sampled_from(["0s", "5s"]))}  # fmt: skip
    else:
        body = {"host": host, "trigger": data.draw(st.sampled_from(["at", "checks_passed"]))}
    return {kind: body}


def events_document(data: st.DataObject) -> bytes:
    """SMALL with a random plan of 1 to 8 events of every kind (valid names, any order of
    kinds, sorted times), policies switched at random: scenarios that load and run."""
    doc = yaml.safe_load(SMALL)
    times = sorted(data.draw(st.lists(st.integers(0, 40), min_size=1, max_size=8)))
    doc["events"] = [{"at": f"{t}s", **_action(data)} for t in times]
    migration = doc["policy"]["migration"]
    migration["timeout_action"] = data.draw(st.sampled_from(["abort", "force_complete"]))
    migration["permit_post_copy"] = data.draw(st.booleans())
    migration["permit_auto_converge"] = data.draw(st.booleans())
    migration["max_concurrent_per_host"] = data.draw(st.integers(1, 2))
    return yaml.safe_dump(doc, sort_keys=False).encode()


def mutated_text(data: st.DataObject, bases: dict[str, str]) -> bytes:
    """A base scenario's text, truncated, cut, spliced with text or overwritten with bytes."""
    raw = bases[data.draw(st.sampled_from(sorted(bases)))].encode()
    for _ in range(data.draw(st.integers(1, 3))):
        start = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["truncate", "cut", "insert", "bytes"]))
        if action == "truncate":
            raw = raw[:start]
        elif action == "cut":
            raw = raw[:start] + raw[start + data.draw(st.integers(1, 40)) :]
        elif action == "insert":
            raw = raw[:start] + data.draw(st.text(max_size=12)).encode() + raw[start:]
        else:
            raw = raw[:start] + data.draw(st.binary(min_size=1, max_size=8)) + raw[start + 4 :]
    return raw


# -- running the command -------------------------------------------------------------


def call(argv: list[str]) -> tuple[int, str, str]:
    """``livemig argv`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def _empty_plots(result: object, directory: Path) -> list[Path]:
    paths = [directory / name for name in ("timeline.png", "cdf_total_time.png",
                                            "cdf_downtime.png")]  # fmt: skip
    for path in paths:
        path.write_bytes(b"")
    return paths


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    """A fresh temporary directory, the current directory meanwhile; plots stubbed."""
    with tempfile.TemporaryDirectory() as name, contextlib.chdir(name), \
            pytest.MonkeyPatch.context() as patch:  # fmt: skip
        patch.setattr(plots, "write_plots", _empty_plots)
        yield Path(name)


def one_error_line(err: str, *, names: str | None = None) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("livemig: error: "), err
    if names is not None:
        assert names in lines[0], err
    return lines[0]


def usage_error(err: str, *, files: int = 1) -> None:
    """One line ``livemig[ COMMAND]: error: ...`` (``validate``: at most one per file)."""
    lines = err.splitlines()
    assert 1 <= len(lines) <= files, err
    assert all(re.match(r"livemig( [a-z]+)?: error: ", line) for line in lines), err


def check_validate(raw: bytes) -> int:
    with workspace() as tmp:
        path = tmp / "s.yaml"
        path.write_bytes(raw)
        code, out, err = call(["validate", str(path)])
        if code == 0:
            assert err == "" and out.startswith(f"OK {path} ("), (out, err)
        else:
            assert code == 2 and out == "", (code, out, err)
            one_error_line(err, names=str(path))
    return code


def check_run(raw: bytes) -> int:
    with workspace() as tmp:
        path = tmp / "s.yaml"
        path.write_bytes(raw)
        out_dir = tmp / "out"
        code, out, err = call(["run", str(path), "--out", str(out_dir), "--no-progress"])
        if code == 0:
            assert err == "", err
            assert {p.name for p in tmp.iterdir()} == {"s.yaml", "out"}
            written = {p.name for p in out_dir.iterdir()}
            assert written >= RESULT_FILES, written  # complete (new files may be added)
            assert not any(name.startswith(".") for name in written), written
            for name in RESULT_FILES - {"timeline.png", "cdf_total_time.png", "cdf_downtime.png"}:
                assert (out_dir / name).stat().st_size > 0, name
            summary = json.loads((out_dir / "summary.json").read_text())
            assert summary["invariants"]["violations"] == 0, summary["invariants"]  # issue 4.5
            assert out.rstrip().endswith(f"results written to {out_dir}"), out
        else:
            assert code == 2, (code, out, err)
            one_error_line(err, names=str(path))
            assert not out_dir.exists()
            assert [p.name for p in tmp.iterdir()] == ["s.yaml"]  # no hidden temporary sibling
    return code


# -- the bases are valid (or the fuzz would test nothing) -----------------------------


@pytest.mark.parametrize("name", sorted(BASES))
def test_bases_validate(name: str) -> None:
    assert check_validate(BASES[name].encode()) == 0


@pytest.mark.parametrize("name", sorted(BASES))
def test_bases_run(name: str) -> None:
    assert check_run(BASES[name].encode()) == 0


def test_a_bad_file_writes_nothing() -> None:
    bad = SMALL.replace("max_downtime: 300ms", "max_downtime: 0s").encode()
    assert check_run(bad) == 2
    assert check_validate(bad) == 2


# -- scenario files ------------------------------------------------------------------


@settings(FUZZ, max_examples=100)
@given(st.data())
def test_validate_mutated_documents(data: st.DataObject) -> None:
    event(f"exit {check_validate(mutated_document(data, BASES))}")


@settings(FUZZ, max_examples=100)
@given(st.data())
def test_validate_mutated_text(data: st.DataObject) -> None:
    event(f"exit {check_validate(mutated_text(data, BASES))}")


@settings(FUZZ, max_examples=25)
@given(st.data())
def test_run_mutated_documents(data: st.DataObject) -> None:
    event(f"exit {check_run(mutated_document(data, BASES))}")


@settings(FUZZ, max_examples=25)
@given(st.data())
def test_run_tweaked_documents(data: st.DataObject) -> None:
    event(f"exit {check_run(tweaked_document(data, BASES))}")


@settings(FUZZ, max_examples=25)
@given(st.data())
def test_run_random_event_plans(data: st.DataObject) -> None:
    assert check_run(events_document(data)) == 0  # valid by construction


@settings(FUZZ, max_examples=15)
@given(st.data())
def test_run_mutated_text(data: st.DataObject) -> None:
    event(f"exit {check_run(mutated_text(data, BASES))}")


# -- command lines -------------------------------------------------------------------

TINY = """\
hosts:
  - {prefix: h, count: 2, ram: 16GiB, vcpus: 4}
vms:
  - {name: v, host: h1, ram: 1GiB, dirty_rate: 1MiB/s}
events:
  - {at: 0s, live_migrate: {instance: v, dest: h2}}
"""
FORBIDDEN = ("lab", "libvirt")  # would touch the machine


def _safe(token: str) -> bool:
    """No path outside the temporary directory, no NUL (argv cannot hold one), no lab."""
    return (
        "/" not in token and "\\" not in token and "\x00" not in token
        and not token.startswith("~") and not any(word in token for word in FORBIDDEN)
    )  # fmt: skip


GARBAGE = st.text(max_size=8).filter(_safe)
COMMANDS = st.one_of(
    st.sampled_from(["run", "validate", "resume", "--help", "-h", "--version", "help",
                     "runn", "valid", "", "-", "--"]),
    GARBAGE,
)  # fmt: skip
OPTIONS = st.sampled_from(
    ["--out", "--driver", "--seed", "--force", "--inventory", "--no-progress", "--help", "-h",
     "--version", "--", "-x", "--bogus", "--out=", "--seed=", "--driver=sim", "--driver=",
     "--se", "--no", "-o"]
)  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(["tiny.yaml", "bad.yaml", "empty.yaml", "missing.yaml", "dir", "out",
                     "results", ".", "..", "sim", "-1", "0", "3", "1e3", "x", "", " ", "ü",
                     "x" * 300, "\n", "a\tb"]),
    GARBAGE,
)  # fmt: skip


def _prepare(tmp: Path) -> set[str]:
    (tmp / "tiny.yaml").write_text(TINY)
    (tmp / "bad.yaml").write_text(TINY.replace("ram: 1GiB", "ram: 1 gig"))
    (tmp / "empty.yaml").write_text("")
    (tmp / "dir").mkdir()
    return {p.name for p in tmp.iterdir()}


@settings(FUZZ, max_examples=150)
@given(command=COMMANDS, rest=st.lists(st.one_of(OPTIONS, VALUES), max_size=6))
def test_random_command_lines(command: str, rest: list[str]) -> None:
    argv = [command, *rest]
    assume(all(_safe(token) for token in argv))
    with workspace() as tmp:
        before = _prepare(tmp)
        code, out, err = call(argv)
        assert code in (0, 2), (argv, code, out, err)
        if code == 2:
            usage_error(err, files=len(argv) if command == "validate" else 1)
            assert {p.name for p in tmp.iterdir()} == before, argv  # nothing written
        else:
            assert "Traceback" not in err, err


@settings(FUZZ, max_examples=40)
@given(command=st.sampled_from(["run", "validate"]), rest=st.lists(OPTIONS | VALUES, max_size=4))
def test_valid_file_on_random_command_lines(command: str, rest: list[str]) -> None:
    """The same, always with a valid file first, so that runs do happen."""
    argv = [command, "tiny.yaml", *rest]
    assume(all(_safe(token) for token in argv))
    with workspace() as tmp:
        before = _prepare(tmp)
        code, out, err = call(argv)
        assert code in (0, 2), (argv, code, out, err)
        if code == 2:
            usage_error(err, files=len(argv) if command == "validate" else 1)
            assert {p.name for p in tmp.iterdir()} == before, argv
        elif command == "run":  # a run, or the help
            assert "results written to" in out or out.startswith("usage: "), out


# ``resume``: only directories that are not resumable runs, never one naming libvirt.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | GARBAGE,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(GARBAGE, inner, max_size=3),
    max_leaves=6,
)
RUN_JSON_KEYS = ("scenario_source", "scenario_text", "driver", "seed", "started_at_wall")


def _resume(tmp: Path, kind: str, run_json: bytes, options: list[str]) -> None:
    run_dir = tmp / "run"
    if kind == "file":
        run_dir.write_text("not a directory\n")
    elif kind != "missing":
        run_dir.mkdir()
    if kind in ("junk", "no-state"):
        (run_dir / "run.json").write_bytes(run_json)
    if kind in ("junk", "no-run-file"):
        (run_dir / "state.sqlite").write_bytes(b"SQLite format 3\x00" + run_json)
    code, out, err = call(["resume", str(run_dir), *options])
    assert code == 2, (kind, run_json, options, code, out, err)
    usage_error(err)


@settings(FUZZ, max_examples=30)
@given(
    kind=st.sampled_from(["missing", "file", "empty", "no-state", "no-run-file"]),
    run_json=st.binary(max_size=40),
    options=st.lists(st.sampled_from(["--no-progress", "--inventory", "tiny.yaml", "x"]),
                     max_size=3),
)  # fmt: skip
def test_resume_not_a_run_directory(kind: str, run_json: bytes, options: list[str]) -> None:
    with workspace() as tmp:
        _prepare(tmp)
        _resume(tmp, kind, run_json, options)


@settings(FUZZ, max_examples=40, phases=[Phase.generate], report_multiple_bugs=False)
@given(
    run_json=st.one_of(
        st.binary(max_size=40),
        JSON.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries({k: st.one_of(st.none(), st.integers(), GARBAGE)
                               for k in RUN_JSON_KEYS}).map(lambda d: json.dumps(d).encode()),
    ),
)  # fmt: skip
def test_resume_garbage_run_files(run_json: bytes) -> None:
    with workspace() as tmp:
        _prepare(tmp)
        _resume(tmp, "junk", run_json, [])


# -- bugs the fuzzer found (fixed; these keep them fixed) ---------------------------------


@pytest.mark.parametrize("out", [".", ".."])
def test_run_out_is_the_current_directory(out: str) -> None:
    with workspace() as tmp:
        before = _prepare(tmp)
        code, _, err = call(["run", "tiny.yaml", "--out", out, "--force"])
        assert code == 2
        usage_error(err)
        assert {p.name for p in tmp.iterdir()} == before


@pytest.mark.parametrize("command", ["run-out", "resume"])
def test_names_too_long(command: str) -> None:
    long = "x" * 300
    argv = ["run", "tiny.yaml", "--out", long] if command == "run-out" else ["resume", long]
    with workspace() as tmp:
        before = _prepare(tmp)
        code, _, err = call(argv)
        assert code == 2
        usage_error(err)
        assert {p.name for p in tmp.iterdir()} == before


class _RealtimeDriver:
    """Stands in for the libvirt driver: real-time, and fails if it is ever built."""

    REALTIME = True

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the driver must not be built")


def test_realtime_run_never_deletes_the_current_directory() -> None:
    with workspace() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(scenario_commands, "driver_class", lambda name: _RealtimeDriver)
        patch.setattr("livemig.core.runner.run_scenario", _RealtimeDriver)
        before = _prepare(tmp)
        try:
            code, _, err = call(["run", "tiny.yaml", "--driver", "libvirt", "--out", ".",
                                 "--force"])  # fmt: skip
        except OSError as exc:
            deleted = before - {p.name for p in tmp.iterdir()}
            pytest.fail(f"{exc!r}; deleted: {sorted(deleted)}")
        assert code == 2
        usage_error(err)
        assert {p.name for p in tmp.iterdir()} == before
