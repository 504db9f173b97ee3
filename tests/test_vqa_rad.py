"""Tests for the VQA-RAD loader: real MEVF files, generated MEVF and OSF layouts, bad input."""

from __future__ import annotations

from collections import Counter

import pytest
from fixtures.dataset_layouts import build_vqa_rad_mevf, build_vqa_rad_osf

from medlnkit.data.vqa_rad import (
    detect_layout,
    load_vqa_rad,
    load_vqa_rad_with_report,
    normalise_question,
    vqa_rad_overlap,
)
from medlnkit.errors import DataError, MedlnkitError

# ---------------------------------------------------------------- real files (MEDLNKIT_DATA)


@pytest.mark.realdata
def test_real_test_split_counts(vqa_rad_root):
    records, report = load_vqa_rad_with_report(vqa_rad_root, "test")
    assert len(records) == 451
    assert report.skipped == Counter()
    types = Counter(record.answer_type for record in records)
    assert types["CLOSED"] == 272
    assert types["OPEN"] == 179
    assert len(report.found_images) == 203
    assert report.missing_images == []


@pytest.mark.realdata
def test_real_closed_with_space_normalised(vqa_rad_root):
    records, report = load_vqa_rad_with_report(vqa_rad_root, "train")
    assert len(records) == 3064
    assert report.normalised["answer_type 'CLOSED ' -> 'CLOSED'"] == 2
    by_qid = {record.qid: record for record in records}
    assert by_qid["3371"].answer_type == "CLOSED"
    assert by_qid["3372"].answer_type == "CLOSED"
    assert {record.answer_type for record in records} == {"OPEN", "CLOSED"}


@pytest.mark.realdata
def test_real_answers_lowercase(vqa_rad_root):
    records = load_vqa_rad(vqa_rad_root, "train")
    by_qid = {record.qid: record for record in records}
    assert by_qid["1"].answer == "yes"
    assert by_qid["1"].extra["answer_raw"] == "Yes"
    # Four records of qid 3494-3497 have the JSON number 12 as answer.
    assert by_qid["3494"].answer == "12"
    assert by_qid["3494"].extra["answer_raw"] == 12
    assert all(record.answer == record.answer.lower().strip() for record in records)
    assert all(isinstance(record.qid, str) for record in records)


@pytest.mark.realdata
def test_real_overlap_report(vqa_rad_root):
    train = load_vqa_rad(vqa_rad_root, "train")
    test = load_vqa_rad(vqa_rad_root, "test")
    overlap = vqa_rad_overlap(train, test)
    assert overlap["train_images"] == 314
    assert overlap["test_images"] == 203
    assert overlap["shared_images"] == 203
    assert overlap["test_records_on_shared_images"] == 451
    assert overlap["question_overlap"] == 16
    assert overlap["question_answer_overlap"] == 16
    assert overlap["examples"][0] == {
        "test_qid": "427",
        "train_qid": "428",
        "image": "synpic57368.jpg",
        "question": "How would you describe the abnormalities",
    }


@pytest.mark.realdata
def test_real_layout_detected(vqa_rad_root):
    assert detect_layout(vqa_rad_root) == "mevf"


# ---------------------------------------------------------------- generated MEVF layout


def test_mevf_fixture_records(tmp_path):
    root = build_vqa_rad_mevf(tmp_path / "vqa_rad")
    records, report = load_vqa_rad_with_report(root, "train")
    assert [record.qid for record in records] == ["1", "2", "3", "4", "5"]
    first, second, third, fourth, _ = records
    assert first.image_path == root / "images" / "synpic100.jpg"
    assert first.answer == "yes"
    assert first.dataset == "vqa-rad"
    assert first.split == "train"
    assert first.extra["image_organ"] == "CHEST"
    assert second.answer_type == "CLOSED"
    assert second.question == "Is this an infectious process?"
    assert third.answer == "4"
    assert fourth.answer == "lung bases"
    assert fourth.extra["answer_raw"] == "  Lung  Bases"
    assert report.normalised["answer_type 'CLOSED ' -> 'CLOSED'"] == 1
    assert report.normalised["answer case, whitespace or number to text"] == 4


