"""Report metrics against their reference implementations, on real IU X-ray (OpenI) report text.

The texts are the first 20 reports of the archive that torchxrayvision ships (by report number)
with both a FINDINGS and an IMPRESSION section. Two pairings are scored: each impression against
its own findings (short against long), and each findings section against the previous report's
findings (similar lengths and wording, like a model's output). Pinned values are rounded so that a
change of implementation or tokenisation shows up as a failure.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import tarfile
import warnings
import xml.etree.ElementTree as ElementTree

import pytest

from medlnkit.errors import DataError, MedlnkitError
from medlnkit.evaluation import (
    bertscore,
    bleu,
    load_metric,
    mean_token_length,
    meteor,
    resolve_bertscore_model,
    rouge_l,
)
from medlnkit.evaluation import text_metrics
from medlnkit.evaluation.text_metrics import tokenize_words

REPORT_COUNT = 20


def read_iu_xray_sections(count: int) -> list[tuple[str, str]]:
    """Return (findings, impression) of the first ``count`` reports that have both sections."""
    from medlnkit import assets

    try:
        archive_path = assets.iu_xray_reports_archive()
    except MedlnkitError as error:
        pytest.skip(f"the IU X-ray reports are not installed: {error}")
    with tarfile.open(archive_path) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(".xml")]
        members.sort(key=lambda member: int(re.search(r"(\d+)\.xml$", member.name).group(1)))
        sections = []
        for member in members:
            root = ElementTree.fromstring(archive.extractfile(member).read())
            texts = {node.get("Label"): (node.text or "").strip() for node in root.iter("AbstractText")}
            if texts.get("FINDINGS") and texts.get("IMPRESSION"):
                sections.append((texts["FINDINGS"], texts["IMPRESSION"]))
            if len(sections) == count:
                return sections
    raise AssertionError(f"the archive has fewer than {count} reports with findings and impression")


@pytest.fixture(scope="module")
def iu_sections():
    return read_iu_xray_sections(REPORT_COUNT)


@pytest.fixture(scope="module", params=["impression_vs_findings", "next_findings_vs_findings"])
def report_pairs(request, iu_sections):
    """Return (pairing name, predictions, references)."""
    findings = [finding for finding, _ in iu_sections]
    impressions = [impression for _, impression in iu_sections]
    if request.param == "impression_vs_findings":
        return request.param, impressions, findings
    return request.param, findings[1:], findings[:-1]


@pytest.fixture(scope="module")
def wordnet_ready():
    try:
        text_metrics.require_wordnet()
    except MedlnkitError as error:
        pytest.skip(str(error))


# Rounded values on the two pairings, measured with nltk 3.10.4, rouge-score 0.1.2, pycocoevalcap 1.2
# (METEOR 1.5) and transformers 5.25 (BERTScore, MiniLM tokenizer).
PINNED = {
    "impression_vs_findings": {
        "rouge_l_precision": 0.3919,
        "rouge_l_recall": 0.0849,
        "rouge_l_f1": 0.1285,
        "rouge_l_f1_stemmed": 0.1294,
        "meteor": 0.0959,
        "bleu": 0.008576,
        "meteor_1_5": 0.0579,
        "bertscore_precision": 0.6282,
        "bertscore_recall": 0.5055,
        "bertscore_f1": 0.5579,
        "mean_tokens": 18.05,
    },
    "next_findings_vs_findings": {
        "rouge_l_precision": 0.2918,
        "rouge_l_recall": 0.2713,
        "rouge_l_f1": 0.2725,
        "rouge_l_f1_stemmed": 0.2839,
        "meteor": 0.3412,
        "bleu": 0.124609,
        "meteor_1_5": 0.1750,
        "bertscore_precision": 0.7447,
        "bertscore_recall": 0.7397,
        "bertscore_f1": 0.7411,
        "mean_tokens": 55.5789,
    },
}


def test_tokenize_words_examples():
    assert tokenize_words("Normal chest x-XXXX.") == ["normal", "chest", "x-xxxx", "."]
    assert tokenize_words("No effusion; heart's size, 2.5 cm") == [
        "no", "effusion", ";", "heart's", "size", ",", "2", ".", "5", "cm",
    ]


def test_rouge_l_matches_rouge_score(report_pairs):
    from rouge_score import rouge_scorer

    name, predictions, references = report_pairs
    result = rouge_l(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    direct = [scorer.score(reference, prediction)["rougeL"] for prediction, reference in zip(predictions, references)]
    assert result["rouge_l_precision"] == pytest.approx(statistics.fmean(s.precision for s in direct), abs=1e-12)
    assert result["rouge_l_recall"] == pytest.approx(statistics.fmean(s.recall for s in direct), abs=1e-12)
    assert result["rouge_l_f1"] == pytest.approx(statistics.fmean(s.fmeasure for s in direct), abs=1e-12)
    assert round(result["rouge_l_precision"], 4) == PINNED[name]["rouge_l_precision"]
    assert round(result["rouge_l_recall"], 4) == PINNED[name]["rouge_l_recall"]
    assert round(result["rouge_l_f1"], 4) == PINNED[name]["rouge_l_f1"]
    assert "use_stemmer=False" in result["rouge_l_implementation"]


def test_rouge_l_stemming_option(report_pairs):
    from rouge_score import rouge_scorer

    name, predictions, references = report_pairs
    stemmed = rouge_l(predictions, references, use_stemmer=True)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    direct = statistics.fmean(
        scorer.score(reference, prediction)["rougeL"].fmeasure
        for prediction, reference in zip(predictions, references)
    )
    assert stemmed["rouge_l_f1"] == pytest.approx(direct, abs=1e-12)
    assert round(stemmed["rouge_l_f1"], 4) == PINNED[name]["rouge_l_f1_stemmed"]
    assert "use_stemmer=True" in stemmed["rouge_l_implementation"]


def test_rouge_l_stemmer_matches_plural():
    plain = rouge_l(["pleural effusions"], ["pleural effusion"])
    stemmed = rouge_l(["pleural effusions"], ["pleural effusion"], use_stemmer=True)
    assert plain["rouge_l_f1"] == pytest.approx(0.5)
    assert stemmed["rouge_l_f1"] == pytest.approx(1.0)


def test_meteor_matches_nltk(report_pairs, wordnet_ready):
    from nltk.translate.meteor_score import meteor_score

    name, predictions, references = report_pairs
    result = meteor(predictions, references)
    direct = statistics.fmean(
        meteor_score([tokenize_words(reference)], tokenize_words(prediction))
        for prediction, reference in zip(predictions, references)
    )
    assert result["meteor"] == pytest.approx(direct, abs=1e-12)
    assert round(result["meteor"], 4) == PINNED[name]["meteor"]


def test_meteor_uses_wordnet_synonyms(wordnet_ready):
    # "chest" and "thorax" share a WordNet synset and no stem; one chunk of two matches scores 0.9375.
    assert meteor(["chest wall"], ["thorax wall"])["meteor"] == pytest.approx(0.9375)
    assert meteor(["chest wall"], ["small wall"])["meteor"] == pytest.approx(0.25)


def test_meteor_missing_wordnet_names_script(monkeypatch, tmp_path):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(MedlnkitError, match=r"scripts/setup_wordnet\.sh"):
        meteor(["no effusion"], ["no pleural effusion"])


@pytest.mark.slow
def test_meteor_against_meteor_1_5(iu_sections, wordnet_ready):
    """Compare with METEOR 1.5, the jar pycocoevalcap runs (Java, offline, no download)."""
    if shutil.which("java") is None:
        pytest.skip("java is not installed: pycocoevalcap's METEOR 1.5 runs a jar")
    meteor_module = pytest.importorskip("pycocoevalcap.meteor.meteor")

    findings = [finding for finding, _ in iu_sections]
    impressions = [impression for _, impression in iu_sections]
    pairings = {
        "impression_vs_findings": (impressions, findings),
        "next_findings_vs_findings": (findings[1:], findings[:-1]),
    }
    # One scorer for both pairings, because starting the JVM and loading its tables takes seconds.
    scorer = meteor_module.Meteor()
    try:
        for name, (predictions, references) in pairings.items():
            references_by_id = {i: [" ".join(tokenize_words(text))] for i, text in enumerate(references)}
            predictions_by_id = {i: [" ".join(tokenize_words(text))] for i, text in enumerate(predictions)}
            corpus_score, pair_scores = scorer.compute_score(references_by_id, predictions_by_id)
            ours = [
                meteor([prediction], [reference])["meteor"]
                for prediction, reference in zip(predictions, references)
            ]
            assert round(corpus_score, 4) == PINNED[name]["meteor_1_5"], name
            # Different parameters and matchers: both rank pairs alike, but nltk's values are higher.
            assert statistics.correlation(ours, pair_scores) > 0.95, name
            assert statistics.fmean(ours) > corpus_score, name
    finally:
        del scorer


def test_bleu_matches_nltk(report_pairs):
    from nltk.translate.bleu_score import corpus_bleu

    name, predictions, references = report_pairs
    result = bleu(predictions, references)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = corpus_bleu(
            [[tokenize_words(reference)] for reference in references],
            [tokenize_words(prediction) for prediction in predictions],
        )
    assert result["bleu"] == pytest.approx(direct, abs=1e-12)
    assert round(result["bleu"], 6) == PINNED[name]["bleu"]
    assert "corpus_bleu" in result["bleu_implementation"]


def test_bleu_against_pycocoevalcap(report_pairs):
    bleu_module = pytest.importorskip("pycocoevalcap.bleu.bleu")

    name, predictions, references = report_pairs
    references_by_id = {i: [" ".join(tokenize_words(text))] for i, text in enumerate(references)}
    predictions_by_id = {i: [" ".join(tokenize_words(text))] for i, text in enumerate(predictions)}
    scores, _ = bleu_module.Bleu(4).compute_score(references_by_id, predictions_by_id, verbose=0)
    ours = bleu(predictions, references)["bleu"]
    if name == "next_findings_vs_findings":
        assert ours == pytest.approx(scores[3], rel=1e-9)
    else:
        # nltk counts at least one 4-gram for a prediction shorter than 4 tokens (one impression
        # here has 3), which lowers its BLEU slightly below pycocoevalcap's.
        assert ours < scores[3]
        assert ours == pytest.approx(scores[3], rel=0.01)


def test_bleu_zero_without_four_gram_overlap():
    assert bleu(["heart normal"], ["lungs clear"])["bleu"] == 0.0


def test_bertscore_minilm_matches_pinned(report_pairs):
    model = resolve_bertscore_model()
    if model is None or model.name != text_metrics.MINILM_NAME:
        pytest.skip("the pinned values are for the MiniLM fallback, which is not the model in use")
    name, predictions, references = report_pairs
    with pytest.warns(UserWarning, match="not comparable with published BERTScores"):
        result = bertscore(predictions, references, model=model)
    assert result["bertscore_model"] == text_metrics.MINILM_NAME
    assert result["bertscore_layer"] == text_metrics.MINILM_LAYER
    for key in ("bertscore_precision", "bertscore_recall", "bertscore_f1"):
        assert round(result[key], 4) == PINNED[name][key], key


@pytest.mark.slow
def test_bertscore_matches_bert_score_package(iu_sections):
    bert_score = pytest.importorskip("bert_score")
    model = resolve_bertscore_model()
    if model is None:
        pytest.skip("no BERTScore model is available on this machine")
    # Eight pairs in batches of three, so that the last batch pads differently from the others.
    findings = [finding for finding, _ in iu_sections][:9]
    predictions, references = findings[1:], findings[:-1]
    for idf in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = bertscore(predictions, references, model=model, idf=idf, batch_size=3)
            precision, recall, f1 = bert_score.score(
                predictions, references, model_type=str(model.path), num_layers=model.layer,
                idf=idf, batch_size=3, nthreads=0,
            )
        assert ours["bertscore_precision"] == pytest.approx(precision.mean().item(), abs=1e-5), idf
        assert ours["bertscore_recall"] == pytest.approx(recall.mean().item(), abs=1e-5), idf
        assert ours["bertscore_f1"] == pytest.approx(f1.mean().item(), abs=1e-5), idf


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory):
    """Save a seeded 3-layer RoBERTa with a byte-level BPE tokenizer trained on report phrases."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    folder = tmp_path_factory.mktemp("bertscore") / "tiny-roberta"
    folder.mkdir()
    phrases = ["The heart size is normal.", "No pleural effusion or pneumothorax.", "Clear lungs."]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        phrases * 5, vocab_size=300, min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False,
    )
    bpe.save_model(str(folder))
    tokenizer = RobertaTokenizer(
        vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=128
    )
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
        eos_token_id=2,
    )
    RobertaModel(config).save_pretrained(str(folder))
    return folder


