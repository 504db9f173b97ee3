"""Tests for image loading, the model-input tensor and the DICOM-to-8-bit mapping."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from medlnkit.assets import pydicom_data_folder
from medlnkit.data.images import (
    CLIP_MEAN,
    CLIP_STD,
    dicom_value,
    fit_within,
    load_image,
    percentile_to_uint8,
    render_dicom_frame,
    to_pixel_values,
    window_to_uint8,
)
from medlnkit.errors import DataError, MedlnkitError


def test_load_image_grayscale_becomes_rgb(tmp_path):
    path = tmp_path / "gray.jpg"
    Image.fromarray(np.full((20, 30), 77, dtype=np.uint8)).save(path)
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.size == (30, 20)
    assert np.asarray(image)[5, 5].tolist() == [77, 77, 77]


def test_load_image_missing_file(tmp_path):
    path = tmp_path / "imgs" / "absent.jpg"
    with pytest.raises(DataError) as error:
        load_image(path)
    assert str(path) in str(error.value)
    assert "re-download" in str(error.value)


def test_load_image_truncated_jpeg(tmp_path):
    path = tmp_path / "broken.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError) as error:
        load_image(path)
    assert str(path) in str(error.value)


def test_load_image_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    with pytest.raises(DataError) as error:
        load_image(path)
    assert str(path) in str(error.value)


def test_pixel_values_shape_and_dtype():
    images = [Image.new("L", (50, 30), 10), Image.new("RGB", (17, 90), (1, 2, 3))]
    batch = to_pixel_values(images, 32)
    assert batch.shape == (2, 3, 32, 32)
    assert batch.dtype == torch.float32


def test_pixel_values_normalise_constant_colour():
    colour = (255, 0, 128)
    batch = to_pixel_values([Image.new("RGB", (40, 24), colour)], 16)
    for channel in range(3):
        expected = (colour[channel] / 255.0 - CLIP_MEAN[channel]) / CLIP_STD[channel]
        assert torch.allclose(batch[0, channel], torch.full((16, 16), expected), atol=1e-5)


def test_pixel_values_custom_statistics():
    batch = to_pixel_values([Image.new("L", (8, 8), 255)], 4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert torch.allclose(batch, torch.ones((1, 3, 4, 4)))


def test_pixel_values_empty_batch():
    assert to_pixel_values([], 8).shape == (0, 3, 8, 8)


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_pixel_values_invalid_size(size):
    with pytest.raises(MedlnkitError, match="image size"):
        to_pixel_values([Image.new("RGB", (4, 4))], size)


def test_pixel_values_rejects_paths(tmp_path):
    with pytest.raises(MedlnkitError, match="load_image"):
        to_pixel_values([tmp_path / "x.jpg"], 8)


def test_window_follows_dicom_linear_function():
    values = np.array([-100.0, -10.0, 40.0, 89.0, 89.5, 500.0])
    mapped = window_to_uint8(values, center=40, width=100)
    assert mapped.dtype == np.uint8
    assert mapped.tolist() == [0, 0, 129, 255, 255, 255]


def test_window_rejects_width_below_one():
    with pytest.raises(MedlnkitError, match="window width"):
        window_to_uint8(np.zeros(3), center=0, width=0.5)


def test_percentile_stretch_clips_tails():
    ramp = np.arange(1000, dtype=np.float64)
    mapped = percentile_to_uint8(ramp)
    assert mapped[0] == 0
    assert mapped[-1] == 255
    assert np.all(np.diff(mapped.astype(int)) >= 0)


def test_percentile_stretch_constant_image():
    assert percentile_to_uint8(np.full((4, 4), 7.0)).tolist() == np.zeros((4, 4), dtype=np.uint8).tolist()


def test_fit_within_keeps_aspect_ratio():
    image = fit_within(Image.new("L", (1000, 500)), 200)
    assert image.size == (200, 100)
    small = Image.new("L", (64, 64))
    assert fit_within(small, 200) is small


def test_render_monochrome1_is_inverted():
    path = pydicom_data_folder() / "RG1_UNCR.dcm"
    raw = pydicom.dcmread(path).pixel_array
    image, mapping = render_dicom_frame(path)
    pixels = np.asarray(image)
    assert image.mode == "L"
    assert pixels.shape == raw.shape
    assert "inverted" in mapping
    # In MONOCHROME1 the smallest stored value is the brightest.
    darkest_raw = np.unravel_index(np.argmin(raw), raw.shape)
    brightest_raw = np.unravel_index(np.argmax(raw), raw.shape)
    assert pixels[darkest_raw] > pixels[brightest_raw]


def test_render_uses_window_from_file():
    path = pydicom_data_folder() / "693_UNCR.dcm"
    dataset = pydicom.dcmread(path)
    _, mapping = render_dicom_frame(path)
    assert mapping == f"window {float(dataset.WindowCenter):g}/{float(dataset.WindowWidth):g}"


def test_render_palette_to_rgb():
    image, mapping = render_dicom_frame(pydicom_data_folder() / "OBXXXX1A.dcm")
    assert image.mode == "RGB"
    assert mapping == "palette colour LUT"


def test_render_multiframe_needs_frame():
    path = pydicom_data_folder() / "emri_small.dcm"
    with pytest.raises(DataError, match="frame"):
        render_dicom_frame(path)
    image, _ = render_dicom_frame(path, 3)
    assert image.size == (64, 64)


def test_dicom_value_reads_functional_groups():
    dataset = pydicom.dcmread(pydicom_data_folder() / "eCT_Supplemental.dcm", stop_before_pixels=True)
    assert "WindowCenter" not in dataset
    assert float(dicom_value(dataset, "WindowCenter", 0)) == 49.0
    assert [float(v) for v in dicom_value(dataset, "ImageOrientationPatient", 1)] == [-1, 0, 0, 0, 1, 0]
    assert dicom_value(dataset, "ViewPosition", 0) is None
