"""Load VQA-RAD (Lau et al., Scientific Data 2018) in either of its two distributed layouts.

- MEVF split: ``trainset.json`` (3,064 pairs), ``testset.json`` (451 pairs: 272 CLOSED, 179 OPEN)
  and ``images/``. Most published VQA-RAD results use this split.
- Official OSF release: ``VQA_RAD Dataset Public.json`` (2,248 rows) and ``VQA_RAD Image Folder/``.
  Its ``phrase_type`` marks the test questions (``test_freeform`` and ``test_para``, 451 rows).

Both layouts share the trap that test questions repeat train questions on the same image, so
``vqa_rad_overlap`` measures it and ``medlnkit data check`` prints it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from medlnkit.data.loading import (
    MAX_EXAMPLES,
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

CARD = "vqa_rad"
SPLITS = ("train", "test")
LAYOUTS = ("auto", "mevf", "osf")
MEVF_FILES = {"train": "trainset.json", "test": "testset.json"}
OSF_FILE = "VQA_RAD Dataset Public.json"
# The OSF zip names its image folder "VQA_RAD Image Folder"; some copies rename it to images/.
OSF_IMAGE_FOLDERS = ("VQA_RAD Image Folder", "images")
LAYOUT = (
    "either ROOT/trainset.json, ROOT/testset.json and ROOT/images/ (MEVF split), or "
    f"ROOT/{OSF_FILE} and ROOT/VQA_RAD Image Folder/ (official OSF release)"
)
REQUIRED_FIELDS = ("qid", "image_name", "question", "answer", "answer_type")
# Fields copied into VQARecord.extra when present. The last six exist only in the OSF release.
EXTRA_FIELDS = (
    "image_organ",
    "question_type",
    "phrase_type",
    "qid_linked_id",
    "image_case_url",
    "evaluation",
    "question_rephrase",
    "question_relation",
    "question_frame",
)
OSF_TRAIN_PHRASE_TYPES = ("freeform", "para", "frame")


def detect_layout(root: Path) -> str:
    """Return ``"mevf"`` or ``"osf"`` for the VQA-RAD folder ``root``, or raise DataError."""
    root = Path(root)
    require_folder(root, CARD, LAYOUT, label="VQA-RAD folder")
    if all((root / name).exists() for name in MEVF_FILES.values()):
        return "mevf"
    if (root / OSF_FILE).exists():
        return "osf"
    present = sorted(p.name for p in root.iterdir())[:10]
    raise data_error(
        f"{root} is not a VQA-RAD folder: neither the MEVF files "
        f"({', '.join(MEVF_FILES.values())}) nor {OSF_FILE!r} was found "
        f"(found: {', '.join(present) or 'nothing'})",
        CARD,
        LAYOUT,
    )


def _image_folder(root: Path, layout: str) -> Path:
    if layout == "mevf":
        return root / "images"
    for name in OSF_IMAGE_FOLDERS:
        if (root / name).is_dir():
            return root / name
    return root / OSF_IMAGE_FOLDERS[0]


def load_vqa_rad_with_report(
    root: Path, split: str, layout: str = "auto", require_images: bool = True
) -> tuple[list[VQARecord], LoadReport]:
    """Load one VQA-RAD split (train or test) and the LoadReport of what was left out or rewritten.

    ``layout`` is ``"auto"`` (MEVF when both of its files exist, else OSF), ``"mevf"`` or ``"osf"``.
    ``answer_type`` is stripped and upper-cased (the MEVF train file contains ``"CLOSED "``),
    answers are lower-cased with whitespace collapsed (the original is kept in
    ``extra["answer_raw"]``), and ``qid`` becomes a string.
    """
    split = canonical_split(split, SPLITS, CARD)
    check_choice("layout", layout, LAYOUTS)
    root = Path(root)
    if layout == "auto":
        layout = detect_layout(root)
    else:
        require_folder(root, CARD, LAYOUT, label="VQA-RAD folder")

    if layout == "mevf":
        path = root / MEVF_FILES[split]
        rows = read_json_records(path, CARD, LAYOUT)
        layout_name = "MEVF split (trainset.json / testset.json)"
    else:
        path = root / OSF_FILE
        rows = read_json_records(path, CARD, LAYOUT)
        layout_name = "official OSF release (phrase_type marks the test split)"

    image_folder = _image_folder(root, layout)
    if require_images and not image_folder.is_dir():
        raise data_error(
            f"the image folder {image_folder} was not found. Download the images of the official "
            "release, or pass require_images=False to load the questions without them",
            CARD,
            LAYOUT,
        )

    report = LoadReport(dataset="vqa-rad", split=split, source=str(path), layout=layout_name)
    report.read = len(rows)
    records: list[VQARecord] = []
    seen_qids: set[str] = set()
    for index, row in enumerate(rows):
        if layout == "osf" and not _osf_row_in_split(row, split, index, report):
            continue
        record = _build_record(row, index, split, image_folder, seen_qids, report)
        if record is not None:
            records.append(record)

    if layout == "osf":
        # NOTE: the MEVF train file (3,064 pairs) adds the OSF question_frame variants as extra
        # rows. This loader returns each OSF row once, so its train split is smaller.
        report.notes.append("OSF rows are returned once each; question_frame stays in extra")
    if not image_folder.is_dir():
        report.notes.append(f"image folder {image_folder} is absent: no image was checked")
    elif require_images and report.missing_images:
        raise missing_images_error(
            report.missing_images, image_folder, CARD, LAYOUT, "require_images=False"
        )
    report.loaded = len(records)
    report.log(logger)
    return records, report


def _osf_row_in_split(row: dict, split: str, index: int, report: LoadReport) -> bool:
    """Return whether an OSF row belongs to ``split``, counting rows whose phrase_type is unknown."""
    row_id = str(row.get("qid", f"row {index}"))
    phrase_type = normalise_text(row.get("phrase_type") or "").lower()
    if phrase_type.startswith("test"):
        row_split = "test"
    elif phrase_type in OSF_TRAIN_PHRASE_TYPES:
        row_split = "train"
    else:
        report.skip(f"unknown phrase_type {row.get('phrase_type')!r}", row_id)
        return False
    if row_split != split:
        report.exclude(f"belongs to the {row_split} split (phrase_type)", row_id)
        return False
    return True


def _build_record(
    row: dict,
    index: int,
    split: str,
    image_folder: Path,
    seen_qids: set[str],
    report: LoadReport,
) -> VQARecord | None:
    """Turn one JSON row into a VQARecord, or count why it is left out and return None."""
    row_id = str(row.get("qid", f"row {index}"))
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

    image_name = normalise_text(row["image_name"])
    image_path = image_folder / image_name
    if image_folder.is_dir():
        if image_path.is_file():
            report.found_image(image_name)
        else:
            report.missing_image(image_name)

    raw_answer = row["answer"]
    answer = normalise_answer(raw_answer)
    if answer != raw_answer:
        report.normalise("answer case, whitespace or number to text")
    extra = {name: row[name] for name in EXTRA_FIELDS if name in row}
    extra["answer_raw"] = raw_answer
    return VQARecord(
        qid=qid,
        image_path=image_path,
        question=normalise_text(row["question"]),
        answer=answer,
        answer_type=answer_type,
        dataset="vqa-rad",
        split=split,
        extra=extra,
    )


def load_vqa_rad(
    root: Path, split: str, layout: str = "auto", require_images: bool = True
) -> list[VQARecord]:
    """Load one VQA-RAD split (train or test) as VQARecords; see load_vqa_rad_with_report."""
    records, _ = load_vqa_rad_with_report(root, split, layout, require_images)
    return records


def normalise_question(question: str) -> str:
    """Return the form used to compare questions: lower case, single spaces, no final punctuation."""
    return re.sub(r"[\s?.!]+$", "", normalise_answer(question))


def vqa_rad_overlap(train: list[VQARecord], test: list[VQARecord]) -> dict:
    """Measure how much the test split repeats the train split.

    Images are compared by file name and questions by ``normalise_question``. The returned dict
    has these keys:

    - ``train_images``, ``test_images``, ``shared_images``: distinct image counts;
    - ``test_records_on_shared_images``: test records whose image also occurs in train;
    - ``question_overlap``: test records whose image and question both occur in train;
    - ``question_answer_overlap``: the same, with the same answer too;
    - ``train_duplicates``: train records repeating an earlier train image, question and answer;
    - ``examples``: up to five overlapping pairs, as dicts of ``test_qid``, ``train_qid``,
      ``image`` and ``question``.
    """
    train_by_key: dict[tuple[str, str], VQARecord] = {}
    train_triplets: set[tuple[str, str, str]] = set()
    train_duplicates = 0
    for record in train:
        key = (record.image_path.name, normalise_question(record.question))
        train_by_key.setdefault(key, record)
        triplet = (*key, record.answer)
        if triplet in train_triplets:
            train_duplicates += 1
        train_triplets.add(triplet)

    train_images = {record.image_path.name for record in train}
    test_images = {record.image_path.name for record in test}
    shared = train_images & test_images
    question_overlap = 0
    question_answer_overlap = 0
    examples = []
    for record in test:
        key = (record.image_path.name, normalise_question(record.question))
        match = train_by_key.get(key)
        if match is None:
            continue
        question_overlap += 1
        if (*key, record.answer) in train_triplets:
            question_answer_overlap += 1
        if len(examples) < MAX_EXAMPLES:
            examples.append(
                {
                    "test_qid": record.qid,
                    "train_qid": match.qid,
                    "image": key[0],
                    "question": record.question,
                }
            )
    return {
        "train_images": len(train_images),
        "test_images": len(test_images),
        "shared_images": len(shared),
        "test_records_on_shared_images": sum(r.image_path.name in shared for r in test),
        "question_overlap": question_overlap,
        "question_answer_overlap": question_answer_overlap,
        "train_duplicates": train_duplicates,
        "examples": examples,
    }
