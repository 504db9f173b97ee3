"""Resolve where VQA data comes from: the embedded sample, or a benchmark folder given at run time."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from medlnkit.data.records import VQARecord
from medlnkit.errors import DataError


@dataclass
class VQASplits:
    """Train and test records of one dataset, with counts before any subsampling."""

    name: str  # "embedded-sample", "vqa-rad" or "slake"
    train: list[VQARecord]
    test: list[VQARecord]
    root: Path | None
    available: dict[str, int] = field(default_factory=dict)  # split -> records before subsampling

    def describe(self) -> str:
        where = "built from registry packages" if self.root is None else str(self.root)
        return (
            f"{self.name} ({where}): train {len(self.train)} of {self.available.get('train', len(self.train))} pairs, "
            f"test {len(self.test)} of {self.available.get('test', len(self.test))} pairs"
        )


def detect_layout(root: Path) -> str:
    """Return "vqa-rad" or "slake" for a benchmark folder, or raise DataError naming what is expected."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"data folder {str(root)!r} does not exist: pass --data-dir a VQA-RAD folder "
            "(trainset.json, testset.json, images/) or a Slake folder (train.json, test.json, imgs/)"
        )
    if (root / "testset.json").exists() or (root / "VQA_RAD Dataset Public.json").exists():
        return "vqa-rad"
    if (root / "test.json").exists() and (root / "train.json").exists():
        return "slake"
    hints = [child.name for child in sorted(root.iterdir()) if child.is_dir()][:5]
    raise DataError(
        f"data folder {str(root)!r} is neither VQA-RAD (trainset.json, testset.json, images/) nor "
        f"Slake (train.json, test.json, imgs/); it contains the folders {hints}. "
        "See data_cards/vqa_rad.md and data_cards/slake.md for the expected layouts."
    )


def _subsample(records: list[VQARecord], limit: int | None, seed: int) -> list[VQARecord]:
    if limit is None or len(records) <= limit:
        return records
    keep = set(random.Random(seed).sample(range(len(records)), limit))
    return [r for i, r in enumerate(records) if i in keep]


def load_vqa_splits(
    data_dir: Path | None,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
) -> VQASplits:
    """Load train and test VQA records; ``data_dir=None`` means the embedded real-image sample.

    Subsampling is deterministic for a seed and keeps the original record order.
    """
    if data_dir is None:
        from medlnkit.data.sample import sample_records

        train, test, name, root_shown = sample_records("train"), sample_records("test"), "embedded-sample", None
    else:
        root = Path(data_dir)
        name = detect_layout(root)
        if name == "vqa-rad":
            from medlnkit.data.vqa_rad import load_vqa_rad

            train, test = load_vqa_rad(root, "train"), load_vqa_rad(root, "test")
        else:
            from medlnkit.data.slake import load_slake

            train, test = load_slake(root, "train"), load_slake(root, "test")
        root_shown = root
    available = {"train": len(train), "test": len(test)}
    return VQASplits(
        name=name,
        train=_subsample(train, max_train, seed),
        test=_subsample(test, max_test, seed + 1),
        root=root_shown,
        available=available,
    )