def test_bertscore_roberta_matches_bert_score(tiny_roberta, monkeypatch):
    bert_score = pytest.importorskip("bert_score")
    import sys

    from transformers import AutoTokenizer

    monkeypatch.setenv(text_metrics.BERTSCORE_MODEL_ENV, str(tiny_roberta))
    monkeypatch.setenv(text_metrics.BERTSCORE_LAYER_ENV, "2")
    model = resolve_bertscore_model()
    assert model.name == "tiny-roberta"
    assert model.layer == 2
    assert model.comparable is False

    # Like bert-score under transformers 4, the first word gets the byte-level space marker.
    # bert-score 0.3.13 under transformers 5 loses it, so its tokenizer is given the option here.
    tokenizer = text_metrics._load_encoder(model).tokenizer
    # U+0120 ("Ġ") is the byte-level BPE marker for a preceding space.
    assert tokenizer.tokenize("size is normal")[0].startswith("\u0120")
    score_module = sys.modules["bert_score.score"]
    monkeypatch.setattr(
        score_module, "get_tokenizer",
        lambda model_type, use_fast=False: AutoTokenizer.from_pretrained(model_type, add_prefix_space=True),
    )
    predictions = ["Heart size is normal. Clear lungs.", "No effusion."]
    references = ["The heart size is normal.", "No pleural effusion or pneumothorax."]
    with pytest.warns(UserWarning, match="tiny-roberta layer 2"):
        ours = bertscore(predictions, references, model=model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision, recall, f1 = bert_score.score(
            predictions, references, model_type=str(tiny_roberta), num_layers=2, nthreads=0
        )
    assert ours["bertscore_precision"] == pytest.approx(precision.mean().item(), abs=1e-5)
    assert ours["bertscore_recall"] == pytest.approx(recall.mean().item(), abs=1e-5)
    assert ours["bertscore_f1"] == pytest.approx(f1.mean().item(), abs=1e-5)


def test_bertscore_detects_roberta_large(tmp_path, monkeypatch):
    folder = tmp_path / "roberta-large-copy"
    folder.mkdir()
    config = {"model_type": "roberta", "num_hidden_layers": 24, "hidden_size": 1024}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    monkeypatch.setenv(text_metrics.BERTSCORE_MODEL_ENV, str(folder))
    model = resolve_bertscore_model()
    assert model.name == "roberta-large"
    assert model.layer == 17
    assert model.comparable is True
    monkeypatch.setenv(text_metrics.BERTSCORE_LAYER_ENV, "16")
    assert resolve_bertscore_model().comparable is False


def test_bertscore_identical_texts_score_one():
    model = resolve_bertscore_model()
    if model is None:
        pytest.skip("no BERTScore model is available on this machine")
    texts = ["Heart size is normal.", "No pleural effusion or pneumothorax."]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bertscore(texts, texts, model=model)
    assert result["bertscore_f1"] == pytest.approx(1.0, abs=1e-5)


def test_bertscore_none_without_model(monkeypatch):
    monkeypatch.setattr(text_metrics, "resolve_bertscore_model", lambda: None)
    result = bertscore(["heart normal"], ["heart size normal"])
    assert result["bertscore_f1"] is None
    assert result["bertscore_precision"] is None
    assert result["bertscore_model"] is None


def test_bertscore_model_env_not_a_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(text_metrics.BERTSCORE_MODEL_ENV, str(tmp_path / "missing"))
    with pytest.raises(MedlnkitError, match="MEDLNKIT_BERTSCORE_MODEL=.*not a model folder"):
        resolve_bertscore_model()


def test_bertscore_layer_env_invalid(monkeypatch):
    monkeypatch.setenv(text_metrics.BERTSCORE_LAYER_ENV, "last")
    with pytest.raises(MedlnkitError, match="MEDLNKIT_BERTSCORE_LAYER='last' is not an integer"):
        resolve_bertscore_model()


def test_bertscore_layer_out_of_range(monkeypatch):
    monkeypatch.setenv(text_metrics.BERTSCORE_LAYER_ENV, "9")
    model = resolve_bertscore_model()
    if model is None or model.name != text_metrics.MINILM_NAME:
        pytest.skip("this check uses the 6-layer MiniLM fallback")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MedlnkitError, match="layer 9 does not exist.*6 layers"):
            bertscore(["heart"], ["heart"], model=model)


