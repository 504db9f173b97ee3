"""Shared fixtures: the real benchmark folder comes from MEDLNKIT_DATA and is never committed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a model hub: transformers and huggingface_hub raise instead of downloading.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Spin-waiting OpenMP threads slow tests sharing 2 cores with notebook kernels; see medlnkit.runner.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """Return the folder named by MEDLNKIT_DATA (holding vqa_rad/ and slake/), or skip."""
    value = os.environ.get("MEDLNKIT_DATA")
    if not value:
        pytest.skip("MEDLNKIT_DATA is unset: set it to the folder holding vqa_rad/ and slake/")
    root = Path(value)
    if not root.is_dir():
        pytest.skip(f"MEDLNKIT_DATA={value} is not a folder")
    return root


@pytest.fixture(scope="session")
def vqa_rad_root(real_data_root: Path) -> Path:
    """Return the real VQA-RAD folder (MEVF split layout), or skip."""
    root = real_data_root / "vqa_rad"
    if not (root / "testset.json").exists():
        pytest.skip(f"{root} holds no testset.json: the real VQA-RAD files are not available")
    return root


@pytest.fixture(scope="session")
def slake_root(real_data_root: Path) -> Path:
    """Return the real Slake question files folder (images may be absent), or skip."""
    root = real_data_root / "slake"
    if not (root / "test.json").exists():
        pytest.skip(f"{root} holds no test.json: the real Slake files are not available")
    return root
