"""Hugging Face evaluate module: closed, open and global VQA accuracy, matched by question id."""

import datasets
import evaluate

from medlnkit.evaluation.accuracy import check_prediction_ids, vqa_accuracy

_DESCRIPTION = """Closed, open and global accuracy of medical VQA answers (Slake, VQA-RAD).
Answers are normalised (case, punctuation, articles a/an/the, whitespace) and compared whole; a
CLOSED yes/no question also counts when the first yes/no word of the prediction is the reference.
Predictions are matched to references by question id, not by position."""

_INPUTS = """
Args:
    predictions: list of {"id": str, "text": str}.
    references: list of {"id": str, "answer": str, "answer_type": "OPEN" or "CLOSED"}.
    open_metric: "exact" (default) or "llava_med_recall" (LLaVA-Med's token recall for OPEN).
    allow_empty: score empty predictions as wrong instead of raising (default False).
Returns:
    closed_accuracy, open_accuracy, global_accuracy (fractions, None for a type without
    questions), n_closed, n_open, n, closed_correct, open_correct, open_metric.
"""


class VqaAccuracy(evaluate.Metric):
    """Closed, open and global VQA accuracy from medlnkit.evaluation.accuracy."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answer": datasets.Value("string"),
                        "answer_type": datasets.Value("string"),
                    },
                }
            ),
        )

    def _compute(self, predictions, references, open_metric="exact", allow_empty=False):
        # A dict keeps one prediction per id, so duplicates are rejected before it is built.
        check_prediction_ids([p["id"] for p in predictions], [r["id"] for r in references])
        by_id = {prediction["id"]: prediction["text"] for prediction in predictions}
        return vqa_accuracy(by_id, references, open_metric=open_metric, allow_empty=allow_empty)
