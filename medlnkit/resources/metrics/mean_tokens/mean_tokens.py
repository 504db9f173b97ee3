"""Hugging Face evaluate module: mean number of tokens per generated text."""

import datasets
import evaluate

from medlnkit.evaluation.text_metrics import mean_token_length

_DESCRIPTION = """Mean token count of the predictions. The default tokenizer is the uncased
WordPiece tokenizer of all-MiniLM-L6-v2; pass any Hugging Face tokenizer or a callable that maps
a string to a list of tokens to count with another one."""

_INPUTS = """
Args:
    predictions: list of generated texts.
    tokenizer: a Hugging Face tokenizer or a callable (default: MiniLM WordPiece).
    tokenizer_name: the name to report for the tokenizer.
Returns:
    mean_tokens, mean_tokens_tokenizer.
"""


class MeanTokens(evaluate.Metric):
    """Mean token length from medlnkit.evaluation.text_metrics."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, tokenizer=None, tokenizer_name=None):
        return mean_token_length(predictions, tokenizer, tokenizer_name=tokenizer_name)
