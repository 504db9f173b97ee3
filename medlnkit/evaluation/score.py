"""``medlnkit score``: read JSON Lines predictions and references, check them, compute the metrics.

File formats, one JSON object per line (blank lines are skipped):

- predictions: ``{"id": ..., "prediction": "..."}``
- references for ``vqa``: ``{"id": ..., "answer": "...", "answer_type": "OPEN" | "CLOSED"}``
- references for ``report``: ``{"id": ..., "report": "..."}``

Ids are strings or integers and are compared as strings. Predictions are matched to references by
id, so the order of lines does not matter. Each file must hold every id once, and both files the
same ids. An empty or whitespace-only prediction is an error by default, because it usually means
that generation or the export went wrong; ``allow_empty=True`` scores it as a wrong answer (VQA)
or as an empty text (reports).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medlnkit.errors import DataError, MedlnkitError
from medlnkit.evaluation.accuracy import (
    check_not_empty,
    check_prediction_ids,
    format_ids,
    parse_answer_type,
    vqa_accuracy,
)
from medlnkit.evaluation.text_metrics import bertscore, bleu, mean_token_length, meteor, rouge_l

logger = logging.getLogger(__name__)

TASKS = ("vqa", "report")
ACCURACY_RULE = (
    "medlnkit normalized exact match (case, punctuation, articles, whitespace); "
    "CLOSED yes/no questions also by the first whole word yes/no; global = correct / all"
)
LLAVA_MED_RULE = "OPEN questions scored by LLaVA-Med's token recall instead of exact match"


def read_jsonl(path: Path | str, label: str) -> list[tuple[int, dict[str, Any]]]:
    """Return (line number, object) for every non-blank line of the JSON Lines file ``path``.

    ``label`` ("predictions" or "references") names the file in error messages. Raises DataError
    for a missing or unreadable file, invalid JSON, a line that is not an object, or no records.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{label} file {path} was not found: check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{label} file {path} is not UTF-8 text ({error.reason})") from None

    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path}:{number}: invalid JSON in the {label} file ({error.msg} at column "
                f"{error.colno}): write one JSON object per line"
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path}:{number}: expected a JSON object in the {label} file, got "
                f"{type(record).__name__}"
            )
        records.append((number, record))
    if not records:
        raise DataError(f"{label} file {path} contains no records")
    return records


def _field(path: Path, number: int, record: dict, key: str, expected: str) -> Any:
    """Return ``record[key]`` or raise DataError naming the file, line and required keys."""
    if key not in record:
        raise DataError(
            f"{path}:{number}: missing key {key!r}; each line needs {expected} "
            f"(this line has {sorted(record)})"
        )
    return record[key]


def _identifier(path: Path, number: int, record: dict, expected: str) -> str:
    value = _field(path, number, record, "id", expected)
    # bool is a subclass of int, but true/false as an id is almost certainly a mistake.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{path}:{number}: id {value!r} is invalid: use a string or an integer")
    return str(value)


def _text(path: Path, number: int, record: dict, key: str, expected: str) -> str:
    value = _field(path, number, record, key, expected)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(
            f"{path}:{number}: {key} {value!r} is invalid: use a string"
        )
    return str(value)


def _by_id(path: Path, label: str, rows: list[tuple[int, str, Any]]) -> dict[str, Any]:
    """Return {id: value} from (line, id, value) rows, raising DataError on a repeated id."""
    first_line: dict[str, int] = {}
    repeats: list[str] = []
    for number, identifier, _ in rows:
        if identifier in first_line:
            repeats.append(f"{identifier!r} (lines {first_line[identifier]} and {number})")
        else:
            first_line[identifier] = number
    if repeats:
        listed = ", ".join(repeats[:5])
        if len(repeats) > 5:
            listed += f" and {len(repeats) - 5} more"
        raise DataError(f"{label} file {path} repeats ids: {listed}. Keep one line per id.")
    return {identifier: value for _, identifier, value in rows}


def read_predictions(path: Path | str) -> dict[str, str]:
    """Read ``{"id", "prediction"}`` lines into {id: prediction}."""
    path = Path(path)
    expected = '{"id", "prediction"}'
    rows = [
        (
            number,
            _identifier(path, number, record, expected),
            _text(path, number, record, "prediction", expected),
        )
        for number, record in read_jsonl(path, "predictions")
    ]
    return _by_id(path, "predictions", rows)


def read_vqa_references(path: Path | str) -> dict[str, dict[str, str]]:
    """Read ``{"id", "answer", "answer_type"}`` lines into {id: reference mapping}."""
    path = Path(path)
    expected = '{"id", "answer", "answer_type"}'
    rows = []
    for number, record in read_jsonl(path, "references"):
        identifier = _identifier(path, number, record, expected)
        answer = _text(path, number, record, "answer", expected)
        answer_type = parse_answer_type(
            _field(path, number, record, "answer_type", expected), f"{path}:{number}"
        )
        reference = {"id": identifier, "answer": answer, "answer_type": answer_type}
        rows.append((number, identifier, reference))
    return _by_id(path, "references", rows)


