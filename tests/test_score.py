"""``medlnkit score`` and score_files: results, and one clear error for every kind of bad input."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

from medlnkit import cli
from medlnkit.errors import MedlnkitError
from medlnkit.evaluation import bleu, mean_token_length, rouge_l, text_metrics
from medlnkit.evaluation.score import format_scores, score_files

VQA_REFERENCES = [
    {"id": "q1", "answer": "Yes", "answer_type": "CLOSED"},
    {"id": "q2", "answer": "no", "answer_type": "CLOSED"},
    {"id": "q3", "answer": "CT", "answer_type": "CLOSED"},
    {"id": "q4", "answer": "Left lung", "answer_type": "OPEN"},
    {"id": 5, "answer": "liver", "answer_type": "OPEN"},
]
# Written in another order than the references, with one wrong open answer ("spleen").
VQA_PREDICTIONS = [
    {"id": 5, "prediction": "spleen"},
    {"id": "q4", "prediction": "the left lung."},
    {"id": "q3", "prediction": "ct"},
    {"id": "q2", "prediction": "No, there is no nodule."},
    {"id": "q1", "prediction": "yes"},
]

# Real IU X-ray (OpenI) report sentences, shortened.
REPORT_REFERENCES = [
    {"id": "cxr1", "report": "The cardiac silhouette and mediastinum size are within normal limits. "
     "There is no pulmonary edema. There is no focal consolidation."},
    {"id": "cxr2", "report": "Borderline cardiomegaly. Midline sternotomy. Enlarged pulmonary "
     "arteries. Clear lungs."},
    {"id": "cxr4", "report": "Heart size and mediastinal contour are within normal limits. There is "
     "no focal airspace consolidation. No pneumothorax or large pleural effusion."},
]
REPORT_PREDICTIONS = [
    {"id": "cxr4", "prediction": "Heart size is within normal limits. No pneumothorax or pleural "
     "effusion."},
    {"id": "cxr1", "prediction": "The cardiac silhouette is normal. There is no focal consolidation "
     "or pulmonary edema."},
    {"id": "cxr2", "prediction": "Cardiomegaly. The lungs are clear."},
]


def write_jsonl(path: Path, rows: list) -> Path:
    """Write ``rows`` (dicts are dumped as JSON, strings written as they are) one per line."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_cli(capsys, task: str, predictions: Path, references: Path, *extra: str):
    """Run ``medlnkit score`` in-process and return (exit code, stdout, stderr)."""
    code = cli.main(
        ["score", "--task", task, "--predictions", str(predictions), "--references", str(references), *extra]
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def vqa_files(tmp_path):
    return (
        write_jsonl(tmp_path / "predictions.jsonl", VQA_PREDICTIONS),
        write_jsonl(tmp_path / "references.jsonl", VQA_REFERENCES),
    )


@pytest.fixture
def wordnet_ready():
    try:
        text_metrics.require_wordnet()
    except MedlnkitError as error:
        pytest.skip(str(error))


def test_score_vqa_values(vqa_files):
    predictions, references = vqa_files
    scores = score_files("vqa", predictions, references)
    assert scores["closed_accuracy"] == 1.0
    assert scores["open_accuracy"] == 0.5
    assert scores["global_accuracy"] == pytest.approx(4 / 5)
    assert scores["n"] == 5
    assert scores["n_closed"] == 3
    assert scores["n_open"] == 2
    assert "normalized exact match" in scores["implementations"]["accuracy"]


def test_cli_score_vqa_json(capsys, vqa_files):
    predictions, references = vqa_files
    code, out, err = run_cli(capsys, "vqa", predictions, references, "--json")
    assert code == 0, err
    scores = json.loads(out)
    assert scores["global_accuracy"] == pytest.approx(0.8)
    assert scores["open_accuracy"] == 0.5
    assert set(scores) >= {"closed_accuracy", "open_accuracy", "global_accuracy", "n", "implementations"}


def test_cli_score_vqa_text(capsys, vqa_files):
    predictions, references = vqa_files
    code, out, _ = run_cli(capsys, "vqa", predictions, references)
    assert code == 0
    assert re.search(r"global_accuracy\s+80\.00 %", out)
    assert "implementations:" in out


def test_score_vqa_open_type_absent(tmp_path):
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"id": "1", "prediction": "yes"}])
    references = write_jsonl(tmp_path / "r.jsonl", [{"id": "1", "answer": "yes", "answer_type": "CLOSED"}])
    scores = score_files("vqa", predictions, references)
    assert scores["open_accuracy"] is None
    assert re.search(r"open_accuracy\s+n/a", format_scores(scores))


