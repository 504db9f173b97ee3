"""The LLaVA-Med sweep: train and evaluate one fresh model per Table 2 paradigm, results kept on disk.

Each paradigm writes ``<out>/llava/<slug>/`` with ``result.json``, ``losses.csv`` and
``predictions.jsonl``. A rerun with the same settings reuses finished paradigms. The base model is
built once per sweep and copied for each paradigm, so every paradigm starts from the same weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from medlnkit.data.sources import VQASplits
from medlnkit.evaluation.accuracy import vqa_accuracy
from medlnkit.llava_training import LlavaTrainOptions, train_llava
from medlnkit.models.llava import LORA_SETTINGS, PREFIX_SETTINGS, LlavaBundle, build_llava, generate_answers
from medlnkit.paradigms import parse_paradigm
from medlnkit.profiles import Profile
from medlnkit.sweep import (
    load_finished,
    or_nan,
    paradigm_slug,
    step_progress,
    write_paradigm_outputs,
)
from medlnkit.training import batches
from medlnkit.tuning import apply_paradigm, report_for

logger = logging.getLogger(__name__)

# Bump when a change to the LLaVA code makes results cached by an older version invalid.
SWEEP_VERSION = 1
SWEEP_FOLDER = "llava"
_WARNED: set[str] = set()  # warning messages already shown in this process


def _settings_key(profile: Profile, splits: VQASplits, options: LlavaTrainOptions) -> str:
    """Return a hash of everything that changes a run's result, to decide whether a cache is valid."""
    payload = {
        "version": SWEEP_VERSION,
        "model": profile.llava_model,
        "train": asdict(profile.llava_train),
        "options": asdict(options),
        "lora": asdict(LORA_SETTINGS),
        "prefix": asdict(PREFIX_SETTINGS),
        "data": splits.name,
        "root": str(splits.root),
        "train_ids": [r.qid for r in splits.train],
        "test_ids": [r.qid for r in splits.test],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def evaluate_llava(
    bundle: LlavaBundle, records, collate, batch_size: int, max_new_tokens: int, seed: int = 0
) -> dict[str, str]:
    """Generate an answer for every record (left-padded batches); return predictions by question id."""
    predictions = {}
    bundle.model.eval()
    torch.manual_seed(seed)  # sampling (paper profile) draws from torch's generator
    for chunk in batches(records, batch_size, shuffle=False):
        answers = generate_answers(bundle, collate.prompts(chunk), collate, max_new_tokens)
        predictions.update({r.qid: a for r, a in zip(chunk, answers)})
    return predictions


def text_scores(bundle: LlavaBundle, predictions: dict[str, str], records) -> dict:
    """Return BERTScore recall (None without a scorer) and the mean answer length in model tokens."""
    from medlnkit.evaluation.text_metrics import bertscore, mean_token_length

    predicted = [predictions[r.qid] for r in records]
    references = [r.answer for r in records]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = bertscore(predicted, references)
    # The scorer warns on every call when it is not roberta-large; a sweep repeats it once.
    for warning in caught:
        message = str(warning.message)
        if message not in _WARNED:
            _WARNED.add(message)
            warnings.warn(message, warning.category, stacklevel=2)
    lengths = mean_token_length(
        predicted, bundle.tokenizer, tokenizer_name=f"{bundle.profile} LLaVA tokenizer"
    )
    return {
        "bertscore_recall": scores["bertscore_recall"],
        "bertscore_model": scores["bertscore_model"],
        "mean_answer_tokens": lengths["mean_tokens"],
        "mean_tokens_tokenizer": lengths["mean_tokens_tokenizer"],
    }


def run_paradigm(
    profile: Profile,
    splits: VQASplits,
    paradigm: str,
    out_dir: Path,
    base: LlavaBundle | None = None,
    quiet: bool | None = None,
    options: LlavaTrainOptions = LlavaTrainOptions(),
) -> dict:
    """Train and evaluate LLaVA under one paradigm; return its result record (and write it to disk).

    ``base`` is the untuned model to copy; it is built from the profile when None.
    """
    paradigm = str(parse_paradigm(paradigm, "llava"))
    settings = profile.llava_train
    run_dir = Path(out_dir) / SWEEP_FOLDER / paradigm_slug(paradigm)
    result_file = run_dir / "result.json"
    key = _settings_key(profile, splits, options)
    cached = load_finished(result_file, key)
    if cached is not None:
        logger.info("LLaVA %s: reusing the finished run in %s", paradigm, run_dir)
        return cached

    bundle = (base or build_llava(profile.llava_model, seed=settings.seed)).copy()
    plan = apply_paradigm(bundle.model, paradigm, "llava", lora=LORA_SETTINGS, prefix=PREFIX_SETTINGS)
    report = report_for(bundle.model, plan)
    collate = bundle.collator(settings.max_question_tokens, settings.max_answer_tokens)

    bar, show = step_progress(f"LLaVA {paradigm}", quiet)
    logger.info(
        "LLaVA %s: training on %d pairs, %d trainable parameters",
        paradigm,
        len(splits.train),
        report.trainable,
    )
    result = train_llava(bundle.model, splits.train, collate, settings, options, progress=show)
    bar.close()
    predictions = evaluate_llava(
        bundle, splits.test, collate, settings.eval_batch_size, settings.max_answer_tokens, settings.seed
    )
    scores = vqa_accuracy(predictions, splits.test, allow_empty=True)
    recall = vqa_accuracy(predictions, splits.test, open_metric="llava_med_recall", allow_empty=True)
    texts = text_scores(bundle, predictions, splits.test)
    logger.info(
        "LLaVA %s: open %.3f closed %.3f global %.3f (%.0f s)",
        paradigm, or_nan(scores["open_accuracy"]), or_nan(scores["closed_accuracy"]),
        or_nan(scores["global_accuracy"]), result.seconds,
    )  # fmt: skip

    record = {
        "paradigm": paradigm,
        "settings_key": key,
        "profile": profile.name,
        "data": splits.name,
        "n_train": len(splits.train),
        "n_train_available": splits.available.get("train"),
        "n_test": len(splits.test),
        **{
            k: scores[k]
            for k in ("open_accuracy", "closed_accuracy", "global_accuracy", "n_open", "n_closed")
        },
        "open_recall": recall["open_accuracy"],
        **texts,
        "total_params": report.total,
        "trainable_params": report.trainable,
        "trainable_ratio": report.trainable_ratio,
        "peft_params": report.peft,
        "peft_ratio": report.peft_ratio,
        "added_params": report.added,
        "steps": result.steps,
        "train_seconds": round(result.seconds, 2),
        "first_loss": result.losses[0],
        "final_loss": result.losses[-1],
        "template": bundle.template.name,
        "generation": asdict(bundle.generation),
        "weights": bundle.weight_sources,
    }
    write_paradigm_outputs(run_dir, record, result.history(), splits.test, predictions)
    return record


def run_llava_sweep(
    profile: Profile,
    splits: VQASplits,
    out_dir: Path,
    paradigms: Sequence[str] | None = None,
    quiet: bool | None = None,
    options: LlavaTrainOptions = LlavaTrainOptions(),
    base: LlavaBundle | None = None,
) -> pd.DataFrame:
    """Run every paradigm (default: the profile's, which is Table 2's 14) and return one row each.

    ``base`` is the untuned model every paradigm copies. When it is None, the profile's model is
    built, and only if some paradigm has no finished result on disk.
    """
    paradigms = [str(parse_paradigm(p, "llava")) for p in (paradigms or profile.llava_paradigms)]
    threads = torch.get_num_threads()
    if profile.llava_train.threads:
        # Set before the first model call, so generation and scoring use the profile's threads too.
        torch.set_num_threads(profile.llava_train.threads)
    records = []
    try:
        for paradigm in paradigms:
            key = _settings_key(profile, splits, options)
            result_file = Path(out_dir) / SWEEP_FOLDER / paradigm_slug(paradigm) / "result.json"
            cached = load_finished(result_file, key) is not None
            if base is None and not cached:
                base = build_llava(profile.llava_model, seed=profile.llava_train.seed)
            records.append(run_paradigm(profile, splits, paradigm, out_dir, base, quiet, options))
    finally:
        torch.set_num_threads(threads)
    return results_table(records)


def results_table(records: Sequence[dict]) -> pd.DataFrame:
    """Tabulate sweep records with accuracies and recalls in percent, named by paradigm string."""
    rows = []
    for r in records:
        states = r["paradigm"].split(",")
        rows.append(
            {
                "paradigm": r["paradigm"],
                "vision": states[0],
                "connector": states[1],
                "llm": states[2],
                "lm_head": states[3],
                "open_acc": _percent(r["open_accuracy"]),
                "closed_acc": _percent(r["closed_accuracy"]),
                "global_acc": _percent(r["global_accuracy"]),
                "open_recall": _percent(r["open_recall"]),
                "bertscore_recall": _percent(r["bertscore_recall"]),
                "mean_answer_tokens": round(r["mean_answer_tokens"], 2),
                "trainable_params": r["trainable_params"],
                "trainable_pct": round(100 * r["trainable_ratio"], 5),
                "peft_params": r["peft_params"] or None,
                "peft_pct": None if r["peft_ratio"] is None else round(100 * r["peft_ratio"], 5),
                "n_train": r["n_train"],
                "n_test": r["n_test"],
                "steps": r["steps"],
                "final_loss": round(r["final_loss"], 4),
                "train_seconds": r["train_seconds"],
            }
        )
    return pd.DataFrame(rows)


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


def load_loss_histories(out_dir: Path, paradigms: Sequence[str]) -> pd.DataFrame:
    """Return the loss history of finished paradigms as one long table (paradigm, step, epoch, loss)."""
    frames = []
    for paradigm in paradigms:
        path = Path(out_dir) / SWEEP_FOLDER / paradigm_slug(paradigm) / "losses.csv"
        if path.exists():
            frame = pd.read_csv(path)
            frame.insert(0, "paradigm", paradigm)
            frames.append(frame)
    columns = ["paradigm", "step", "epoch", "loss", "learning_rate"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def plot_llava_loss_curves(losses: pd.DataFrame, title: str, smooth: int = 1):
    """Plot training loss per step, one line per paradigm, with LLaVA's group order in the legend."""
    from medlnkit.figures import plot_loss_curves

    fig = plot_loss_curves(losses, title, smooth)
    legend = fig.axes[0].get_legend()
    if legend is not None:
        legend.set_title("paradigm (vision,connector,llm,lm_head)")
    return fig
