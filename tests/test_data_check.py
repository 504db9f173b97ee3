"""Tests for ``check_dataset``, the text behind ``medlnkit data check``."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.dataset_layouts import (
    build_iu_xray_folder,
    build_mimic_cxr,
    build_slake,
    build_vqa_rad_mevf,
    build_vqa_rad_osf,
    build_xraygpt_openi,
)

from medlnkit.assets import iu_xray_reports_archive
from medlnkit.data.check import check_dataset
from medlnkit.errors import DataError, MedlnkitError

REPOSITORY = Path(__file__).resolve().parents[1]


def test_slake_check_lines(tmp_path):
    root = build_slake(tmp_path / "slake", omit_images=("xmlab4/source.jpg",))
    text = check_dataset("slake", root)
    lines = text.splitlines()
    assert lines[0] == f"Slake in {root}"
    assert "[train]" in lines
    assert "  records read: 7, returned: 5" in lines
    assert "    1 x missing or empty field 'answer' (e.g. 3)" in lines
    assert "    1 x unknown answer_type 'FREE' (e.g. 4)" in lines
    assert "  language en: 3 questions, answer types: OPEN 1, CLOSED 2" in lines
    assert "  language zh: 2 questions, answer types: OPEN 1, CLOSED 1" in lines
    assert "  images found: 1 of 2 referenced" in lines
    assert "  missing images: 1 files (xmlab4/source.jpg)" in lines


def test_slake_check_missing_split_file(tmp_path):
    root = build_slake(tmp_path / "slake")
    (root / "validate.json").unlink()
    lines = check_dataset("slake", root).splitlines()
    position = lines.index("[validate]")
    assert lines[position + 1] == "  validate.json: not found"


def test_slake_check_without_split_files_raises(tmp_path):
    (tmp_path / "slake").mkdir()
    with pytest.raises(DataError, match=r"none of the Slake split files.*data_cards/slake\.md"):
        check_dataset("slake", tmp_path / "slake")


def test_vqa_rad_check_overlap(tmp_path):
    root = build_vqa_rad_mevf(tmp_path / "vqa_rad")
    lines = check_dataset("vqa-rad", root).splitlines()
    assert "  layout: MEVF split (trainset.json / testset.json)" in lines
    assert "  normalised: 1 x answer_type 'CLOSED ' -> 'CLOSED'" in lines
    assert "  answer types: OPEN 2, CLOSED 3" in lines
    assert "[train/test overlap]" in lines
    assert (
        "  images: 2 in train, 3 in test, 2 in both (2 test questions are about an image seen "
        "in training)"
    ) in lines
    assert (
        "  exact question overlap: 1 test questions repeat a train question on the same image "
        "(1 with the same answer)"
    ) in lines
    assert (
        "    e.g. test qid 11 = train qid 1 (synpic100.jpg): 'is there a Pneumothorax'"
    ) in lines


def test_vqa_rad_check_osf_layout(tmp_path):
    root = build_vqa_rad_osf(tmp_path / "osf")
    text = check_dataset("vqa_rad", root)
    assert "layout: official OSF release (phrase_type marks the test split)" in text
    assert "1 x unknown phrase_type 'draft' (e.g. 6)" in text


def test_iu_xray_check_counts(tmp_path):
    root = build_iu_xray_folder(tmp_path / "iu")
    build_xraygpt_openi(root, image_folder="images")
    lines = check_dataset("iu-xray", root).splitlines()
    assert "  records read: 4, returned: 3" in lines
    assert "    1 x no FINDINGS or IMPRESSION text (e.g. CXR3)" in lines
    assert "  with findings: 2, without findings: 1" in lines
    assert "  reports with at least one image file: 1 of 3" in lines
    assert "  missing images: 1 files (CXR2_IM-0652-1001.png)" in lines
    assert any("filter_cap.json: 3 captions, 2 attached" in line for line in lines)


def test_iu_xray_check_real_archive():
    try:
        importlib.metadata.distribution("torchxrayvision")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("torchxrayvision is not installed: it ships the real IU X-ray report archive")
    lines = check_dataset("iu-xray", iu_xray_reports_archive()).splitlines()
    assert "  records read: 3955, returned: 3927" in lines
    assert "  with findings: 3425, without findings: 502" in lines


def test_mimic_cxr_check_splits(tmp_path):
    root = build_mimic_cxr(tmp_path / "mimic", omit_images=("174413ec-4ec4c1f7",))
    lines = check_dataset("mimic-cxr", root).splitlines()
    assert "  split file: mimic-cxr-2.0.0-split.csv.gz, 7 images listed" in lines
    test_section = lines[lines.index("[test]") :]
    assert "  images listed: 5" in test_section
    assert "    1 x report file missing (e.g. s53000003)" in test_section
    assert "  with findings: 1, without findings: 2" in test_section
    assert "  impression taken from the last paragraph: 1" in test_section
    assert "  images found: 3 of 4 referenced" in test_section
    assert "  missing images: 1 files (s50414267/174413ec-4ec4c1f7.jpg)" in test_section


def test_open_images_finds_corrupt_file(tmp_path):
    root = build_vqa_rad_mevf(tmp_path / "vqa_rad")
    (root / "images" / "synpic300.jpg").write_bytes(b"not a jpeg")
    truncated = root / "images" / "synpic200.jpg"
    truncated.write_bytes(truncated.read_bytes()[:-40])
    text = check_dataset("vqa-rad", root, open_images=True)
    assert "  images opened: 1 of 3 decode" in text.splitlines()
    assert "images that fail to decode: synpic200.jpg" in text
    assert "synpic300.jpg (cannot identify image file" in text


def test_unknown_dataset_raises(tmp_path):
    with pytest.raises(MedlnkitError, match=r"invalid dataset 'pathvqa'.*slake, vqa-rad"):
        check_dataset("pathvqa", tmp_path)


def test_missing_root_raises(tmp_path):
    with pytest.raises(DataError, match=r"VQA-RAD folder .* was not found.*vqa_rad\.md"):
        check_dataset("vqa-rad", tmp_path / "absent")


@pytest.mark.realdata
def test_real_vqa_rad_check(vqa_rad_root):
    lines = check_dataset("vqa-rad", vqa_rad_root).splitlines()
    assert "  answer types: OPEN 179, CLOSED 272" in lines
    assert "  normalised: 2 x answer_type 'CLOSED ' -> 'CLOSED'" in lines
    assert "  images found: 203 of 203 referenced" in lines
    assert (
        "  exact question overlap: 16 test questions repeat a train question on the same image "
        "(16 with the same answer)"
    ) in lines


@pytest.mark.realdata
def test_real_slake_check(slake_root):
    lines = check_dataset("slake", slake_root).splitlines()
    assert "  language en: 1061 questions, answer types: OPEN 645, CLOSED 416" in lines
    assert "  language zh: 1033 questions, answer types: OPEN 613, CLOSED 420" in lines
    assert f"  note: image folder {slake_root / 'imgs'} is absent: no image was checked" in lines


def test_cli_prints_check(tmp_path):
    root = build_slake(tmp_path / "slake")
    command = [sys.executable, "-m", "medlnkit", "data", "check", "--dataset", "slake"]
    result = subprocess.run(
        [*command, "--root", str(root)],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        env={"PYTHONPATH": str(REPOSITORY), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"Slake in {root}" in result.stdout
    missing = subprocess.run(
        [*command, "--root", str(tmp_path / "absent")],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        env={"PYTHONPATH": str(REPOSITORY), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    assert "data_cards/slake.md" in missing.stderr
