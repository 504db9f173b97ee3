"""Load images from disk and turn them into model inputs, plus the 8-bit mappings the sample uses.

Everything here works with PIL and numpy only: torchvision is not used because the registry's
build fails to import beside the pinned CPU torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import torch
from PIL import Image, UnidentifiedImageError
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, pixel_array

from medlnkit.errors import DataError, MedlnkitError

logger = logging.getLogger(__name__)

# CLIP's per-channel statistics, which BLIP and LLaVA-Med's vision towers also use.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def load_image(path: str | Path) -> Image.Image:
    """Read one image file and return it decoded, in RGB.

    Raises DataError naming the file when it is missing or cannot be decoded, so that a broken
    record stops a run with a readable message instead of a PIL traceback.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"image file not found: {path}: re-download the dataset images or remove the records "
            "that refer to this file"
        )
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        # PIL raises OSError for truncated data and SyntaxError for some malformed headers.
        raise DataError(
            f"image file {path} could not be decoded ({error}): re-download it, or remove the "
            "records that refer to it"
        ) from error


def to_pixel_values(
    images: Sequence[Image.Image],
    size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """Resize, scale and normalise PIL images into one float32 batch of shape (B, 3, size, size).

    Each image is converted to RGB, resized to ``size`` x ``size`` with PIL's bicubic filter
    (aspect ratio is not kept, as in BLIP's and CLIP's processors), scaled to [0, 1] and
    normalised per channel with ``mean`` and ``std``.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise MedlnkitError(f"invalid image size {size!r}: pass a positive number of pixels")
    if len(mean) != 3 or len(std) != 3:
        raise MedlnkitError(
            f"mean {tuple(mean)} and std {tuple(std)} must have 3 values each, one per RGB channel"
        )
    if any(value <= 0 for value in std):
        raise MedlnkitError(f"invalid std {tuple(std)}: every value must be positive")

    arrays = []
    for position, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise MedlnkitError(
                f"item {position} is a {type(image).__name__}, not a PIL image: load files with "
                "medlnkit.data.images.load_image first"
            )
        resized = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(resized, dtype=np.float32) / 255.0)

    if not arrays:
        return torch.empty((0, 3, size, size), dtype=torch.float32)
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    mean_tensor = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_tensor = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((batch - mean_tensor) / std_tensor).contiguous()


def window_to_uint8(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map values to 0-255 with the linear VOI window of DICOM PS3.3 C.11.2.1.2.

    ``values`` are modality values (Hounsfield units for CT, after Rescale Slope/Intercept).
    """
    if width < 1:
        raise MedlnkitError(f"invalid window width {width}: DICOM requires a width of at least 1")
    scaled = ((values.astype(np.float64) - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def percentile_to_uint8(values: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Map values to 0-255 linearly between their ``low`` and ``high`` percentiles, clipping outside."""
    values = values.astype(np.float64)
    bottom, top = np.percentile(values, [low, high])
    if top <= bottom:
        # A nearly constant image: keep its ordering instead of dividing by zero.
        bottom, top = float(values.min()), float(values.max())
        if top <= bottom:
            return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - bottom) / (top - bottom) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """Return ``image`` shrunk with a bicubic filter so that its longer side is at most ``max_side``."""
    width, height = image.size
    longer = max(width, height)
    if longer <= max_side:
        return image
    scale = max_side / longer
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(new_size, Image.Resampling.BICUBIC)


def dicom_value(dataset: Dataset, keyword: str, frame: int | None = None):
    """Return the value of attribute ``keyword``, or None when it is absent or empty.

    Enhanced multi-frame objects (Enhanced CT/MR) keep orientation, windowing and rescaling inside
    functional group macros, so after the top level this looks in the frame's item of the
    Per-frame Functional Groups Sequence, then in the Shared Functional Groups Sequence.
    """
    if keyword in dataset and not _is_empty(dataset[keyword].value):
        return dataset[keyword].value
    groups = []
    if frame is not None and "PerFrameFunctionalGroupsSequence" in dataset:
        groups.append(dataset.PerFrameFunctionalGroupsSequence[frame])
    if "SharedFunctionalGroupsSequence" in dataset:
        groups.append(dataset.SharedFunctionalGroupsSequence[0])
    for group in groups:
        for element in group:
            if element.VR != "SQ":
                continue
            for item in element.value:
                if keyword in item and not _is_empty(item[keyword].value):
                    return item[keyword].value
    return None


def _is_empty(value) -> bool:
    if value is None:
        return True
    if isinstance(value, (str, bytes)):
        return len(value.strip()) == 0
    try:
        return len(value) == 0
    except TypeError:
        return False


def render_dicom_frame(path: str | Path, frame: int | None = None) -> tuple[Image.Image, str]:
    """Decode one frame of a DICOM file into an 8-bit PIL image and describe the mapping used.

    Monochrome frames go through the modality rescale, then the first VOI window (Window
    Center/Width) when the file has one, else a 1st-99th percentile stretch; MONOCHROME1 is
    inverted so that higher values are brighter. Palette and RGB frames are returned in RGB
    (pydicom converts YBR to RGB while decoding). Returns the image (mode "L" or "RGB") and a short
    description such as ``"window 40/100"``.
    """
    path = Path(path)
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    frame_count = int(dataset.get("NumberOfFrames", 1) or 1)
    if frame is None and frame_count > 1:
        raise DataError(f"{path} holds {frame_count} frames: pass the frame index to render")
    try:
        values = pixel_array(path, index=frame)
    except Exception as error:  # pydicom raises several types for missing decoder plugins
        raise DataError(
            f"pixel data of {path} (frame {frame}) could not be decoded ({error}): use an "
            "uncompressed copy of this image or install a decoder plugin such as pylibjpeg"
        ) from error

    photometric = str(dataset.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR":
        lut_bits = int(dataset.RedPaletteColorLookupTableDescriptor[2])
        rgb = apply_color_lut(values, dataset)
        if lut_bits > 8:
            rgb = rgb >> (lut_bits - 8)
        return Image.fromarray(rgb.astype(np.uint8)), "palette colour LUT"
    if int(dataset.get("SamplesPerPixel", 1)) == 3:
        bits_stored = int(dataset.get("BitsStored", 8))
        if bits_stored > 8:
            values = values >> (bits_stored - 8)
        return Image.fromarray(values.astype(np.uint8)), "RGB as stored"

    slope = float(dicom_value(dataset, "RescaleSlope", frame) or 1.0)
    intercept = float(dicom_value(dataset, "RescaleIntercept", frame) or 0.0)
    modality_values = values.astype(np.float64) * slope + intercept
    center = dicom_value(dataset, "WindowCenter", frame)
    width = dicom_value(dataset, "WindowWidth", frame)
    if center is not None and width is not None:
        center, width = _first(center), _first(width)
        gray = window_to_uint8(modality_values, center, width)
        mapping = f"window {center:g}/{width:g}"
    else:
        gray = percentile_to_uint8(modality_values)
        mapping = "percentile 1-99"
    if photometric == "MONOCHROME1":
        gray = 255 - gray
        mapping += ", inverted (MONOCHROME1)"
    return Image.fromarray(gray), mapping


def _first(value) -> float:
    # Window Center/Width may hold several windows; the first is the default presentation.
    if isinstance(value, Sequence) and not isinstance(value, str):
        return float(value[0])
    return float(value)
