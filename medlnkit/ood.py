"""Slake-tuned LLaVA on other test sets: VQA-RAD (the study's Table 4) and zero-shot reports (Table 5).

One model is tuned per paradigm on Slake's training split and then tested twice. It answers
VQA-RAD's test questions (scored with accuracy, BERTScore, METEOR, ROUGE-L and mean tokens). Then,
zero-shot, it writes reports for the instruction "Describe the given chest x-ray image in detail."
(MIMIC-CXR's test split when given, else held-out IU X-ray reports).

Fallbacks keep the notebook runnable offline, and each one is recorded in ``OodData.notes``:
without Slake images (the public question files alone) the model trains on the embedded
real-image sample, and without VQA-RAD it is tested on the sample's test split, which is then
in-distribution rather than out-of-distribution.

Each paradigm writes ``<out>/ood/<slug>/`` with ``result.json``, ``losses.csv``,
``predictions_vqa.jsonl`` and ``predictions_report.jsonl``; finished paradigms are reused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from medlnkit.data.records import VQARecord
from medlnkit.data.sources import detect_layout
from medlnkit.errors import DataError, MedlnkitError
from medlnkit.paradigms import parse_paradigm
from medlnkit.profiles import Profile
from medlnkit.report_generation import (
    BERTSCORE_COLUMNS,
    INSTRUCTION,
    REPORT_METRIC_COLUMNS,
    BaseModel,
    generate_texts,
    group_columns,
    load_iu_splits,
    load_test_reports,
    parameter_fields,
    read_cached,
    report_budget,
    score_texts,
    settings_key,
    subsample,
    tune,
    write_run,
)
from medlnkit.sweep import paradigm_slug

logger = logging.getLogger(__name__)

SWEEP_FOLDER = "ood"
_PEFT = ("LN", "Attn", "FFN", "LoRA", "Prefix")
# The ten rows of the study's Table 4: [F, T, PEFT, T] and [F, F, PEFT, F] for each method.
TABLE4_PARADIGMS = tuple(f"F,T,{m},T" for m in _PEFT) + tuple(f"F,F,{m},F" for m in _PEFT)
# Table 5 has the same rows without Prefix-tuning.
TABLE5_PARADIGMS = tuple(p for p in TABLE4_PARADIGMS if "Prefix" not in p)
ACCURACY_COLUMNS = ("opened_acc_pct", "closed_acc_pct", "global_acc_pct")


@dataclass(frozen=True)
class OodBudget:
    """How much VQA data one profile uses here; optimisation settings come from ``llava_train``."""

    max_train: int | None  # Slake (or sample) training pairs (None: all)
    max_vqa_test: int | None  # VQA test questions (None: all)
    paradigms: tuple[str, ...]  # paradigms notebook 05 runs by default


# NOTE: these sizes belong in medlnkit.profiles beside llava_train; they sit here until the
# profiles gain fields for them. The report side uses the profile's ReportBudget.
OOD_BUDGETS = {
    "smoke": OodBudget(16, 16, ("F,T,LN,T", "F,F,LN,F", "F,F,LoRA,F", "F,F,Prefix,F")),
    # One optimizer step per paradigm at the cpu batch size of 8, as for report generation.
    "cpu": OodBudget(8, 8, ("F,F,LN,F", "F,F,LoRA,F")),
    "paper": OodBudget(None, None, TABLE4_PARADIGMS),
}


def ood_budget(profile: Profile | str) -> OodBudget:
    """Return the VQA budget of a profile (smoke, cpu or paper) for notebook 05."""
    name = profile if isinstance(profile, str) else profile.name
    if name not in OOD_BUDGETS:
        raise MedlnkitError(f"no out-of-distribution budget for profile {name!r}: expected one of {', '.join(OOD_BUDGETS)}")
    return OOD_BUDGETS[name]


@dataclass
class OodData:
    """Training pairs, VQA test questions and zero-shot report test pairs, with where each came from."""

    train: list[VQARecord]
    vqa_test: list[VQARecord]
    report_test: list[VQARecord]
    train_name: str  # "slake" or "embedded-sample"
    vqa_test_name: str  # "vqa-rad" or "embedded-sample"
    report_test_name: str  # "mimic-cxr" or "iu-xray"
    synthetic_pairing: bool  # True when some test report is paired with an image that is not its own
    available: dict[str, int] = field(default_factory=dict)  # set -> records before subsampling
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """Return one line per set with its size and source, then the notes on every fallback."""
        lines = [
            f"train: {len(self.train)} of {self.available.get('train', len(self.train))} {self.train_name} pairs",
            f"VQA test: {len(self.vqa_test)} of {self.available.get('vqa_test', len(self.vqa_test))} {self.vqa_test_name} questions",
            f"report test: {len(self.report_test)} of {self.available.get('report_test', len(self.report_test))} {self.report_test_name} reports",
        ]
        return "\n".join(lines + self.notes)


def _slake_with_images(root: Path) -> tuple[list[VQARecord], int]:
    """Return the Slake training records whose image exists, and the number of records read."""
    from medlnkit.data.slake import load_slake

    records = load_slake(root, "train", require_images=False)
    return [r for r in records if Path(r.image_path).is_file()], len(records)


def resolve_sources(data_dir: Path | None, slake_dir: Path | None, vqa_rad_dir: Path | None) -> tuple[Path | None, Path | None]:
    """Return (Slake folder, VQA-RAD folder) from the explicit folders and ``data_dir``.

    ``data_dir`` fills whichever of the two its layout matches, unless that one is given
    explicitly. Raises DataError when a folder is missing or has the other dataset's layout.
    """
    slake = Path(slake_dir) if slake_dir else None
    vqa_rad = Path(vqa_rad_dir) if vqa_rad_dir else None
    for folder, expected, label in ((slake, "slake", "slake_dir"), (vqa_rad, "vqa-rad", "vqa_rad_dir")):
        if folder is not None and detect_layout(folder) != expected:
            other = "vqa_rad_dir" if label == "slake_dir" else "slake_dir"
            raise DataError(f"{label}={str(folder)!r} is a {detect_layout(folder)} folder, not {expected}: pass it as {other}")
    if data_dir:
        layout = detect_layout(Path(data_dir))
        if layout == "slake" and slake is None:
            slake = Path(data_dir)
        elif layout == "vqa-rad" and vqa_rad is None:
            vqa_rad = Path(data_dir)
    return slake, vqa_rad


def load_ood_data(
    data_dir: Path | None = None,
    slake_dir: Path | None = None,
    vqa_rad_dir: Path | None = None,
    mimic_dir: Path | None = None,
    iu_dir: Path | None = None,
    budget: OodBudget | None = None,
    report_test_limit: int | None = None,
    seed: int = 0,
) -> OodData:
    """Load Slake training pairs, VQA-RAD test questions and report test pairs, with fallbacks.

    ``data_dir`` may be a Slake or a VQA-RAD folder (see resolve_sources). Without Slake images
    the embedded sample's training split is used; without VQA-RAD, the sample's test split.
    ``report_test_limit`` subsamples the report test set.
    """
    from medlnkit.data.sample import sample_records

    budget = budget or OOD_BUDGETS["paper"]
    slake, vqa_rad = resolve_sources(data_dir, slake_dir, vqa_rad_dir)
    notes = []

    train, train_name = [], "slake"
    if slake is not None:
        train, read = _slake_with_images(slake)
        if not train:
            notes.append(
                f"training set: the embedded sample, because the Slake folder {slake} has its {read} English "
                "training questions but none of their images (imgs/ is missing or empty)"
            )
    if not train:
        train, train_name = sample_records("train"), "embedded-sample"
        if slake is None:
            notes.append("training set: the embedded sample, because no Slake folder was given (the study tunes on Slake)")
    else:
        notes.append(f"training set: Slake training split from {slake}")

    if vqa_rad is not None:
        from medlnkit.data.vqa_rad import load_vqa_rad

        vqa_test, vqa_test_name = load_vqa_rad(vqa_rad, "test"), "vqa-rad"
        notes.append(f"VQA test set: VQA-RAD test split from {vqa_rad}")
    else:
        vqa_test, vqa_test_name = sample_records("test"), "embedded-sample"
        notes.append(
            "VQA test set: the embedded sample's test split, because no VQA-RAD folder was given; "
            + ("it comes from the training distribution, so this is not an out-of-distribution test" if train_name == "embedded-sample"
               else "the study tests on VQA-RAD")
        )  # fmt: skip

    splits, _ = load_iu_splits(iu_dir, seed)
    report_test, report_name, report_available, report_notes = load_test_reports(mimic_dir, splits["test"], report_test_limit, seed)
    notes.extend(note.replace("test set:", "zero-shot report test set:", 1) for note in report_notes)

    return OodData(
        train=subsample(train, budget.max_train, seed),
        vqa_test=subsample(vqa_test, budget.max_vqa_test, seed + 1),
        report_test=report_test,
        train_name=train_name,
        vqa_test_name=vqa_test_name,
        report_test_name=report_name,
        synthetic_pairing=any(r.extra.get("pairing") == "synthetic" for r in report_test),
        available={"train": len(train), "vqa_test": len(vqa_test), "report_test": report_available},
        notes=notes,
    )


def _ood_key(profile: Profile, data: OodData) -> str:
    return settings_key(
        {
            "task": "ood",
            "model": profile.llava_model,
            "train": asdict(profile.llava_train),
            "report_budget": {k: v for k, v in asdict(report_budget(profile)).items() if k != "paradigms"},
            "instruction": INSTRUCTION,
            "train_pairs": [(r.qid, str(r.image_path)) for r in data.train],
            "vqa_test": [(r.qid, str(r.image_path)) for r in data.vqa_test],
            "report_test": [(r.qid, str(r.image_path)) for r in data.report_test],
        }
    )


def _percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def run_ood_paradigm(
    profile: Profile,
    data: OodData,
    paradigm: str,
    out_dir: Path,
    base: BaseModel | None = None,
    quiet: bool | None = None,
) -> dict:
    """Tune LLaVA on the VQA training pairs under one paradigm, then test it on VQA and on reports.

    Returns the result record and writes it to ``<out_dir>/ood/<slug>/``.
    """
    from medlnkit.evaluation.accuracy import vqa_accuracy

    paradigm = str(parse_paradigm(paradigm, "llava"))
    if not data.train or not data.vqa_test or not data.report_test:
        raise DataError(
            f"the out-of-distribution run needs training pairs, VQA test questions and test reports, got "
            f"{len(data.train)}, {len(data.vqa_test)} and {len(data.report_test)}"
        )
    reports = report_budget(profile)
    run_dir = Path(out_dir) / SWEEP_FOLDER / paradigm_slug(paradigm)
    key = _ood_key(profile, data)
    cached = read_cached(run_dir / "result.json", key)
    if cached is not None:
        logger.info("out-of-distribution %s: reusing the finished run in %s", paradigm, run_dir)
        return cached

    base = base or BaseModel(profile)
    bundle = base.fresh()
    settings = profile.llava_train
    collator, report, result = tune(bundle, paradigm, data.train, settings, quiet, "Slake-tuned")

    answers = generate_texts(bundle, data.vqa_test, collator, settings.max_answer_tokens, settings.eval_batch_size, settings.seed)
    accuracy = vqa_accuracy(answers, data.vqa_test, allow_empty=True)
    recall = vqa_accuracy(answers, data.vqa_test, open_metric="llava_med_recall", allow_empty=True)
    predicted = [answers[r.qid] for r in data.vqa_test]
    vqa_scores = score_texts(predicted, [r.answer for r in data.vqa_test], bundle.tokenizer, with_bertscore=True)

    # The VQA collator cuts answers only in training batches, so it also builds the report prompts.
    # The report budget sets how long a generated report may be.
    generated = generate_texts(bundle, data.report_test, collator, reports.max_new_tokens, reports.eval_batch_size, settings.seed)
    report_scores = score_texts([generated[r.qid] for r in data.report_test], [r.answer for r in data.report_test], bundle.tokenizer)
    logger.info(
        "out-of-distribution %s: VQA global %.3f, zero-shot report ROUGE-L F1 %.2f",
        paradigm, accuracy["global_accuracy"], report_scores["rouge_l_f1_pct"],
    )  # fmt: skip

    record = {
        "paradigm": paradigm,
        "settings_key": key,
        "profile": profile.name,
        "train_data": data.train_name,
        "vqa_test_data": data.vqa_test_name,
        "report_test_data": data.report_test_name,
        "synthetic_pairing": data.synthetic_pairing,
        "n_train": len(data.train),
        "n_vqa_test": len(data.vqa_test),
        "n_report_test": len(data.report_test),
        "vqa": {
            "opened_acc_pct": _percent(accuracy["open_accuracy"]),
            "closed_acc_pct": _percent(accuracy["closed_accuracy"]),
            "global_acc_pct": _percent(accuracy["global_accuracy"]),
            "open_recall_pct": _percent(recall["open_accuracy"]),
            "n_open": accuracy["n_open"],
            "n_closed": accuracy["n_closed"],
            **vqa_scores,
        },
        "report": report_scores,
        **parameter_fields(report),
        "steps": result.steps,
        "train_seconds": round(result.seconds, 2),
        "first_loss": result.losses[0],
        "final_loss": result.losses[-1],
        "mean_tokens_tokenizer": f"{profile.llava_model} LLaVA tokenizer",
        "weights": bundle.weight_sources,
    }
    vqa_rows = [
        {"id": r.qid, "prediction": answers[r.qid], "answer": r.answer, "answer_type": r.answer_type}
        for r in data.vqa_test
    ]
    report_rows = [{"id": r.qid, "prediction": generated[r.qid], "report": r.answer, "image": str(r.image_path)} for r in data.report_test]
    write_run(run_dir, record, result.history(), {"predictions_vqa.jsonl": vqa_rows, "predictions_report.jsonl": report_rows})
    return record


def run_ood_sweep(
    profile: Profile,
    data: OodData,
    out_dir: Path,
    paradigms: Sequence[str] | None = None,
    quiet: bool | None = None,
    base: BaseModel | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run each paradigm (default: the profile's OodBudget) and return (Table 4, Table 5) frames.

    Every paradigm string is checked before any training starts. ``base`` shares an already built model.
    """
    chosen = [str(parse_paradigm(p, "llava")) for p in (paradigms or ood_budget(profile).paradigms)]
    base = base or BaseModel(profile)
    records = [run_ood_paradigm(profile, data, p, out_dir, base, quiet) for p in chosen]
    return vqa_table(records), zero_shot_table(records)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _run_columns(record: dict) -> dict:
    return {
        "trainable_params": record["trainable_params"],
        "train_data": record["train_data"],
        "n_train": record["n_train"],
        "steps": record["steps"],
        "final_loss": round(record["final_loss"], 4),
        "train_seconds": record["train_seconds"],
    }


