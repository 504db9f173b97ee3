"""Tests for the embedded real-image sample: layout, splits, answers against the DICOM tags, cache."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medlnkit.data import sample as sample_module
from medlnkit.data.images import load_image
from medlnkit.data.sample import SAMPLE_NAME, SPLITS, build_sample, plane_from_orientation, sample_records
from medlnkit.errors import DataError

# The fields of every record in Slake 1.0's train/validate/test.json.
SLAKE_FIELDS = {
    "img_id",
    "img_name",
    "question",
    "answer",
    "q_lang",
    "location",
    "modality",
    "answer_type",
    "base_type",
    "content_type",
    "triple",
    "qid",
}
MODALITY_OPEN = {
    "What modality is used to take this image?",
    "How was this image taken?",
    "What imaging modality was used?",
}
PLANE_OPEN = {"What is the scanning plane of this image?", "In what plane is this image scanned?"}


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    build_sample(root)
    return root


@pytest.fixture(scope="module")
def sample_dir(cache_root) -> Path:
    return cache_root / SAMPLE_NAME


@pytest.fixture(scope="module")
def splits(sample_dir) -> dict[str, list[dict]]:
    return {split: json.loads((sample_dir / f"{split}.json").read_text()) for split in SPLITS}


@pytest.fixture(scope="module")
def manifest(sample_dir) -> dict:
    return json.loads((sample_dir / "manifest.json").read_text())


def _by_image(splits: dict[str, list[dict]]) -> dict[int, list[dict]]:
    grouped: dict[int, list[dict]] = {}
    for records in splits.values():
        for record in records:
            grouped.setdefault(record["img_id"], []).append(record)
    return grouped


def _source_path(entry: dict) -> Path:
    return Path(importlib.metadata.distribution(entry["package"]).locate_file(entry["file"]))


def test_layout_is_slake(sample_dir, splits):
    assert (sample_dir / "manifest.json").is_file()
    for split, records in splits.items():
        assert records, f"{split} is empty"
        for record in records:
            assert set(record) == SLAKE_FIELDS
            assert isinstance(record["img_id"], int)
            assert isinstance(record["qid"], int)
            assert record["q_lang"] == "en"
            assert record["base_type"] == "vqa"
            assert record["triple"] == ["vhead", "_", "_"]
            assert record["img_name"] == f"sample{record['img_id']:03d}/source.jpg"


def test_sizes_within_target(splits):
    images = {record["img_id"] for records in splits.values() for record in records}
    questions = sum(len(records) for records in splits.values())
    assert 60 <= len(images) <= 120
    assert 300 <= questions <= 600


def test_qids_unique_across_splits(splits):
    qids = [record["qid"] for records in splits.values() for record in records]
    assert len(qids) == len(set(qids))


def test_splits_disjoint_by_image(splits):
    images = {split: {record["img_name"] for record in records} for split, records in splits.items()}
    assert not images["train"] & images["validate"]
    assert not images["train"] & images["test"]
    assert not images["validate"] & images["test"]
    total = sum(len(names) for names in images.values())
    assert 0.6 <= len(images["train"]) / total <= 0.8


def test_answer_types_in_every_split(splits):
    for split, records in splits.items():
        types = {record["answer_type"] for record in records}
        assert types == {"OPEN", "CLOSED"}, split


def test_yes_no_answers_balanced(splits):
    records = [record for split_records in splits.values() for record in split_records]
    answers = Counter(record["answer"] for record in records if record["answer"] in ("Yes", "No"))
    assert answers["Yes"] > 50
    assert abs(answers["Yes"] - answers["No"]) <= 0.1 * (answers["Yes"] + answers["No"])
    modality_questions = Counter(
        record["answer"]
        for record in records
        if record["question"].startswith("Is this ")
        and record["question"].endswith(" image?")
        and "weighted" not in record["question"]
    )
    assert abs(modality_questions["Yes"] - modality_questions["No"]) <= 1


def test_every_image_exists_and_decodes(sample_dir, splits):
    names = {record["img_name"] for records in splits.values() for record in records}
    for name in sorted(names):
        image = load_image(sample_dir / "imgs" / name)
        assert image.mode == "RGB"
        assert min(image.size) >= 64
        assert max(image.size) <= sample_module.MAX_SIDE


def test_manifest_lists_every_image(manifest, splits):
    assert {entry["img_name"] for entry in manifest["images"]} == {
        record["img_name"] for records in splits.values() for record in records
    }
    for entry in manifest["images"]:
        assert entry["package"] in ("pydicom", "pydicom-data", "nilearn")
        assert entry["package_version"] == importlib.metadata.version(entry["package"])
        assert _source_path(entry).is_file()
        assert entry["split"] in SPLITS


def test_modality_answers_match_dicom_tag(manifest, splits):
    expected = {"CT": "CT", "MR": "MRI", "CR": "X-Ray", "US": "Ultrasound", "NM": "Nuclear Medicine"}
    records = _by_image(splits)
    checked = 0
    for entry in manifest["images"]:
        if entry["package"] == "nilearn":
            continue
        dataset = pydicom.dcmread(_source_path(entry), stop_before_pixels=True)
        answers = [r["answer"] for r in records[entry["img_id"]] if r["question"] in MODALITY_OPEN]
        assert answers == [expected[dataset.Modality]], entry["file"]
        checked += 1
    assert checked >= 30


def test_plane_answers_match_orientation_tag(manifest, splits):
    axis_names = ["Sagittal Plane", "Coronal Plane", "Transverse Plane"]
    records = _by_image(splits)
    checked = 0
    for entry in manifest["images"]:
        if entry["package"] == "nilearn":
            continue
        dataset = pydicom.dcmread(_source_path(entry), stop_before_pixels=True)
        if "ImageOrientationPatient" not in dataset:
            continue
        orientation = np.array([float(value) for value in dataset.ImageOrientationPatient])
        normal = np.abs(np.cross(orientation[:3], orientation[3:]))
        answers = [r["answer"] for r in records[entry["img_id"]] if r["question"] in PLANE_OPEN]
        if normal.max() < np.cos(np.radians(30)):
            assert answers == [], entry["file"]
        else:
            assert answers == [axis_names[int(np.argmax(normal))]], entry["file"]
        checked += 1
    assert checked >= 6


def test_mni_plane_follows_slicing_axis(manifest, splits):
    axis_names = {0: "Sagittal Plane", 1: "Coronal Plane", 2: "Transverse Plane"}
    records = _by_image(splits)
    mni = [entry for entry in manifest["images"] if entry["package"] == "nilearn"]
    assert {entry["slice"]["axis"] for entry in mni} == {0, 1, 2}
    for entry in mni:
        answers = [r["answer"] for r in records[entry["img_id"]] if r["question"] in PLANE_OPEN]
        assert answers == [axis_names[entry["slice"]["axis"]]]


def test_view_and_body_part_match_tags(manifest, splits):
    records = _by_image(splits)
    entry = next(e for e in manifest["images"] if e["file"].endswith("RG1_UNCR.dcm"))
    dataset = pydicom.dcmread(_source_path(entry), stop_before_pixels=True)
    answers = {r["question"]: r["answer"] for r in records[entry["img_id"]]}
    assert answers["In which view was this radiograph taken?"] == dataset.ViewPosition == "PA"
    assert answers["Which part of the body does this image belong to?"].upper() == dataset.BodyPartExamined


def test_contrast_answers_match_tags(manifest, splits):
    records = _by_image(splits)
    entry = next(e for e in manifest["images"] if e["file"].endswith("CT_small.dcm"))
    dataset = pydicom.dcmread(_source_path(entry), stop_before_pixels=True)
    assert dataset.ContrastBolusAgent
    answers = {r["question"]: r["answer"] for r in records[entry["img_id"]]}
    used = answers.get("Was a contrast agent used for this image?")
    without = answers.get("Was this image taken without a contrast agent?")
    assert (used, without) in (("Yes", None), (None, "No"))


def test_no_question_without_metadata(manifest, splits):
    records = _by_image(splits)
    entry = next(e for e in manifest["images"] if e["file"].endswith("US1_UNCR.dcm"))
    content = {r["content_type"] for r in records[entry["img_id"]]}
    assert content == {"Modality"}


def test_plane_from_orientation_oblique():
    assert plane_from_orientation([1, 0, 0, 0, 1, 0]) == "Transverse Plane"
    assert plane_from_orientation([0, 1, 0, 0, 0, -1]) == "Sagittal Plane"
    assert plane_from_orientation([1, 0, 0, 0, 0, -1]) == "Coronal Plane"
    assert plane_from_orientation([0.569486, 0.822001, 0, 0, 0, -1]) is None
    with pytest.raises(DataError):
        plane_from_orientation([1, 0, 0, 1, 0, 0])


def test_rebuild_is_deterministic(sample_dir, tmp_path):
    other = build_sample(tmp_path, force=True)
    for name in [f"{split}.json" for split in SPLITS] + ["manifest.json"]:
        assert (other / name).read_bytes() == (sample_dir / name).read_bytes(), name


def test_cache_is_reused(cache_root, sample_dir):
    manifest_time = (sample_dir / "manifest.json").stat().st_mtime_ns
    image_time = (sample_dir / "imgs" / "sample001" / "source.jpg").stat().st_mtime_ns
    assert build_sample(cache_root) == sample_dir
    assert (sample_dir / "manifest.json").stat().st_mtime_ns == manifest_time
    assert (sample_dir / "imgs" / "sample001" / "source.jpg").stat().st_mtime_ns == image_time


def test_outdated_cache_is_rebuilt(sample_dir, tmp_path):
    target = tmp_path / SAMPLE_NAME
    shutil.copytree(sample_dir, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["seed"] = -1
    (target / "manifest.json").write_text(json.dumps(manifest))
    build_sample(tmp_path)
    assert json.loads((target / "manifest.json").read_text())["seed"] == sample_module.SEED


def test_missing_image_triggers_rebuild(sample_dir, tmp_path):
    target = tmp_path / SAMPLE_NAME
    shutil.copytree(sample_dir, target)
    (target / "imgs" / "sample002" / "source.jpg").unlink()
    build_sample(tmp_path)
    assert (target / "imgs" / "sample002" / "source.jpg").is_file()


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    def fail(plan, folder):
        (folder / "train.json").write_text("[]")
        raise KeyboardInterrupt

    monkeypatch.setattr(sample_module, "_write_sample", fail)
    with pytest.raises(KeyboardInterrupt):
        build_sample(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_foreign_folder_is_not_replaced(tmp_path):
    foreign = tmp_path / SAMPLE_NAME
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(DataError, match="not a sample built by medlnkit"):
        build_sample(tmp_path)
    assert (foreign / "thesis.tex").read_text() == "keep me"


def test_corrupted_image_raises_data_error(sample_dir, tmp_path):
    target = tmp_path / SAMPLE_NAME
    shutil.copytree(sample_dir, target)
    broken = target / "imgs" / "sample003" / "source.jpg"
    broken.write_bytes(broken.read_bytes()[:100])
    with pytest.raises(DataError) as error:
        load_image(broken)
    assert str(broken) in str(error.value)


def test_build_does_not_touch_network(tmp_path, monkeypatch):
    def reject_connection(*args, **kwargs):
        raise AssertionError("the sample build tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", reject_connection)
    monkeypatch.setattr(socket, "create_connection", reject_connection)
    monkeypatch.setattr(socket, "getaddrinfo", reject_connection)
    folder = build_sample(tmp_path, force=True)
    assert (folder / "manifest.json").is_file()


def test_sample_records_read_the_split(cache_root, sample_dir, splits):
    for split in SPLITS:
        records = sample_records(split, cache_root)
        assert len(records) == len(splits[split])
        assert {record.split for record in records} == {split}
        assert {record.dataset for record in records} == {"embedded-sample"}
        assert all(record.image_path.parent.parent == sample_dir / "imgs" for record in records)
    first = sample_records("train", cache_root)[0]
    assert first.qid == str(splits["train"][0]["qid"])
    assert first.answer == splits["train"][0]["answer"].lower()


def test_sample_records_unknown_split(cache_root):
    with pytest.raises(DataError, match="validate"):
        sample_records("val", cache_root)


def test_default_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLNKIT_CACHE", str(tmp_path))
    assert sample_module.default_cache_dir() == tmp_path
    monkeypatch.delenv("MEDLNKIT_CACHE")
    assert sample_module.default_cache_dir() == Path.home() / ".cache" / "medlnkit"
