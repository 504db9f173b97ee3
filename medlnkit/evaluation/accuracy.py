"""Closed, open and global accuracy for medical VQA, with predictions matched by question id.

Matching rule (``open_metric="exact"``, the default):

- Both texts go through :func:`normalize_answer` (lower case, punctuation and symbols to spaces,
  articles a/an/the dropped, whitespace collapsed).
- Any question counts as correct when the normalised prediction equals the normalised reference.
- A CLOSED question whose reference is ``yes`` or ``no`` also counts as correct when the first
  whole word ``yes`` or ``no`` in the prediction equals the reference, so a generative answer such
  as "Yes, there is an effusion." scores. Words are compared whole, so "nodule" never reads as "no".
- Other CLOSED questions (multiple choice, such as "CT or MRI?") need the normalised exact match:
  "It is a CT scan" does not count for "CT".

Global accuracy is the count-weighted mean: correct answers over all questions. On Slake's English
test split (416 CLOSED, 645 OPEN) this weighting reproduces the global column that the study reports
for LLaVA-Med from its open and closed columns.

``open_metric="llava_med_recall"`` replaces the OPEN score by the token recall of LLaVA-Med's
evaluation script (see :func:`llava_med_open_recall`).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from medlnkit.data.records import ANSWER_TYPES, VQARecord
from medlnkit.errors import DataError

OPEN_METRICS = ("exact", "llava_med_recall")
ARTICLES = frozenset({"a", "an", "the"})
YES_NO = ("yes", "no")

# Number of ids an error message lists before it gives only the count of the rest.
_IDS_SHOWN = 5


def normalize_answer(text: str) -> str:
    """Lower-case ``text``, turn punctuation and symbols into spaces, drop articles, collapse spaces."""
    characters = [
        " " if unicodedata.category(character)[0] in "PS" else character
        for character in text.lower()
    ]
    words = "".join(characters).split()
    return " ".join(word for word in words if word not in ARTICLES)


def first_yes_no(text: str) -> str | None:
    """Return the first whole word ``yes`` or ``no`` of the normalised ``text``, or None."""
    for word in normalize_answer(text).split():
        if word in YES_NO:
            return word
    return None


def answer_is_correct(prediction: str, reference: str, answer_type: str) -> bool:
    """Apply the module's matching rule to one question of type ``"OPEN"`` or ``"CLOSED"``."""
    normalized_prediction = normalize_answer(prediction)
    normalized_reference = normalize_answer(reference)
    if normalized_prediction == normalized_reference:
        return True
    if answer_type == "CLOSED" and normalized_reference in YES_NO:
        return first_yes_no(prediction) == normalized_reference
    return False


def llava_med_open_recall(prediction: str, reference: str) -> float:
    """Return LLaVA-Med's open-question recall of ``reference`` words in ``prediction``.

    Follows ``calculate_f1score`` in LLaVA-Med's ``llava/eval/eval_metrics/evaluate_metrics.py``:
    recall = tp / (tp + fn), where tp adds, for every distinct word found in both texts, its count
    in the PREDICTION, and fn adds, for every reference word missing from the prediction, its count
    in the reference. So a prediction that repeats a matched word scores higher ("lung lung" gets
    2/3 for "left lung"), as in the original. An empty text on either side gives 0.0, and so does a
    prediction that matches nothing.
    Both texts go through :func:`normalize_answer` instead of LLaVA-Med's ``normalize_word``, which
    differs in handling punctuation and also maps number words (zero to ten, none) to digits.
    """
    prediction_counts = Counter(normalize_answer(prediction).split())
    reference_counts = Counter(normalize_answer(reference).split())
    if not prediction_counts or not reference_counts:
        return 0.0
    true_positives = sum(
        count for word, count in prediction_counts.items() if word in reference_counts
    )
    false_negatives = sum(
        count for word, count in reference_counts.items() if word not in prediction_counts
    )
    if true_positives == 0:
        return 0.0
    return true_positives / (true_positives + false_negatives)


def parse_answer_type(value: Any, where: str) -> str:
    """Return ``value`` as ``"OPEN"`` or ``"CLOSED"``, ignoring case and surrounding spaces.

    Leading and trailing spaces are accepted because the real VQA-RAD train split contains
    ``"CLOSED "``. Raises DataError naming the value and ``where`` it was found otherwise.
    """
    answer_type = value.strip().upper() if isinstance(value, str) else None
    if answer_type not in ANSWER_TYPES:
        raise DataError(
            f"{where}: unknown answer_type {value!r}: use one of {', '.join(ANSWER_TYPES)}"
        )
    return answer_type


def format_ids(ids: Iterable[str]) -> str:
    """Return the first five ids, in order, for an error message, plus the count of the rest."""
    ordered = list(ids)
    listed = ", ".join(repr(identifier) for identifier in ordered[:_IDS_SHOWN])
    if len(ordered) > _IDS_SHOWN:
        listed += f" and {len(ordered) - _IDS_SHOWN} more"
    return listed