def test_mevf_fixture_overlap(tmp_path):
    root = build_vqa_rad_mevf(tmp_path / "vqa_rad")
    overlap = vqa_rad_overlap(load_vqa_rad(root, "train"), load_vqa_rad(root, "test"))
    assert overlap["train_images"] == 2
    assert overlap["test_images"] == 3
    assert overlap["shared_images"] == 2
    assert overlap["test_records_on_shared_images"] == 2
    assert overlap["question_overlap"] == 1
    assert overlap["question_answer_overlap"] == 1
    assert overlap["train_duplicates"] == 1
    assert overlap["examples"] == [
        {
            "test_qid": "11",
            "train_qid": "1",
            "image": "synpic100.jpg",
            "question": "is there a Pneumothorax",
        }
    ]


def test_normalise_question_forms():
    assert normalise_question("Is there  a Pneumothorax? ") == "is there a pneumothorax"
    assert normalise_question("is there a pneumothorax") == "is there a pneumothorax"
    assert normalise_question("What is shown?.") == "what is shown"


def test_mevf_missing_image_raises(tmp_path):
    root = build_vqa_rad_mevf(tmp_path / "vqa_rad", omit_images=("synpic300.jpg",))
    with pytest.raises(DataError, match=r"missing under .*images: synpic300\.jpg.*vqa_rad\.md"):
        load_vqa_rad(root, "test")


def test_mevf_missing_image_optional(tmp_path):
    root = build_vqa_rad_mevf(tmp_path / "vqa_rad", omit_images=("synpic300.jpg",))
    records, report = load_vqa_rad_with_report(root, "test", require_images=False)
    assert len(records) == 3
    assert report.missing_images == ["synpic300.jpg"]


def test_mevf_without_images_folder(tmp_path):
    root = build_vqa_rad_mevf(tmp_path / "vqa_rad")
    for image in (root / "images").iterdir():
        image.unlink()
    (root / "images").rmdir()
    with pytest.raises(DataError, match=r"image folder .*images was not found"):
        load_vqa_rad(root, "train")
    assert len(load_vqa_rad(root, "train", require_images=False)) == 5


# ---------------------------------------------------------------- generated OSF layout


def test_osf_layout_detected(tmp_path):
    root = build_vqa_rad_osf(tmp_path / "osf")
    assert detect_layout(root) == "osf"


def test_osf_test_split_from_phrase_type(tmp_path):
    root = build_vqa_rad_osf(tmp_path / "osf")
    records, report = load_vqa_rad_with_report(root, "test")
    assert [record.qid for record in records] == ["3", "4", "5"]
    assert [record.extra["phrase_type"] for record in records] == [
        "test_freeform",
        "test_para",
        "test_freeform",
    ]
    assert records[0].image_path == root / "VQA_RAD Image Folder" / "synpic501.jpg"
    assert records[2].answer == "mri - t2"
    assert report.read == 7
    assert report.excluded == Counter({"belongs to the train split (phrase_type)": 3})
    assert report.skipped == Counter({"unknown phrase_type 'draft'": 1})


def test_osf_train_split_and_extras(tmp_path):
    root = build_vqa_rad_osf(tmp_path / "osf")
    records, report = load_vqa_rad_with_report(root, "train")
    assert [record.qid for record in records] == ["0", "1", "2"]
    paraphrase = records[1]
    assert paraphrase.answer_type == "CLOSED"
    assert paraphrase.extra["qid_linked_id"] == "a1"
    assert paraphrase.extra["question_frame"] == "Is there a mass?"
    assert paraphrase.extra["image_case_url"].endswith("id=a1")
    assert paraphrase.extra["evaluation"] == "not evaluated"
    assert report.normalised["answer_type 'CLOSED ' -> 'CLOSED'"] == 1


def test_osf_images_folder_alias(tmp_path):
    root = build_vqa_rad_osf(tmp_path / "osf", image_folder="images")
    records = load_vqa_rad(root, "test")
    assert records[0].image_path == root / "images" / "synpic501.jpg"