def test_score_vqa_llava_med_recall(tmp_path):
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"id": "1", "prediction": "the lung"}])
    references = write_jsonl(tmp_path / "r.jsonl", [{"id": "1", "answer": "left lung", "answer_type": "OPEN"}])
    exact = score_files("vqa", predictions, references)
    recall = score_files("vqa", predictions, references, open_metric="llava_med_recall")
    assert exact["open_accuracy"] == 0.0
    assert recall["open_accuracy"] == 0.5
    assert recall["open_metric"] == "llava_med_recall"
    assert "LLaVA-Med's token recall" in recall["implementations"]["accuracy"]


def test_score_vqa_allow_empty_scores_wrong(tmp_path):
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"id": "1", "prediction": ""}, {"id": "2", "prediction": "no"}])
    references = write_jsonl(
        tmp_path / "r.jsonl",
        [{"id": "1", "answer": "yes", "answer_type": "CLOSED"}, {"id": "2", "answer": "no", "answer_type": "CLOSED"}],
    )
    scores = score_files("vqa", predictions, references, allow_empty=True)
    assert scores["closed_accuracy"] == 0.5


def test_cli_score_empty_prediction(capsys, tmp_path):
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"id": "1", "prediction": " "}])
    references = write_jsonl(tmp_path / "r.jsonl", [{"id": "1", "answer": "yes", "answer_type": "CLOSED"}])
    code, _, err = run_cli(capsys, "vqa", predictions, references)
    assert code == 2
    assert "1 predictions are empty: '1'" in err
    assert "medlnkit score --allow-empty" in err
    code, out, err = run_cli(capsys, "vqa", predictions, references, "--allow-empty", "--json")
    assert code == 0, err
    assert json.loads(out)["closed_accuracy"] == 0.0


