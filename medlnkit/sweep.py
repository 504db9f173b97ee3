"""The MISS sweep: train and evaluate one fresh model per paradigm, and keep every result on disk.

Each paradigm writes ``<out>/miss/<slug>/`` with ``result.json``, ``losses.csv`` and
``predictions.jsonl``. A rerun with the same settings reuses finished paradigms, so an interrupted or
failed sweep loses nothing that was already computed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from medlnkit.data.collate import MissCollator, PixelCache
from medlnkit.data.sources import VQASplits
from medlnkit.evaluation.accuracy import vqa_accuracy
from medlnkit.models.miss import build_miss, generate_answers
from medlnkit.paradigms import parse_paradigm
from medlnkit.profiles import Profile
from medlnkit.training import batches, train_model
from medlnkit.tuning import apply_paradigm, report_for

logger = logging.getLogger(__name__)


def paradigm_slug(paradigm: str) -> str:
    """Return a folder name for a paradigm: "T,LN,T" -> "T-LN-T"."""
    return str(paradigm).replace(",", "-")


def progress_disabled(quiet: bool | None = None) -> bool:
    """Return True when progress bars should be hidden: requested, under CI, or under ``medlnkit run``."""
    if os.environ.get("MEDLNKIT_NO_PROGRESS_BARS"):
        return True
    return bool(quiet) if quiet is not None else bool(os.environ.get("CI"))


def _settings_key(profile: Profile, splits: VQASplits) -> str:
    """Return a hash of everything that changes a run's result, to decide whether a cache is valid."""
    payload = {
        "model": profile.miss_model,
        "train": profile.miss_train.__dict__,
        "data": splits.name,
        "root": str(splits.root),
        "train_ids": [r.qid for r in splits.train],
        "test_ids": [r.qid for r in splits.test],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def evaluate_miss(bundle, records, collate: MissCollator, batch_size: int, max_new_tokens: int) -> dict[str, str]:
    """Generate an answer for every record; return predictions keyed by question id."""
    predictions = {}
    bundle.model.eval()
    for chunk in batches(records, batch_size, shuffle=False):
        inputs = collate.questions(chunk)
        answers = generate_answers(bundle.model, bundle.tokenizer, max_new_tokens=max_new_tokens, **inputs)
        predictions.update({r.qid: a for r, a in zip(chunk, answers)})
    return predictions


def run_paradigm(profile: Profile, splits: VQASplits, paradigm: str, out_dir: Path, quiet: bool | None = None) -> dict:
    """Train and evaluate MISS under one paradigm; return its result record (and write it to disk)."""
    paradigm = str(parse_paradigm(paradigm, "miss"))
    settings = profile.miss_train
    run_dir = Path(out_dir) / "miss" / paradigm_slug(paradigm)
    result_file = run_dir / "result.json"
    key = _settings_key(profile, splits)
    cached = load_finished(result_file, key)
    if cached is not None:
        logger.info("MISS %s: reusing the finished run in %s", paradigm, run_dir)
        return cached

    bundle = build_miss(profile.miss_model, seed=settings.seed)
    plan = apply_paradigm(bundle.model, paradigm, "miss")
    report = report_for(bundle.model, plan)
    pixels = PixelCache(bundle.image_size, bundle.image_mean, bundle.image_std)
    collate = MissCollator(bundle.tokenizer, pixels, settings.max_question_tokens, settings.max_answer_tokens)

    bar, show = step_progress(f"MISS {paradigm}", quiet)
    logger.info("MISS %s: training on %d pairs, %d trainable parameters", paradigm, len(splits.train), report.trainable)
    result = train_model(bundle.model, splits.train, collate, settings, progress=show)
    bar.close()
    with torch.no_grad():
        predictions = evaluate_miss(bundle, splits.test, collate, settings.eval_batch_size, settings.max_answer_tokens)
    scores = vqa_accuracy(predictions, splits.test)
    logger.info(
        "MISS %s: open %.3f closed %.3f global %.3f (%.0f s)",
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
        "n_test_available": splits.available.get("test"),
        **{k: scores[k] for k in ("open_accuracy", "closed_accuracy", "global_accuracy", "n_open", "n_closed")},
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
        "weights": bundle.weight_sources,
    }
    write_paradigm_outputs(run_dir, record, result.history(), splits.test, predictions)
    return record


def load_finished(result_file: Path, key: str) -> dict | None:
    """Return the record in ``result_file`` when it exists and was run with settings ``key``, else None."""
    if not result_file.exists():
        return None
    cached = json.loads(result_file.read_text())
    return cached if cached.get("settings_key") == key else None


def step_progress(label: str, quiet: bool | None):
    """Return a tqdm bar for training steps and the ``progress(step, total, loss)`` callback that feeds it."""
    from tqdm.auto import tqdm

    bar = tqdm(total=None, desc=label, unit="step", disable=progress_disabled(quiet), leave=False)

    def show(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.set_postfix(loss=f"{loss:.3f}")
        bar.update(1)

    return bar, show


def write_paradigm_outputs(
    run_dir: Path, record: dict, history: list[dict], test: Sequence, predictions: dict[str, str]
) -> None:
    """Write losses.csv, predictions.jsonl and, last, result.json, whose presence marks the paradigm finished."""
    run_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(history).to_csv(run_dir / "losses.csv", index=False)
    with open(run_dir / "predictions.jsonl", "w") as handle:
        for r in test:
            row = {"id": r.qid, "prediction": predictions[r.qid], "answer": r.answer, "answer_type": r.answer_type}
            handle.write(json.dumps(row) + "\n")
    # Written to a temporary file and renamed, so an interrupted write leaves no result.json.
    result_file = run_dir / "result.json"
    tmp = result_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(result_file)


def or_nan(value: float | None) -> float:
    """Return ``value``, or NaN for None, for %-formatting accuracies that may be missing."""
    return float("nan") if value is None else value


def run_miss_sweep(
    profile: Profile,
    splits: VQASplits,
    out_dir: Path,
    paradigms: Sequence[str] | None = None,
    quiet: bool | None = None,
) -> pd.DataFrame:
    """Run every paradigm (default: the profile's, which is Table 1's 16) and return one row each."""
    paradigms = [str(parse_paradigm(p, "miss")) for p in (paradigms or profile.miss_paradigms)]
    records = [run_paradigm(profile, splits, p, out_dir, quiet) for p in paradigms]
    return results_table(records)


def results_table(records: Sequence[dict]) -> pd.DataFrame:
    """Tabulate sweep records with accuracies in percent, named by paradigm string."""
    rows = []
    for r in records:
        states = r["paradigm"].split(",")
        rows.append(
            {
                "paradigm": r["paradigm"],
                "ViT": states[0],
                "JTM": states[1],
                "DEC": states[2],
                "open_acc": _percent(r["open_accuracy"]),
                "closed_acc": _percent(r["closed_accuracy"]),
                "global_acc": _percent(r["global_accuracy"]),
                "trainable_params": r["trainable_params"],
                "trainable_pct": round(100 * r["trainable_ratio"], 2),
                "peft_params": r["peft_params"] or None,
                "peft_pct": None if r["peft_ratio"] is None else round(100 * r["peft_ratio"], 2),
                "n_train": r["n_train"],
                "n_train_available": r["n_train_available"],
                "n_test": r["n_test"],
                "n_test_available": r.get("n_test_available"),
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
        path = Path(out_dir) / "miss" / paradigm_slug(paradigm) / "losses.csv"
        if path.exists():
            frame = pd.read_csv(path)
            frame.insert(0, "paradigm", paradigm)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["paradigm", "step", "epoch", "loss"])
