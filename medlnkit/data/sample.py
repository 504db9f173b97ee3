"""Build the embedded sample: real medical images that registry packages ship, in Slake 1.0's layout.

Every answer comes from a DICOM attribute (Modality, ImageOrientationPatient, BodyPartExamined,
ViewPosition, ContrastBolusAgent, ...) or from the slicing axis of the MNI152 T1 template, never
from looking at the pixels, so the questions are about acquisition metadata and not findings.
``data_cards/embedded_sample.md`` lists the sources, licences and derivation rules.

Layout of the built folder (the same as Slake 1.0, so one loader reads both)::

    sample-v1/train.json  validate.json  test.json  manifest.json
    sample-v1/imgs/sample001/source.jpg ...
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import random
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel
import numpy as np
import pydicom
from PIL import Image
from pydicom.multival import MultiValue

from medlnkit.assets import distribution_file, pydicom_data_folder, pydicom_test_file
from medlnkit.data.images import dicom_value, fit_within, percentile_to_uint8, render_dicom_frame
from medlnkit.data.records import VQARecord
from medlnkit.data.slake import load_slake
from medlnkit.errors import DataError

logger = logging.getLogger(__name__)

SAMPLE_NAME = "sample-v1"
# Bump when images, questions or layout change: a cache whose manifest differs is rebuilt.
BUILDER_VERSION = 1
SEED = 20240611
SPLITS = ("train", "validate", "test")
VALIDATE_FRACTION = 0.15
TEST_FRACTION = 0.15
MAX_SIDE = 512  # pixels; Slake's own images are about this size
JPEG_QUALITY = 92
DATASET_NAME = "embedded-sample"  # VQARecord.dataset of every sample record


@dataclass(frozen=True)
class DicomSource:
    """One DICOM file used by the sample; ``description`` is for people and never feeds an answer."""

    package: str  # "pydicom" (its test_files folder) or "pydicom-data" (data_store/data)
    file: str
    frames: tuple[int, ...] | None  # frame indices of a multi-frame file; None for one frame
    description: str


# Each image appears once: the J2KI/J2KR/UNCI copies of RG1, RG3, MR2 and US1, the big-endian,
# RLE and cropped "examples_*" copies are other encodings of these same pixels and are left out.
# UNCR is the uncompressed original (the same pixels as the lossless J2KR copy).
DICOM_SOURCES = (
    DicomSource("pydicom-data", "RG1_UNCR.dcm", None, "PA chest radiograph, NEMA WG04 set RG1"),
    DicomSource("pydicom-data", "RG3_UNCR.dcm", None, "lower-leg radiograph, NEMA WG04 set RG3"),
    DicomSource("pydicom-data", "MR2_UNCR.dcm", None, "oblique shoulder MR, NEMA WG04 set MR2"),
    DicomSource("pydicom", "CT_small.dcm", None, "CT slice downsized to 128x128 from NEMA WG04 CT1"),
    DicomSource("pydicom", "MR_small.dcm", None, "MR slice downsized to 64x64 from NEMA WG04 MR1"),
    DicomSource("pydicom-data", "693_UNCR.dcm", None, "CT slice, series '5/5mm Plain'"),
    DicomSource("pydicom", "J2K_pixelrep_mismatch.dcm", None, "head CT slice with gantry tilt"),
    DicomSource("pydicom-data", "explicit_VR-UN.dcm", None, "abdominal CT slice from a TCIA pancreas set"),
    DicomSource(
        "pydicom-data", "MR-SIEMENS-DICOM-WithOverlays.dcm", None, "abdominal MR after Omniscan (GDCM test data)"
    ),
    DicomSource("pydicom-data", "emri_small.dcm", tuple(range(10)), "Enhanced MR of the head, 3D T1 TFE, 64x64"),
    DicomSource("pydicom-data", "eCT_Supplemental.dcm", (0, 1), "Enhanced CT brain perfusion map (rCBF), NEMA CT0012"),
    DicomSource("pydicom-data", "JPEG2000_UNC.dcm", None, "whole-body bone scintigram, NEMA WG04 set NM1"),
    DicomSource("pydicom-data", "US1_UNCR.dcm", None, "ultrasound with colour Doppler, NEMA WG04 set US1"),
    # OBXXXX1A_2frame.dcm is not used: its second frame is the first one with inverted values.
    DicomSource("pydicom-data", "OBXXXX1A.dcm", None, "obstetric ultrasound (Philips)"),
    DicomSource("pydicom-data", "color3d_jpeg_baseline.dcm", tuple(range(0, 120, 15)), "epicardial ultrasound cine"),
    DicomSource("pydicom-data", "gdcm-US-ALOKA-16.dcm", None, "ultrasound (Aloka), from GDCM's test data"),
    DicomSource("pydicom-data", "color-pl.dcm", None, "transesophageal echocardiogram with colour Doppler"),
)

MNI_DISTRIBUTION = "nilearn"
MNI_FILE = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
# Relative positions along each axis of the 197 x 233 x 189 voxel grid; all of them cut the brain.
MNI_SLICE_FRACTIONS = tuple(float(value) for value in np.linspace(0.30, 0.70, 9))

# Attributes read from every DICOM file and recorded in the manifest.
TAG_KEYWORDS = (
    "Modality",
    "SOPClassUID",
    "BodyPartExamined",
    "StudyDescription",
    "SeriesDescription",
    "ViewPosition",
    "ImageOrientationPatient",
    "ContrastBolusAgent",
    "ContrastBolusAgentAdministered",
    "AcquisitionContrast",
    "PhotometricInterpretation",
    "NumberOfFrames",
    "WindowCenter",
    "WindowWidth",
    "RescaleSlope",
    "RescaleIntercept",
)
ANATOMIC_REGION_KEY = "FrameAnatomySequence.AnatomicRegionSequence.CodeMeaning"

MODALITY_NAMES = {
    "CT": "CT",
    "MR": "MRI",
    "CR": "X-Ray",
    "DX": "X-Ray",
    "US": "Ultrasound",
    "NM": "Nuclear Medicine",
}
VIEW_NAMES = {"PA": "PA", "AP": "AP", "LL": "Lateral", "RL": "Lateral", "LATERAL": "Lateral"}
# Slake's answers for the plane whose normal runs along the patient's x, y and z axis.
PLANES = ("Sagittal Plane", "Coronal Plane", "Transverse Plane")
# A slice whose normal is further than this from every patient axis is oblique and gets no plane question.
OBLIQUE_LIMIT_DEGREES = 30.0

# (attribute, word, answer): the first rule whose word appears in the attribute gives the body part.
# Only anatomical words are matched, so a diagnosis in a description never becomes an answer.
BODY_PART_RULES = (
    ("BodyPartExamined", "CHEST", "Chest"),
    ("BodyPartExamined", "HEAD", "Head"),
    ("BodyPartExamined", "ABDOMEN", "Abdomen"),
    ("BodyPartExamined", "PANCREAS", "Abdomen"),
    ("BodyPartExamined", "WHOLE BODY", "Whole Body"),
    (ANATOMIC_REGION_KEY, "BRAIN", "Brain"),
    ("StudyDescription", "SHOULDER", "Shoulder"),
    ("StudyDescription", "TIBIA", "Leg"),
    ("StudyDescription", "ECHOCARDIOGRAM", "Chest"),
)
BODY_PARTS = ("Chest", "Head", "Brain", "Abdomen", "Leg", "Shoulder", "Whole Body")
# Pairs that a yes/no question must not contrast, because one region contains the other.
OVERLAPPING_BODY_PARTS = {frozenset(("Head", "Brain"))}

MODALITY_OPEN_QUESTIONS = (
    "What modality is used to take this image?",
    "How was this image taken?",
    "What imaging modality was used?",
)
MODALITY_PHRASES = {
    "CT": "a CT image",
    "MRI": "an MRI image",
    "X-Ray": "an X-Ray image",
    "Ultrasound": "an ultrasound image",
    "Nuclear Medicine": "a nuclear medicine image",
}
PLANE_OPEN_QUESTIONS = ("What is the scanning plane of this image?", "In what plane is this image scanned?")
VIEW_PHRASES = {"PA": "a PA", "AP": "an AP", "Lateral": "a lateral"}
CONTRAST_QUESTIONS = {
    "Yes": "Was a contrast agent used for this image?",
    "No": "Was this image taken without a contrast agent?",
}


@dataclass
class ImageSpec:
    """One image of the sample: where its pixels come from and what its metadata states."""

    key: str  # unique and stable, e.g. "pydicom-data/emri_small.dcm#3"
    package: str
    package_version: str
    file: str  # path inside the installed distribution
    path: Path
    frame: int | None
    slice_axis: int | None  # voxel axis of the MNI volume, None for DICOM
    slice_index: int | None
    description: str
    tags: dict
    facts: dict  # question kind -> answer, only for kinds that the metadata settles
    evidence: dict  # question kind -> attribute or geometry the answer comes from
    img_id: int = 0
    split: str = ""

    @property
    def folder(self) -> str:
        return f"sample{self.img_id:03d}"


@dataclass(frozen=True)
class Question:
    """One question about one image, with the Slake fields that describe it."""

    text: str
    answer: str
    answer_type: str  # "OPEN" or "CLOSED"
    content_type: str  # Slake's category: Modality, Plane, Organ, Position


@dataclass
class SamplePlan:
    """Everything the build writes except the pixels, computed from headers alone."""

    images: list[ImageSpec]
    splits: dict[str, list[dict]]
    manifest: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Public API


def default_cache_dir() -> Path:
    """Return the cache root: ``$MEDLNKIT_CACHE`` when set, else ``~/.cache/medlnkit``."""
    value = os.environ.get("MEDLNKIT_CACHE")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "medlnkit"


def build_sample(cache_dir: Path | None = None, force: bool = False) -> Path:
    """Build the sample into ``<cache_dir>/sample-v1`` once and return that folder.

    ``cache_dir`` defaults to ``default_cache_dir()``. An existing folder is reused when its
    manifest matches the one computed from the installed packages, unless ``force`` is set. The
    build writes into a temporary sibling folder and renames it into place, so an interrupted
    build never leaves a partial sample behind. Reads only local package files.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / SAMPLE_NAME
    plan = plan_sample()
    if not force and _cache_matches(target, plan.manifest):
        logger.debug("reusing the sample at %s", target)
        return target
    _check_replaceable(target)

    started = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(root)
    staging = Path(tempfile.mkdtemp(prefix=f".{SAMPLE_NAME}.building-", dir=root))
    try:
        _write_sample(plan, staging)
        _install(staging, target, plan.manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    counts = plan.manifest["counts"]["total"]
    logger.info(
        "built the sample at %s: %d images, %d questions in %.1f s",
        target,
        counts["images"],
        counts["questions"],
        time.perf_counter() - started,
    )
    return target


def sample_records(split: str, cache_dir: Path | None = None) -> list[VQARecord]:
    """Return the records of one split (train, validate or test), building the sample first if needed."""
    if split not in SPLITS:
        raise DataError(f"unknown sample split {split!r}: choose one of {', '.join(SPLITS)}")
    folder = build_sample(cache_dir)
    return _read_slake_split(folder, split)


def plan_sample() -> SamplePlan:
    """Read the sources' headers and return the images, splits, records and manifest, without pixels."""
    images = _dicom_images() + _mni_images()
    for img_id, spec in enumerate(images, start=1):
        spec.img_id = img_id
    _assign_splits(images)
    questions = _questions(images)
    splits = _slake_records(images, questions)
    manifest = _manifest(images, splits)
    return SamplePlan(images=images, splits=splits, manifest=manifest)


def plane_from_orientation(orientation) -> str | None:
    """Return Slake's plane name for an ImageOrientationPatient value, or None when oblique.

    The slice normal is the cross product of the row and column direction cosines. The plane is
    named after the patient axis closest to that normal (x: sagittal, y: coronal, z: transverse).
    """
    values = np.asarray([float(value) for value in orientation], dtype=np.float64)
    if values.shape != (6,):
        raise DataError(f"ImageOrientationPatient {list(orientation)} must contain 6 numbers")
    normal = np.cross(values[:3], values[3:])
    length = float(np.linalg.norm(normal))
    if length == 0.0:
        raise DataError(f"ImageOrientationPatient {list(orientation)} has parallel row and column directions")
    normal = np.abs(normal) / length
    axis = int(np.argmax(normal))
    if normal[axis] < math.cos(math.radians(OBLIQUE_LIMIT_DEGREES)):
        return None
    return PLANES[axis]


# ---------------------------------------------------------------------------------------------
# Sources and the facts their metadata settles


def _source_path(source: DicomSource) -> Path:
    if source.package == "pydicom-data":
        return pydicom_data_folder() / source.file
    return pydicom_test_file(source.file)


def _dicom_images() -> list[ImageSpec]:
    images = []
    for source in DICOM_SOURCES:
        path = _source_path(source)
        if not path.is_file():
            raise DataError(f"{source.file} is missing from the installed {source.package}: reinstall it")
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        version = importlib.metadata.version(source.package)
        site = Path(importlib.metadata.distribution(source.package).locate_file(""))
        for frame in source.frames if source.frames is not None else (None,):
            tags = _read_tags(dataset, frame)
            facts, evidence = _dicom_facts(tags, source.file)
            key = f"{source.package}/{source.file}" + (f"#{frame}" if frame is not None else "")
            images.append(
                ImageSpec(
                    key=key,
                    package=source.package,
                    package_version=version,
                    file=path.relative_to(site).as_posix(),
                    path=path,
                    frame=frame,
                    slice_axis=None,
                    slice_index=None,
                    description=source.description,
                    tags=tags,
                    facts=facts,
                    evidence=evidence,
                )
            )
    return images


def _read_tags(dataset: pydicom.Dataset, frame: int | None) -> dict:
    tags = {}
    for keyword in TAG_KEYWORDS:
        value = dicom_value(dataset, keyword, frame)
        if value is not None:
            tags[keyword] = _json_value(value)
    region = _anatomic_region(dataset)
    if region:
        tags[ANATOMIC_REGION_KEY] = region
    return tags


def _anatomic_region(dataset: pydicom.Dataset) -> str | None:
    # Enhanced objects name the anatomy with a code in the Frame Anatomy macro.
    if "SharedFunctionalGroupsSequence" not in dataset:
        return None
    shared = dataset.SharedFunctionalGroupsSequence[0]
    for anatomy in shared.get("FrameAnatomySequence", []):
        for region in anatomy.get("AnatomicRegionSequence", []):
            if region.get("CodeMeaning"):
                return str(region.CodeMeaning)
    return None


def _json_value(value):
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(item) for item in value]
    return str(value)


