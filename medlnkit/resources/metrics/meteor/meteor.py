"""Hugging Face evaluate module: mean nltk METEOR, with WordNet read from local files."""

import datasets
import evaluate

from medlnkit.evaluation.text_metrics import meteor

_DESCRIPTION = """nltk's meteor_score (alpha 0.9, beta 3, gamma 0.5, WordNet 3.0 synonyms) on
lower-cased word and punctuation tokens, averaged over prediction/reference pairs. Needs WordNet
in NLTK_DATA: run scripts/setup_wordnet.sh from the medlnkit repository."""

_INPUTS = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, one per prediction, in the same order.
Returns:
    meteor, meteor_implementation.
"""


class Meteor(evaluate.Metric):
    """METEOR from medlnkit.evaluation.text_metrics."""

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
        return meteor(predictions, references)
