"""Small synthetic VQA records for engine tests (the real-image sample has its own tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medlnkit.data.records import VQARecord

QUESTIONS = [
    ("is the bright square on the left?", "yes", "CLOSED"),
    ("is the bright square on the left?", "no", "CLOSED"),
    ("where is the bright square?", "left", "OPEN"),
    ("where is the bright square?", "right", "OPEN"),
]


def write_square_images(folder: Path, count: int, size: int = 64, seed: int = 0) -> list[tuple[Path, str]]:
    """Write grayscale PNGs with a bright square on the left or right; return (path, side) pairs."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(count):
        side = "left" if i % 2 == 0 else "right"
        pixels = rng.integers(0, 60, size=(size, size), dtype=np.uint8)
        x0 = 4 if side == "left" else size // 2 + 4
        pixels[size // 4 : size // 4 + size // 3, x0 : x0 + size // 3] = 230
        path = folder / f"img{i:03d}.png"
        Image.fromarray(pixels).save(path)
        items.append((path, side))
    return items


def square_records(folder: Path, count: int = 10, seed: int = 0) -> list[VQARecord]:
    """Return ``count`` records, alternating closed and open questions about synthetic images."""
    records = []
    for i, (path, side) in enumerate(write_square_images(folder, count, seed=seed)):
        if i % 2 == 0:
            question, answer, kind = "is the bright square on the left?", "yes" if side == "left" else "no", "CLOSED"
        else:
            question, answer, kind = "where is the bright square?", side, "OPEN"
        records.append(VQARecord(str(i), path, question, answer, kind, "synthetic", "train"))
    return records
