"""Report generation with LLaVA (the study's Table 3): tune on IU X-ray reports, generate, score.

Each report becomes one instruction pair: the image, the instruction "Describe the given chest
x-ray image in detail." and the report (findings, then impression) as the target text. The model is
tuned on the IU X-ray (OpenI) training split and tested on MIMIC-CXR when a MIMIC-CXR folder is
given, otherwise on the held-out IU X-ray reports.

The IU reports that ship inside the torchxrayvision wheel have no images. Without an IU folder
that contains ``images/``, every report is paired with a real chest radiograph that installs
offline (the embedded sample's PA chest radiograph), so the pairs are synthetic: a run then
measures how the language model adapts to report text, not whether it reads the image.

Each paradigm writes ``<out>/report_generation/<slug>/`` with ``result.json``, ``losses.csv`` and
``predictions.jsonl``; a rerun with the same settings reuses finished paradigms, as the MISS
sweep does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch

from medlnkit.data.records import ReportRecord, VQARecord
from medlnkit.errors import DataError, MedlnkitError
from medlnkit.paradigms import parse_paradigm
from medlnkit.profiles import Profile
from medlnkit.sweep import paradigm_slug, progress_disabled

logger = logging.getLogger(__name__)

INSTRUCTION = "Describe the given chest x-ray image in detail."
SWEEP_FOLDER = "report_generation"
# The five rows of the study's Table 3: LLaVA-Med under [F, F, PEFT, F].
TABLE3_PARADIGMS = ("F,F,LN,F", "F,F,Attn,F", "F,F,FFN,F", "F,F,LoRA,F", "F,F,Prefix,F")
REPORT_METRIC_COLUMNS = ("meteor_pct", "rouge_l_recall_pct", "rouge_l_precision_pct", "rouge_l_f1_pct", "mean_tokens")
BERTSCORE_COLUMNS = ("bertscore_precision_pct", "bertscore_recall_pct", "bertscore_f1_pct")


@dataclass(frozen=True)
class ReportBudget:
    """How much report data and text one profile uses; optimisation settings come from ``llava_train``."""

    max_train_reports: int | None  # IU X-ray training reports (None: all)
    max_test_reports: int | None  # test reports (None: all)
    max_report_tokens: int  # training targets are cut to this many tokens of the LLM's tokenizer
    max_new_tokens: int  # longest generated report, in tokens
    paradigms: tuple[str, ...]  # paradigms notebook 04 runs by default
    eval_batch_size: int = 8  # reports generated per batch


# NOTE: these sizes belong in medlnkit.profiles beside llava_train; they sit here until the
# profiles gain report-generation fields. The cpu sizes keep notebooks 04 and 05 at about a
# minute each on two cores, so they show the pipeline rather than a converged model.
REPORT_BUDGETS = {
    "smoke": ReportBudget(16, 8, 24, 24, TABLE3_PARADIGMS, eval_batch_size=8),
    # One optimizer step per paradigm (8 reports at the cpu batch size of 8). Measured on a shared
    # 2-core machine: 5.5 s per step under LN, 11 s under LoRA, about 5 s to generate 4 reports.
    "cpu": ReportBudget(8, 4, 24, 24, ("F,F,LN,F", "F,F,LoRA,F"), eval_batch_size=4),
    # The study's Table 3 (medlnkit.published.TABLE3) gives 122.7 to 123.1 mean tokens per generated
    # MIMIC-CXR report, so the paper profile allows 160 new tokens and trains on up to 256 tokens.
    "paper": ReportBudget(None, None, 256, 160, TABLE3_PARADIGMS, eval_batch_size=16),
}


def report_budget(profile: Profile | str) -> ReportBudget:
    """Return the report-generation budget of a profile (smoke, cpu or paper)."""
    name = profile if isinstance(profile, str) else profile.name
    if name not in REPORT_BUDGETS:
        raise MedlnkitError(f"no report-generation budget for profile {name!r}: expected one of {', '.join(REPORT_BUDGETS)}")
    return REPORT_BUDGETS[name]


# --- Data ----------------------------------------------------------------------------------------


@dataclass
class ReportData:
    """Instruction pairs for report generation: training on IU X-ray, testing on IU X-ray or MIMIC-CXR."""

    train: list[VQARecord]
    test: list[VQARecord]
    train_name: str  # "iu-xray"
    test_name: str  # "iu-xray" (held-out reports) or "mimic-cxr"
    synthetic_pairing: bool  # True when some report is paired with an image that is not its own
    available: dict[str, int] = field(default_factory=dict)  # split -> reports before subsampling
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """Return one line per fact a reader needs: sources, counts, and how images were paired."""
        lines = [
            f"train: {len(self.train)} of {self.available.get('train', len(self.train))} {self.train_name} reports",
            f"test: {len(self.test)} of {self.available.get('test', len(self.test))} {self.test_name} reports",
        ]
        return "\n".join(lines + self.notes)


def chest_radiographs() -> list[Path]:
    """Return the chest radiographs of the embedded sample (real images that install offline).

    The sample stores the facts derived from each image's DICOM header in ``manifest.json``. Chest
    radiographs are the images with modality X-Ray and body part Chest (the NEMA WG04 RG1 PA view).
    """
    from medlnkit.data.sample import build_sample

    folder = build_sample()
    manifest = json.loads((folder / "manifest.json").read_text())
    paths = [
        folder / "imgs" / image["img_name"]
        for image in manifest["images"]
        if image["answers"].get("modality") == "X-Ray" and image["answers"].get("body_part") == "Chest"
    ]
    if not paths:
        raise DataError(
            f"the embedded sample in {folder} contains no chest radiograph to pair reports with: "
            "rebuild it with medlnkit.data.sample.build_sample(force=True)"
        )
    return paths


def report_records(reports: Sequence[ReportRecord], fallback_images: Sequence[Path] | None, split: str) -> list[VQARecord]:
    """Turn reports into instruction pairs (image, INSTRUCTION, report text).

    A report with images uses its first image. A report without images takes one of
    ``fallback_images`` (chosen by a hash of its id) and is marked ``extra["pairing"] ==
    "synthetic"``; without fallback images it raises DataError.
    """
    records = []
    for report in reports:
        if report.image_paths:
            image, pairing = Path(report.image_paths[0]), "real"
        elif fallback_images:
            index = int(hashlib.sha256(report.study_id.encode()).hexdigest(), 16) % len(fallback_images)
            image, pairing = Path(fallback_images[index]), "synthetic"
        else:
            raise DataError(
                f"report {report.study_id!r} ({report.dataset}) has no image and no fallback image was given"
            )
        records.append(
            VQARecord(
                qid=report.study_id, image_path=image, question=INSTRUCTION, answer=report.report,
                answer_type="OPEN", dataset=report.dataset, split=split, extra={"pairing": pairing},
            )  # fmt: skip
        )
    return records


def subsample(records: list, limit: int | None, seed: int) -> list:
    """Keep ``limit`` records chosen with ``seed``, in their original order (all when limit is None)."""
    if limit is None or len(records) <= limit:
        return list(records)
    keep = set(random.Random(seed).sample(range(len(records)), limit))
    return [r for i, r in enumerate(records) if i in keep]


def _pairing_note(records: Sequence[VQARecord], name: str) -> str | None:
    synthetic = sum(r.extra.get("pairing") == "synthetic" for r in records)
    if not synthetic:
        return None
    images = sorted({r.image_path.parent.name + "/" + r.image_path.name for r in records if r.extra.get("pairing") == "synthetic"})
    return (
        f"SYNTHETIC PAIRING: {synthetic} of {len(records)} {name} reports have no image here and are paired with "
        f"a real chest radiograph that is not theirs ({', '.join(images)}); this measures how the model adapts "
        "to report text, not whether it reads the image"
    )


def resolve_report_sources(data_dir: Path | None, iu_dir: Path | None, mimic_dir: Path | None) -> tuple[Path | None, Path | None, str | None]:
    """Return (IU X-ray folder, MIMIC-CXR folder, note) from the explicit folders and ``data_dir``.

    ``data_dir`` fills ``mimic_dir`` when it contains MIMIC-CXR's split CSV, or ``iu_dir`` when it
    contains IU X-ray reports, unless that folder is given explicitly. A ``data_dir`` of another
    kind (VQA-RAD, Slake) is not used here, and the returned note states that. Raises DataError
    when a given folder does not exist.
    """
    from medlnkit.data.iu_xray import find_report_source
    from medlnkit.data.mimic_cxr import SPLIT_FILES

    iu = Path(iu_dir) if iu_dir else None
    mimic = Path(mimic_dir) if mimic_dir else None
    for folder, label in ((iu, "iu_dir"), (mimic, "mimic_dir")):
        if folder is not None and not folder.is_dir():
            raise DataError(f"{label}={str(folder)!r} is not a folder: pass an existing dataset folder, or leave it empty")
    if not data_dir:
        return iu, mimic, None
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data_dir={str(root)!r} is not a folder: pass an existing dataset folder, or leave it empty")
    if any((root / name).is_file() for name in SPLIT_FILES):
        return iu, mimic or root, None
    try:
        find_report_source(root)
    except DataError:
        return iu, mimic, f"data_dir {root} is neither a MIMIC-CXR nor an IU X-ray folder, so report generation does not use it"
    return iu or root, mimic, None


def load_iu_splits(iu_dir: Path | None, seed: int = 0) -> tuple[dict[str, list[ReportRecord]], bool]:
    """Load IU X-ray reports split into train and test; return them and whether images were found.

    ``iu_dir`` is an IU X-ray folder in the NLM layout (reports, optional ``images/``); None reads
    the 3,955 reports inside the torchxrayvision wheel, which has no images. When some reports have
    images, the reports without any are left out, so that every pair is real.
    """
    from medlnkit.data.iu_xray import load_iu_xray, split_iu_xray

    reports = load_iu_xray(Path(iu_dir) if iu_dir else None, seed=seed)
    with_images = [r for r in reports if r.image_paths]
    if with_images:
        reports = with_images
    return split_iu_xray(reports, seed=seed), bool(with_images)


def load_test_reports(
    mimic_dir: Path | None, iu_test: Sequence[ReportRecord], limit: int | None, seed: int
) -> tuple[list[VQARecord], str, int, list[str]]:
    """Return test instruction pairs, the test set's name, its size before subsampling and notes.

    MIMIC-CXR's test split is used when ``mimic_dir`` is given (its JPG images when present),
    otherwise the held-out IU X-ray reports ``iu_test``.
    """
    notes = []
    if mimic_dir:
        from medlnkit.data.mimic_cxr import load_mimic_cxr

        reports = load_mimic_cxr(Path(mimic_dir), split="test", require_images=False)
        name = "mimic-cxr"
        notes.append(f"test set: MIMIC-CXR test split from {mimic_dir}")
    else:
        reports = list(iu_test)
        name = "iu-xray"
        notes.append("test set: held-out IU X-ray reports, because no MIMIC-CXR folder was given (the study tests on MIMIC-CXR)")
    if not reports:
        source = f"the MIMIC-CXR folder {mimic_dir}" if mimic_dir else "the held-out IU X-ray split"
        raise DataError(f"{source} contains no test report with text: pass a larger IU X-ray folder or a MIMIC-CXR folder")
    available = len(reports)
    chosen = subsample(reports, limit, seed + 1)
    fallback = None if all(r.image_paths for r in chosen) else chest_radiographs()
    records = report_records(chosen, fallback, "test")
    note = _pairing_note(records, f"{name} test")
    if note:
        notes.append(note)
    return records, name, available, notes


def load_report_data(budget: ReportBudget, iu_dir: Path | None = None, mimic_dir: Path | None = None, seed: int = 0) -> ReportData:
    """Load IU X-ray training pairs and the test pairs (MIMIC-CXR when ``mimic_dir``, else IU X-ray).

    Raises DataError (naming the folder) when ``iu_dir`` or ``mimic_dir`` does not follow its layout.
    """
    splits, real_images = load_iu_splits(iu_dir, seed)
    if not splits["train"]:
        raise DataError(
            f"the IU X-ray folder {iu_dir} has no training report with findings"
            + (" and images" if real_images else "")
            + ": pass a folder with more reports, or leave iu_dir empty for the reports in the torchxrayvision wheel"
        )
    train_reports = subsample(splits["train"], budget.max_train_reports, seed)
    fallback = None if real_images else chest_radiographs()
    train = report_records(train_reports, fallback, "train")
    notes = [f"training set: IU X-ray reports from {iu_dir or 'the torchxrayvision wheel'}"]
    note = _pairing_note(train, "IU X-ray training")
    if note:
        notes.append(note)
    test, test_name, test_available, test_notes = load_test_reports(mimic_dir, splits["test"], budget.max_test_reports, seed)
    notes.extend(test_notes)
    synthetic = any(r.extra.get("pairing") == "synthetic" for r in [*train, *test])
    return ReportData(
        train=train, test=test, train_name="iu-xray", test_name=test_name, synthetic_pairing=synthetic,
        available={"train": len(splits["train"]), "test": test_available}, notes=notes,
    )  # fmt: skip


# --- Model, generation and scoring ---------------------------------------------------------------


class BaseModel:
    """Build the profile's LLaVA once, on first use, and hand out fresh copies per paradigm.

    A sweep whose paradigms are all cached never builds the model.
    """

    def __init__(self, profile: Profile):
        self.profile = profile
        self._bundle = None

    def _base(self):
        if self._bundle is None:
            from medlnkit.models.llava import build_llava

            self._bundle = build_llava(self.profile.llava_model, seed=self.profile.llava_train.seed)
        return self._bundle

    def fresh(self):
        """Return a LlavaBundle with a deep copy of the base model (same weights for every paradigm)."""
        return self._base().copy()

    def describe_weights(self) -> str:
        """Return one line per group saying whether its weights are pretrained or random (builds the model)."""
        return self._base().describe_weights()

    @property
    def built(self) -> bool:
        return self._bundle is not None


def generate_texts(bundle, records: Sequence[VQARecord], collator, max_new_tokens: int, batch_size: int, seed: int = 0) -> dict[str, str]:
    """Generate one text per record with the LLaVA sweep's evaluation loop; return them keyed by qid."""
    from medlnkit.llava_sweep import evaluate_llava

    with torch.no_grad():
        return evaluate_llava(bundle, list(records), collator, batch_size, max_new_tokens, seed)


