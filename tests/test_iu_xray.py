"""Tests for the IU X-ray (OpenI) loader: the bundled real archive, generated layouts, bad input."""

from __future__ import annotations

import importlib.metadata
import json
from collections import Counter

import pytest
from fixtures.dataset_layouts import (
    IU_REPORTS,
    build_iu_xray_archive,
    build_iu_xray_folder,
    build_xraygpt_openi,
)

from medlnkit.data.iu_xray import (
    load_iu_xray,
    load_iu_xray_with_report,
    load_xraygpt_openi,
    load_xraygpt_openi_with_report,
    parse_report_xml,
    read_xraygpt_captions,
    split_iu_xray,
    split_of,
)
from medlnkit.errors import DataError, MedlnkitError


@pytest.fixture(scope="module")
def real_archive_records():
    """Load the archive bundled in the torchxrayvision wheel with every empty-findings option."""
    try:
        importlib.metadata.distribution("torchxrayvision")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("torchxrayvision is not installed: it ships the real IU X-ray report archive")
    options = ("skip", "keep", "impression")
    return {option: load_iu_xray_with_report(None, option) for option in options}


# ---------------------------------------------------------------- real archive (torchxrayvision)


def test_real_archive_report_count(real_archive_records):
    records, report = real_archive_records["keep"]
    assert report.read == 3955
    assert len(records) == 3927
    assert report.skipped == Counter({"no FINDINGS or IMPRESSION text": 28})
    assert report.source.endswith("NLMCXR_reports.tgz")


def test_real_archive_empty_findings_skip(real_archive_records):
    records, report = real_archive_records["skip"]
    assert len(records) == 3425
    assert report.excluded == Counter({"empty FINDINGS (empty_findings='skip')": 502})
    assert all(record.findings for record in records)


def test_real_archive_empty_findings_impression(real_archive_records):
    records, _ = real_archive_records["impression"]
    copied = [record for record in records if record.extra["findings_source"] == "impression"]
    assert len(copied) == 502
    assert all(record.findings == record.impression for record in copied)


def test_real_archive_first_report(real_archive_records):
    records, _ = real_archive_records["skip"]
    first = records[0]
    assert first.study_id == "CXR1"
    assert first.findings.startswith("The cardiac silhouette and mediastinum size")
    assert first.impression == "Normal chest x-XXXX."
    assert first.extra["indication"] == "Positive TB test"
    assert first.extra["mesh_major"] == ["normal"]
    assert first.extra["image_ids"] == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]
    assert first.image_paths == ()
    assert len({record.study_id for record in records}) == len(records)


def test_real_archive_split_disjoint(real_archive_records):
    records, _ = real_archive_records["skip"]
    splits = split_iu_xray(records)
    train_ids = {record.study_id for record in splits["train"]}
    test_ids = {record.study_id for record in splits["test"]}
    assert not train_ids & test_ids
    assert len(train_ids) + len(test_ids) == 3425
    assert 0.17 < len(test_ids) / 3425 < 0.23
    assert {record.split for record in splits["test"]} == {"test"}
    assert [r.study_id for r in load_iu_xray(split="test")] == [r.study_id for r in splits["test"]]


# ---------------------------------------------------------------- XML parsing and splits


def test_parse_report_xml_fields():
    fields = parse_report_xml(IU_REPORTS[2].encode(), "2.xml")
    assert fields["uid"] == "CXR2"
    assert fields["findings"] == ""
    assert fields["impression"] == "No acute cardiopulmonary abnormality."
    assert fields["mesh_major"] == ["Granuloma/lung/upper lobe/right"]
    assert fields["mesh_automatic"] == ["calcified granuloma"]
    assert fields["image_ids"] == ["CXR2_IM-0652-1001"]


def test_split_of_stable_and_seeded():
    assert split_of("CXR1") == split_of("CXR1")
    sides = Counter(split_of(f"CXR{number}") for number in range(2000))
    assert 300 < sides["test"] < 500
    reseeded = [split_of(f"CXR{number}", seed=1) for number in range(200)]
    assert reseeded != [split_of(f"CXR{number}") for number in range(200)]


