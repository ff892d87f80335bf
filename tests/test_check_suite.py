"""``livemig check``: a suite of scenario files, its table, JUnit XML and exit codes."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from livemig.core import check_suite, cli

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

GOOD = """\
hosts:
  - {prefix: h, count: 2, ram: 64GiB, vcpus: 16}
vms:
  - {name: vm-1, host: h1, ram: 4GiB, used_memory: 1GiB, dirty_rate: 10MiB/s}
events:
  - {at: 0s, live_migrate: {instance: vm-1, dest: h2}}
expect:
  instances:
    vm-1: {status: completed, host: h2}
  outcomes: {completed: 1}
  stats: ["max downtime_ms < 1s"]
"""
FAILING = GOOD.replace("host: h2}", "host: h1}").replace("< 1s", "< 1us")
BAD = GOOD.replace("ram: 4GiB", "ram: 4 gigs")


def write(directory: Path, **files: str) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        path = directory / f"{name}.yaml"
        path.write_text(text)
        paths.append(str(path))
    return paths


def check(*args: str) -> int:
    return cli.main(["check", *args])


def test_a_suite_whose_expectations_are_met_exits_0_with_a_table_and_junit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "suite", a=GOOD, b=GOOD)
    (tmp_path / "suite" / "notes.txt").write_text("not a scenario")
    junit = tmp_path / "junit.xml"
    assert check(str(tmp_path / "suite"), "-j", "2", "--junit", str(junit)) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith(str(tmp_path))]
    assert [(Path(r[0]).name, r[1], r[2]) for r in rows] == [("a.yaml", "5", "0"),
                                                             ("b.yaml", "5", "0")]
    assert "2 files: 2 passed, 0 failed, 0 bad; 10 expectations met, 0 failed" in out
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("10", "0", "0")
    suites = root.findall("testsuite")
    assert [Path(s.get("name", "")).name for s in suites] == ["a.yaml", "b.yaml"]
    names = [c.get("name") for c in suites[0].findall("testcase")]
    assert names == [
        "line 9: instances.vm-1.status == completed", "line 9: instances.vm-1.host == h2",
        "line 10: outcomes.completed == 1", "line 11: stats: max downtime_ms < 1s",
        "invariants.violations == 0 (implied)"]
    assert root.find(".//failure") is None and root.find(".//error") is None


def test_a_failed_expectation_exits_1_and_is_a_junit_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, failing = write(tmp_path, good=GOOD, failing=FAILING)
    junit = tmp_path / "junit.xml"
    assert check(good, failing, "--junit", str(junit)) == 1
    out = capsys.readouterr().out
    assert f"FAILED {failing}:9: instances.vm-1.host == h1 (got h2)" in out
    assert f"FAILED {failing}:11: stats: max downtime_ms < 1us (got " in out
    assert "2 files: 1 passed, 1 failed, 0 bad; 8 expectations met, 2 failed" in out
    root = ET.parse(junit).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("10", "2", "0")
    good_suite, failing_suite = root.findall("testsuite")
    assert (good_suite.get("failures"), failing_suite.get("failures")) == ("0", "2")
    failures = failing_suite.findall("testcase/failure")
    assert failures[0].get("message") == "instances.vm-1.host == h1: got h2"
    assert (failures[0].text or "").startswith(f"{failing}:9: ")


def test_a_bad_file_exits_2_and_the_other_files_are_still_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad, failing, good = write(tmp_path, bad=BAD, failing=FAILING, good=GOOD)
    missing = str(tmp_path / "missing.yaml")
    junit = tmp_path / "junit.xml"
    assert check(bad, failing, good, missing, "-j", "2", "--junit", str(junit)) == 2
    out = capsys.readouterr().out
    assert f"BAD FILE {bad}:4: vms[0].ram: '4 gigs' is not a size" in out
    assert f"BAD FILE {missing}: No such file or directory" in out
    assert "4 files: 1 passed, 1 failed, 2 bad; 8 expectations met, 2 failed" in out
    root = ET.parse(junit).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("12", "2", "2")
    bad_suite = root.findall("testsuite")[0]
    (error,) = bad_suite.findall("testcase/error")
    assert (error.get("message") or "").startswith(f"{bad}:4: vms[0].ram:")


@pytest.mark.parametrize(("args", "message"), [
    (["--driver", "libvirt"], "check runs on --driver sim only for now: --driver libvirt needs "
                              "root and an inventory"),
    (["--junit", "{tmp}/no/such/dir/j.xml"], "--junit {tmp}/no/such/dir/j.xml: expected a file "
                                             "in an existing directory"),
    (["--junit", "{tmp}"], "--junit {tmp}: expected a file in an existing directory"),
])
def test_usage_problems_exit_2_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (good,) = write(tmp_path, good=GOOD)
    monkeypatch.setattr(check_suite, "run_suite", lambda *a, **k: pytest.fail("ran"))
    assert check(good, *(a.format(tmp=tmp_path) for a in args)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"livemig: error: {message.format(tmp=tmp_path)}")
    assert captured.err.count("\n") == 1


def test_a_directory_without_scenarios_and_a_bad_job_count_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(str(tmp_path)) == 2
    assert capsys.readouterr().err == (
        f"livemig: error: {tmp_path}: no scenario files (*.yaml) in this directory\n")
    assert check(str(tmp_path), "-j", "0") == 2
    assert "0 must be >= 1" in capsys.readouterr().err


def test_check_writes_no_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "suite", good=GOOD)
    monkeypatch.chdir(tmp_path)
    assert check("suite", "-j", "1") == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "suite", "suite/good.yaml"]


def test_the_same_suite_gives_the_same_verdicts_whatever_the_job_count() -> None:
    files = [str(SCENARIOS / f"{name}.yaml") for name in (
        "rack-drain-faults", "quickstart", "lab-queued-abort", "seed-disk-space")]
    serial = check_suite.run_suite(files, jobs=1)
    parallel = check_suite.run_suite(files, jobs=2)
    again = check_suite.run_suite(files, jobs=2)
    assert [r.path for r in parallel] == files
    verdicts = [[r.verdicts for r in reports] for reports in (serial, parallel, again)]
    assert verdicts[0] == verdicts[1] == verdicts[2]
    assert all(r.passed for r in serial) and sum(len(v) for v in verdicts[0]) > 10


def test_run_records_the_verdicts_in_summary_json_and_still_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from livemig.core import plots

    monkeypatch.setattr(plots, "write_plots", lambda result, directory: [])
    (failing,) = write(tmp_path, failing=FAILING)
    assert cli.main(["run", failing, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "expectations: 3 met, 2 failed" in out
    assert "  FAILED line 9: instances.vm-1.host == h1 (got h2)" in out
    block = json.loads((tmp_path / "out" / "summary.json").read_text())["expectations"]
    assert (block["met"], block["failed"]) == (3, 2)
    assert block["details"][1] == {"expectation": "instances.vm-1.host == h1", "line": 9,
                                   "met": False, "actual": "h2"}


def test_a_run_without_expect_has_no_expectations_in_summary_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from livemig.core import plots

    monkeypatch.setattr(plots, "write_plots", lambda result, directory: [])
    (plain,) = write(tmp_path, plain=GOOD.split("expect:")[0])
    assert cli.main(["run", plain, "--out", str(tmp_path / "out")]) == 0
    assert "expectations" not in json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "expectations:" not in capsys.readouterr().out


def test_the_shipped_suite_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert check(str(SCENARIOS), "-j", "2") == 0
    assert " 0 failed, 0 bad;" in capsys.readouterr().out


def test_the_readme_example_is_met_by_the_readme_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (SCENARIOS.parent / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    tiny = next(b for b in blocks if b.startswith("name: tiny"))
    expect = next(b for b in blocks if b.startswith("expect:"))
    (path,) = write(tmp_path, tiny=tiny + expect)
    assert check(path, "-j", "1") == 0
    assert "10 expectations met, 0 failed" in capsys.readouterr().out