def _dicom_facts(tags: dict, file: str) -> tuple[dict, dict]:
    facts, evidence = {}, {}

    modality = MODALITY_NAMES.get(tags.get("Modality", ""))
    if modality is None:
        raise DataError(f"{file} has Modality {tags.get('Modality')!r}, which the sample cannot name")
    facts["modality"], evidence["modality"] = modality, f"Modality={tags['Modality']}"

    orientation = tags.get("ImageOrientationPatient")
    if orientation:
        plane = plane_from_orientation(orientation)
        if plane is not None:
            facts["plane"] = plane
            evidence["plane"] = f"ImageOrientationPatient={orientation}"
        else:
            evidence["plane"] = f"oblique, so not asked: ImageOrientationPatient={orientation}"

    for keyword, word, answer in BODY_PART_RULES:
        value = tags.get(keyword)
        if isinstance(value, str) and re.search(rf"\b{re.escape(word)}\b", value.upper()):
            facts["body_part"], evidence["body_part"] = answer, f"{keyword}={value}"
            break

    view = VIEW_NAMES.get(tags.get("ViewPosition", "").upper())
    if view is not None:
        facts["view"], evidence["view"] = view, f"ViewPosition={tags['ViewPosition']}"

    contrast = _contrast(tags)
    if contrast is not None:
        facts["contrast"], evidence["contrast"] = contrast

    weighting = tags.get("AcquisitionContrast")
    if weighting in ("T1", "T2"):
        facts["weighting"], evidence["weighting"] = weighting, f"AcquisitionContrast={weighting}"
    return facts, evidence