def test_split_of_invalid_fraction():
    with pytest.raises(MedlnkitError, match="invalid test_fraction 1.5"):
        split_of("CXR1", test_fraction=1.5)


# ---------------------------------------------------------------- generated folder and archive


def test_folder_with_images(tmp_path):
    root = build_iu_xray_folder(tmp_path / "iu")
    records, report = load_iu_xray_with_report(root, empty_findings="keep")
    assert [record.study_id for record in records] == ["CXR1", "CXR2", "CXR10"]
    first = records[0]
    assert first.image_paths == (
        root / "images" / "CXR1_1_IM-0001-3001.png",
        root / "images" / "CXR1_1_IM-0001-4001.png",
    )
    assert first.extra["comparison"] == "None."
    assert first.report == (
        "The cardiac silhouette is within normal limits. There is no pneumothorax. "
        "Normal chest x-XXXX."
    )
    assert records[1].image_paths == ()
    assert records[1].extra["findings_source"] == "empty"
    assert report.missing_images == ["CXR2_IM-0652-1001.png"]
    assert report.skipped == Counter({"no FINDINGS or IMPRESSION text": 1})
    assert report.notes == []


def test_folder_empty_findings_options(tmp_path):
    root = build_iu_xray_folder(tmp_path / "iu")
    skipped = load_iu_xray(root)
    copied = load_iu_xray(root, empty_findings="impression")
    assert [record.study_id for record in skipped] == ["CXR1", "CXR10"]
    assert copied[1].findings == "No acute cardiopulmonary abnormality."
    assert copied[1].extra["findings_source"] == "impression"


def test_folder_require_images(tmp_path):
    root = build_iu_xray_folder(tmp_path / "iu")
    with pytest.raises(DataError, match=r"missing under .*images: CXR2_IM-0652-1001\.png"):
        load_iu_xray(root, empty_findings="keep", require_images=True)


def test_folder_without_images(tmp_path):
    root = build_iu_xray_folder(tmp_path / "iu", with_images=False)
    records, report = load_iu_xray_with_report(root)
    assert all(record.image_paths == () for record in records)
    assert report.notes == ["no images/ folder: records carry no image paths"]
    with pytest.raises(DataError, match=r"no image folder \(images or image\)"):
        load_iu_xray(root, require_images=True)


def test_archive_in_folder(tmp_path):
    build_iu_xray_archive(tmp_path / "iu" / "NLMCXR_reports.tgz")
    records = load_iu_xray(tmp_path / "iu", empty_findings="keep")
    assert [record.study_id for record in records] == ["CXR1", "CXR2", "CXR10"]
    assert records[0].extra["xml_file"].endswith("NLMCXR_reports.tgz:ecgen-radiology/1.xml")


def test_archive_path_as_root(tmp_path):
    archive = build_iu_xray_archive(tmp_path / "reports.tgz")
    folder_records = load_iu_xray(build_iu_xray_folder(tmp_path / "iu"))
    archive_records = load_iu_xray(archive)
    assert [(r.study_id, r.findings, r.impression) for r in archive_records] == [
        (r.study_id, r.findings, r.impression) for r in folder_records
    ]


def test_split_option_partitions(tmp_path):
    root = build_iu_xray_folder(tmp_path / "iu")
    everything = load_iu_xray(root, empty_findings="keep")
    train = load_iu_xray(root, empty_findings="keep", split="train", test_fraction=0.5)
    test = load_iu_xray(root, empty_findings="keep", split="test", test_fraction=0.5)
    assert sorted(r.study_id for r in train + test) == sorted(r.study_id for r in everything)
    assert {r.split for r in train} <= {"train"}
    assert {r.split for r in test} <= {"test"}


# ---------------------------------------------------------------- XrayGPT instructions


