"""The shipped calibration recordings are what the README's trust section says they are.

The main one (``calibration/recordings/lab-2026-12-05-layout``, the guests on huge pages,
reporting where their non-zero memory lies): refitting it gives
``profiles/lab-calibrated.yaml``, and replaying its held-out cases prints the README's main
table. The earlier three: refitting each gives its own profile, and their replays print
their rows in the README. Replays are deterministic, so a model change that moves them
fails here until the README is redone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from livemig.calibration import models, refit

REPO = Path(__file__).resolve().parents[1]
RECORDINGS = REPO / "calibration" / "recordings"
RECORDING = RECORDINGS / "lab-2026-12-05-layout"
ORDINARY = RECORDINGS / "lab-2026-12-04"
LATE = RECORDINGS / "lab-2026-12-04-late"
HUGEPAGES = RECORDINGS / "lab-2026-12-05-hugepages"
LATER = RECORDINGS / "lab-2026-12-05-later"
MATRIX = REPO / "calibration" / "trust-matrix.yaml"
FITTED = ("startup_cost", "startup_cost_per_gib", "switchover_cost", "link_speed",
          "flush_speed")
NOISE = "lab noise floor (each run vs its case median)"


def fitted(doc: dict) -> dict:
    """A profile document's fitted parameters (None for one it does not write)."""
    return {k: doc.get(k) for k in FITTED}


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recording") / "cal"
    shutil.copytree(RECORDING, out)
    return out


def test_refitting_the_recording_gives_the_shipped_profile(copy: Path) -> None:
    assert refit.main([str(copy), "--matrix", str(MATRIX)]) == 0
    again = yaml.safe_load((copy / "profile.yaml").read_text())
    shipped = yaml.safe_load((REPO / "profiles" / "lab-calibrated.yaml").read_text())
    assert fitted(again) == fitted(shipped)
    assert again["measured"]["fitted_on"] == shipped["measured"]["fitted_on"]
    assert again["measured"]["lab_hugepages"] is shipped["measured"]["lab_hugepages"] is True
    assert again["measured"]["runs"] == shipped["measured"]["runs"] == 78
    assert again["measured"]["hidden_memory"] == shipped["measured"]["hidden_memory"]


def test_the_held_out_replay_prints_the_readme_rows(
    copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = REPO / "profiles" / "lab-calibrated.yaml"
    assert models.main([str(copy), "--matrix", str(MATRIX), "--held-out",
                        "--profile", str(profile)]) == 0  # fmt: skip
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    names = {row.split("|")[1].strip() for row in printed}
    assert {NOISE, "qemu vs every run", "cloudsim vs case medians"} <= names
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## How far to trust the simulator") :]
    section = section[: section.index("\n\n", section.index("| model |"))]  # the main table
    for line in printed:
        assert line in section, f"README's main table lacks the replay's row {line!r}"


def _replay_rows(cases_dir: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """The held-out replay's table of ``cases_dir``: each row's cells after the first, by
    the first (``qemu`` for a recording of one run per case; ``qemu vs every run``, ``lab
    noise floor ...`` and more for repeated runs)."""
    assert models.main([str(cases_dir), "--matrix", str(MATRIX), "--held-out",
                        "--profile", str(cases_dir / "profile.yaml")]) == 0  # fmt: skip
    return {line.split("|", 2)[1].strip(): line.split("|", 2)[2]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}


def _refitted_and_other(recording: Path, tmp_path: Path,
                        other_profile: Path = ORDINARY / "profile.yaml") -> tuple[Path, Path]:
    """Two copies of ``recording``: one refitted (which must give its own profile again),
    one with ``other_profile`` (default: the ordinary-memory recording's) in its place."""
    own, other = tmp_path / "own", tmp_path / "other"
    shutil.copytree(recording, own)
    shutil.copytree(recording, other)
    shutil.copy(other_profile, other / "profile.yaml")
    assert refit.main([str(own), "--matrix", str(MATRIX)]) == 0
    again = yaml.safe_load((own / "profile.yaml").read_text())
    recorded = yaml.safe_load((recording / "profile.yaml").read_text())
    assert fitted(again) == fitted(recorded)
    return own, other


def _readme_rows(heading: str) -> dict[str, str]:
    """The README's table after ``heading`` in the trust section: cells after the first,
    by the first."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index(heading):]
    section = section[:section.index("\n\n", section.index("|---|"))]
    return {line.split("|", 2)[1].strip(): line.split("|", 2)[2]
            for line in section.splitlines() if line.strip().startswith("| ")}


def test_the_ordinary_memory_recording_prints_the_readme_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first recording, the guests on ordinary memory: refitting it gives its profile,
    and the README's rows are its replay with it."""
    own, _ = _refitted_and_other(ORDINARY, tmp_path)
    rows = _readme_rows("- **The first recording, guests on ordinary memory**")
    replayed = _replay_rows(own, capsys)
    for name in (NOISE, "qemu vs every run", "qemu vs case medians"):
        assert replayed[name] == rows[name], name


def test_the_late_recording_prints_the_readme_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The second recording, four hours later: refitting it gives its profile, and the
    README's two rows are its replay with that profile and with the first recording's."""
    own, earlier = _refitted_and_other(LATE, tmp_path)
    rows = _readme_rows("- **A second recording, four hours later")
    assert _replay_rows(earlier, capsys)["qemu"] == rows["the first recording's profile "
                                                         "(fitted 4 h earlier)"]
    assert _replay_rows(own, capsys)["qemu"] == rows["refitted on this recording (link 68.4 MiB/s)"]


def test_the_huge_pages_recording_prints_the_readme_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The third recording, the guests on huge pages without their layout: refitting it
    gives its profile, and the README's rows are its replay with that profile and with the
    first recording's (ordinary memory)."""
    own, ordinary = _refitted_and_other(HUGEPAGES, tmp_path)
    rows = _readme_rows("- **A third recording, guests on huge pages**")
    replayed = _replay_rows(own, capsys)
    assert replayed[NOISE] == rows[NOISE]
    assert replayed["qemu vs every run"] == rows["refitted on this recording, vs every run"]
    assert _replay_rows(ordinary, capsys)["qemu vs every run"] == rows[
        "the first recording's profile (ordinary memory), vs every run"]


def test_the_later_recording_prints_the_readme_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fifth recording, after the main one, the same setup: the README's rows are its
    replay with the shipped profile (fitted on the main recording) and refitted."""
    own, main = _refitted_and_other(LATER, tmp_path, REPO / "profiles" / "lab-calibrated.yaml")
    rows = _readme_rows("- **The same setup, again an hour later**")
    assert _replay_rows(main, capsys)["qemu"] == rows[
        "`profiles/lab-calibrated.yaml` (fitted on the main recording)"]
    assert _replay_rows(own, capsys)["qemu"] == rows["refitted on this recording"]