def check_prediction_ids(
    prediction_ids: Iterable[str], reference_ids: Iterable[str], *, what: str = "question"
) -> None:
    """Raise DataError unless both id collections contain the same ids, each once.

    The message gives both counts when they differ and names a few missing and unexpected ids.
    """
    prediction_list = list(prediction_ids)
    reference_list = list(reference_ids)
    for label, ids in (("predictions", prediction_list), ("references", reference_list)):
        duplicates = [identifier for identifier, count in Counter(ids).items() if count > 1]
        if duplicates:
            raise DataError(
                f"{label} contain duplicate {what} ids {format_ids(duplicates)}: "
                f"keep one record per {what}"
            )

    # Lists in file order, so that the first ids an error names are the first ones to look at.
    prediction_set, reference_set = set(prediction_list), set(reference_list)
    missing = [identifier for identifier in reference_list if identifier not in prediction_set]
    unexpected = [identifier for identifier in prediction_list if identifier not in reference_set]
    if not missing and not unexpected:
        return
    problems = []
    if len(prediction_list) != len(reference_list):
        problems.append(
            f"{len(prediction_list)} predictions for {len(reference_list)} references"
        )
    if missing:
        problems.append(f"{len(missing)} {what} ids have no prediction: {format_ids(missing)}")
    if unexpected:
        problems.append(
            f"{len(unexpected)} prediction ids are not in the references: {format_ids(unexpected)}"
        )
    raise DataError(
        "predictions do not match references: " + "; ".join(problems)
        + f". Write exactly one prediction for every reference {what} id."
    )


def check_not_empty(predictions: Mapping[str, str]) -> None:
    """Raise DataError naming the ids whose prediction is empty or only whitespace."""
    empty = [identifier for identifier, text in predictions.items() if not text.strip()]
    if empty:
        raise DataError(
            f"{len(empty)} predictions are empty: {format_ids(empty)}. An empty prediction "
            "usually means generation or the prediction file went wrong; to score empty "
            "answers as wrong, pass allow_empty=True (on the command line: medlnkit score --allow-empty)"
        )


def _reference_fields(reference: VQARecord | Mapping[str, Any], position: int) -> tuple[str, str, str]:
    """Return (question id, reference answer, answer type) of one record or mapping."""
    if isinstance(reference, VQARecord):
        qid, answer, answer_type = reference.qid, reference.answer, reference.answer_type
        where = f"reference {qid!r}"
    elif isinstance(reference, Mapping):
        qid = reference.get("qid", reference.get("id"))
        answer = reference.get("answer")
        answer_type = reference.get("answer_type")
        where = f"reference {position} (id {qid!r})"
        if qid is None or answer is None:
            raise DataError(
                f"reference {position} lacks 'qid' (or 'id') or 'answer': "
                f"it has the keys {sorted(reference)}"
            )
    else:
        raise DataError(
            f"reference {position} has type {type(reference).__name__}: "
            "pass VQARecord objects or mappings with qid, answer and answer_type"
        )
    return str(qid), str(answer), parse_answer_type(answer_type, where)


def vqa_accuracy(
    predictions: Mapping[str, str],
    references: Iterable[VQARecord | Mapping[str, Any]],
    *,
    open_metric: str = "exact",
    allow_empty: bool = False,
) -> dict[str, Any]:
    """Score VQA predictions, keyed by question id, against reference records.

    ``references`` are VQARecord objects or mappings with ``qid`` (or ``id``), ``answer`` and
    ``answer_type``. Every reference needs exactly one prediction and every prediction a reference.
    An empty prediction raises DataError unless ``allow_empty`` is True, when it scores as wrong.
    Returns closed_accuracy, open_accuracy and global_accuracy as fractions in [0, 1] (None for a
    type without questions), n_closed, n_open, n, closed_correct, open_correct (a sum of recalls
    under ``"llava_med_recall"``) and open_metric.
    """
    if open_metric not in OPEN_METRICS:
        raise DataError(f"unknown open_metric {open_metric!r}: use one of {', '.join(OPEN_METRICS)}")
    rows = [_reference_fields(reference, index) for index, reference in enumerate(references, 1)]
    if not rows:
        raise DataError("no references to score: pass at least one reference record")
    predictions = {str(identifier): text for identifier, text in predictions.items()}
    for identifier, text in predictions.items():
        if not isinstance(text, str):
            raise DataError(
                f"prediction for id {identifier!r} has type {type(text).__name__}: expected a string"
            )
    check_prediction_ids(predictions, [qid for qid, _, _ in rows])
    if not allow_empty:
        check_not_empty(predictions)

    scores: dict[str, list[float]] = {"OPEN": [], "CLOSED": []}
    for qid, answer, answer_type in rows:
        prediction = predictions[qid]
        if answer_type == "OPEN" and open_metric == "llava_med_recall":
            scores["OPEN"].append(llava_med_open_recall(prediction, answer))
        else:
            scores["OPEN" if answer_type == "OPEN" else "CLOSED"].append(
                float(answer_is_correct(prediction, answer, answer_type))
            )

    closed, open_ = scores["CLOSED"], scores["OPEN"]
    total = len(closed) + len(open_)
    return {
        "closed_accuracy": sum(closed) / len(closed) if closed else None,
        "open_accuracy": sum(open_) / len(open_) if open_ else None,
        "global_accuracy": (sum(closed) + sum(open_)) / total,
        "n_closed": len(closed),
        "n_open": len(open_),
        "n": total,
        "closed_correct": int(sum(closed)),
        "open_correct": sum(open_) if open_metric == "llava_med_recall" else int(sum(open_)),
        "open_metric": open_metric,
    }