def score_texts(predictions: Sequence[str], references: Sequence[str], tokenizer=None, with_bertscore: bool = False) -> dict:
    """Score generated texts against references: METEOR, ROUGE-L R/P/F1 and BERTScore in percent.

    ``mean_tokens`` counts the predictions' tokens with ``tokenizer`` (pass the model's own, as the
    LLaVA sweep does for Table 2), or with MiniLM's WordPiece when it is None. BERTScore is computed
    only when asked for; its values are None when no BERTScore model is installed.
    """
    from medlnkit.evaluation.text_metrics import bertscore, mean_token_length, meteor, rouge_l

    rouge = rouge_l(predictions, references)
    scores = {
        "meteor_pct": 100 * meteor(predictions, references)["meteor"],
        "rouge_l_recall_pct": 100 * rouge["rouge_l_recall"],
        "rouge_l_precision_pct": 100 * rouge["rouge_l_precision"],
        "rouge_l_f1_pct": 100 * rouge["rouge_l_f1"],
        "mean_tokens": mean_token_length(predictions, tokenizer)["mean_tokens"],
    }
    if with_bertscore:
        result = bertscore(predictions, references)
        for name in ("precision", "recall", "f1"):
            value = result[f"bertscore_{name}"]
            scores[f"bertscore_{name}_pct"] = None if value is None else 100 * value
        scores["bertscore_model"] = result["bertscore_model"]
    return scores


