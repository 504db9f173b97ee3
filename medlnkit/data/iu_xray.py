"""Load the IU X-ray (OpenI) chest radiograph reports of the National Library of Medicine.

NLM distributes 3,955 XML reports (``NLMCXR_reports.tgz``, which unpacks to ``ecgen-radiology/``)
and the PNG images (``NLMCXR_png.tgz``, names such as ``CXR1_1_IM-0001-3001.png``). Each report
lists its images as ``parentImage`` elements. The torchxrayvision wheel ships the same report
archive, so the reports load offline without any download (``root=None``).

XrayGPT's OpenI instruction file ``filter_cap.json`` (``{"annotations": [{"image_id", "caption"}]}``,
one rewritten summary per image) is read when it sits in the dataset folder.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from medlnkit.assets import iu_xray_reports_archive
from medlnkit.data.loading import (
    LoadReport,
    check_choice,
    data_error,
    missing_images_error,
    normalise_text,
    read_json,
    require_folder,
)
from medlnkit.data.records import ReportRecord
from medlnkit.errors import MedlnkitError

logger = logging.getLogger(__name__)

CARD = "iu_xray"
EMPTY_FINDINGS_OPTIONS = ("skip", "keep", "impression")
SPLITS = ("all", "train", "test")
REPORT_FOLDERS = ("reports/ecgen-radiology", "ecgen-radiology")
REPORT_ARCHIVES = ("NLMCXR_reports.tgz", "reports/NLMCXR_reports.tgz")
# images/ is the kit's name; XrayGPT unpacks the same PNG files into image/.
IMAGE_FOLDERS = ("images", "image")
XRAYGPT_FILE = "filter_cap.json"
LAYOUT = (
    "ROOT/reports/ecgen-radiology/<N>.xml (or ROOT/ecgen-radiology/, or ROOT/NLMCXR_reports.tgz), "
    "optional ROOT/images/<image id>.png and optional ROOT/filter_cap.json (XrayGPT)"
)
XRAYGPT_LAYOUT = (
    'ROOT/filter_cap.json containing {"annotations": [{"image_id": ..., "caption": ...}]} and '
    "ROOT/image/<image id>.png"
)


def parse_report_xml(data: bytes, name: str) -> dict:
    """Parse one NLM report XML and return its sections, MeSH terms and image ids.

    The returned dict has ``uid`` (for example ``"CXR1"``), ``findings``, ``impression``,
    ``indication``, ``comparison`` (whitespace collapsed, ``""`` when empty), ``mesh_major``,
    ``mesh_automatic`` and ``image_ids`` (the ``parentImage`` ids in file order). Raises DataError
    naming ``name`` when the XML is malformed.
    """
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise data_error(f"{name} is not well-formed XML ({error})", CARD, LAYOUT)
    sections = {}
    for element in root.iter("AbstractText"):
        label = (element.get("Label") or "").strip().upper()
        sections[label] = normalise_text("".join(element.itertext()))
    uid_element = root.find("uId")
    uid = uid_element.get("id", "") if uid_element is not None else ""
    mesh = root.find("MeSH")
    return {
        "uid": uid,
        "findings": sections.get("FINDINGS", ""),
        "impression": sections.get("IMPRESSION", ""),
        "indication": sections.get("INDICATION", ""),
        "comparison": sections.get("COMPARISON", ""),
        "mesh_major": _mesh_terms(mesh, "major"),
        "mesh_automatic": _mesh_terms(mesh, "automatic"),
        "image_ids": [e.get("id", "") for e in root.iter("parentImage") if e.get("id")],
    }


def _mesh_terms(mesh: ElementTree.Element | None, kind: str) -> list[str]:
    if mesh is None:
        return []
    return [normalise_text(element.text or "") for element in mesh.iter(kind)]


def _report_sort_key(name: str) -> tuple[int, str]:
    stem = Path(name).stem
    return (int(stem), stem) if stem.isdigit() else (10**9, stem)


def _iter_archive(path: Path) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(path, "r:*") as archive:
            members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(".xml")]
            for member in sorted(members, key=lambda m: _report_sort_key(m.name)):
                handle = archive.extractfile(member)
                if handle is not None:
                    yield f"{path}:{member.name}", handle.read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise data_error(f"{path} could not be read as a tar archive ({error})", CARD, LAYOUT)


def _iter_folder(folder: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(folder.glob("*.xml"), key=lambda p: _report_sort_key(p.name)):
        yield str(path), path.read_bytes()


def find_report_source(root: Path | None) -> Path:
    """Return the report folder or archive to read for ``root`` (the bundled archive when None)."""
    if root is None:
        return iu_xray_reports_archive()
    root = Path(root)
    if root.is_file():
        return root
    require_folder(root, CARD, LAYOUT, label="IU X-ray folder")
    for relative in REPORT_FOLDERS:
        if (root / relative).is_dir():
            return root / relative
    for relative in REPORT_ARCHIVES:
        if (root / relative).is_file():
            return root / relative
    if any(root.glob("*.xml")):
        return root
    raise data_error(
        f"no IU X-ray reports were found in {root}: none of {', '.join(REPORT_FOLDERS)}, "
        f"{', '.join(REPORT_ARCHIVES)} or *.xml exists there",
        CARD,
        LAYOUT,
    )


def split_of(study_id: str, test_fraction: float = 0.2, seed: int = 0) -> str:
    """Return ``"test"`` or ``"train"`` for a report id, from a hash of the id and the seed.

    The split depends only on the id, the fraction and the seed, so it is the same on every
    machine and does not change when reports are added or removed.
    """
    if not 0.0 < test_fraction < 1.0:
        raise MedlnkitError(f"invalid test_fraction {test_fraction}: use a value between 0 and 1")
    digest = hashlib.sha256(f"{seed}:{study_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if position < test_fraction else "train"


def split_iu_xray(
    records: list[ReportRecord], test_fraction: float = 0.2, seed: int = 0
) -> dict[str, list[ReportRecord]]:
    """Split report records into ``{"train": [...], "test": [...]}`` by ``split_of`` their id."""
    splits: dict[str, list[ReportRecord]] = {"train": [], "test": []}
    for record in records:
        name = split_of(record.study_id, test_fraction, seed)
        splits[name].append(replace(record, split=name))
    return splits


def load_iu_xray_with_report(
    root: Path | None = None,
    empty_findings: str = "skip",
    split: str = "all",
    test_fraction: float = 0.2,
    seed: int = 0,
    require_images: bool = False,
) -> tuple[list[ReportRecord], LoadReport]:
    """Load IU X-ray reports as ReportRecords with the LoadReport of what was left out.

    ``root`` is the dataset folder, a report archive, or None for the archive inside the
    torchxrayvision wheel (3,955 reports). ``empty_findings`` decides what happens to reports
    whose FINDINGS section is empty: ``"skip"`` leaves them out, ``"keep"`` returns them with
    ``findings == ""`` and ``"impression"`` copies the impression into ``findings``. Reports with
    neither section are always skipped. ``split`` is ``"all"`` or the ``"train"`` / ``"test"`` side
    of ``split_of``. Image paths are filled from ``images/`` when that folder exists, and
    ``require_images`` raises DataError when it or any listed image is missing.
    """
    check_choice("empty_findings", empty_findings, EMPTY_FINDINGS_OPTIONS)
    check_choice("split", split, SPLITS)
    source = find_report_source(root)
    folder = Path(root) if root is not None and Path(root).is_dir() else None
    image_folder = _find_image_folder(folder)
    if require_images and image_folder is None:
        raise data_error(
            f"no image folder ({' or '.join(IMAGE_FOLDERS)}) was found next to the reports in "
            f"{root}. Unpack NLMCXR_png.tgz there, or pass require_images=False",
            CARD,
            LAYOUT,
        )

    report = LoadReport(dataset="iu-xray", split=split, source=str(source), layout="NLM XML reports")
    items = _iter_archive(source) if source.is_file() else _iter_folder(source)
    records: list[ReportRecord] = []
    for name, data in items:
        report.read += 1
        fields = parse_report_xml(data, name)
        record = _build_record(fields, name, empty_findings, image_folder, require_images, report)
        if record is None:
            continue
        if split != "all":
            record_split = split_of(record.study_id, test_fraction, seed)
            if record_split != split:
                report.exclude(f"in the {record_split} split (split={split!r})", record.study_id)
                continue
            record = replace(record, split=record_split)
        records.append(record)

    if report.read == 0:
        raise data_error(f"{source} contains no report XML files", CARD, LAYOUT)
    if image_folder is None:
        report.notes.append("no images/ folder: records carry no image paths")
    elif require_images and report.missing_images:
        raise missing_images_error(
            report.missing_images, image_folder, CARD, LAYOUT, "require_images=False"
        )
    if folder is not None and (folder / XRAYGPT_FILE).is_file():
        records = _attach_captions(records, folder / XRAYGPT_FILE, report)
    report.loaded = len(records)
    report.log(logger)
    return records, report


def _find_image_folder(folder: Path | None) -> Path | None:
    if folder is None:
        return None
    for name in IMAGE_FOLDERS:
        if (folder / name).is_dir():
            return folder / name
    return None


def _build_record(
    fields: dict,
    name: str,
    empty_findings: str,
    image_folder: Path | None,
    require_images: bool,
    report: LoadReport,
) -> ReportRecord | None:
    """Turn one parsed report into a ReportRecord, or count why it is left out and return None."""
    stem = Path(name.rsplit(":", 1)[-1]).stem
    study_id = fields["uid"] or f"CXR{stem}"
    findings, impression = fields["findings"], fields["impression"]
    if not findings and not impression:
        report.skip("no FINDINGS or IMPRESSION text", study_id)
        return None
    findings_source = "findings"
    if not findings:
        if empty_findings == "skip":
            report.exclude("empty FINDINGS (empty_findings='skip')", study_id)
            return None
        if empty_findings == "impression":
            findings, findings_source = impression, "impression"
        else:
            findings_source = "empty"

    image_paths = []
    if image_folder is not None:
        if require_images and not fields["image_ids"]:
            report.skip("report lists no images (no parentImage element)", study_id)
            return None
        for image_id in fields["image_ids"]:
            path = image_folder / f"{image_id}.png"
            if path.is_file():
                report.found_image(path.name)
                image_paths.append(path)
            else:
                report.missing_image(path.name)

    extra = {
        "report_id": stem,
        "xml_file": name,
        "findings_source": findings_source,
        "image_ids": fields["image_ids"],
        "indication": fields["indication"],
        "comparison": fields["comparison"],
        "mesh_major": fields["mesh_major"],
        "mesh_automatic": fields["mesh_automatic"],
    }
    return ReportRecord(
        study_id=study_id,
        image_paths=tuple(image_paths),
        findings=findings,
        impression=impression,
        dataset="iu-xray",
        split="all",
        extra=extra,
    )


def read_xraygpt_captions(path: Path, report: LoadReport | None = None) -> dict[str, str]:
    """Read XrayGPT's ``filter_cap.json`` and return its captions by image id.

    Entries without a non-empty ``image_id`` and ``caption``, and repeated image ids after the
    first, are counted in ``report`` when one is given. Raises DataError when the file is not
    JSON or lacks the ``annotations`` list.
    """
    data = read_json(path, CARD, XRAYGPT_LAYOUT)
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        raise data_error(
            f'{path} must be a JSON object with an "annotations" list of image_id/caption '
            "entries, as XrayGPT's OpenI file is",
            CARD,
            XRAYGPT_LAYOUT,
        )
    captions: dict[str, str] = {}
    for index, entry in enumerate(annotations):
        entry_id = f"annotation {index}"
        if not isinstance(entry, dict) or not entry.get("image_id") or not entry.get("caption"):
            if report is not None:
                report.skip("filter_cap.json entry without image_id or caption", entry_id)
            continue
        image_id = normalise_text(entry["image_id"])
        if image_id in captions:
            if report is not None:
                report.skip("filter_cap.json repeats an image_id (first caption kept)", image_id)
            continue
        captions[image_id] = normalise_text(entry["caption"])
    return captions


def _attach_captions(
    records: list[ReportRecord], path: Path, report: LoadReport
) -> list[ReportRecord]:
    """Store each report's XrayGPT captions in ``extra["instruction_captions"]`` by image id."""
    captions = read_xraygpt_captions(path, report)
    attached: set[str] = set()
    updated = []
    for record in records:
        own = {i: captions[i] for i in record.extra["image_ids"] if i in captions}
        attached.update(own)
        updated.append(replace(record, extra={**record.extra, "instruction_captions": own}))
    report.notes.append(
        f"{path.name}: {len(captions)} captions, {len(attached)} attached to returned reports, "
        f"{len(captions) - len(attached)} for images of reports not returned or not listed"
    )
    return updated


