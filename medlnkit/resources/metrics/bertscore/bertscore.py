"""Hugging Face evaluate module: BERTScore from a local encoder, never downloading one."""

import datasets
import evaluate

from medlnkit.evaluation.text_metrics import bertscore

_DESCRIPTION = """BERTScore precision, recall and F1 (greedy cosine matching as in bert-score
0.3.13, no baseline rescaling). The encoder is roberta-large layer 17 when a local copy exists
(MEDLNKIT_BERTSCORE_MODEL or the Hugging Face cache), otherwise all-MiniLM-L6-v2 layer 5 with a
warning that the values are not comparable with published ones; None when neither exists."""

_INPUTS = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, one per prediction, in the same order.
    idf: weight tokens by their inverse document frequency in the references (default False).
    batch_size: pairs encoded at once (default 16).
Returns:
    bertscore_precision, bertscore_recall, bertscore_f1, bertscore_model, bertscore_layer,
    bertscore_implementation.
"""


class BertScore(evaluate.Metric):
    """BERTScore from medlnkit.evaluation.text_metrics."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, idf=False, batch_size=16):
        return bertscore(predictions, references, idf=idf, batch_size=batch_size)
