"""Describe what a dataset folder contains, split by split: the text behind ``medlnkit data check``.

The check loads every split without requiring images, so that it can list what is missing
instead of stopping at the first problem. A folder that is absent, in the wrong layout or with
malformed files still raises DataError.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from medlnkit.data import iu_xray, mimic_cxr, slake, vqa_rad
from medlnkit.data.loading import MAX_EXAMPLES, LoadReport, data_error
from medlnkit.data.records import ReportRecord, VQARecord
from medlnkit.errors import MedlnkitError

DATASETS = ("slake", "vqa-rad", "iu-xray", "mimic-cxr")


def check_dataset(dataset: str, root: Path, open_images: bool = False) -> str:
    """Return a plain-text description of the dataset folder ``root``, split by split.

    ``dataset`` is one of slake, vqa-rad, iu-xray or mimic-cxr. With ``open_images`` every image
    found is also opened with PIL, and files that fail to decode are listed.
    """
    name = str(dataset).strip().lower().replace("_", "-")
    if name not in DATASETS:
        raise MedlnkitError(f"invalid dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    root = Path(root)
    checkers = {
        "slake": _check_slake,
        "vqa-rad": _check_vqa_rad,
        "iu-xray": _check_iu_xray,
        "mimic-cxr": _check_mimic_cxr,
    }
    lines = checkers[name](root, open_images)
    return "\n".join(lines)


def _answer_type_line(records: Iterable[VQARecord]) -> str:
    counts = Counter(record.answer_type for record in records)
    return f"  answer types: OPEN {counts['OPEN']}, CLOSED {counts['CLOSED']}"


def _open_image_lines(paths: Iterable[Path]) -> list[str]:
    """Open each existing image with PIL and return lines naming those that fail to decode."""
    unique = sorted({path for path in paths if path.is_file()})
    failures = []
    for path in unique:
        try:
            # load() decodes the pixels; verify() alone misses truncated image data.
            with Image.open(path) as image:
                image.load()
        except (OSError, UnidentifiedImageError, SyntaxError) as error:
            failures.append(f"{path.name} ({error})")
    lines = [f"  images opened: {len(unique) - len(failures)} of {len(unique)} decode"]
    if failures:
        lines.append(f"  images that fail to decode: {', '.join(failures[:MAX_EXAMPLES])}")
    return lines


def _check_slake(root: Path, open_images: bool) -> list[str]:
    folder = slake.resolve_root(root)
    lines = [f"Slake in {folder}"]
    present = [split for split in slake.SPLITS if (folder / f"{split}.json").exists()]
    if not present:
        raise data_error(
            f"{folder} contains none of the Slake split files (train.json, validate.json, "
            "test.json)",
            slake.CARD,
            slake.LAYOUT,
        )
    for split in slake.SPLITS:
        lines.append(f"[{split}]")
        if split not in present:
            lines.append(f"  {split}.json: not found")
            continue
        records, report = slake.load_slake_with_report(
            folder, split, language="all", require_images=False
        )
        lines.extend(report.summary_lines())
        by_language: dict[str, list[VQARecord]] = {}
        for record in records:
            by_language.setdefault(record.extra["q_lang"], []).append(record)
        for language, subset in sorted(by_language.items()):
            types = _answer_type_line(subset).strip()
            lines.append(f"  language {language}: {len(subset)} questions, {types}")
        if open_images:
            lines.extend(_open_image_lines(record.image_path for record in records))
    return lines


def _check_vqa_rad(root: Path, open_images: bool) -> list[str]:
    layout = vqa_rad.detect_layout(root)
    lines = [f"VQA-RAD in {root}"]
    loaded: dict[str, list[VQARecord]] = {}
    for split in vqa_rad.SPLITS:
        records, report = vqa_rad.load_vqa_rad_with_report(
            root, split, layout=layout, require_images=False
        )
        loaded[split] = records
        lines.append(f"[{split}]")
        lines.extend(report.summary_lines())
        lines.append(_answer_type_line(records))
        if open_images:
            lines.extend(_open_image_lines(record.image_path for record in records))
    lines.append("[train/test overlap]")
    lines.extend(_overlap_lines(vqa_rad.vqa_rad_overlap(loaded["train"], loaded["test"])))
    return lines


def _overlap_lines(overlap: dict) -> list[str]:
    lines = [
        f"  images: {overlap['train_images']} in train, {overlap['test_images']} in test, "
        f"{overlap['shared_images']} in both ({overlap['test_records_on_shared_images']} test "
        "questions are about an image seen in training)",
        f"  exact question overlap: {overlap['question_overlap']} test questions repeat a train "
        f"question on the same image ({overlap['question_answer_overlap']} with the same answer)",
        f"  train duplicates: {overlap['train_duplicates']} train records repeat an earlier "
        "image, question and answer",
    ]
    for example in overlap["examples"]:
        lines.append(
            f"    e.g. test qid {example['test_qid']} = train qid {example['train_qid']} "
            f"({example['image']}): {example['question']!r}"
        )
    return lines


def _report_count_lines(records: list[ReportRecord], report: LoadReport) -> list[str]:
    sources = Counter(record.extra["findings_source"] for record in records)
    with_images = sum(1 for record in records if record.image_paths)
    return [
        f"  with findings: {sources['findings']}, without findings: "
        f"{sources['empty'] + sources['impression']}",
        f"  reports with at least one image file: {with_images} of {len(records)}",
        f"  image files found: {len(report.found_images)}",
    ]


def _check_iu_xray(root: Path, open_images: bool) -> list[str]:
    records, report = iu_xray.load_iu_xray_with_report(root, empty_findings="keep")
    lines = [f"IU X-ray (OpenI) in {root}", "[all reports, empty_findings='keep']"]
    lines.extend(report.summary_lines())
    lines.extend(_report_count_lines(records, report))
    with_findings = [r for r in records if r.extra["findings_source"] == "findings"]
    splits = iu_xray.split_iu_xray(with_findings)
    lines.append(
        "  split_iu_xray of the reports with findings (test_fraction 0.2, seed 0): "
        f"train {len(splits['train'])}, test {len(splits['test'])}"
    )
    if open_images:
        lines.extend(_open_image_lines(p for record in records for p in record.image_paths))
    return lines


def _check_mimic_cxr(root: Path, open_images: bool) -> list[str]:
    root = Path(root)
    split_path = mimic_cxr.find_split_file(root)
    rows = mimic_cxr.read_split_rows(split_path)
    row_counts = Counter(row["split"].strip().lower() for row in rows)
    lines = [f"MIMIC-CXR in {root}", f"  split file: {split_path.name}, {len(rows)} images listed"]
    for split in mimic_cxr.SPLITS:
        lines.append(f"[{split}]")
        if not row_counts[split]:
            lines.append("  no rows in the split file")
            continue
        records, report = mimic_cxr.load_mimic_cxr_with_report(
            root, split, empty_findings="keep", require_images=False
        )
        lines.append(f"  images listed: {row_counts[split]}")
        lines.extend(report.summary_lines())
        lines.extend(_report_count_lines(records, report))
        fallback = sum(1 for r in records if r.extra["impression_source"] == "last_paragraph")
        lines.append(f"  impression taken from the last paragraph: {fallback}")
        if open_images:
            lines.extend(_open_image_lines(p for record in records for p in record.image_paths))
    return lines