def _contrast(tags: dict) -> tuple[str, str] | None:
    """Return ("Yes"/"No", evidence) when an attribute states whether contrast was given."""
    agent = tags.get("ContrastBolusAgent")
    if isinstance(agent, str) and agent.strip():
        return "Yes", f"ContrastBolusAgent={agent}"
    administered = tags.get("ContrastBolusAgentAdministered")
    if administered in ("YES", "NO"):
        return administered.capitalize(), f"ContrastBolusAgentAdministered={administered}"
    series = tags.get("SeriesDescription")
    # In CT series names, "plain" denotes an acquisition without a contrast agent.
    if isinstance(series, str) and re.search(r"\bPLAIN\b", series.upper()):
        return "No", f"SeriesDescription={series}"
    # An absent or empty ContrastBolusAgent only means "not recorded", so no question is asked.
    return None


def _mni_images() -> list[ImageSpec]:
    path = distribution_file(MNI_DISTRIBUTION, MNI_FILE)
    header_image = nibabel.load(path)
    if nibabel.aff2axcodes(header_image.affine) != ("R", "A", "S"):
        raise DataError(f"{path} is not stored in RAS voxel order: the slicing planes would be mislabelled")
    shape = header_image.shape
    version = importlib.metadata.version(MNI_DISTRIBUTION)
    evidence_common = {
        "modality": "MRI template: nilearn's load_mni152_template loads the 'MNI152 skullstripped T1 template'",
        "body_part": "skull-stripped brain template",
        "weighting": "T1 template (file name mni_icbm152_t1_...)",
    }
    images = []
    for axis in (2, 1, 0):
        for fraction in MNI_SLICE_FRACTIONS:
            index = round(fraction * (shape[axis] - 1))
            images.append(
                ImageSpec(
                    key=f"{MNI_DISTRIBUTION}/{Path(MNI_FILE).name}@axis{axis}={index}",
                    package=MNI_DISTRIBUTION,
                    package_version=version,
                    file=MNI_FILE,
                    path=path,
                    frame=None,
                    slice_axis=axis,
                    slice_index=index,
                    description="MNI152 ICBM 2009a T1 template (average of 152 adult brains), 1 mm",
                    tags={},
                    facts={"modality": "MRI", "plane": PLANES[axis], "body_part": "Brain", "weighting": "T1"},
                    evidence={**evidence_common, "plane": f"slice {index} across voxel axis {axis} (RAS)"},
                )
            )
    return images