def load_xraygpt_openi_with_report(
    root: Path, require_images: bool = True
) -> tuple[list[ReportRecord], LoadReport]:
    """Load XrayGPT's OpenI instruction data: one ReportRecord per image, caption as findings.

    ``root`` contains ``filter_cap.json`` and ``image/<image_id>.png``. Each record has the image id
    as ``study_id``, the caption as ``findings``, an empty ``impression`` and split ``"train"``
    (XrayGPT fine-tunes on all of it).
    """
    root = Path(root)
    require_folder(root, CARD, XRAYGPT_LAYOUT, label="XrayGPT OpenI folder")
    path = root / XRAYGPT_FILE
    report = LoadReport(dataset="iu-xray", split="train", source=str(path), layout="XrayGPT OpenI")
    captions = read_xraygpt_captions(path, report)
    image_folder = _find_image_folder(root)
    if require_images and image_folder is None:
        raise data_error(
            f"the image folder {root / 'image'} was not found. Unpack NLMCXR_png.tgz there, or "
            "pass require_images=False",
            CARD,
            XRAYGPT_LAYOUT,
        )
    report.read = len(captions) + sum(report.skipped.values())
    records = []
    for image_id, caption in captions.items():
        image_paths: tuple[Path, ...] = ()
        if image_folder is not None:
            path_png = image_folder / f"{image_id}.png"
            if path_png.is_file():
                report.found_image(path_png.name)
                image_paths = (path_png,)
            else:
                report.missing_image(path_png.name)
        records.append(
            ReportRecord(
                study_id=image_id,
                image_paths=image_paths,
                findings=caption,
                impression="",
                dataset="iu-xray",
                split="train",
                extra={"source": "xraygpt-openi"},
            )
        )
    if require_images and report.missing_images:
        raise missing_images_error(
            report.missing_images, image_folder, CARD, XRAYGPT_LAYOUT, "require_images=False"
        )
    report.loaded = len(records)
    report.log(logger)
    return records, report


def load_xraygpt_openi(root: Path, require_images: bool = True) -> list[ReportRecord]:
    """Load XrayGPT's OpenI captions as ReportRecords; see load_xraygpt_openi_with_report."""
    records, _ = load_xraygpt_openi_with_report(root, require_images)
    return records


def load_iu_xray(
    root: Path | None = None,
    empty_findings: str = "skip",
    split: str = "all",
    test_fraction: float = 0.2,
    seed: int = 0,
    require_images: bool = False,
) -> list[ReportRecord]:
    """Load IU X-ray reports as ReportRecords; see load_iu_xray_with_report for the options."""
    records, _ = load_iu_xray_with_report(
        root, empty_findings, split, test_fraction, seed, require_images
    )
    return records
