"""Hugging Face evaluate module: mean ROUGE-L precision, recall and F1 (rouge-score's rougeL)."""

import datasets
import evaluate

from medlnkit.evaluation.text_metrics import rouge_l

_DESCRIPTION = """ROUGE-L over whole texts (rouge-score's rougeL, not rougeLsum), averaged over
prediction/reference pairs. Stemming is off unless use_stemmer=True."""

_INPUTS = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, one per prediction, in the same order.
    use_stemmer: apply the Porter stemmer before matching (default False).
Returns:
    rouge_l_precision, rouge_l_recall, rouge_l_f1, rouge_l_implementation.
"""


class RougeL(evaluate.Metric):
    """ROUGE-L from medlnkit.evaluation.text_metrics."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, use_stemmer=False):
        return rouge_l(predictions, references, use_stemmer=use_stemmer)
