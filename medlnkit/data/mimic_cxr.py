"""Load MIMIC-CXR studies (Johnson et al., Scientific Data 2019) from the PhysioNet layout.

MIMIC-CXR is credentialed data: the kit never ships or downloads it. The user downloads, under
PhysioNet's data use agreement, the free-text reports of MIMIC-CXR 2.0.0
(``files/pXX/p<subject>/s<study>.txt``) and, from MIMIC-CXR-JPG, the split file
``mimic-cxr-2.0.0-split.csv.gz`` and the images ``files/pXX/p<subject>/s<study>/<dicom_id>.jpg``.
The study this kit replicates gives the test split as 3,269 reports with 5,159 images.

``extract_sections`` splits a report at its upper-case headers (``FINDINGS:``, ``IMPRESSION:``),
following the approach of the MIT-LCP mimic-cxr section parser: normalise header names, treat a
header that describes the views as findings, and fall back to the last paragraph.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import io
import logging
import re
from pathlib import Path

from medlnkit.data.loading import (
    LoadReport,
    canonical_split,
    check_choice,
    data_error,
    missing_images_error,
    normalise_text,
    require_folder,
)
from medlnkit.data.records import ReportRecord

logger = logging.getLogger(__name__)

CARD = "mimic_cxr"
SPLITS = ("train", "validate", "test")
EMPTY_FINDINGS_OPTIONS = ("skip", "keep", "impression")
SPLIT_FILES = ("mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv")
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
LAYOUT = (
    "ROOT/mimic-cxr-2.0.0-split.csv.gz (dicom_id, study_id, subject_id, split), reports at "
    "ROOT/files/pXX/p<subject_id>/s<study_id>.txt and images at "
    "ROOT/files/pXX/p<subject_id>/s<study_id>/<dicom_id>.jpg"
)

# A header starts a line and is upper case, for example " FINDINGS:" or " PA AND LATERAL VIEWS:".
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z0-9 ()/,&'-]*?)[ \t]*:", re.MULTILINE)
_SECTION_ALIASES = {
    "comparisons": "comparison",
    "comparison exam": "comparison",
    "comparison film": "comparison",
    "reference exam": "comparison",
    "clinical history": "history",
    "patient history": "history",
    "clinical information": "history",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "clinical indication": "indication",
    "exam": "examination",
    "type of examination": "examination",
    "conclusion": "impression",
    "finding": "findings",
    "recommendation": "recommendations",
    "recommendation(s)": "recommendations",
    "wetread": "wet read",
}
# Headers that describe the views taken introduce the findings, as in the MIT-LCP parser.
_VIEW_WORDS = re.compile(
    r"chest|portable|two views|one view|frontal|lateral|pa view|ap view|pa and|ap and|"
    r"bone window|ribs"
)
_MAIN_SECTIONS = ("impression", "findings", "indication", "comparison", "history", "technique")


def normalise_section_name(header: str) -> str:
    """Map a report header such as ``"FINDINGS AND IMPRESSION"`` to a standard section name."""
    name = " ".join(header.lower().split())
    if name in _SECTION_ALIASES:
        return _SECTION_ALIASES[name]
    # A combined "findings and impression" section is the impression, as in the MIT-LCP parser.
    if "impression" in name:
        return "impression"
    if "finding" in name:
        return "findings"
    close = difflib.get_close_matches(name, _MAIN_SECTIONS, n=1, cutoff=0.8)
    if close:
        return close[0]
    if _VIEW_WORDS.search(name):
        return "findings"
    return name


def split_sections(text: str) -> list[tuple[str, str]]:
    """Split report text into ``(section name, text)`` pairs in order, starting with the preamble."""
    sections = []
    matches = list(_HEADER.finditer(text))
    start = 0
    name = "preamble"
    for match in matches:
        sections.append((name, text[start : match.start()]))
        name = normalise_section_name(match.group(1))
        start = match.end()
    sections.append((name, text[start:]))
    return sections


def extract_sections(text: str) -> dict:
    """Return ``{"findings": ..., "impression": ...}`` of a MIMIC-CXR report, whitespace collapsed.

    When a section occurs more than once the last non-empty one wins, as in the MIT-LCP parser.
    A report with neither section gets its last paragraph as the impression, and the returned
    dict then also has ``"impression_source": "last_paragraph"``.
    """
    found: dict[str, str] = {}
    sections = split_sections(text)
    for name, body in sections:
        if name in ("findings", "impression") and body.strip():
            found[name] = normalise_text(body)
    result = {"findings": found.get("findings", ""), "impression": found.get("impression", "")}
    if not found:
        paragraphs = [p for p in re.split(r"\n[ \t]*\n", sections[-1][1]) if p.strip()]
        if paragraphs:
            result["impression"] = normalise_text(paragraphs[-1])
            result["impression_source"] = "last_paragraph"
    return result


def find_split_file(root: Path) -> Path:
    """Return the split CSV under ``root`` (gzipped or plain), or raise DataError."""
    for name in SPLIT_FILES:
        if (root / name).is_file():
            return root / name
    raise data_error(
        f"the split file {SPLIT_FILES[0]} (or {SPLIT_FILES[1]}) was not found in {root}. "
        "It is part of MIMIC-CXR-JPG on PhysioNet",
        CARD,
        LAYOUT,
    )


def read_split_rows(path: Path) -> list[dict]:
    """Read the split CSV rows as dicts, raising DataError when it is unreadable or lacks columns."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
                text = handle.read()
        else:
            text = path.read_text(encoding="utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise data_error(f"{path} could not be read ({error})", CARD, LAYOUT)
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in SPLIT_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise data_error(
            f"{path} is missing the columns {', '.join(missing)} (found: "
            f"{', '.join(reader.fieldnames or []) or 'no header'})",
            CARD,
            LAYOUT,
        )
    return list(reader)


def study_folder(files_root: Path, subject_id: str, study_id: str) -> Path:
    """Return ``files/pXX/p<subject>/s<study>`` for numeric subject and study ids."""
    return files_root / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"


def load_mimic_cxr_with_report(
    root: Path,
    split: str = "test",
    empty_findings: str = "keep",
    require_images: bool = True,
    images_root: Path | None = None,
) -> tuple[list[ReportRecord], LoadReport]:
    """Load the studies of one MIMIC-CXR split, one ReportRecord per study, with the LoadReport.

    ``root`` contains the split CSV and the report ``files/`` tree. ``images_root`` contains the JPG
    ``files/`` tree when it is elsewhere (default: ``root``). ``empty_findings`` is ``"keep"``
    (default, so studies without FINDINGS stay in), ``"skip"`` or ``"impression"``, as in
    load_iu_xray. A study whose report file is missing, or whose report yields no text, is skipped
    and counted. ``require_images`` raises DataError when any listed JPG is missing.
    """
    split = canonical_split(split, SPLITS, CARD)
    check_choice("empty_findings", empty_findings, EMPTY_FINDINGS_OPTIONS)
    root = Path(root)
    require_folder(root, CARD, LAYOUT, label="MIMIC-CXR folder")
    images_root = Path(images_root) if images_root is not None else root
    split_path = find_split_file(root)
    files_root = root / "files"
    require_folder(files_root, CARD, LAYOUT, label="report folder")

    studies: dict[str, dict] = {}
    for row in read_split_rows(split_path):
        if normalise_text(row["split"]).lower() != split:
            continue
        study_id = normalise_text(row["study_id"])
        study = studies.setdefault(
            study_id, {"subject_id": normalise_text(row["subject_id"]), "dicom_ids": []}
        )
        study["dicom_ids"].append(normalise_text(row["dicom_id"]))
    if not studies:
        raise data_error(f"{split_path} lists no study in the {split!r} split", CARD, LAYOUT)

    report = LoadReport(
        dataset="mimic-cxr", split=split, source=str(split_path), layout="PhysioNet MIMIC-CXR"
    )
    report.read = len(studies)
    records = []
    for study_id, study in studies.items():
        record = _build_record(
            study_id, study, files_root, images_root / "files", empty_findings, report
        )
        if record is not None:
            records.append(record)

    if report.skipped.get("report file missing") == len(studies):
        raise data_error(
            f"none of the {len(studies)} report files of the {split!r} split exists under "
            f"{files_root}. Unpack the MIMIC-CXR reports (mimic-cxr-reports.zip) into {root}",
            CARD,
            LAYOUT,
        )
    if require_images and report.missing_images:
        raise missing_images_error(
            report.missing_images, images_root / "files", CARD, LAYOUT, "require_images=False"
        )
    report.loaded = len(records)
    report.log(logger)
    return records, report


def _build_record(
    study_id: str,
    study: dict,
    files_root: Path,
    image_files_root: Path,
    empty_findings: str,
    report: LoadReport,
) -> ReportRecord | None:
    """Read one study's report and images into a ReportRecord, or count why it is left out."""
    subject_id = study["subject_id"]
    record_id = f"s{study_id}"
    report_path = study_folder(files_root, subject_id, study_id).with_suffix(".txt")
    if not report_path.is_file():
        report.skip("report file missing", record_id)
        return None
    try:
        text = report_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise data_error(f"{report_path} could not be read ({error})", CARD, LAYOUT)
    sections = extract_sections(text)
    findings, impression = sections["findings"], sections["impression"]
    if not findings and not impression:
        report.skip("report has no text in FINDINGS, IMPRESSION or a last paragraph", record_id)
        return None
    findings_source = "findings"
    if not findings:
        if empty_findings == "skip":
            report.exclude("no FINDINGS section (empty_findings='skip')", record_id)
            return None
        if empty_findings == "impression":
            findings, findings_source = impression, "impression"
        else:
            findings_source = "empty"

    image_paths = []
    image_folder = study_folder(image_files_root, subject_id, study_id)
    for dicom_id in study["dicom_ids"]:
        path = image_folder / f"{dicom_id}.jpg"
        name = f"{record_id}/{dicom_id}.jpg"
        if path.is_file():
            report.found_image(name)
            image_paths.append(path)
        else:
            report.missing_image(name)
    return ReportRecord(
        study_id=record_id,
        image_paths=tuple(image_paths),
        findings=findings,
        impression=impression,
        dataset="mimic-cxr",
        split=report.split,
        extra={
            "subject_id": subject_id,
            "dicom_ids": tuple(study["dicom_ids"]),
            "report_file": str(report_path),
            "findings_source": findings_source,
            "impression_source": sections.get(
                "impression_source", "impression" if impression else "empty"
            ),
        },
    )


def load_mimic_cxr(
    root: Path,
    split: str = "test",
    empty_findings: str = "keep",
    require_images: bool = True,
    images_root: Path | None = None,
) -> list[ReportRecord]:
    """Load one MIMIC-CXR split as ReportRecords; see load_mimic_cxr_with_report for the options."""
    records, _ = load_mimic_cxr_with_report(root, split, empty_findings, require_images, images_root)
    return records
