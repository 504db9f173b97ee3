"""Records that every loader returns, so that one collate layer serves MISS and LLaVA-Med."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ANSWER_TYPES = ("OPEN", "CLOSED")


@dataclass(frozen=True)
class VQARecord:
    """One question about one image, with its reference answer.

    ``answer_type`` is ``"OPEN"`` or ``"CLOSED"``; CLOSED covers yes/no and multiple-choice
    questions. ``qid`` is unique within a split and is what predictions are matched by.
    """

    qid: str
    image_path: Path
    question: str
    answer: str
    answer_type: str
    dataset: str
    split: str
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ReportRecord:
    """One radiology study: its image files and the report sections the study evaluates."""

    study_id: str
    image_paths: tuple[Path, ...]
    findings: str
    impression: str
    dataset: str
    split: str
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def report(self) -> str:
        """Return findings and impression joined, skipping an empty section."""
        return " ".join(part for part in (self.findings.strip(), self.impression.strip()) if part)