# ---------------------------------------------------------------------------------------------
# Splits and questions


def _assign_splits(images: list[ImageSpec]) -> None:
    """Put each image in one split, about 70/15/15 within each modality, with a fixed seed."""
    by_modality: dict[str, list[ImageSpec]] = {}
    for spec in images:
        by_modality.setdefault(spec.facts["modality"], []).append(spec)
    for modality in sorted(by_modality):
        group = sorted(by_modality[modality], key=lambda spec: spec.key)
        random.Random(f"{SEED}:split:{modality}").shuffle(group)
        test_count = round(TEST_FRACTION * len(group))
        validate_count = round(VALIDATE_FRACTION * len(group))
        for position, spec in enumerate(group):
            if position < test_count:
                spec.split = "test"
            elif position < test_count + validate_count:
                spec.split = "validate"
            else:
                spec.split = "train"


def _alternatives(kind: str, truth: str) -> list[str]:
    """Return the answers that are certainly wrong for this kind of question."""
    if kind == "modality":
        return [name for name in MODALITY_PHRASES if name != truth]
    if kind == "plane":
        return [name for name in PLANES if name != truth]
    if kind == "body_part":
        if truth == "Whole Body":
            return []
        return [
            part
            for part in BODY_PARTS
            if part not in (truth, "Whole Body") and frozenset((part, truth)) not in OVERLAPPING_BODY_PARTS
        ]
    if kind == "contrast":
        return ["No" if truth == "Yes" else "Yes"]
    if kind == "weighting":
        return ["T2" if truth == "T1" else "T1"]
    if kind == "view":
        return [name for name in VIEW_PHRASES if name != truth]
    raise ValueError(f"unknown question kind {kind!r}")


