"""Tests for the Slake loader: real question files, a generated release with images, bad input."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from fixtures.dataset_layouts import build_slake

from medlnkit.data.slake import load_slake, load_slake_with_report
from medlnkit.errors import DataError, MedlnkitError

# ---------------------------------------------------------------- real files (MEDLNKIT_DATA)


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("split", "english", "open_count", "closed_count"),
    [("train", 4919, 2976, 1943), ("validate", 1053, 631, 422), ("test", 1061, 645, 416)],
)
def test_real_english_counts(slake_root, split, english, open_count, closed_count):
    records, report = load_slake_with_report(slake_root, split, require_images=False)
    # Every English row is either returned or skipped with a reason, never dropped silently.
    assert len(records) + sum(report.skipped.values()) == english
    assert report.read - sum(report.excluded.values()) == english
    types = Counter(record.answer_type for record in records)
    skipped_types = 1 if split == "train" else 0  # the skipped train row is OPEN
    assert types["OPEN"] + skipped_types == open_count
    assert types["CLOSED"] == closed_count
    assert all(record.extra["q_lang"] == "en" for record in records)


@pytest.mark.realdata
def test_real_train_empty_answer_skipped(slake_root):
    records, report = load_slake_with_report(slake_root, "train", require_images=False)
    assert len(records) == 4918
    assert report.skipped == Counter({"missing or empty field 'answer'": 1})
    assert report.examples["missing or empty field 'answer'"] == ["1622"]
    assert "1622" not in {record.qid for record in records}


@pytest.mark.realdata
def test_real_languages(slake_root):
    chinese = load_slake(slake_root, "test", language="zh", require_images=False)
    everything = load_slake(slake_root, "test", language="all", require_images=False)
    assert len(chinese) == 1033
    assert len(everything) == 2094
    assert {record.extra["q_lang"] for record in chinese} == {"zh"}


@pytest.mark.realdata
def test_real_split_aliases(slake_root):
    reference = load_slake(slake_root, "validate", require_images=False)
    for alias in ("val", "validation", "VAL"):
        assert load_slake(slake_root, alias, require_images=False) == reference


@pytest.mark.realdata
def test_real_records_fields(slake_root):
    records = load_slake(slake_root, "test", require_images=False)
    first = records[0]
    assert first.qid == "11934"
    assert first.image_path == slake_root / "imgs" / "xmlab102" / "source.jpg"
    assert first.answer == "ct"
    assert first.extra["answer_raw"] == "CT"
    assert first.split == "test"
    assert len({record.qid for record in records}) == len(records)


@pytest.mark.realdata
def test_real_without_images_folder_raises(slake_root):
    with pytest.raises(DataError, match=r"imgs.*require_images=False.*data_cards/slake\.md"):
        load_slake(slake_root, "test")


# ---------------------------------------------------------------- generated release


def test_fixture_english_records(tmp_path):
    root = build_slake(tmp_path / "Slake1.0")
    records = load_slake(root, "train")
    assert [record.qid for record in records] == ["0", "1", "2"]
    first, _, third = records
    assert first.image_path == root / "imgs" / "xmlab1" / "source.jpg"
    assert first.image_path.is_file()
    assert first.question == "What modality is used to take this image?"
    assert first.answer == "ct"
    assert first.answer_type == "OPEN"
    assert first.dataset == "slake"
    assert first.extra["content_type"] == "Organ"
    assert first.extra["img_id"] == 1
    assert third.answer == "no"
    assert third.extra["answer_raw"] == " No "
    assert third.answer_type == "CLOSED"


def test_fixture_report_counts_every_row(tmp_path):
    root = build_slake(tmp_path / "slake")
    _, report = load_slake_with_report(root, "train")
    assert report.read == 7
    assert report.loaded == 3
    assert report.skipped == Counter(
        {"missing or empty field 'answer'": 1, "unknown answer_type 'FREE'": 1}
    )
    assert report.excluded == Counter({"q_lang 'zh' (language='en')": 2})
    assert report.normalised["answer_type 'CLOSED ' -> 'CLOSED'"] == 1
    assert report.found_images == {"xmlab1/source.jpg"}
    assert report.missing_images == []


def test_fixture_language_options(tmp_path):
    root = build_slake(tmp_path / "slake")
    chinese = load_slake(root, "train", language="zh")
    assert [record.qid for record in chinese] == ["5", "6"]
    assert chinese[1].answer == "是"
    assert len(load_slake(root, "train", language="all")) == 5


def test_fixture_closed_includes_choice_questions(tmp_path):
    root = build_slake(tmp_path / "slake")
    records = load_slake(root, "test")
    choice = next(record for record in records if "left or right" in record.question)
    assert choice.answer_type == "CLOSED"


def test_fixture_dataset_name_option(tmp_path):
    root = build_slake(tmp_path / "slake")
    records, report = load_slake_with_report(root, "validate", dataset_name="sample")
    assert {record.dataset for record in records} == {"sample"}
    assert report.dataset == "sample"


def test_fixture_release_subfolder_found(tmp_path):
    build_slake(tmp_path / "download" / "Slake1.0")
    records = load_slake(tmp_path / "download", "validate")
    assert [record.qid for record in records] == ["10", "11"]
    expected = tmp_path / "download" / "Slake1.0" / "imgs" / "xmlab2" / "source.jpg"
    assert records[0].image_path == expected


def test_fixture_missing_image_raises(tmp_path):
    root = build_slake(tmp_path / "slake", omit_images=("xmlab4/source.jpg",))
    with pytest.raises(DataError, match=r"1 referenced image files are missing.*xmlab4/source\.jpg"):
        load_slake(root, "test")


def test_fixture_missing_image_listed_when_optional(tmp_path):
    root = build_slake(tmp_path / "slake", omit_images=("xmlab4/source.jpg",))
    records, report = load_slake_with_report(root, "test", require_images=False)
    assert len(records) == 3
    assert report.missing_images == ["xmlab4/source.jpg"]
    assert "missing images: 1 files (xmlab4/source.jpg)" in "\n".join(report.summary_lines())


def test_fixture_without_images_folder(tmp_path):
    root = build_slake(tmp_path / "slake", with_images=False)
    records, report = load_slake_with_report(root, "test", require_images=False)
    assert len(records) == 3
    assert any("is absent" in note for note in report.notes)
    with pytest.raises(DataError, match="image folder"):
        load_slake(root, "test")


# ---------------------------------------------------------------- bad input


def test_missing_folder_raises(tmp_path):
    with pytest.raises(DataError, match=r"not found.*Expected layout.*data_cards/slake\.md"):
        load_slake(tmp_path / "absent", "train")


def test_missing_split_file_raises(tmp_path):
    root = build_slake(tmp_path / "slake")
    (root / "test.json").unlink()
    with pytest.raises(DataError, match=r"test\.json was not found.*train\.json, validate\.json"):
        load_slake(root, "test")


def test_malformed_json_raises(tmp_path):
    root = build_slake(tmp_path / "slake")
    (root / "train.json").write_text('[{"qid": 1,\n "question": }]', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.json is not valid JSON \(line 2.*data_cards/slake"):
        load_slake(root, "train")


def test_json_object_instead_of_list_raises(tmp_path):
    root = build_slake(tmp_path / "slake")
    (root / "train.json").write_text('{"questions": []}', encoding="utf-8")
    with pytest.raises(DataError, match="contains a JSON dict, but a list"):
        load_slake(root, "train")


def test_json_item_not_object_raises(tmp_path):
    root = build_slake(tmp_path / "slake")
    (root / "train.json").write_text('[["qid", 1]]', encoding="utf-8")
    with pytest.raises(DataError, match="item 0 is a JSON list"):
        load_slake(root, "train")


def test_invalid_split_raises(tmp_path):
    root = build_slake(tmp_path / "slake")
    with pytest.raises(MedlnkitError, match=r"invalid split 'dev'.*train, validate, test"):
        load_slake(root, "dev")


def test_invalid_language_raises(tmp_path):
    root = build_slake(tmp_path / "slake")
    with pytest.raises(MedlnkitError, match=r"invalid language 'english'.*en, zh, all"):
        load_slake(root, "train", language="english")


def test_file_instead_of_folder_raises(tmp_path):
    path = tmp_path / "train.json"
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match="is not a folder"):
        load_slake(Path(path), "train")
