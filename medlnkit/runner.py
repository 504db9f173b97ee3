"""``medlnkit run``: execute the numbered notebooks with papermill into one run folder.

The run folder contains ``config.yaml`` (the resolved profile and options), ``env.json`` (versions and
machine), ``notebooks/`` (the executed notebooks), ``tables/`` and ``figures/``. Notebooks run in
order; when one fails, the notebooks and tables already written stay, and the error names the
executed notebook that shows the failing cell.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import sys
from pathlib import Path

import yaml

from medlnkit.errors import MedlnkitError
from medlnkit.profiles import get_profile

logger = logging.getLogger(__name__)

# The notebooks `medlnkit run` executes, in order.
NOTEBOOKS = (
    "00_architecture_tour",
    "01_parameter_counting",
    "02_miss_tuning",
    "03_llava_med_tuning",
    "04_report_generation",
    "05_ood_and_zero_shot",
    "06_figures",
)


def notebooks_folder() -> Path:
    """Return the folder of the kit's notebooks (the repository's notebooks/)."""
    override = os.environ.get("MEDLNKIT_NOTEBOOKS")
    folder = Path(override) if override else Path(__file__).resolve().parent.parent / "notebooks"
    if not folder.is_dir():
        raise MedlnkitError(
            f"notebook folder {str(folder)!r} not found: run from a clone of the repository, or set "
            "MEDLNKIT_NOTEBOOKS to the folder holding 00_architecture_tour.ipynb"
        )
    return folder


def select_notebooks(only: list[str] | None, available: tuple[str, ...] = NOTEBOOKS) -> list[str]:
    """Resolve ``--only`` names ("02_miss_tuning", "02", "02_miss_tuning.ipynb") to notebook names."""
    if not only:
        return list(available)
    chosen = []
    for name in only:
        stem = Path(name).stem
        matches = [n for n in available if n == stem or n.split("_", 1)[0] == stem]
        if not matches:
            raise MedlnkitError(f"unknown notebook {name!r}: expected one of {', '.join(available)}")
        chosen.extend(m for m in matches if m not in chosen)
    return [n for n in available if n in chosen]


def _git_commit() -> str | None:
    """Return the commit of the checkout this medlnkit runs from, or None outside a git checkout."""
    import subprocess

    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def environment_record() -> dict:
    """Return versions of the stack and a description of the machine, for env.json."""
    import importlib.metadata as metadata

    packages = {}
    for name in ("medlnkit", "torch", "transformers", "peft", "accelerate", "papermill", "numpy", "pandas"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    record = {
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        # The cores this process may run on (taskset or a cgroup can allow fewer than cpu_count).
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "packages": packages,
        "time": dt.datetime.now().isoformat(timespec="seconds"),
    }
    try:
        import torch

        record["cuda"] = torch.cuda.is_available()
        record["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        record["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return record


def _kernel_imports_this_package() -> None:
    """Put this medlnkit's parent folder on the kernel's PYTHONPATH and make OpenMP threads wait passively.

    Kernels inherit this process's environment, so the notebooks import the same medlnkit as the
    runner, also from a source checkout that is not installed.
    """
    # Spin-waiting OpenMP threads slowed LLaVA generation about tenfold on a busy 2-core machine
    # (measured with torch 2.13); passive waiting costs nothing on an idle one.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # papermill logs every refresh of a progress bar inside a kernel as one line; the runner shows
    # its own per-cell bar and the notebooks' log lines instead.
    os.environ.setdefault("MEDLNKIT_NO_PROGRESS_BARS", "1")
    package_parent = str(Path(__file__).resolve().parent.parent)
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if package_parent not in current:
        os.environ["PYTHONPATH"] = os.pathsep.join([package_parent, *current])


def _check_data(data_dir: Path, profile) -> None:
    """Load the benchmark's splits once before any notebook starts, so bad data fails in seconds."""
    from medlnkit.data.sources import load_vqa_splits

    settings = profile.miss_train
    load_vqa_splits(data_dir, settings.max_train_examples, settings.max_eval_examples, settings.seed)