def tune(bundle, paradigm: str, records: Sequence[VQARecord], settings, quiet: bool | None, label: str):
    """Apply ``paradigm`` to the bundle's model and train it on ``records`` with LLaVA-Med's schedule.

    ``settings`` is a TrainSettings; its ``max_answer_tokens`` cuts the training targets.
    Returns (collator, parameter report, LlavaTrainResult).
    """
    from tqdm.auto import tqdm

    from medlnkit.llava_training import LlavaTrainOptions, train_llava
    from medlnkit.models.llava import LORA_SETTINGS, PREFIX_SETTINGS
    from medlnkit.tuning import apply_paradigm, report_for

    plan = apply_paradigm(bundle.model, paradigm, "llava", lora=LORA_SETTINGS, prefix=PREFIX_SETTINGS)
    report = report_for(bundle.model, plan)
    collator = bundle.collator(settings.max_question_tokens, settings.max_answer_tokens)
    bar = tqdm(total=None, desc=f"{label} {paradigm}", unit="step", disable=progress_disabled(quiet), leave=False)

    def show(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.set_postfix(loss=f"{loss:.3f}")
        bar.update(1)

    logger.info("%s %s: training on %d pairs, %d trainable parameters", label, paradigm, len(records), report.trainable)
    try:
        result = train_llava(bundle.model, records, collator, settings, LlavaTrainOptions(), progress=show)
    finally:
        bar.close()
    return collator, report, result


def settings_key(payload: dict) -> str:
    """Return a short hash of everything that changes a run's result, to validate a cached run.

    The LoRA and Prefix settings of the LLaVA model and the LLaVA sweep's version join the payload.
    """
    from medlnkit.llava_sweep import SWEEP_VERSION
    from medlnkit.models.llava import LORA_SETTINGS, PREFIX_SETTINGS

    payload = {**payload, "lora": asdict(LORA_SETTINGS), "prefix": asdict(PREFIX_SETTINGS), "llava_sweep_version": SWEEP_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_cached(result_file: Path, key: str) -> dict | None:
    """Return the cached result record when it exists and was computed with the same settings."""
    if result_file.exists():
        cached = json.loads(result_file.read_text())
        if cached.get("settings_key") == key:
            return cached
    return None


def write_run(run_dir: Path, record: dict, history: list[dict], predictions: dict[str, list[dict]]) -> None:
    """Write losses.csv, one JSON Lines file per prediction set, then result.json (which marks it finished)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(history).to_csv(run_dir / "losses.csv", index=False)
    for name, rows in predictions.items():
        with open(run_dir / name, "w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    tmp = run_dir / "result.json.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(run_dir / "result.json")


def parameter_fields(report) -> dict:
    """Return the parameter counts of a ParameterReport as plain result fields."""
    return {
        "total_params": report.total,
        "trainable_params": report.trainable,
        "trainable_ratio": report.trainable_ratio,
        "peft_params": report.peft,
        "added_params": report.added,
    }


# --- The sweep -----------------------------------------------------------------------------------


def _report_key(profile: Profile, budget: ReportBudget, data: ReportData) -> str:
    return settings_key(
        {
            "task": "report-generation",
            "model": profile.llava_model,
            "train": asdict(profile.llava_train),
            "budget": {k: v for k, v in asdict(budget).items() if k != "paradigms"},
            "instruction": INSTRUCTION,
            "train_pairs": [(r.qid, str(r.image_path)) for r in data.train],
            "test_pairs": [(r.qid, str(r.image_path)) for r in data.test],
        }
    )


def run_report_paradigm(
    profile: Profile,
    data: ReportData,
    paradigm: str,
    out_dir: Path,
    base: BaseModel | None = None,
    budget: ReportBudget | None = None,
    quiet: bool | None = None,
) -> dict:
    """Tune LLaVA on the training reports under one paradigm, generate the test reports and score them.

    Returns the result record and writes it to ``<out_dir>/report_generation/<slug>/``.
    """
    paradigm = str(parse_paradigm(paradigm, "llava"))
    budget = budget or report_budget(profile)
    if not data.train or not data.test:
        raise DataError(f"report generation needs training and test reports, got {len(data.train)} and {len(data.test)}")
    run_dir = Path(out_dir) / SWEEP_FOLDER / paradigm_slug(paradigm)
    key = _report_key(profile, budget, data)
    cached = read_cached(run_dir / "result.json", key)
    if cached is not None:
        logger.info("report generation %s: reusing the finished run in %s", paradigm, run_dir)
        return cached

    base = base or BaseModel(profile)
    bundle = base.fresh()
    settings = replace(profile.llava_train, max_answer_tokens=budget.max_report_tokens)
    collator, report, result = tune(bundle, paradigm, data.train, settings, quiet, "report generation")
    generated = generate_texts(bundle, data.test, collator, budget.max_new_tokens, budget.eval_batch_size, settings.seed)
    predictions = [generated[r.qid] for r in data.test]
    scores = score_texts(predictions, [r.answer for r in data.test], bundle.tokenizer)
    logger.info("report generation %s: METEOR %.2f, ROUGE-L F1 %.2f", paradigm, scores["meteor_pct"], scores["rouge_l_f1_pct"])
    record = {
        "paradigm": paradigm,
        "settings_key": key,
        "profile": profile.name,
        "train_data": data.train_name,
        "test_data": data.test_name,
        "synthetic_pairing": data.synthetic_pairing,
        "n_train": len(data.train),
        "n_test": len(data.test),
        **scores,
        **parameter_fields(report),
        "steps": result.steps,
        "train_seconds": round(result.seconds, 2),
        "first_loss": result.losses[0],
        "final_loss": result.losses[-1],
        "max_new_tokens": budget.max_new_tokens,
        "mean_tokens_tokenizer": f"{profile.llava_model} LLaVA tokenizer",
        "weights": bundle.weight_sources,
    }
    rows = [{"id": r.qid, "prediction": generated[r.qid], "report": r.answer, "image": str(r.image_path)} for r in data.test]
    write_run(run_dir, record, result.history(), {"predictions.jsonl": rows})
    return record


def run_report_sweep(
    profile: Profile,
    data: ReportData,
    out_dir: Path,
    paradigms: Sequence[str] | None = None,
    budget: ReportBudget | None = None,
    quiet: bool | None = None,
    base: BaseModel | None = None,
) -> pd.DataFrame:
    """Run report generation for each paradigm (default: the budget's) and return Table 3's columns.

    Every paradigm string is checked before any training starts. A failing paradigm raises after
    the finished ones have been written to disk. ``base`` shares an already built model.
    """
    budget = budget or report_budget(profile)
    chosen = [str(parse_paradigm(p, "llava")) for p in (paradigms or budget.paradigms)]
    base = base or BaseModel(profile)
    records = [run_report_paradigm(profile, data, p, out_dir, base, budget, quiet) for p in chosen]
    return report_table(records)


def group_columns(paradigm: str) -> dict:
    """Return the paradigm's state per LLaVA group (vision, connector, llm, lm_head), as table columns."""
    parsed = parse_paradigm(paradigm, "llava")
    return dict(zip(parsed.groups, parsed.states, strict=True))


def report_table(records: Sequence[dict]) -> pd.DataFrame:
    """Tabulate report-generation records with Table 3's columns, named by paradigm string."""
    rows = []
    for r in records:
        row = {"paradigm": r["paradigm"], **group_columns(r["paradigm"])}
        row.update({column: _round(r[column]) for column in REPORT_METRIC_COLUMNS})
        row.update(
            {
                "trainable_params": r["trainable_params"],
                "test_data": r["test_data"],
                "synthetic_pairing": r["synthetic_pairing"],
                "n_train": r["n_train"],
                "n_test": r["n_test"],
                "steps": r["steps"],
                "final_loss": round(r["final_loss"], 4),
                "train_seconds": r["train_seconds"],
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def read_predictions(out_dir: Path, paradigm: str, name: str = "predictions.jsonl", folder: str = SWEEP_FOLDER) -> list[dict]:
    """Read the generated texts of one finished paradigm; raise MedlnkitError when it has not run."""
    path = Path(out_dir) / folder / paradigm_slug(str(parse_paradigm(paradigm, "llava"))) / name
    if not path.is_file():
        raise MedlnkitError(f"no predictions for {paradigm!r} at {path}: run the sweep for that paradigm first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