def read_report_references(path: Path | str) -> dict[str, str]:
    """Read ``{"id", "report"}`` lines into {id: report}."""
    path = Path(path)
    expected = '{"id", "report"}'
    rows = [
        (
            number,
            _identifier(path, number, record, expected),
            _text(path, number, record, "report", expected),
        )
        for number, record in read_jsonl(path, "references")
    ]
    return _by_id(path, "references", rows)


def score_reports(
    predictions: Mapping[str, str],
    references: Mapping[str, str],
    *,
    allow_empty: bool = False,
    use_stemmer: bool = False,
) -> dict[str, Any]:
    """Score generated reports, keyed by id, against reference reports.

    Returns ROUGE-L precision, recall and F1, METEOR, BLEU-4, BERTScore precision, recall and F1
    (None without a local model), mean_tokens of the predictions, n, and the implementations.
    """
    check_prediction_ids(predictions, references, what="report")
    empty_references = [identifier for identifier, text in references.items() if not text.strip()]
    if empty_references:
        raise DataError(
            f"{len(empty_references)} reference reports are empty: {format_ids(empty_references)}. "
            "Remove them or add their text."
        )
    if not allow_empty:
        check_not_empty(predictions)

    ids = list(references)
    generated = [predictions[identifier] for identifier in ids]
    reference_texts = [references[identifier] for identifier in ids]
    logger.info("scoring %d generated reports", len(ids))

    rouge = rouge_l(generated, reference_texts, use_stemmer=use_stemmer)
    meteor_result = meteor(generated, reference_texts)
    bleu_result = bleu(generated, reference_texts)
    bert = bertscore(generated, reference_texts)
    tokens = mean_token_length(generated)
    return {
        "task": "report",
        "rouge_l_precision": rouge["rouge_l_precision"],
        "rouge_l_recall": rouge["rouge_l_recall"],
        "rouge_l_f1": rouge["rouge_l_f1"],
        "meteor": meteor_result["meteor"],
        "bleu": bleu_result["bleu"],
        "bertscore_precision": bert["bertscore_precision"],
        "bertscore_recall": bert["bertscore_recall"],
        "bertscore_f1": bert["bertscore_f1"],
        "bertscore_model": bert["bertscore_model"],
        "bertscore_layer": bert["bertscore_layer"],
        "mean_tokens": tokens["mean_tokens"],
        "n": len(ids),
        "implementations": {
            "rouge_l": rouge["rouge_l_implementation"],
            "meteor": meteor_result["meteor_implementation"],
            "bleu": bleu_result["bleu_implementation"],
            "bertscore": bert["bertscore_implementation"],
            "mean_tokens": tokens["mean_tokens_tokenizer"],
        },
    }


def score_files(
    task: str,
    predictions_path: Path | str,
    references_path: Path | str,
    *,
    allow_empty: bool = False,
    open_metric: str = "exact",
    use_stemmer: bool = False,
) -> dict[str, Any]:
    """Read both JSON Lines files, check that they match, and return the task's scores.

    ``task`` is ``"vqa"`` (closed, open and global accuracy) or ``"report"`` (ROUGE-L, METEOR,
    BLEU, BERTScore, mean tokens). ``open_metric`` applies to vqa (see vqa_accuracy) and
    ``use_stemmer`` to ROUGE-L. Raises MedlnkitError (DataError for file content) with the file,
    line or ids at fault.
    """
    if task not in TASKS:
        raise MedlnkitError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    if task == "vqa":
        references = read_vqa_references(references_path)
        predictions = read_predictions(predictions_path)
        result = vqa_accuracy(
            predictions, references.values(), open_metric=open_metric, allow_empty=allow_empty
        )
        return {
            "task": "vqa",
            "closed_accuracy": result["closed_accuracy"],
            "open_accuracy": result["open_accuracy"],
            "global_accuracy": result["global_accuracy"],
            "n_closed": result["n_closed"],
            "n_open": result["n_open"],
            "n": result["n"],
            "closed_correct": result["closed_correct"],
            "open_correct": result["open_correct"],
            "open_metric": result["open_metric"],
            "implementations": {
                "accuracy": ACCURACY_RULE
                + ("; " + LLAVA_MED_RULE if open_metric == "llava_med_recall" else "")
            },
        }
    references = read_report_references(references_path)
    predictions = read_predictions(predictions_path)
    return score_reports(predictions, references, allow_empty=allow_empty, use_stemmer=use_stemmer)


def _format_value(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if key in ("mean_tokens",):
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{100 * value:.2f} %"
    return str(value)


def format_scores(scores: Mapping[str, Any]) -> str:
    """Render a score_files result as aligned text lines, fractions shown as percentages."""
    lines = [f"task: {scores.get('task', '?')}"]
    rows = [(key, value) for key, value in scores.items() if key not in ("task", "implementations")]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        lines.append(f"  {key:<{width}}  {_format_value(key, value)}")
    if scores.get("task") == "report" and scores.get("bertscore_f1") is None:
        lines.append(
            "  (no BERTScore model was found: set MEDLNKIT_BERTSCORE_MODEL to a local roberta-large)"
        )
    implementations = scores.get("implementations") or {}
    if implementations:
        lines.append("implementations:")
        for name, description in implementations.items():
            lines.append(f"  {name}: {description or 'not available'}")
    return "\n".join(lines)
