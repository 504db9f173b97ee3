"""Tests for the MIMIC-CXR loader and section extraction on a generated PhysioNet layout."""

from __future__ import annotations

import gzip
from collections import Counter

import pytest
from fixtures.dataset_layouts import (
    MIMIC_REPORT_NO_HEADERS,
    MIMIC_REPORT_STANDARD,
    build_mimic_cxr,
)

from medlnkit.data.mimic_cxr import (
    extract_sections,
    load_mimic_cxr,
    load_mimic_cxr_with_report,
    normalise_section_name,
    split_sections,
)
from medlnkit.errors import DataError, MedlnkitError

# ---------------------------------------------------------------- section extraction


def test_sections_standard_report():
    sections = extract_sections(MIMIC_REPORT_STANDARD)
    assert sections == {
        "findings": "There is no focal consolidation, pleural effusion or pneumothorax. "
        "Bilateral nodular opacities that most likely represent nipple shadows.",
        "impression": "No acute cardiopulmonary process.",
    }


def test_sections_in_order():
    names = [name for name, _ in split_sections(MIMIC_REPORT_STANDARD)]
    assert names == [
        "preamble",
        "examination",
        "indication",
        "technique",
        "comparison",
        "findings",
        "impression",
    ]


def test_sections_last_paragraph_fallback():
    sections = extract_sections(MIMIC_REPORT_NO_HEADERS)
    assert sections["findings"] == ""
    assert sections["impression"] == "Lungs are clear without effusion."
    assert sections["impression_source"] == "last_paragraph"


def test_sections_combined_and_typo_headers():
    text = (
        " INDICATION:  Cough.\n \n FINDNGS:  Lungs are clear.\n \n"
        " FINDINGS AND IMPRESSION:  No pneumonia.\n"
    )
    assert extract_sections(text) == {"findings": "Lungs are clear.", "impression": "No pneumonia."}


def test_sections_view_header_is_findings():
    text = " PA AND LATERAL VIEWS OF THE CHEST:  Heart size is normal.\n \n CONCLUSION:  Normal.\n"
    assert extract_sections(text) == {"findings": "Heart size is normal.", "impression": "Normal."}


def test_sections_last_nonempty_wins():
    text = (
        " FINDINGS:  Old text.\n \n ADDENDUM:  Reviewed.\n \n FINDINGS:  New text.\n \n"
        " IMPRESSION:  First.\n IMPRESSION:\n"
    )
    assert extract_sections(text) == {"findings": "New text.", "impression": "First."}


def test_sections_times_are_not_headers():
    text = " WET READ: ___ ___ 5:43 PM\n  No pneumothorax.\n \n IMPRESSION:  Stable.\n"
    names = [name for name, _ in split_sections(text)]
    assert names == ["preamble", "wet read", "impression"]


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("IMPRESSON", "impression"),
        ("CONCLUSION", "impression"),
        ("FINDINGS/IMPRESSION", "impression"),
        ("FINDNGS", "findings"),
        ("CHEST, TWO VIEWS", "findings"),
        ("REASON FOR EXAMINATION", "indication"),
        ("COMPARISION", "comparison"),
        ("NOTIFICATION", "notification"),
        ("EXAMINATION", "examination"),
    ],
)
def test_section_name_normalised(header, name):
    assert normalise_section_name(header) == name


# ---------------------------------------------------------------- generated layout


def test_test_split_studies(tmp_path):
    root = build_mimic_cxr(tmp_path / "mimic")
    records, report = load_mimic_cxr_with_report(root, "test")
    assert [record.study_id for record in records] == ["s50414267", "s51000001", "s52000002"]
    first = records[0]
    assert first.image_paths == (
        root / "files/p10/p10000032/s50414267/02aa804e-bde0afdd.jpg",
        root / "files/p10/p10000032/s50414267/174413ec-4ec4c1f7.jpg",
    )
    assert first.impression == "No acute cardiopulmonary process."
    assert first.split == "test"
    assert first.dataset == "mimic-cxr"
    assert first.extra["subject_id"] == "10000032"
    assert first.extra["dicom_ids"] == ("02aa804e-bde0afdd", "174413ec-4ec4c1f7")
    assert report.read == 4
    assert report.skipped == Counter({"report file missing": 1})
    assert report.examples["report file missing"] == ["s53000003"]
    # Images are looked up only for returned studies, so the skipped study adds none.
    assert len(report.found_images) == 4
    assert "s50414267/02aa804e-bde0afdd.jpg" in report.found_images


def test_study_without_findings_kept(tmp_path):
    root = build_mimic_cxr(tmp_path / "mimic")
    records = load_mimic_cxr(root, "test")
    impression_only = records[1]
    assert impression_only.findings == ""
    assert impression_only.impression == "No acute intrathoracic process."
    assert impression_only.extra["findings_source"] == "empty"
    fallback = records[2]
    assert fallback.extra["impression_source"] == "last_paragraph"


