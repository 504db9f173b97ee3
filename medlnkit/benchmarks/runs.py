"""Wall time of the whole notebook sequence (``medlnkit run``) per profile.

Papermill stores each executed notebook's duration in its metadata (``metadata.papermill.duration``),
so the time of an earlier run is read from its run folder, and a new run is timed around the command.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from medlnkit.errors import MedlnkitError
from medlnkit.runner import NOTEBOOKS

logger = logging.getLogger(__name__)

# The folder that contains the medlnkit package: the repository root in a source checkout.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _read_json(path: Path) -> dict:
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MedlnkitError(f"{path} could not be read as JSON ({error}): rerun `medlnkit run` to rewrite it") from error
    if not isinstance(content, dict):
        raise MedlnkitError(f"{path} does not contain a JSON object: rerun `medlnkit run` to rewrite it")
    return content


def _papermill_metadata(run_dir: Path) -> dict[str, dict]:
    """Return the papermill metadata of each executed notebook in ``run_dir/notebooks``, by name."""
    metadata = {}
    for path in sorted((Path(run_dir) / "notebooks").glob("*.ipynb")):
        record = (_read_json(path).get("metadata") or {}).get("papermill") or {}
        metadata[path.stem] = record if isinstance(record, dict) else {}
    return metadata


def _seconds(value) -> float | None:
    """Return a papermill duration as a number, or None when it is missing or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def read_run_timing(run_dir: Path) -> dict:
    """Return the profile, per-notebook durations and their sum for one run folder."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise MedlnkitError(
            f"config.yaml not found in {run_dir}: pass a run folder that `medlnkit run` wrote"
        )
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise MedlnkitError(f"{config_path} could not be read ({error}): rerun `medlnkit run`") from error
    if not isinstance(config, dict):
        raise MedlnkitError(f"{config_path} does not contain a mapping: rerun `medlnkit run`")
    metadata = _papermill_metadata(run_dir)
    durations = {name: _seconds(record.get("duration")) for name, record in metadata.items()}
    planned = config.get("notebooks") or []
    if not isinstance(planned, list):
        raise MedlnkitError(f"{config_path} has an invalid notebooks field (expected a list): rerun `medlnkit run`")
    missing = [name for name in planned if durations.get(name) is None]
    # papermill records the duration of a notebook that raised, and marks it with "exception".
    failed = [name for name in planned if metadata.get(name, {}).get("exception")]
    # env.json, written by `medlnkit run`, records the machine, the commit and the last call.
    env_path = run_dir / "env.json"
    env = _read_json(env_path) if env_path.is_file() else {}
    call = env.get("call") if isinstance(env.get("call"), dict) else {}
    profile = config.get("profile")
    return {
        "run_dir": str(run_dir),
        "profile": profile.get("name") if isinstance(profile, dict) else None,
        "started": env.get("time"),
        "git_commit": env.get("git_commit"),
        "cpu_count": env.get("cpu_count"),
        "usable_cores": env.get("usable_cores"),
        "torch_threads": env.get("torch_threads"),
        "notebooks": durations,
        # Only the planned notebooks count: a stray file in notebooks/ is not part of the run.
        "notebooks_seconds": sum(durations[name] for name in planned if durations.get(name) is not None),
        "data_dir": config.get("data_dir"),
        # True when the last call ran every notebook into a new folder, so no duration or sweep result
        # comes from an earlier call. None for folders whose env.json does not record the call.
        "whole_sequence": (
            None if not call else call.get("notebooks") == list(NOTEBOOKS) and call.get("reused_folder") is False
        ),
        # A failed or interrupted run lacks some planned notebooks, and its sum is not a whole run.
        "complete": bool(planned) and not missing and not failed,
        "missing_notebooks": missing,
        "failed_notebooks": failed,
        "source": "papermill duration in each executed notebook's metadata",
    }


def find_latest_run(profile: str, roots: list[Path] | None = None) -> Path | None:
    """Return the newest ``<root>/runs/*-<profile>`` folder holding executed notebooks, or None."""
    roots = roots or [Path.cwd(), SOURCE_ROOT]
    candidates = set()
    for root in roots:
        for folder in (Path(root) / "runs").glob(f"*-{profile}"):
            if (folder / "config.yaml").is_file() and any((folder / "notebooks").glob("*.ipynb")):
                candidates.add(folder.resolve())
    if not candidates:
        return None
    return max(candidates, key=lambda folder: (folder / "config.yaml").stat().st_mtime)


def time_notebook_run(profile: str, out_dir: Path) -> dict:
    """Run ``medlnkit run --profile PROFILE --quiet`` into ``out_dir`` and return its timing.

    ``wall_seconds`` covers the whole command (start-up, every kernel, writing the run folder).
    """
    command = [sys.executable, "-m", "medlnkit", "run", "--profile", profile, "--out", str(out_dir), "--quiet"]
    environment = dict(os.environ)
    # The child imports the same medlnkit as this process, also when it runs from a source tree.
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), environment.get("PYTHONPATH")]))
    logger.info("timing `medlnkit run --profile %s` into %s", profile, out_dir)
    started = time.perf_counter()
    completed = subprocess.run(command, env=environment, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise MedlnkitError(
            f"`medlnkit run --profile {profile}` failed with exit status {completed.returncode}: {last}"
        )
    timing = read_run_timing(out_dir)
    timing.update(wall_seconds=wall, command=" ".join(["medlnkit", *command[3:]]))
    return timing