def vqa_table(records: Sequence[dict]) -> pd.DataFrame:
    """Tabulate the VQA side of out-of-distribution records with Table 4's columns."""
    rows = []
    for r in records:
        scores = r["vqa"]
        row = {"paradigm": r["paradigm"], **group_columns(r["paradigm"])}
        row.update({c: _round(scores[c]) for c in (*ACCURACY_COLUMNS, *BERTSCORE_COLUMNS, *REPORT_METRIC_COLUMNS)})
        row["open_recall_pct"] = _round(scores["open_recall_pct"])
        row.update({"bertscore_model": scores.get("bertscore_model"), "test_data": r["vqa_test_data"], "n_test": r["n_vqa_test"]})
        row.update(_run_columns(r))
        rows.append(row)
    return pd.DataFrame(rows)


def zero_shot_table(records: Sequence[dict]) -> pd.DataFrame:
    """Tabulate the zero-shot report side of out-of-distribution records with Table 5's columns."""
    rows = []
    for r in records:
        row = {"paradigm": r["paradigm"], **group_columns(r["paradigm"])}
        row.update({c: _round(r["report"][c]) for c in REPORT_METRIC_COLUMNS})
        row.update({"test_data": r["report_test_data"], "synthetic_pairing": r["synthetic_pairing"], "n_test": r["n_report_test"]})
        row.update(_run_columns(r))
        rows.append(row)
    return pd.DataFrame(rows)

