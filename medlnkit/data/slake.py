"""Load SLAKE 1.0 (Liu et al., ISBI 2021) from the folder of its official release.

The release contains ``train.json``, ``validate.json`` and ``test.json`` (English and Chinese
questions mixed, 14,028 in all) and ``imgs/xmlabN/source.jpg``. English only, the split sizes are
4,919 / 1,053 / 1,061 questions.
"""

from __future__ import annotations

import logging
from pathlib import Path

from medlnkit.data.loading import (
    LoadReport,
    canonical_split,
    check_choice,
    data_error,
    missing_images_error,
    normalise_answer,
    normalise_text,
    read_json_records,
    require_folder,
)
from medlnkit.data.records import ANSWER_TYPES, VQARecord

logger = logging.getLogger(__name__)

CARD = "slake"
SPLITS = ("train", "validate", "test")
LANGUAGES = ("en", "zh", "all")
LAYOUT = (
    "ROOT/train.json, ROOT/validate.json, ROOT/test.json and ROOT/imgs/xmlab<N>/source.jpg "
    "(the Slake1.0 folder of the official release)"
)
REQUIRED_FIELDS = ("qid", "img_name", "question", "answer", "answer_type", "q_lang")
# Fields copied into VQARecord.extra when present, so evaluation can break results down by them.
EXTRA_FIELDS = ("img_id", "location", "modality", "content_type", "base_type", "triple")


def resolve_root(root: Path) -> Path:
    """Return the folder containing the split files: ``root`` itself or its ``Slake1.0`` subfolder."""
    root = Path(root)
    require_folder(root, CARD, LAYOUT, label="Slake folder")
    if not (root / "train.json").exists() and (root / "Slake1.0" / "train.json").exists():
        return root / "Slake1.0"
    return root


def load_slake_with_report(
    root: Path,
    split: str,
    language: str = "en",
    require_images: bool = True,
    dataset_name: str = "slake",
) -> tuple[list[VQARecord], LoadReport]:
    """Load one Slake split and return its records with the LoadReport of what was left out.

    ``language`` is ``"en"`` (default), ``"zh"`` or ``"all"``. Answers are lower-cased with
    whitespace collapsed, and the original answer is kept in ``extra["answer_raw"]``. With
    ``require_images`` a missing ``imgs/`` folder or image file raises DataError. Without it,
    records are returned anyway and the missing files are listed in the report.
    ``dataset_name`` fills ``VQARecord.dataset``, so that other data in the Slake layout (the
    kit's embedded sample) keeps its own name.
    """
    split = canonical_split(split, SPLITS, CARD)
    check_choice("language", language, LANGUAGES)
    root = resolve_root(root)
    path = root / f"{split}.json"
    if not path.exists():
        present = sorted(p.name for p in root.glob("*.json"))
        raise data_error(
            f"{path} was not found (JSON files in {root}: {', '.join(present) or 'none'})",
            CARD,
            LAYOUT,
        )
    rows = read_json_records(path, CARD, LAYOUT)
    image_folder = root / "imgs"
    if require_images and not image_folder.is_dir():
        raise data_error(
            f"the image folder {image_folder} was not found. Download the images of the official "
            "release, or pass require_images=False to load the questions without them",
            CARD,
            LAYOUT,
        )

    report = LoadReport(dataset=dataset_name, split=split, source=str(path), layout="official Slake")
    report.read = len(rows)
    records: list[VQARecord] = []
    seen_qids: set[str] = set()
    for index, row in enumerate(rows):
        record = _build_record(row, index, split, language, image_folder, seen_qids, report)
        if record is not None:
            records.append(record)

    if not image_folder.is_dir():
        report.notes.append(f"image folder {image_folder} is absent: no image was checked")
    elif require_images and report.missing_images:
        raise missing_images_error(
            report.missing_images, image_folder, CARD, LAYOUT, "require_images=False"
        )
    report.loaded = len(records)
    report.log(logger)
    return records, report


def _build_record(
    row: dict,
    index: int,
    split: str,
    language: str,
    image_folder: Path,
    seen_qids: set[str],
    report: LoadReport,
) -> VQARecord | None:
    """Turn one JSON row into a VQARecord, or count why it is left out and return None."""
    row_id = str(row.get("qid", f"row {index}"))
    # The language filter comes first, so that skip counts refer to the chosen language only.
    q_lang = normalise_text(row.get("q_lang") or "").lower()
    if language != "all" and q_lang and q_lang != language:
        report.exclude(f"q_lang {q_lang!r} (language={language!r})", row_id)
        return None
    for name in REQUIRED_FIELDS:
        if row.get(name) is None or normalise_text(row[name]) == "":
            report.skip(f"missing or empty field {name!r}", row_id)
            return None

    raw_type = str(row["answer_type"])
    answer_type = raw_type.strip().upper()
    if answer_type not in ANSWER_TYPES:
        report.skip(f"unknown answer_type {raw_type!r}", row_id)
        return None
    if answer_type != raw_type:
        report.normalise(f"answer_type {raw_type!r} -> {answer_type!r}")

    qid = normalise_text(row["qid"])
    if qid in seen_qids:
        report.skip("duplicate qid in this split", row_id)
        return None
    seen_qids.add(qid)

    image_name = normalise_text(row["img_name"])
    image_path = image_folder / image_name
    if image_folder.is_dir():
        if image_path.is_file():
            report.found_image(image_name)
        else:
            report.missing_image(image_name)

    raw_answer = row["answer"]
    answer = normalise_answer(raw_answer)
    if answer != raw_answer:
        report.normalise("answer case or whitespace")
    extra = {name: row[name] for name in EXTRA_FIELDS if name in row}
    extra.update(answer_raw=raw_answer, q_lang=q_lang, img_name=image_name)
    return VQARecord(
        qid=qid,
        image_path=image_path,
        question=normalise_text(row["question"]),
        answer=answer,
        answer_type=answer_type,
        dataset=report.dataset,
        split=split,
        extra=extra,
    )


def load_slake(
    root: Path,
    split: str,
    language: str = "en",
    require_images: bool = True,
    dataset_name: str = "slake",
) -> list[VQARecord]:
    """Load one Slake split (train, validate or test) as VQARecords; see load_slake_with_report."""
    records, _ = load_slake_with_report(root, split, language, require_images, dataset_name)
    return records