def test_xraygpt_captions_attached(tmp_path):
    root = build_iu_xray_folder(tmp_path / "iu")
    build_xraygpt_openi(root, image_folder="images")
    records, report = load_iu_xray_with_report(root)
    assert records[0].extra["instruction_captions"] == {
        "CXR1_1_IM-0001-3001": "The chest x-ray shows a normal heart size.",
        "CXR1_1_IM-0001-4001": "Lateral view without acute findings.",
    }
    assert records[1].extra["instruction_captions"] == {}
    assert report.skipped["filter_cap.json repeats an image_id (first caption kept)"] == 1
    assert report.skipped["filter_cap.json entry without image_id or caption"] == 1
    assert any("3 captions, 2 attached" in note for note in report.notes)


def test_xraygpt_openi_records(tmp_path):
    root = build_xraygpt_openi(tmp_path / "chest_data")
    records, report = load_xraygpt_openi_with_report(root, require_images=False)
    assert [record.study_id for record in records] == [
        "CXR1_1_IM-0001-3001",
        "CXR1_1_IM-0001-4001",
        "CXR999_IM-0001-1001",
    ]
    assert records[0].image_paths == (root / "image" / "CXR1_1_IM-0001-3001.png",)
    assert records[0].findings == "The chest x-ray shows a normal heart size."
    assert records[0].impression == ""
    assert records[0].split == "train"
    assert report.read == 5
    assert report.missing_images == ["CXR999_IM-0001-1001.png"]


def test_xraygpt_missing_image_raises(tmp_path):
    root = build_xraygpt_openi(tmp_path / "chest_data")
    with pytest.raises(DataError, match=r"CXR999_IM-0001-1001\.png.*iu_xray\.md"):
        load_xraygpt_openi(root)


def test_xraygpt_without_annotations_raises(tmp_path):
    path = tmp_path / "filter_cap.json"
    path.write_text(json.dumps([{"image_id": "a", "caption": "b"}]), encoding="utf-8")
    with pytest.raises(DataError, match=r'"annotations" list.*filter_cap\.json'):
        read_xraygpt_captions(path)


def test_xraygpt_malformed_json_raises(tmp_path):
    path = tmp_path / "filter_cap.json"
    path.write_text('{"annotations": [', encoding="utf-8")
    with pytest.raises(DataError, match=r"filter_cap\.json is not valid JSON"):
        read_xraygpt_captions(path)


# ---------------------------------------------------------------- bad input


def test_missing_folder_raises(tmp_path):
    with pytest.raises(DataError, match=r"IU X-ray folder .* was not found.*iu_xray\.md"):
        load_iu_xray(tmp_path / "absent")


def test_folder_without_reports_raises(tmp_path):
    (tmp_path / "iu" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no IU X-ray reports were found.*Expected layout"):
        load_iu_xray(tmp_path / "iu")


def test_empty_report_folder_raises(tmp_path):
    (tmp_path / "iu" / "ecgen-radiology").mkdir(parents=True)
    with pytest.raises(DataError, match="contains no report XML files"):
        load_iu_xray(tmp_path / "iu")


def test_malformed_xml_raises(tmp_path):
    root = build_iu_xray_folder(tmp_path / "iu")
    (root / "reports" / "ecgen-radiology" / "7.xml").write_text("<eCitation><uId", encoding="utf-8")
    with pytest.raises(DataError, match=r"7\.xml is not well-formed XML"):
        load_iu_xray(root)


def test_corrupt_archive_raises(tmp_path):
    archive = tmp_path / "NLMCXR_reports.tgz"
    archive.write_bytes(b"this is not a tar archive")
    with pytest.raises(DataError, match="could not be read as a tar archive"):
        load_iu_xray(archive)


def test_invalid_empty_findings_raises(tmp_path):
    root = build_iu_xray_folder(tmp_path / "iu")
    with pytest.raises(MedlnkitError, match=r"invalid empty_findings 'drop'.*skip, keep, impression"):
        load_iu_xray(root, empty_findings="drop")


def test_invalid_split_raises(tmp_path):
    root = build_iu_xray_folder(tmp_path / "iu")
    with pytest.raises(MedlnkitError, match=r"invalid split 'validate'.*all, train, test"):
        load_iu_xray(root, split="validate")