def test_mean_tokens_default_tokenizer(report_pairs):
    name, predictions, _ = report_pairs
    result = mean_token_length(predictions)
    assert round(result["mean_tokens"], 4) == PINNED[name]["mean_tokens"]
    assert "all-MiniLM-L6-v2 WordPiece" in result["mean_tokens_tokenizer"]


def test_mean_tokens_custom_tokenizer():
    result = mean_token_length(["no acute disease", "clear lungs"], str.split, tokenizer_name="whitespace")
    assert result["mean_tokens"] == 2.5
    assert result["mean_tokens_tokenizer"] == "whitespace"
    wordpiece = mean_token_length(["cardiomegaly"])
    # WordPiece splits the rare word into several pieces: card ##iom ##ega ##ly.
    assert wordpiece["mean_tokens"] == 4


def test_mean_tokens_rejects_empty_list():
    with pytest.raises(DataError, match="no texts"):
        mean_token_length([])


def test_pair_lists_must_match():
    with pytest.raises(DataError, match="2 predictions for 1 references"):
        rouge_l(["a", "b"], ["a"])
    with pytest.raises(DataError, match="no predictions"):
        bleu([], [])
    with pytest.raises(DataError, match="prediction 0 has type NoneType"):
        rouge_l([None], ["a"])


@pytest.mark.parametrize("name", ["rouge_l", "bleu", "meteor"])
def test_evaluate_module_matches_function(name, report_pairs):
    if name == "meteor":
        try:
            text_metrics.require_wordnet()
        except MedlnkitError as error:
            pytest.skip(str(error))
    _, predictions, references = report_pairs
    function = {"rouge_l": rouge_l, "bleu": bleu, "meteor": meteor}[name]
    module_result = load_metric(name).compute(predictions=predictions, references=references)
    assert module_result == function(predictions, references)


def test_evaluate_mean_tokens_module():
    result = load_metric("mean_tokens").compute(predictions=["no acute disease"], tokenizer=str.split)
    assert result["mean_tokens"] == 3


def test_load_metric_unknown_name():
    with pytest.raises(MedlnkitError, match=r"unknown metric 'rouge'.*rouge_l"):
        load_metric("rouge")
