"""Hugging Face evaluate module: corpus BLEU-4 from nltk's corpus_bleu."""

import datasets
import evaluate

from medlnkit.evaluation.text_metrics import bleu

_DESCRIPTION = """Corpus BLEU-4 (nltk corpus_bleu, uniform weights, no smoothing) on lower-cased
word and punctuation tokens, one reference per prediction."""

_INPUTS = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, one per prediction, in the same order.
Returns:
    bleu, bleu_implementation.
"""


class Bleu(evaluate.Metric):
    """BLEU-4 from medlnkit.evaluation.text_metrics."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        return bleu(predictions, references)
