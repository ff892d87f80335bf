"""The notebooks in notebooks/ run from top to bottom (nbclient, a real IPython kernel) on
their small built-in inputs, and are committed without outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
EXPECTED = {"quickstart.ipynb", "policy-comparison.ipynb", "fidelity.ipynb"}
INPUTS = ("LIVEMIG_RUN", "LIVEMIG_SWEEP", "LIVEMIG_CALIBRATION")


@pytest.fixture(autouse=True)
def private_jupyter_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Kernel connection files and IPython's profile in the test's own folder (a user
    without a writable home runs the lane too)."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))


def execute(nb: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel; a cell that raises raises CellExecutionError."""
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    return client.execute()


def test_the_notebooks_are_the_expected_ones() -> None:
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_committed_notebook_has_no_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{name}: clear the outputs before committing (Kernel > Restart & Clear Output)"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_notebook_runs_on_its_built_in_inputs(name: str, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    for variable in INPUTS:  # the notebook's own small inputs, whatever the caller's shell
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path))
    nb = execute(nbformat.read(NOTEBOOKS / name, as_version=4), NOTEBOOKS)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert errors == []
    images = [o for c in code for o in c.outputs
              if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    tables = [o for c in code for o in c.outputs
              if o.output_type == "execute_result" and "text/html" in o.get("data", {})]
    assert images, f"{name} drew no plot"
    assert tables, f"{name} showed no table"


def test_a_cell_that_raises_fails_the_run(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise ValueError('the analysis broke')"),
        nbformat.v4.new_code_cell("y = 2")])
    with pytest.raises(CellExecutionError, match="the analysis broke"):
        execute(nb, tmp_path)
    assert nb.cells[2].execution_count is None  # the run stopped there


def test_a_notebook_takes_its_input_from_the_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from livemig.core.cli import main

    run = tmp_path / "run"
    assert main(["run", str(REPO / "scenarios" / "seed-memory.yaml"), "--out", str(run),
                 "--no-progress"]) == 0
    monkeypatch.setenv("LIVEMIG_RUN", str(run))
    nb = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("print(run.name)"))
    nb = execute(nb, NOTEBOOKS)
    assert nb.cells[-1].outputs[0]["text"].strip() == "seed-memory"
    assert os.environ["LIVEMIG_RUN"] == str(run)


def test_no_notebook_is_left_with_a_placeholder() -> None:
    for path in NOTEBOOKS.glob("*.ipynb"):
        text = "".join(c.source for c in nbformat.read(path, as_version=4).cells)
        assert "TO EXTEND" not in text, f"{path.name} still has a TO EXTEND placeholder"


def test_the_policy_comparison_sweep_is_the_four_policies_on_the_sample() -> None:
    from livemig.sweep.spec import load_sweep

    sweep = load_sweep(REPO / "sweeps" / "consolidation-policies-sample.yaml")
    assert sweep.size == 16 and sweep.seeds == (1, 2)
    policies = [json.loads(v.value) for v in sweep.axes[0].values]
    assert [p["overload"] for p in policies] == ["thr", "iqr", "mad", "lr"]
    assert all(ref.path.name.startswith("planetlab-sample-") for ref in sweep.scenarios)