def test_empty_findings_skip_and_copy(tmp_path):
    root = build_mimic_cxr(tmp_path / "mimic")
    records, report = load_mimic_cxr_with_report(root, "test", empty_findings="skip")
    assert [record.study_id for record in records] == ["s50414267"]
    assert report.excluded == Counter({"no FINDINGS section (empty_findings='skip')": 2})
    copied = load_mimic_cxr(root, "test", empty_findings="impression")
    assert copied[1].findings == "No acute intrathoracic process."


def test_other_splits_and_alias(tmp_path):
    root = build_mimic_cxr(tmp_path / "mimic", gzip_split=False)
    assert [record.study_id for record in load_mimic_cxr(root, "train")] == ["s53189527"]
    assert [record.study_id for record in load_mimic_cxr(root, "val")] == ["s54000004"]


def test_missing_image_raises(tmp_path):
    root = build_mimic_cxr(tmp_path / "mimic", omit_images=("174413ec-4ec4c1f7",))
    with pytest.raises(DataError, match=r"s50414267/174413ec-4ec4c1f7\.jpg.*mimic_cxr\.md"):
        load_mimic_cxr(root, "test")


def test_missing_images_listed_when_optional(tmp_path):
    root = build_mimic_cxr(tmp_path / "mimic", with_images=False)
    records, report = load_mimic_cxr_with_report(root, "test", require_images=False)
    assert len(records) == 3
    assert all(record.image_paths == () for record in records)
    assert len(report.missing_images) == 4


def test_separate_images_root(tmp_path):
    root = build_mimic_cxr(tmp_path / "reports", images_root=tmp_path / "jpg")
    records = load_mimic_cxr(root, "test", images_root=tmp_path / "jpg")
    assert records[0].image_paths[0] == (
        tmp_path / "jpg/files/p10/p10000032/s50414267/02aa804e-bde0afdd.jpg"
    )


# ---------------------------------------------------------------- bad input


def test_missing_folder_raises(tmp_path):
    with pytest.raises(DataError, match=r"MIMIC-CXR folder .* was not found.*mimic_cxr\.md"):
        load_mimic_cxr(tmp_path / "absent")


def test_missing_split_file_raises(tmp_path):
    (tmp_path / "mimic" / "files").mkdir(parents=True)
    with pytest.raises(DataError, match=r"split\.csv\.gz \(or .*\) was not found.*PhysioNet"):
        load_mimic_cxr(tmp_path / "mimic")


def test_missing_report_folder_raises(tmp_path):
    root = tmp_path / "mimic"
    root.mkdir()
    (root / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\na,1,10000001,test\n", encoding="utf-8"
    )
    with pytest.raises(DataError, match=r"report folder .*files was not found"):
        load_mimic_cxr(root)


def test_split_file_without_columns_raises(tmp_path):
    root = build_mimic_cxr(tmp_path / "mimic", gzip_split=False)
    (root / "mimic-cxr-2.0.0-split.csv").write_text("dicom,study\na,1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"missing the columns dicom_id, study_id, subject_id, split"):
        load_mimic_cxr(root)


def test_corrupt_gzip_raises(tmp_path):
    root = build_mimic_cxr(tmp_path / "mimic")
    (root / "mimic-cxr-2.0.0-split.csv.gz").write_bytes(b"not gzip data")
    with pytest.raises(DataError, match=r"split\.csv\.gz could not be read"):
        load_mimic_cxr(root)


def test_split_without_studies_raises(tmp_path):
    root = build_mimic_cxr(tmp_path / "mimic")
    with gzip.open(root / "mimic-cxr-2.0.0-split.csv.gz", "wt", encoding="utf-8") as handle:
        handle.write("dicom_id,study_id,subject_id,split\na,1,10000001,train\n")
    with pytest.raises(DataError, match=r"lists no study in the 'test' split"):
        load_mimic_cxr(root, "test")


def test_all_reports_missing_raises(tmp_path):
    root = build_mimic_cxr(tmp_path / "mimic")
    for report_file in (root / "files").rglob("*.txt"):
        report_file.unlink()
    with pytest.raises(DataError, match=r"none of the 4 report files .*\(mimic-cxr-reports\.zip\)"):
        load_mimic_cxr(root, "test")


def test_invalid_split_raises(tmp_path):
    root = build_mimic_cxr(tmp_path / "mimic")
    with pytest.raises(MedlnkitError, match=r"invalid split 'dev'.*train, validate, test"):
        load_mimic_cxr(root, "dev")


def test_invalid_empty_findings_raises(tmp_path):
    root = build_mimic_cxr(tmp_path / "mimic")
    with pytest.raises(MedlnkitError, match="invalid empty_findings 'none'"):
        load_mimic_cxr(root, empty_findings="none")
