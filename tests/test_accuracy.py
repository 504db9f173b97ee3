"""VQA accuracy: normalisation, the matching rule, id matching, input errors and real references."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medlnkit.data.records import VQARecord
from medlnkit.errors import DataError
from medlnkit.evaluation import answer_is_correct, llava_med_open_recall, normalize_answer, vqa_accuracy
from medlnkit.evaluation.accuracy import first_yes_no


def record(qid: str, answer: str, answer_type: str) -> VQARecord:
    return VQARecord(
        qid=qid,
        image_path=Path("unused.jpg"),
        question="unused",
        answer=answer,
        answer_type=answer_type,
        dataset="test",
        split="test",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("  The Left   Lung. ", "left lung"),
        ("an X-ray", "x ray"),
        ("T2-weighted MRI!", "t2 weighted mri"),
        ("a", ""),
        ("Theory", "theory"),
        ("“Brain”, Liver", "brain liver"),
        ("HIV+", "hiv"),
    ],
)
def test_normalize_answer_cases(text, expected):
    assert normalize_answer(text) == expected


def test_first_yes_no_whole_words():
    assert first_yes_no("Nodule in the left lung") is None
    assert first_yes_no("Yes, but no effusion") == "yes"
    assert first_yes_no("There is no nodule; yes.") == "no"
    assert first_yes_no("Noted. Nothing else") is None


@pytest.mark.parametrize(
    ("prediction", "reference", "answer_type", "expected"),
    [
        ("yes", "Yes", "CLOSED", True),
        ("Yes, there is an effusion.", "yes", "CLOSED", True),
        ("No.", "no", "CLOSED", True),
        ("nodule", "no", "CLOSED", False),
        ("Nodules are present", "no", "CLOSED", False),
        ("no nodule", "no", "CLOSED", True),
        ("No, yes", "yes", "CLOSED", False),
        ("yes", "no", "CLOSED", False),
        ("", "no", "CLOSED", False),
        ("CT.", "CT", "CLOSED", True),
        ("It is a CT scan", "CT", "CLOSED", False),
        ("the left lung", "Left Lung", "OPEN", True),
        ("lung", "left lung", "OPEN", False),
        ("left lung", "lung", "OPEN", False),
        ("Yes, there is", "yes", "OPEN", False),
    ],
)
def test_answer_is_correct_rule(prediction, reference, answer_type, expected):
    assert answer_is_correct(prediction, reference, answer_type) is expected


def test_accuracy_matches_by_id():
    references = [record("a", "yes", "CLOSED"), record("b", "no", "CLOSED"), record("c", "liver", "OPEN")]
    # The mapping lists ids in another order than the references; pairing by position would score 0/3.
    predictions = {"c": "Liver", "a": "yes", "b": "no"}
    result = vqa_accuracy(predictions, references)
    assert result["closed_accuracy"] == 1.0
    assert result["open_accuracy"] == 1.0
    assert result["global_accuracy"] == 1.0


def test_accuracy_counts_and_global_weighting():
    references = [
        record("1", "yes", "CLOSED"),
        record("2", "no", "CLOSED"),
        record("3", "yes", "CLOSED"),
        record("4", "spleen", "OPEN"),
    ]
    predictions = {"1": "Yes.", "2": "no", "3": "no", "4": "liver"}
    result = vqa_accuracy(predictions, references)
    assert result["closed_accuracy"] == pytest.approx(2 / 3)
    assert result["open_accuracy"] == 0.0
    # Count-weighted: 2 correct of 4, not the mean (2/3 + 0) / 2 of the two type accuracies.
    assert result["global_accuracy"] == 0.5
    assert result["n_closed"] == 3
    assert result["n_open"] == 1
    assert result["n"] == 4
    assert result["closed_correct"] == 2
    assert result["open_correct"] == 0
    assert result["open_metric"] == "exact"


def test_accuracy_none_for_absent_type():
    result = vqa_accuracy({"1": "yes"}, [record("1", "yes", "CLOSED")])
    assert result["open_accuracy"] is None
    assert result["n_open"] == 0
    assert result["closed_accuracy"] == 1.0
    assert result["global_accuracy"] == 1.0


def test_accuracy_accepts_mappings():
    references = [
        {"qid": 7, "answer": "Yes", "answer_type": "closed"},
        {"id": "8", "answer": "heart", "answer_type": "CLOSED "},
    ]
    result = vqa_accuracy({"7": "yes", 8: "Heart"}, references)
    assert result["closed_accuracy"] == 1.0
    assert result["n_closed"] == 2


def test_accuracy_missing_prediction_names_ids():
    references = [record(str(i), "yes", "CLOSED") for i in range(10)]
    predictions = {str(i): "yes" for i in range(3)}
    with pytest.raises(DataError, match=r"3 predictions for 10 references") as error:
        vqa_accuracy(predictions, references)
    assert "'3', '4', '5', '6', '7' and 2 more" in str(error.value)


def test_accuracy_unexpected_prediction_names_ids():
    with pytest.raises(DataError, match=r"prediction ids are not in the references: 'zz'"):
        vqa_accuracy({"1": "yes", "zz": "no"}, [record("1", "yes", "CLOSED")])


def test_accuracy_same_count_other_ids():
    with pytest.raises(DataError) as error:
        vqa_accuracy({"2": "yes"}, [record("1", "yes", "CLOSED")])
    message = str(error.value)
    assert "predictions for" not in message
    assert "have no prediction: '1'" in message
    assert "not in the references: '2'" in message


def test_accuracy_duplicate_reference_ids():
    references = [record("1", "yes", "CLOSED"), record("1", "no", "CLOSED")]
    with pytest.raises(DataError, match=r"references contain duplicate question ids '1'"):
        vqa_accuracy({"1": "yes"}, references)


def test_accuracy_empty_prediction_raises():
    references = [record("1", "yes", "CLOSED"), record("2", "liver", "OPEN")]
    with pytest.raises(DataError, match=r"1 predictions are empty: '2'.*allow_empty=True"):
        vqa_accuracy({"1": "yes", "2": "  "}, references)


def test_accuracy_empty_prediction_allowed_is_wrong():
    references = [record("1", "yes", "CLOSED"), record("2", "liver", "OPEN")]
    result = vqa_accuracy({"1": "yes", "2": ""}, references, allow_empty=True)
    assert result["open_accuracy"] == 0.0
    assert result["closed_accuracy"] == 1.0


def test_accuracy_unknown_answer_type():
    with pytest.raises(DataError, match=r"unknown answer_type 'YESNO'.*OPEN, CLOSED"):
        vqa_accuracy({"1": "yes"}, [{"id": "1", "answer": "yes", "answer_type": "YESNO"}])


def test_accuracy_non_string_prediction():
    with pytest.raises(DataError, match=r"prediction for id '1' has type int"):
        vqa_accuracy({"1": 1}, [record("1", "1", "OPEN")])


def test_accuracy_no_references():
    with pytest.raises(DataError, match="no references"):
        vqa_accuracy({}, [])


def test_accuracy_unknown_open_metric():
    with pytest.raises(DataError, match=r"unknown open_metric 'bleu'"):
        vqa_accuracy({"1": "yes"}, [record("1", "yes", "CLOSED")], open_metric="bleu")


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("left lung", "left lung", 1.0),
        ("The left lung.", "left lung", 1.0),
        ("lung", "left lung", 0.5),
        ("the lung is on the left side", "left lung", 1.0),
        # As in LLaVA-Med's script, tp counts the prediction's repeats: 2 / (2 + 1).
        ("lung lung", "left lung", 2 / 3),
        ("heart", "left lung", 0.0),
        ("", "left lung", 0.0),
        ("lung", "", 0.0),
    ],
)
def test_llava_med_open_recall_cases(prediction, reference, expected):
    assert llava_med_open_recall(prediction, reference) == pytest.approx(expected)


def test_accuracy_llava_med_recall_option():
    references = [record("1", "left lung", "OPEN"), record("2", "liver", "OPEN"), record("3", "yes", "CLOSED")]
    predictions = {"1": "lung", "2": "the liver", "3": "no"}
    result = vqa_accuracy(predictions, references, open_metric="llava_med_recall")
    assert result["open_accuracy"] == pytest.approx(0.75)
    assert result["closed_accuracy"] == 0.0
    assert result["global_accuracy"] == pytest.approx(1.5 / 3)
    assert result["open_metric"] == "llava_med_recall"
    exact = vqa_accuracy(predictions, references)
    assert exact["open_accuracy"] == 0.5


def test_accuracy_evaluate_module_by_id():
    from medlnkit.evaluation import load_metric

    metric = load_metric("vqa_accuracy")
    predictions = [{"id": "b", "text": "No"}, {"id": "a", "text": "the liver"}]
    references = [
        {"id": "a", "answer": "Liver", "answer_type": "OPEN"},
        {"id": "b", "answer": "no", "answer_type": "CLOSED"},
    ]
    result = metric.compute(predictions=predictions, references=references)
    assert result["global_accuracy"] == 1.0
    assert result["n"] == 2
    duplicated = [{"id": "a", "text": "liver"}, {"id": "a", "text": "no"}]
    with pytest.raises(DataError, match="duplicate"):
        metric.compute(predictions=duplicated, references=references)


def test_accuracy_real_vqa_rad_references(vqa_rad_root):
    records = json.loads((vqa_rad_root / "testset.json").read_text(encoding="utf-8"))
    references = [
        {"id": item["qid"], "answer": str(item["answer"]), "answer_type": item["answer_type"]}
        for item in records
    ]
    predictions = {str(item["qid"]): str(item["answer"]) for item in records}
    result = vqa_accuracy(predictions, references)
    assert result["n_closed"] == 272
    assert result["n_open"] == 179
    assert result["global_accuracy"] == 1.0

    # Answering "yes" everywhere scores exactly the closed questions whose answer is yes.
    always_yes = vqa_accuracy({qid: "yes" for qid in predictions}, references)
    yes_answers = sum(
        1 for item in records if item["answer_type"] == "CLOSED" and normalize_answer(str(item["answer"])) == "yes"
    )
    assert always_yes["closed_correct"] == yes_answers
    assert always_yes["open_correct"] == sum(
        1 for item in records if item["answer_type"] == "OPEN" and normalize_answer(str(item["answer"])) == "yes"
    )


def test_accuracy_real_slake_english_test(slake_root):
    records = [
        item
        for item in json.loads((slake_root / "test.json").read_text(encoding="utf-8"))
        if item["q_lang"] == "en"
    ]
    references = [
        {"id": item["qid"], "answer": str(item["answer"]), "answer_type": item["answer_type"]}
        for item in records
    ]
    result = vqa_accuracy({str(item["qid"]): str(item["answer"]) for item in records}, references)
    assert result["n_closed"] == 416
    assert result["n_open"] == 645
    assert result["global_accuracy"] == 1.0