def test_score_report_values(tmp_path, wordnet_ready):
    predictions = write_jsonl(tmp_path / "p.jsonl", REPORT_PREDICTIONS)
    references = write_jsonl(tmp_path / "r.jsonl", REPORT_REFERENCES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = score_files("report", predictions, references)

    # The files list ids in different orders; the metrics must pair texts by id.
    by_id = {row["id"]: row["prediction"] for row in REPORT_PREDICTIONS}
    generated = [by_id[row["id"]] for row in REPORT_REFERENCES]
    reference_texts = [row["report"] for row in REPORT_REFERENCES]
    assert scores["n"] == 3
    assert scores["rouge_l_f1"] == pytest.approx(rouge_l(generated, reference_texts)["rouge_l_f1"])
    assert scores["bleu"] == pytest.approx(bleu(generated, reference_texts)["bleu"])
    assert scores["mean_tokens"] == pytest.approx(mean_token_length(generated)["mean_tokens"])
    assert 0.0 < scores["meteor"] < 1.0
    assert 0.0 < scores["rouge_l_precision"] <= 1.0
    assert 0.0 < scores["rouge_l_recall"] <= 1.0
    assert set(scores["implementations"]) == {"rouge_l", "meteor", "bleu", "bertscore", "mean_tokens"}
    if text_metrics.resolve_bertscore_model() is not None:
        assert 0.0 < scores["bertscore_f1"] <= 1.0
        assert scores["bertscore_model"] in scores["implementations"]["bertscore"]


def test_cli_score_report_without_bertscore(capsys, tmp_path, monkeypatch, wordnet_ready):
    monkeypatch.setattr(text_metrics, "resolve_bertscore_model", lambda: None)
    predictions = write_jsonl(tmp_path / "p.jsonl", REPORT_PREDICTIONS)
    references = write_jsonl(tmp_path / "r.jsonl", REPORT_REFERENCES)
    code, out, err = run_cli(capsys, "report", predictions, references, "--json")
    assert code == 0, err
    scores = json.loads(out)
    assert scores["bertscore_f1"] is None
    assert scores["bertscore_precision"] is None
    assert scores["meteor"] > 0.0
    code, out, _ = run_cli(capsys, "report", predictions, references)
    assert "no BERTScore model was found" in out


VQA_REFERENCE_ROWS = [
    {"id": str(i), "answer": "yes", "answer_type": "CLOSED"} for i in range(1, 9)
]

# (case, task, prediction lines, reference lines, pattern the message must contain). "{p}" and
# "{r}" in a pattern stand for the predictions and references paths.
BAD_INPUTS = [
    (
        "missing_ids",
        "vqa",
        [{"id": "1", "prediction": "yes"}, {"id": "2", "prediction": "yes"}],
        VQA_REFERENCE_ROWS,
        r"2 predictions for 8 references; 6 question ids have no prediction: "
        r"'3', '4', '5', '6', '7' and 1 more",
    ),
    (
        "unexpected_ids",
        "vqa",
        [{"id": "1", "prediction": "yes"}, {"id": "99", "prediction": "no"}],
        VQA_REFERENCE_ROWS[:1],
        r"1 prediction ids are not in the references: '99'",
    ),
    (
        "unequal_counts",
        "vqa",
        [{"id": "1", "prediction": "yes"}, {"id": "2", "prediction": "yes"}],
        VQA_REFERENCE_ROWS[:3],
        r"2 predictions for 3 references",
    ),
    (
        "duplicate_prediction_ids",
        "vqa",
        [{"id": "1", "prediction": "yes"}, {"id": "2", "prediction": "no"}, {"id": "1", "prediction": "no"}],
        VQA_REFERENCE_ROWS[:2],
        r"predictions file {p} repeats ids: '1' \(lines 1 and 3\)",
    ),
    (
        "duplicate_reference_ids",
        "vqa",
        [{"id": "1", "prediction": "yes"}],
        [VQA_REFERENCE_ROWS[0], VQA_REFERENCE_ROWS[0]],
        r"references file {r} repeats ids: '1' \(lines 1 and 2\)",
    ),
    (
        "empty_predictions",
        "vqa",
        [{"id": "1", "prediction": ""}, {"id": "2", "prediction": "  "}, {"id": "3", "prediction": "no"}],
        VQA_REFERENCE_ROWS[:3],
        r"2 predictions are empty: '1', '2'",
    ),
    (
        "unknown_answer_type",
        "vqa",
        [{"id": "1", "prediction": "yes"}, {"id": "2", "prediction": "yes"}],
        [VQA_REFERENCE_ROWS[0], {"id": "2", "answer": "yes", "answer_type": "YES/NO"}],
        r"{r}:2: unknown answer_type 'YES/NO': use one of OPEN, CLOSED",
    ),
    (
        "malformed_json",
        "vqa",
        ['{"id": "1", "prediction": "yes"}', '{"id": "2", "prediction": '],
        VQA_REFERENCE_ROWS[:2],
        r"{p}:2: invalid JSON in the predictions file",
    ),
    (
        "missing_key",
        "vqa",
        [{"id": "1", "text": "yes"}],
        VQA_REFERENCE_ROWS[:1],
        r"{p}:1: missing key 'prediction'; each line needs \{\"id\", \"prediction\"\}",
    ),
    (
        "line_not_object",
        "vqa",
        [["1", "yes"]],
        VQA_REFERENCE_ROWS[:1],
        r"{p}:1: expected a JSON object in the predictions file, got list",
    ),
    (
        "null_id",
        "vqa",
        [{"id": None, "prediction": "yes"}],
        VQA_REFERENCE_ROWS[:1],
        r"{p}:1: id None is invalid",
    ),
    (
        "empty_file",
        "vqa",
        [""],
        VQA_REFERENCE_ROWS[:1],
        r"predictions file {p} contains no records",
    ),
    (
        "report_missing_ids",
        "report",
        [{"id": "a", "prediction": "No acute disease."}],
        [{"id": "a", "report": "Normal chest."}, {"id": "b", "report": "Clear lungs."}],
        r"1 predictions for 2 references; 1 report ids have no prediction: 'b'",
    ),
    (
        "report_empty_prediction",
        "report",
        [{"id": "a", "prediction": ""}],
        [{"id": "a", "report": "Normal chest."}],
        r"1 predictions are empty: 'a'",
    ),
    (
        "report_empty_reference",
        "report",
        [{"id": "a", "prediction": "Normal."}],
        [{"id": "a", "report": " "}],
        r"1 reference reports are empty: 'a'",
    ),
    (
        "report_reference_without_report",
        "report",
        [{"id": "a", "prediction": "Normal."}],
        [{"id": "a", "answer": "Normal."}],
        r"{r}:1: missing key 'report'",
    ),
    (
        "unknown_task",
        "caption",
        [{"id": "a", "prediction": "Normal."}],
        [{"id": "a", "report": "Normal."}],
        r"unknown task 'caption': use one of vqa, report",
    ),
]


@pytest.fixture(params=BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def bad_input(request, tmp_path):
    """Return (task, predictions path, references path, message pattern) for one bad input."""
    _, task, prediction_rows, reference_rows, pattern = request.param
    predictions = write_jsonl(tmp_path / "predictions.jsonl", prediction_rows)
    references = write_jsonl(tmp_path / "references.jsonl", reference_rows)
    pattern = pattern.replace("{p}", re.escape(str(predictions))).replace("{r}", re.escape(str(references)))
    return task, predictions, references, pattern


def test_score_files_bad_input(bad_input):
    task, predictions, references, pattern = bad_input
    with pytest.raises(MedlnkitError, match=pattern):
        score_files(task, predictions, references)


def test_cli_score_bad_input(capsys, bad_input):
    task, predictions, references, pattern = bad_input
    code, out, err = run_cli(capsys, task, predictions, references, "--json")
    assert code == 2
    assert out == ""
    assert re.search(pattern, err), err
    assert err.startswith("medlnkit score: error: ")
    assert "Traceback" not in err


def test_cli_score_missing_file(capsys, tmp_path, vqa_files):
    predictions, _ = vqa_files
    missing = tmp_path / "nowhere.jsonl"
    code, _, err = run_cli(capsys, "vqa", predictions, missing)
    assert code == 2
    assert f"references file {missing} was not found" in err
    assert "Traceback" not in err


def test_score_non_utf8_file(tmp_path, vqa_files):
    _, references = vqa_files
    predictions = tmp_path / "latin1.jsonl"
    predictions.write_bytes('{"id": "q1", "prediction": "s\u00ed"}\n'.encode("latin-1"))
    with pytest.raises(MedlnkitError, match="is not UTF-8 text"):
        score_files("vqa", predictions, references)


def test_score_skips_blank_lines(tmp_path):
    predictions = write_jsonl(tmp_path / "p.jsonl", ["", '{"id": "1", "prediction": "yes"}', "   "])
    references = write_jsonl(tmp_path / "r.jsonl", [{"id": "1", "answer": "yes", "answer_type": "CLOSED"}])
    assert score_files("vqa", predictions, references)["n"] == 1


def test_score_line_numbers_count_blank_lines(tmp_path):
    predictions = write_jsonl(tmp_path / "p.jsonl", ['{"id": "1", "prediction": "yes"}', "", "{oops"])
    references = write_jsonl(tmp_path / "r.jsonl", [{"id": "1", "answer": "yes", "answer_type": "CLOSED"}])
    with pytest.raises(MedlnkitError, match=re.escape(f"{predictions}:3: invalid JSON")):
        score_files("vqa", predictions, references)