def test_osf_paraphrase_overlap(tmp_path):
    root = build_vqa_rad_osf(tmp_path / "osf")
    overlap = vqa_rad_overlap(load_vqa_rad(root, "train"), load_vqa_rad(root, "test"))
    assert overlap["shared_images"] == 1
    assert overlap["test_records_on_shared_images"] == 2
    assert overlap["question_overlap"] == 0


def test_mevf_preferred_when_both_present(tmp_path):
    root = build_vqa_rad_mevf(tmp_path / "both")
    build_vqa_rad_osf(root)
    assert detect_layout(root) == "mevf"
    osf_qids = [record.qid for record in load_vqa_rad(root, "test", layout="osf")]
    auto_qids = [record.qid for record in load_vqa_rad(root, "test")]
    assert osf_qids == ["3", "4", "5"]
    assert auto_qids == ["11", "12", "13"]


# ---------------------------------------------------------------- bad input


def test_missing_folder_raises(tmp_path):
    with pytest.raises(DataError, match=r"VQA-RAD folder .*absent was not found.*vqa_rad\.md"):
        load_vqa_rad(tmp_path / "absent", "test")


def test_wrong_layout_raises(tmp_path):
    root = tmp_path / "vqa_rad"
    root.mkdir()
    (root / "test.json").write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match=r"not a VQA-RAD folder.*found: test\.json.*Expected layout"):
        load_vqa_rad(root, "test")


def test_only_one_mevf_file_raises(tmp_path):
    root = build_vqa_rad_mevf(tmp_path / "vqa_rad")
    (root / "trainset.json").unlink()
    with pytest.raises(DataError, match="neither the MEVF files"):
        load_vqa_rad(root, "test")


def test_malformed_json_raises(tmp_path):
    root = build_vqa_rad_mevf(tmp_path / "vqa_rad")
    (root / "testset.json").write_text('[{"qid": 1,}]', encoding="utf-8")
    with pytest.raises(DataError, match=r"testset\.json is not valid JSON \(line 1, column"):
        load_vqa_rad(root, "test")


def test_osf_malformed_json_raises(tmp_path):
    root = build_vqa_rad_osf(tmp_path / "osf")
    (root / "VQA_RAD Dataset Public.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(DataError, match="could not be read as UTF-8 text"):
        load_vqa_rad(root, "train")


def test_missing_fields_skipped(tmp_path):
    root = build_vqa_rad_mevf(tmp_path / "vqa_rad")
    (root / "testset.json").write_text(
        '[{"qid": 1, "image_name": "synpic100.jpg", "question": "Q?", "answer_type": "OPEN"},'
        ' {"qid": 2, "image_name": "synpic100.jpg", "question": "Q?", "answer": "a",'
        ' "answer_type": "YES/NO"},'
        ' {"qid": 3, "image_name": "synpic100.jpg", "question": "Q?", "answer": "a",'
        ' "answer_type": "OPEN"},'
        ' {"qid": 3, "image_name": "synpic100.jpg", "question": "Q2?", "answer": "b",'
        ' "answer_type": "OPEN"}]',
        encoding="utf-8",
    )
    records, report = load_vqa_rad_with_report(root, "test")
    assert [record.qid for record in records] == ["3"]
    assert report.skipped == Counter(
        {
            "missing or empty field 'answer'": 1,
            "unknown answer_type 'YES/NO'": 1,
            "duplicate qid in this split": 1,
        }
    )


def test_invalid_split_raises(tmp_path):
    root = build_vqa_rad_mevf(tmp_path / "vqa_rad")
    with pytest.raises(MedlnkitError, match=r"invalid split 'validate'.*train, test"):
        load_vqa_rad(root, "validate")


def test_invalid_layout_raises(tmp_path):
    root = build_vqa_rad_mevf(tmp_path / "vqa_rad")
    with pytest.raises(MedlnkitError, match=r"invalid layout 'hf'.*auto, mevf, osf"):
        load_vqa_rad(root, "test", layout="hf")