def _previous_config(config_file: Path) -> dict | None:
    if not config_file.is_file():
        return None
    try:
        return yaml.safe_load(config_file.read_text()) or None
    except yaml.YAMLError:
        return None


def _check_same_run(previous: dict, config: dict, run_dir: Path) -> None:
    """Reject reusing a run folder with another profile or data folder, which would mix results."""
    old_profile = (previous.get("profile") or {}).get("name")
    new_profile = config["profile"]["name"]
    if old_profile != new_profile or previous.get("data_dir") != config["data_dir"]:
        raise MedlnkitError(
            f"run folder {str(run_dir)!r} contains a run with profile {old_profile!r} and data "
            f"{previous.get('data_dir')!r}; this run uses profile {new_profile!r} and data "
            f"{config['data_dir']!r}. Pass another --out, or remove the folder"
        )


def default_run_folder(profile: str) -> Path:
    return Path("runs") / f"{dt.date.today().isoformat()}-{profile}"


def run_notebooks(
    profile: str = "cpu",
    data_dir: Path | None = None,
    out: Path | None = None,
    only: list[str] | None = None,
    quiet: bool = False,
) -> Path:
    """Execute the notebooks for a profile and return the run folder."""
    resolved = get_profile(profile)
    names = select_notebooks(only)
    if data_dir is not None:
        data_dir = Path(data_dir).resolve()
        _check_data(data_dir, resolved)
    folder = notebooks_folder()
    run_dir = Path(out or default_run_folder(profile)).resolve()
    config_file = run_dir / "config.yaml"
    config = {
        "profile": resolved.to_dict(),
        "data_dir": None if data_dir is None else str(data_dir),
        "notebooks": names,
        "command": " ".join(sys.argv),
    }
    previous = _previous_config(config_file)
    if previous is not None:
        _check_same_run(previous, config, run_dir)
        config["notebooks"] = [n for n in NOTEBOOKS if n in set(previous.get("notebooks", [])) | set(names)]
    try:
        for sub in ("notebooks", "tables", "figures"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    except OSError as error:
        raise MedlnkitError(
            f"cannot write the run folder {str(run_dir)!r} ({error.strerror}): pass --out a folder path you can write to"
        ) from None
    quiet = quiet or bool(os.environ.get("CI"))
    environment = environment_record()
    # What this call runs. A reused folder also reuses finished sweep results, so the bench times a
    # whole run only from a call that ran every notebook into a new folder.
    environment["call"] = {"notebooks": names, "reused_folder": previous is not None}
    (run_dir / "env.json").write_text(json.dumps(environment, indent=2))

    import papermill

    _kernel_imports_this_package()
    parameters = {
        "profile": profile,
        "data_dir": "" if data_dir is None else str(data_dir),
        "out_dir": str(run_dir),
        "quiet": quiet,
    }
    for index, name in enumerate(names, start=1):
        source = folder / f"{name}.ipynb"
        target = run_dir / "notebooks" / f"{name}.ipynb"
        logger.info("notebook %d/%d: %s (profile %s)", index, len(names), name, profile)
        started = dt.datetime.now()
        try:
            papermill.execute_notebook(
                str(source),
                str(target),
                parameters=parameters,
                kernel_name="python3",
                progress_bar=not quiet,
                log_output=not quiet,
                cwd=str(folder),
            )
        except papermill.PapermillExecutionError as error:
            raise MedlnkitError(
                f"notebook {name} failed in cell {error.cell_index} with {error.ename}: {error.evalue}. "
                f"The executed notebook {target} shows the cell; results written before it are kept in {run_dir}"
            ) from None
        seconds = (dt.datetime.now() - started).total_seconds()
        logger.info("notebook %s finished in %.0f s", name, seconds)
    return run_dir
