"""The ``livemig`` command through ``main([...])``: run, validate, errors, progress, lab."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakelibvirt.driver import driver_modules

import livemig
from livemig.core import cli, plots, runner, scenario_commands

TINY = """\
name: tiny
seed: 3
hosts:
  - {prefix: h, count: 3, ram: 64GiB, vcpus: 16}
vms:
  - {name: ok, host: h1, ram: 4GiB, used_memory: 1GiB, working_set: 64MiB, dirty_rate: 10MB/s}
  - {name: self, host: h1, ram: 2GiB}
events:
  - {at: 0s, live_migrate: {instance: ok, dest: h2}}
  - {at: 1s, live_migrate: {instance: self, dest: h1}}
"""
BAD_UNIT = TINY.replace("ram: 2GiB", "ram: 2 gigs")


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip the plots (the slow part) where a test is about something else."""
    monkeypatch.setattr(plots, "write_plots", lambda result, directory: [])


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("livemig: error: ")
    return lines[0]


def test_run_writes_results_and_prints_the_summary(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert cli.main(["run", str(tiny), "--out", str(out)]) == 0  # a failed migration is a result
    captured = capsys.readouterr()
    assert captured.err == ""  # not a TTY: no progress bar
    assert "scenario tiny (driver sim, seed 3): 2 migrations" in captured.out
    assert "UnableToMigrateToSelf" in captured.out
    assert captured.out.rstrip().endswith(f"results written to {out}")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status_counts"]["completed"] == 1
    assert summary["status_counts"]["error"] == 1
    assert summary["scenario_source"] == str(tiny)
    assert (out / "timeline.png").stat().st_size > 0


@pytest.mark.usefixtures("no_plots")
def test_default_out_dir_and_seed(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", str(tiny), "--seed", "11", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "results" / "tiny" / "summary.json").read_text())
    assert summary["seed"] == 11
    assert "results written to results/tiny" in capsys.readouterr().out


@pytest.mark.usefixtures("no_plots")
def test_existing_out_dir_needs_force(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("")
    assert cli.main(["run", str(tiny), "--out", str(out)]) == 2
    assert "already exists (use --force" in one_error_line(capsys.readouterr().err)
    assert (out / "old").exists()
    # --force replaces earlier results only, never a directory of other files
    assert cli.main(["run", str(tiny), "--out", str(out), "--force"]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"livemig: error: {out} holds 1 file(s) that livemig did not write ('old'); not "
        "replacing it (expected a directory of earlier results only)")
    (out / "old").unlink()
    assert cli.main(["run", str(tiny), "--out", str(out), "--force"]) == 0
    assert (out / "migrations.csv").exists()


@pytest.mark.usefixtures("no_plots")
def test_force_keeps_a_user_file_in_earlier_results(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: notes.txt added to a results directory; --force must not delete it."""
    out = tmp_path / "out"
    assert cli.main(["run", str(tiny), "--out", str(out)]) == 0
    (out / "notes.txt").write_text("my notes")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert cli.main(["run", str(tiny), "--out", str(out), "--force", "--seed", "9"]) == 2
    assert "'notes.txt'" in one_error_line(capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing changed
    assert [p.name for p in tmp_path.iterdir() if p.name != "tiny.yaml"] == ["out"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (BAD_UNIT, "bad.yaml:7: vms[1].ram: "),
        ("hosts: [\n", "bad.yaml:"),
        ("", "no content"),
    ],
)
def test_invalid_scenario_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragment: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert cli.main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert fragment in one_error_line(captured.err)
    assert captured.out == ""
    assert [p.name for p in tmp_path.iterdir()] == ["bad.yaml"]


def test_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "nope.yaml"]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        "livemig: error: nope.yaml: No such file or directory"
    )
    assert list(tmp_path.iterdir()) == []  # no results/ either


def test_inventory_with_sim_is_an_error(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts: []\n")
    assert cli.main(["run", str(tiny), "--inventory", str(inventory),
                     "--out", str(tmp_path / "out")]) == 2
    assert "--inventory" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_inventory_goes_to_the_libvirt_driver(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts: []\n")
    seen: dict[str, object] = {}

    def fake_run(scenario: object, driver: str, **kwargs: object) -> object:
        seen.update(driver=driver, **kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(scenario_commands, "driver_class", lambda name: object)
    monkeypatch.setattr(runner, "run_scenario", fake_run)
    with pytest.raises(RuntimeError, match="stop here"):  # a bug propagates
        cli.main(["run", str(tiny), "--driver", "libvirt", "--inventory", str(inventory),
                  "--out", str(tmp_path / "out")])
    assert seen["driver"] == "libvirt"
    assert seen["driver_options"] == {"inventory": str(inventory)}
    assert not (tmp_path / "out").exists()


def test_unavailable_driver_is_one_line(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def missing(name: str) -> object:
        raise ModuleNotFoundError("No module named 'libvirt'", name="libvirt")

    monkeypatch.setattr(scenario_commands, "driver_class", missing)
    assert cli.main(["run", str(tiny), "--driver", "libvirt",
                     "--out", str(tmp_path / "out")]) == 2
    assert "driver 'libvirt' is not available" in one_error_line(capsys.readouterr().err)


@pytest.mark.usefixtures("no_plots")
def test_progress_bar_on_a_tty_only(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert cli.main(["run", str(tiny), "--out", str(tmp_path / "a")]) == 0
    drawn = tty.getvalue()
    # the qemu model's start-up cost (0.285 s) ends the migration after the poll at 1 s
    assert "\r[" in drawn and drawn.endswith(
        "2/2 migrations finished (1 not completed), at 1.5 s of 24 h\n")

    tty.seek(0)
    tty.truncate()
    assert cli.main(["run", str(tiny), "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert tty.getvalue() == ""
    capsys.readouterr()


def test_validate(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(tiny)]) == 0
    assert capsys.readouterr().out == f"OK {tiny} (3 hosts, 2 vms, 2 events)\n"

    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_UNIT)
    assert cli.main(["validate", str(bad), str(tiny)]) == 2
    captured = capsys.readouterr()
    assert captured.out == f"OK {tiny} (3 hosts, 2 vms, 2 events)\n"
    assert f"{bad}:7: vms[1].ram" in one_error_line(captured.err)
    assert {p.name for p in tmp_path.iterdir()} == {"tiny.yaml", "bad.yaml"}


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"livemig {livemig.__version__}"


@pytest.mark.parametrize(("argv", "message"), [
    ([], "livemig: error: the following arguments are required: COMMAND (see livemig --help)"),
    (["run", "x.yaml", "--driver", "vmware"],
     "livemig run: error: argument --driver: invalid choice: 'vmware' (choose from 'libvirt', "
     "'sim') (see livemig run --help)"),
    (["run", "x.yaml", "--seed", "-1"],
     "livemig run: error: argument --seed: -1 must be >= 0 (see livemig run --help)"),
    (["validate", "x.yaml", "\x0c\n"],  # control characters are shown escaped
     "livemig: error: \\x0c\\n: No such file or directory"),
])
def test_usage_errors_are_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == message and len(err.splitlines()) <= 2


def test_default_out_dir_is_one_safe_component() -> None:
    assert cli.default_out_dir("quickstart") == Path("results/quickstart")
    assert cli.default_out_dir("../x y") == Path("results/_.._x_y")


def test_lab_commands_are_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "LAB_COMMANDS_MODULE", "livemig.drivers.lab.no_such_module")
    parser = cli.build_parser()
    assert cli.main(["--version"]) == 0
    assert "lab" not in parser.format_help().split("validate", 1)[1]


def test_lab_commands_import_errors_propagate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_lab_commands.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "LAB_COMMANDS_MODULE", "broken_lab_commands")
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        cli.build_parser()


def test_lab_commands_are_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fake_lab_commands.py").write_text(
        "def add_lab_commands(subparsers):\n"
        "    lab = subparsers.add_parser('lab')\n"
        "    lab.set_defaults(func=lambda args: 7)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "LAB_COMMANDS_MODULE", "fake_lab_commands")
    assert cli.main(["lab"]) == 7


INVENTORY = """\
lab: elsewhere
lab_dir: /nonexistent/lab
storage: shared
instances_path: /var/lib/libvirt/instances
console_dir: /nonexistent/lab/consoles
storage_pool: instances
network: 198.18.200.0/24
bridge: {name: none-br, address: 198.18.200.1}
image: null
hosts:
- {name: other1, address: 198.18.200.11, uri: "qemu+tcp://198.18.200.11/system",
   netns: none-other1, host_uuid: 00000000-0000-0000-0000-000000000001,
   instances_dir: /nonexistent/lab/instances}
"""


@pytest.mark.parametrize("inventory", [INVENTORY, "not: [an inventory", "- 1\n"])
def test_a_real_run_whose_hosts_do_not_match_its_inventory_leaves_nothing(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], inventory: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checked before any connection: one line naming the problem, no run directory.
    The real driver is bound to the fake libvirt: no libvirt-python needed."""
    monkeypatch.setitem(sys.modules, "livemig.drivers.libvirt_real", driver_modules().real)
    inv = tmp_path / "inventory.yaml"
    inv.write_text(inventory)
    out = tmp_path / "out"
    code = cli.main(["run", str(tiny), "--driver", "libvirt", "--inventory", str(inv),
                     "--out", str(out), "--no-progress"])
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    if inventory == INVENTORY:
        assert "are not in the inventory" in line and "other1" in line
    else:
        assert str(inv) in line
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.yaml", "tiny.yaml"]


# -- output that cannot be written: one line or a quiet exit, never a traceback -----------
def run_livemig(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """The command in a fresh interpreter (its real stdout, its imports from scratch)."""
    return subprocess.run([sys.executable, "-m", "livemig.core.cli", *args], text=True,
                          stderr=subprocess.PIPE, timeout=120, check=False, **kwargs)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("args", [["validate", "TINY"], ["--help"], ["run", "--help"],
                                  ["--version"]])
def test_stdout_on_a_full_disk_is_one_error_line(tiny: Path, args: list[str]) -> None:
    with open("/dev/full", "w") as full:
        done = run_livemig(*[str(tiny) if a == "TINY" else a for a in args], stdout=full)
    assert done.returncode == 2
    assert one_error_line(done.stderr) == (
        "livemig: error: cannot write to standard output: No space left on device")


@pytest.mark.parametrize("command", ["sweep", "compare"])
def test_python_m_reports_a_command_modules_error_on_one_line(tmp_path: Path,
                                                              command: str) -> None:
    """``python -m livemig.core.cli``: a CliError raised by a command module is caught too."""
    missing = str(tmp_path / "missing.yaml")
    args = [command, missing] if command == "sweep" else [command, missing, missing]
    done = run_livemig(*args, stdout=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "missing.yaml" in one_error_line(done.stderr)


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_closed_pipe_ends_quietly(tiny: Path, tmp_path: Path, command: str) -> None:
    """``livemig run ... | true``: exit 141 (128 + SIGPIPE), no traceback, results complete."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    out = tmp_path / "out"
    args = ["run", str(tiny), "--out", str(out), "--no-progress"] if command == "run" \
        else ["validate", str(tiny)]
    try:
        done = run_livemig(*args, stdout=write_end)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")  # cli.EXIT_CLOSED_PIPE
    if command == "run":  # written before the summary was printed: complete
        assert json.loads((out / "summary.json").read_text())["migrations"] == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny.yaml"]


def remove_deep(top: Path) -> None:
    """Remove a deep tree of directories without recursion (os.walk, rmtree recurse)."""
    dirs, stack = [], [str(top)]
    while stack:
        path = stack.pop()
        dirs.append(path)
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            else:
                os.unlink(entry.path)
    for path in reversed(dirs):  # every directory after its parent: children first
        os.rmdir(path)


@pytest.mark.usefixtures("no_plots")
def test_out_nested_a_thousand_directories_deep(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    top = tmp_path / "d"
    out = Path(str(top), *["d"] * 999, "out")  # 2,000 characters: the system takes it
    try:
        assert cli.main(["run", str(tiny), "--out", str(out)]) == 0
        assert json.loads((out / "summary.json").read_text())["migrations"] == 2
    finally:
        remove_deep(top)
    capsys.readouterr()
    too_long = Path(str(top), *["abcde"] * 1000, "out")  # 6,000 characters: PATH_MAX is 4,096
    assert cli.main(["run", str(tiny), "--out", str(too_long)]) == 2
    assert "File name too long" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]  # nothing made


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody may write to: mode 0555, or for root a read-only tmpfs."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                           capture_output=True, text=True, check=False)
    if mount.returncode != 0:
        pytest.skip(f"root cannot be refused a write without a read-only mount: {mount.stderr}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("below", ["out", "new/out"])
def test_read_only_out_fails_before_the_run_naming_the_users_path(
    tiny: Path, read_only_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], below: str,
) -> None:
    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the scenario ran before the output directory was checked")

    monkeypatch.setattr(runner, "run_scenario", no_run)
    out = read_only_dir / below
    assert cli.main(["run", str(tiny), "--out", str(out), "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"livemig: error: {out}: cannot write the results here ")
    assert ".tmp" not in line and ".probe" not in line
    assert list(read_only_dir.iterdir()) == []


# -- what a command imports ------------------------------------------------------------
HEAVY = ("simpy", "numpy", "pandas", "matplotlib", "networkx")
IMPORTS = """\
import json, sys
from livemig.core import cli
code = cli.main(sys.argv[1:])
print(json.dumps([code, sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[0:0]
      or {HEAVY}))]), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["validate", "TINY"], ["--help"], ["run", "--help"]])
def test_validate_and_help_import_no_simulator_or_plotting(tiny: Path, args: list[str]) -> None:
    code = IMPORTS.replace("{HEAVY}", repr(set(HEAVY)))
    done = subprocess.run(
        [sys.executable, "-c", code, *[str(tiny) if a == "TINY" else a for a in args]],
        capture_output=True, text=True, timeout=120, check=True)
    status, heavy = json.loads(done.stderr.splitlines()[-1])
    assert (status, heavy) == (0, [])


def test_resume_refuses_a_run_directory_holding_a_users_file_before_resuming(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Its results would replace the directory at the end: refused up front, not after."""
    def no_resume(*args: object, **kwargs: object) -> None:
        raise AssertionError("resumed a run whose results could not be written")

    monkeypatch.setattr(runner, "resume_run", no_resume)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "state.sqlite").write_bytes(b"")
    (run_dir / "run.json").write_text(json.dumps({
        "scenario_source": str(tiny), "scenario_text": TINY, "driver": "sim", "seed": 3,
        "started_at_wall": 0.0, "driver_options": {}}))
    (run_dir / "notes.txt").write_text("mine")
    assert cli.main(["resume", str(run_dir), "--no-progress"]) == 2
    assert "'notes.txt'" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt", "run.json", "state.sqlite"]


def test_a_write_failing_during_the_results_names_the_users_directory(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The disk fills up while the plots are drawn: the hidden folder is not in the message."""
    def full(result: object, directory: Path) -> None:
        raise OSError(28, "No space left on device", str(directory / "timeline.png"))

    monkeypatch.setattr(plots, "write_plots", full)
    out = tmp_path / "out"
    assert cli.main(["run", str(tiny), "--out", str(out), "--no-progress"]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"livemig: error: {out}: cannot write the results: No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]
