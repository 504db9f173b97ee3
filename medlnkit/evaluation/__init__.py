"""Evaluation: VQA accuracy, report-generation metrics and the ``medlnkit score`` command.

Every metric is a plain function here and also a Hugging Face ``evaluate`` module stored in the
package, because ``evaluate.load("rouge")`` fetches its script from the Hub and fails offline while
``evaluate.load(<local folder>)`` does not. :func:`load_metric` loads those local modules.
"""

from __future__ import annotations

from pathlib import Path

from medlnkit.errors import MedlnkitError
from medlnkit.evaluation.accuracy import (
    answer_is_correct,
    llava_med_open_recall,
    normalize_answer,
    vqa_accuracy,
)
from medlnkit.evaluation.text_metrics import (
    bertscore,
    bleu,
    mean_token_length,
    meteor,
    resolve_bertscore_model,
    rouge_l,
)

METRICS_FOLDER = Path(__file__).resolve().parent.parent / "resources" / "metrics"


def metric_names() -> list[str]:
    """Return the names of the evaluate modules stored in the package, sorted."""
    return sorted(
        folder.name for folder in METRICS_FOLDER.iterdir() if (folder / f"{folder.name}.py").is_file()
    )


def load_metric(name: str, **kwargs):
    """Load the package's evaluate module ``name`` from its local folder, without the network.

    ``kwargs`` go to ``evaluate.load``. Raises MedlnkitError for an unknown name or when the
    evaluate package is missing.
    """
    names = metric_names()
    if name not in names:
        raise MedlnkitError(f"unknown metric {name!r}: use one of {', '.join(names)}")
    try:
        import evaluate
    except ImportError as error:
        raise MedlnkitError(
            f"the evaluate package cannot be imported ({error}): run `pip install evaluate` "
            "or install medlnkit[eval]"
        ) from error
    return evaluate.load(str(METRICS_FOLDER / name), **kwargs)


__all__ = [
    "METRICS_FOLDER",
    "answer_is_correct",
    "bertscore",
    "bleu",
    "llava_med_open_recall",
    "load_metric",
    "mean_token_length",
    "meteor",
    "metric_names",
    "normalize_answer",
    "resolve_bertscore_model",
    "rouge_l",
    "vqa_accuracy",
]