def _yes_polarity(images: list[ImageSpec]) -> dict[tuple[str, str], bool]:
    """Decide, per yes/no kind, which images are asked about their true value (answer Yes).

    Half of the eligible images of each kind, chosen with a fixed seed, get Yes, so that a model
    answering always Yes or always No scores about 50% on every yes/no question type.
    """
    polarity = {}
    for kind in ("modality", "plane", "body_part", "contrast", "weighting"):
        eligible = sorted(
            (spec for spec in images if kind in spec.facts and _alternatives(kind, spec.facts[kind])),
            key=lambda spec: spec.key,
        )
        random.Random(f"{SEED}:polarity:{kind}").shuffle(eligible)
        yes_count = math.ceil(len(eligible) / 2)
        for position, spec in enumerate(eligible):
            polarity[(kind, spec.key)] = position < yes_count
    return polarity


def _questions(images: list[ImageSpec]) -> dict[str, list[Question]]:
    polarity = _yes_polarity(images)
    return {spec.key: _questions_for(spec, polarity) for spec in images}


def _questions_for(spec: ImageSpec, polarity: dict[tuple[str, str], bool]) -> list[Question]:
    rng = random.Random(f"{SEED}:questions:{spec.key}")
    facts = spec.facts
    questions: list[Question] = []

    def add(text: str, answer: str, answer_type: str, content_type: str) -> None:
        questions.append(Question(text, answer, answer_type, content_type))

    def yes_no(kind: str) -> tuple[str, str]:
        # Return the value the question names (the true one for "Yes" images) and the answer.
        truth = facts[kind]
        alternatives = _alternatives(kind, truth)
        if not alternatives or polarity[(kind, spec.key)]:
            return truth, "Yes"
        return rng.choice(alternatives), "No"

    def choice_pair(kind: str) -> tuple[str, str]:
        options = [facts[kind], rng.choice(_alternatives(kind, facts[kind]))]
        rng.shuffle(options)
        return options[0], options[1]

    modality = facts["modality"]
    add(rng.choice(MODALITY_OPEN_QUESTIONS), modality, "OPEN", "Modality")
    named, answer = yes_no("modality")
    add(f"Is this {MODALITY_PHRASES[named]}?", answer, "CLOSED", "Modality")
    first, second = choice_pair("modality")
    add(f"Which modality is used for this image, {first} or {second}?", modality, "CLOSED", "Modality")

    if "plane" in facts:
        plane = facts["plane"]
        add(rng.choice(PLANE_OPEN_QUESTIONS), plane, "OPEN", "Plane")
        named, answer = yes_no("plane")
        add(f"Is this a {named.lower()}?", answer, "CLOSED", "Plane")
        first, second = choice_pair("plane")
        text = f"Which plane is the image scanned, {first.lower()} or {second.lower()}?"
        add(text, plane, "CLOSED", "Plane")

    if "body_part" in facts:
        add("Which part of the body does this image belong to?", facts["body_part"], "OPEN", "Position")
        named, answer = yes_no("body_part")
        add(f"Is this a study of the {named.lower()}?", answer, "CLOSED", "Organ")

    if "view" in facts:
        view = facts["view"]
        add("In which view was this radiograph taken?", view, "OPEN", "Position")
        first, second = choice_pair("view")
        text = f"Is this {VIEW_PHRASES[first]} or {VIEW_PHRASES[second]} radiograph?"
        add(text, view, "CLOSED", "Position")

    if "contrast" in facts:
        named, answer = yes_no("contrast")
        add(CONTRAST_QUESTIONS[named], answer, "CLOSED", "Modality")

    if "weighting" in facts:
        add("What is the mr weighting in this image?", facts["weighting"], "OPEN", "Modality")
        named, answer = yes_no("weighting")
        add(f"Is this a {named}-weighted image?", answer, "CLOSED", "Modality")
    return questions


