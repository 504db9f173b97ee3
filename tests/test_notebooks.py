"""Every notebook runs under papermill on the smoke profile, then passes nbval in lax mode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medlnkit.benchmarks.runs import read_run_timing
from medlnkit.runner import NOTEBOOKS, notebooks_folder, run_notebooks

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_committed_clean(name):
    notebook = json.loads((notebooks_folder() / f"{name}.ipynb").read_text())
    code_cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code_cells), "outputs committed"
    tagged = [c for c in code_cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    assert "profile = " in "".join(tagged[0]["source"])


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    return run_notebooks(profile="smoke", out=tmp_path_factory.mktemp("run") / "smoke", quiet=True)


@pytest.mark.slow
def test_smoke_run_writes_run_folder(smoke_run):
    assert (smoke_run / "config.yaml").exists()
    env = json.loads((smoke_run / "env.json").read_text())
    assert env["packages"]["torch"]
    for name in NOTEBOOKS:
        assert (smoke_run / "notebooks" / f"{name}.ipynb").exists()
    assert (smoke_run / "tables" / "table1_miss.csv").exists()
    assert (smoke_run / "figures" / "miss_loss_curves.png").stat().st_size > 10_000
    assert (smoke_run / "tables" / "table2_llava.csv").exists()
    assert (smoke_run / "figures" / "llava_loss_curves.png").stat().st_size > 10_000
    for number in (3, 4, 5):
        assert list((smoke_run / "tables").glob(f"table{number}_*.csv")), f"table {number} missing"
    assert (smoke_run / "figures" / "figure3_loss_curves.png").exists()


@pytest.mark.slow
def test_smoke_run_records_whole_call(smoke_run):
    timing = read_run_timing(smoke_run)
    assert timing["whole_sequence"] is True
    assert timing["complete"] is True
    assert timing["profile"] == "smoke"


@pytest.mark.slow
def test_rerun_with_only_is_not_whole(smoke_run, tmp_path):
    copy = tmp_path / "smoke"
    shutil.copytree(smoke_run, copy)
    run_notebooks(profile="smoke", out=copy, only=["06_figures"], quiet=True)
    env = json.loads((copy / "env.json").read_text())
    assert env["call"] == {"notebooks": ["06_figures"], "reused_folder": True}
    assert read_run_timing(copy)["whole_sequence"] is False


@pytest.mark.slow
def test_executed_notebooks_pass_nbval(smoke_run):
    executed = sorted(str(p) for p in (smoke_run / "notebooks").glob("*.ipynb"))
    assert len(executed) == len(NOTEBOOKS)
    command = [
        sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
        "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), *executed,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=smoke_run, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
