"""Helpers shared by the dataset loaders: the load report, JSON reading and text normalisation.

Every loader counts each record it leaves out, with a reason, in a ``LoadReport``. The
``*_with_report`` loader variants return that report beside the records, and ``medlnkit data
check`` prints it, so no record disappears without a trace.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlnkit.errors import DataError, MedlnkitError

# How many example ids or file names a report keeps per reason and shows in its summary.
MAX_EXAMPLES = 5

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "validate",
    "valid": "validate",
    "validate": "validate",
    "validation": "validate",
    "test": "test",
}


@dataclass
class LoadReport:
    """Counts of what one loader call read, returned, left out and normalised.

    ``skipped`` counts records that could not be used (missing field, unknown answer type).
    ``excluded`` counts records left out on purpose by an option (another language, or empty
    findings under ``empty_findings="skip"``). ``normalised`` counts values that were rewritten,
    for example ``"CLOSED "`` to ``"CLOSED"``. ``found_images`` and
    ``missing_images`` hold the names of referenced image files that were and were not found,
    and stay empty when the image folder itself is absent.
    """

    dataset: str
    split: str
    source: str
    layout: str = ""
    read: int = 0
    loaded: int = 0
    skipped: Counter = field(default_factory=Counter)
    excluded: Counter = field(default_factory=Counter)
    normalised: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    missing_images: list[str] = field(default_factory=list)
    found_images: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, record_id: str) -> None:
        """Count one unusable record under ``reason`` and keep its id as an example."""
        self.skipped[reason] += 1
        self._add_example(reason, record_id)

    def exclude(self, reason: str, record_id: str) -> None:
        """Count one record left out on purpose under ``reason``."""
        self.excluded[reason] += 1
        self._add_example(reason, record_id)

    def normalise(self, change: str) -> None:
        """Count one value that the loader rewrote, described by ``change``."""
        self.normalised[change] += 1

    def missing_image(self, name: str) -> None:
        """Record one referenced image file that does not exist."""
        self.missing_images.append(name)

    def found_image(self, name: str) -> None:
        """Record one referenced image file that exists."""
        self.found_images.add(name)

    def _add_example(self, reason: str, record_id: str) -> None:
        examples = self.examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(record_id)

    def summary_lines(self) -> list[str]:
        """Return the report as indented text lines, one fact per line."""
        lines = [f"  source: {self.source}"]
        if self.layout:
            lines.append(f"  layout: {self.layout}")
        lines.append(f"  records read: {self.read}, returned: {self.loaded}")
        lines.extend(self._counter_lines("skipped", self.skipped))
        lines.extend(self._counter_lines("excluded by option", self.excluded))
        for change, count in sorted(self.normalised.items()):
            lines.append(f"  normalised: {count} x {change}")
        if self.found_images or self.missing_images:
            referenced = len(self.found_images | set(self.missing_images))
            lines.append(f"  images found: {len(self.found_images)} of {referenced} referenced")
        if self.missing_images:
            unique = sorted(set(self.missing_images))
            shown = ", ".join(unique[:MAX_EXAMPLES])
            more = "" if len(unique) <= MAX_EXAMPLES else f", ... ({len(unique) - MAX_EXAMPLES} more)"
            lines.append(f"  missing images: {len(unique)} files ({shown}{more})")
        lines.extend(f"  note: {note}" for note in self.notes)
        return lines

    def _counter_lines(self, label: str, counter: Counter) -> list[str]:
        if not counter:
            return [f"  {label}: 0"]
        lines = [f"  {label}: {sum(counter.values())}"]
        for reason, count in counter.most_common():
            examples = ", ".join(self.examples.get(reason, []))
            lines.append(f"    {count} x {reason} (e.g. {examples})")
        return lines

    def log(self, logger: logging.Logger) -> None:
        """Log a one-line summary: a warning when records were skipped or images are missing."""
        message = (
            f"{self.dataset} {self.split}: read {self.read}, returned {self.loaded}, "
            f"skipped {sum(self.skipped.values())}, excluded {sum(self.excluded.values())}, "
            f"missing images {len(set(self.missing_images))}"
        )
        if self.skipped:
            reasons = "; ".join(f"{count} x {reason}" for reason, count in self.skipped.most_common())
            logger.warning("%s (%s)", message, reasons)
        elif self.missing_images:
            logger.warning(message)
        else:
            logger.info(message)


def data_error(message: str, card: str, layout: str | None = None) -> DataError:
    """Build a DataError whose message adds the expected layout and the data card to read."""
    text = message.rstrip(".") + "."
    if layout:
        text += f" Expected layout: {layout}."
    text += f" See data_cards/{card}.md."
    return DataError(text)


def read_json(path: Path, card: str, layout: str | None = None) -> Any:
    """Parse the JSON file at ``path``, raising DataError with the file and position on failure."""
    if not path.is_file():
        raise data_error(f"{path} was not found", card, layout)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise data_error(f"{path} could not be read as UTF-8 text ({error})", card, layout)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise data_error(
            f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})",
            card,
            layout,
        )


def read_json_records(path: Path, card: str, layout: str | None = None) -> list[dict]:
    """Parse a JSON file that must contain a list of objects, as the VQA datasets ship them."""
    data = read_json(path, card, layout)
    if not isinstance(data, list):
        raise data_error(
            f"{path} contains a JSON {type(data).__name__}, but a list of question records "
            "was expected",
            card,
            layout,
        )
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise data_error(
                f"{path}: item {index} is a JSON {type(item).__name__}, but every item must be "
                "an object with the question fields",
                card,
                layout,
            )
    return data


def require_folder(path: Path, card: str, layout: str, label: str = "dataset folder") -> None:
    """Raise DataError unless ``path`` is an existing folder; ``label`` starts the message."""
    if not path.exists():
        raise data_error(f"{label} {path} was not found", card, layout)
    if not path.is_dir():
        raise data_error(f"{label} {path} is not a folder", card, layout)


def canonical_split(split: str, allowed: tuple[str, ...], card: str) -> str:
    """Map a split name or alias ("val", "validation") to its canonical name for this dataset."""
    name = SPLIT_ALIASES.get(str(split).strip().lower())
    if name not in allowed:
        raise MedlnkitError(
            f"invalid split {split!r} for this dataset: use one of {', '.join(allowed)}. "
            f"See data_cards/{card}.md."
        )
    return name


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """Return ``value`` when it is one of ``allowed``, else raise MedlnkitError naming the choices."""
    if value not in allowed:
        raise MedlnkitError(f"invalid {name} {value!r}: use one of {', '.join(allowed)}")
    return value


def normalise_text(value: Any) -> str:
    """Return ``value`` as a string with whitespace runs collapsed to one space and ends stripped."""
    return " ".join(str(value).split())


def normalise_answer(value: Any) -> str:
    """Return an answer in the form the kit compares: lower case, whitespace collapsed."""
    return normalise_text(value).lower()


def missing_images_error(
    missing: list[str], image_folder: Path, card: str, layout: str, option: str
) -> DataError:
    """Build the DataError raised when required images are absent, naming the first few."""
    unique = sorted(set(missing))
    shown = ", ".join(unique[:MAX_EXAMPLES])
    more = "" if len(unique) <= MAX_EXAMPLES else f" and {len(unique) - MAX_EXAMPLES} more"
    return data_error(
        f"{len(unique)} referenced image files are missing under {image_folder}: {shown}{more}. "
        f"Download the images of the official release, or pass {option} to load the records "
        "without them",
        card,
        layout,
    )