def _slake_records(images: list[ImageSpec], questions: dict[str, list[Question]]) -> dict[str, list[dict]]:
    """Return the Slake-format records of each split; ``qid`` runs across splits so it is unique."""
    splits: dict[str, list[dict]] = {split: [] for split in SPLITS}
    qid = 0
    for split in SPLITS:
        for spec in sorted((spec for spec in images if spec.split == split), key=lambda spec: spec.img_id):
            for question in questions[spec.key]:
                splits[split].append(
                    {
                        "img_id": spec.img_id,
                        "img_name": f"{spec.folder}/source.jpg",
                        "question": question.text,
                        "answer": question.answer,
                        "q_lang": "en",
                        "location": spec.facts.get("body_part", "Unknown"),
                        "modality": spec.facts["modality"],
                        "answer_type": question.answer_type,
                        "base_type": "vqa",
                        "content_type": question.content_type,
                        "triple": ["vhead", "_", "_"],
                        "qid": qid,
                    }
                )
                qid += 1
    return splits


# ---------------------------------------------------------------------------------------------
# Manifest, rendering and the cache


def _manifest(images: list[ImageSpec], splits: dict[str, list[dict]]) -> dict:
    hashes: dict[Path, str] = {}
    entries = []
    for spec in images:
        if spec.path not in hashes:
            hashes[spec.path] = hashlib.sha256(spec.path.read_bytes()).hexdigest()
        entries.append(
            {
                "img_id": spec.img_id,
                "img_name": f"{spec.folder}/source.jpg",
                "split": spec.split,
                "package": spec.package,
                "package_version": spec.package_version,
                "file": spec.file,
                "file_sha256": hashes[spec.path],
                "frame": spec.frame,
                "slice": _slice_entry(spec),
                "description": spec.description,
                "tags": spec.tags,
                "answers": spec.facts,
                "evidence": spec.evidence,
            }
        )
    records_json = json.dumps(splits, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return {
        "name": SAMPLE_NAME,
        "builder_version": BUILDER_VERSION,
        "seed": SEED,
        "max_side": MAX_SIDE,
        "jpeg_quality": JPEG_QUALITY,
        "packages": {
            name: importlib.metadata.version(name)
            for name in ("pydicom", "pydicom-data", "nilearn", "nibabel", "pillow", "numpy")
        },
        "records_sha256": hashlib.sha256(records_json).hexdigest(),
        "counts": _counts(splits),
        "images": entries,
    }


def _slice_entry(spec: ImageSpec) -> dict | None:
    if spec.slice_axis is None:
        return None
    return {"axis": spec.slice_axis, "index": spec.slice_index}


def _counts(splits: dict[str, list[dict]]) -> dict:
    counts = {}
    every_record = [record for split in SPLITS for record in splits[split]]
    for split, records in [*splits.items(), ("total", every_record)]:
        closed = [record for record in records if record["answer_type"] == "CLOSED"]
        counts[split] = {
            "images": len({record["img_id"] for record in records}),
            "questions": len(records),
            "OPEN": len(records) - len(closed),
            "CLOSED": len(closed),
            "CLOSED_yes": sum(record["answer"] == "Yes" for record in closed),
            "CLOSED_no": sum(record["answer"] == "No" for record in closed),
        }
    return counts


def _render(spec: ImageSpec, volumes: dict[Path, np.ndarray]) -> tuple[Image.Image, str]:
    if spec.slice_axis is None:
        return render_dicom_frame(spec.path, spec.frame)
    if spec.path not in volumes:
        volumes[spec.path] = np.asarray(nibabel.load(spec.path).dataobj)
    volume = volumes[spec.path]
    section = np.take(volume, spec.slice_index, axis=spec.slice_axis)
    # After the transpose the two remaining RAS axes are (rows, columns). Flipping both puts
    # superior (anterior for axial slices) at the top and the patient's right on the viewer's left.
    section = section.T[::-1, ::-1]
    return Image.fromarray(percentile_to_uint8(section)), "percentile 1-99"


def _write_sample(plan: SamplePlan, folder: Path) -> None:
    volumes: dict[Path, np.ndarray] = {}
    manifest = json.loads(json.dumps(plan.manifest))
    # The manifest lists the images in plan order, so the two sequences pair up one to one.
    for spec, entry in zip(plan.images, manifest["images"], strict=True):
        image, mapping = _render(spec, volumes)
        original_size = image.size
        image = fit_within(image, MAX_SIDE)
        destination = folder / "imgs" / spec.folder / "source.jpg"
        destination.parent.mkdir(parents=True)
        image.save(destination, format="JPEG", quality=JPEG_QUALITY)
        entry["pixel_mapping"] = mapping
        entry["size"] = {"source": list(original_size), "stored": list(image.size)}
    for split, records in plan.splits.items():
        _write_json(folder / f"{split}.json", records)
    # The manifest goes last: a folder with a manifest is a complete sample.
    _write_json(folder / "manifest.json", manifest)


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _cache_matches(folder: Path, manifest: dict) -> bool:
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return False
    try:
        stored = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    for entry in stored.get("images", []):
        entry.pop("pixel_mapping", None)
        entry.pop("size", None)
    if stored != manifest:
        return False
    names = {entry["img_name"] for entry in manifest["images"]}
    return all((folder / f"{split}.json").is_file() for split in SPLITS) and all(
        (folder / "imgs" / name).is_file() for name in names
    )


def _check_replaceable(target: Path) -> None:
    if target.is_dir() and any(target.iterdir()) and not (target / "manifest.json").is_file():
        raise DataError(
            f"{target} exists and is not a sample built by medlnkit (it has no manifest.json): move it "
            "away or pass another cache_dir"
        )
    if target.exists() and not target.is_dir():
        raise DataError(f"{target} exists and is not a folder: remove it or pass another cache_dir")


def _install(staging: Path, target: Path, manifest: dict) -> None:
    """Move the finished staging folder to ``target``, replacing an outdated sample there."""
    if not target.exists():
        try:
            os.rename(staging, target)
            return
        except OSError:
            # Another process installed its build first; keep it when it is the same sample.
            if _cache_matches(target, manifest):
                shutil.rmtree(staging, ignore_errors=True)
                return
            raise
    retired = target.with_name(f".{SAMPLE_NAME}.old-{os.getpid()}-{time.time_ns()}")
    os.rename(target, retired)
    os.rename(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


def _remove_stale_staging(root: Path, max_age_s: float = 3600.0) -> None:
    # Folders left by a build that was killed: a running build touches its folder within seconds.
    now = time.time()
    for pattern in (f".{SAMPLE_NAME}.building-*", f".{SAMPLE_NAME}.old-*"):
        for leftover in root.glob(pattern):
            if leftover.is_dir() and now - leftover.stat().st_mtime > max_age_s:
                logger.info("removing %s, left by an interrupted sample build", leftover)
                shutil.rmtree(leftover, ignore_errors=True)


def _read_slake_split(folder: Path, split: str) -> list[VQARecord]:
    # The sample uses Slake's layout, so Slake's loader reads it; only the dataset name differs.
    records = load_slake(folder, split, language="en")
    return [dataclasses.replace(record, dataset=DATASET_NAME) for record in records]
