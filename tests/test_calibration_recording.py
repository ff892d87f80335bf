"""The shipped calibration recording (``calibration/recordings/lab-2026-12-04``) is what the
README's trust table and ``profiles/lab-calibrated.yaml`` say it is: refitting it gives the
shipped profile, and replaying its held-out cases prints the README's rows (replays are
deterministic, so a model change that moves them fails here until the README is redone)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from livemig.calibration import models, refit

REPO = Path(__file__).resolve().parents[1]
RECORDING = REPO / "calibration" / "recordings" / "lab-2026-12-04"
LATE = REPO / "calibration" / "recordings" / "lab-2026-12-04-late"
HUGEPAGES = REPO / "calibration" / "recordings" / "lab-2026-12-05-hugepages"
MATRIX = REPO / "calibration" / "trust-matrix.yaml"
FITTED = ("startup_cost", "switchover_cost", "link_speed", "flush_speed")


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recording") / "cal"
    shutil.copytree(RECORDING, out)
    return out


def test_refitting_the_recording_gives_the_shipped_profile(copy: Path) -> None:
    assert refit.main([str(copy), "--matrix", str(MATRIX)]) == 0
    again = yaml.safe_load((copy / "profile.yaml").read_text())
    shipped = yaml.safe_load((REPO / "profiles" / "lab-calibrated.yaml").read_text())
    assert {k: again[k] for k in FITTED} == {k: shipped[k] for k in FITTED}
    assert again["measured"]["fitted_on"] == shipped["measured"]["fitted_on"]
    assert again["measured"]["runs"] == shipped["measured"]["runs"] == 78
    assert again["measured"]["hidden_memory"] == shipped["measured"]["hidden_memory"]


def test_the_held_out_replay_prints_the_readme_rows(
    copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = REPO / "profiles" / "lab-calibrated.yaml"
    assert models.main([str(copy), "--matrix", str(MATRIX), "--held-out",
                        "--profile", str(profile)]) == 0  # fmt: skip
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    rows = {line.split("|")[1].strip(): line for line in printed}
    assert {"lab noise floor (each run vs its case median)", "qemu vs every run",
            "cloudsim vs case medians"} <= set(rows)  # fmt: skip
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## How far to trust the simulator") :]
    for name in ("lab noise floor (each run vs its case median)", "qemu vs every run",
                 "qemu vs case medians", "qemu-default-inputs vs every run"):  # fmt: skip
        assert rows[name] in section, f"README's row {name!r} is not what the replay prints"


def _replay_rows(cases_dir: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """The held-out replay's table of ``cases_dir``: each row's cells after the first, by
    the first (``qemu`` for a recording of one run per case; ``qemu vs every run``, ``lab
    noise floor ...`` and more for repeated runs)."""
    assert models.main([str(cases_dir), "--matrix", str(MATRIX), "--held-out",
                        "--profile", str(cases_dir / "profile.yaml")]) == 0  # fmt: skip
    return {line.split("|", 2)[1].strip(): line.split("|", 2)[2]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}


def _refitted_and_shipped(recording: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of ``recording``: one refitted (which must give its own profile again),
    one with the shipped profile in its place."""
    own, shipped = tmp_path / "own", tmp_path / "shipped"
    shutil.copytree(recording, own)
    shutil.copytree(recording, shipped)
    shutil.copy(REPO / "profiles" / "lab-calibrated.yaml", shipped / "profile.yaml")
    assert refit.main([str(own), "--matrix", str(MATRIX)]) == 0
    again = yaml.safe_load((own / "profile.yaml").read_text())
    recorded = yaml.safe_load((recording / "profile.yaml").read_text())
    assert {k: again[k] for k in FITTED} == {k: recorded[k] for k in FITTED}
    return own, shipped


def _readme_rows(heading: str) -> dict[str, str]:
    """The README's table after ``heading`` in the trust section: cells after the first,
    by the first."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index(heading):]
    section = section[:section.index("\n\n", section.index("| profile |"))]
    return {line.split("|", 2)[1].strip(): line.split("|", 2)[2]
            for line in section.splitlines() if line.strip().startswith("| ")}


def test_the_late_recording_prints_the_readme_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The second recording, four hours later: refitting it gives its profile, and the
    README's two rows are its replay with that profile and with the shipped one."""
    own, shipped = _refitted_and_shipped(LATE, tmp_path)
    rows = _readme_rows("- **A second recording, four hours later")
    earlier = "`profiles/lab-calibrated.yaml` (fitted 4 h earlier)"
    assert _replay_rows(shipped, capsys)["qemu"] == rows[earlier]
    assert _replay_rows(own, capsys)["qemu"] == rows["refitted on this recording (link 68.4 MiB/s)"]


def test_the_huge_pages_recording_prints_the_readme_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The third recording, the guests on huge pages: refitting it gives its profile, and
    the README's rows are its replay with that profile and with the shipped one."""
    own, shipped = _refitted_and_shipped(HUGEPAGES, tmp_path)
    rows = _readme_rows("- **A third recording, guests on huge pages**")
    replayed = _replay_rows(own, capsys)
    noise = "lab noise floor (each run vs its case median)"
    assert replayed[noise] == rows[noise]
    assert replayed["qemu vs every run"] == rows["refitted on this recording, vs every run"]
    assert _replay_rows(shipped, capsys)["qemu vs every run"] == rows[
        "`profiles/lab-calibrated.yaml` (ordinary memory), vs every run"]
