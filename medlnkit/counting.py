"""Count parameters of the study's paradigms on the real architectures, without any weights.

Each model is built on PyTorch's meta device: parameters have shapes but no storage, so LLaVA-Med's
7 billion parameters cost no memory and nothing is downloaded. The paradigm is then applied with the
tuning engine that training uses, so a count and a training run select the same parameters.

:func:`compare_with_published` sets the kit's counts beside the study's Tables 1 and 2, and
:data:`COUNT_FINDINGS` explains each published parameter figure that no counting rule reproduces.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from transformers import BlipForQuestionAnswering

from medlnkit import published
from medlnkit.errors import MedlnkitError
import medlnkit.models.llava  # noqa: F401  (registers the LLaVA rules and Prefix installer)
from medlnkit.models.llava_arch import LLAVA_MED_LORA, LLAVA_MED_PREFIX, build_llava_med_v1
from medlnkit.models.miss import paper_config
from medlnkit.paradigms import parse_paradigm
from medlnkit.tuning import LoraSettings, ParameterReport, PrefixSettings, apply_paradigm, report_for
from medlnkit.tuning.report import format_report
from medlnkit.tuning.selectors import CONVENTIONS

logger = logging.getLogger(__name__)


class CountingError(MedlnkitError, ValueError):
    """An unknown model name or counting convention."""


@dataclass(frozen=True)
class CountingModel:
    """A model the kit counts: its architecture, its builder and the study's LoRA and Prefix settings."""

    name: str
    architecture: str
    description: str
    build: Callable[[], nn.Module]  # builds on the current default device
    lora: LoraSettings
    prefix: PrefixSettings
    table: int  # the published table that reports its parameter counts


def _build_miss() -> nn.Module:
    model = BlipForQuestionAnswering(paper_config(480))
    # The text decoder's prediction head shares the word embeddings. Without tying, the count
    # contains a second 30,524 x 768 matrix (23.4 million parameters) that the study's total lacks.
    model.tie_weights()
    return model


MODELS: dict[str, CountingModel] = {
    "miss": CountingModel(
        name="miss",
        architecture="miss",
        description="MISS: BLIP VQA base (ViT-B/16 at 480 px, BERT-base encoder and decoder)",
        build=_build_miss,
        # Rank 8 on query and value of the text towers; 10 prefix tokens through a 768-wide MLP.
        lora=LoraSettings(),
        prefix=PrefixSettings(),
        table=1,
    ),
    "llava-med-v1": CountingModel(
        name="llava-med-v1",
        architecture="llava",
        description="LLaVA-Med v1: CLIP ViT-L/14 at 224 px, Linear(1024, 4096), LLaMA-7B, 32,004 tokens",
        build=build_llava_med_v1,
        lora=LLAVA_MED_LORA,
        prefix=LLAVA_MED_PREFIX,
        table=2,
    ),
}


def get_model(name: str) -> CountingModel:
    """Return the counting entry of model ``name``, raising CountingError for an unknown name."""
    if name not in MODELS:
        raise CountingError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")
    return MODELS[name]


def count_parameters_for(model: str, paradigm: str, convention: str = "paper") -> ParameterReport:
    """Build ``model`` on the meta device, apply ``paradigm`` and return its parameter report.

    ``model`` is "miss" or "llava-med-v1"; ``convention`` is "paper" (the study's counting rules) or
    "strict" (each kind counted cleanly). Invalid values raise a MedlnkitError naming the choices.
    """
    entry = get_model(model)
    if convention not in CONVENTIONS:
        raise CountingError(
            f"unknown counting convention {convention!r}: expected one of {', '.join(CONVENTIONS)}"
        )
    parsed = parse_paradigm(paradigm, entry.architecture)
    start = time.perf_counter()
    # LoRA and prefix parameters are created inside the same context, so they take no memory either.
    with torch.device("meta"):
        network = entry.build()
        plan = apply_paradigm(
            network, parsed, entry.architecture, convention, lora=entry.lora, prefix=entry.prefix
        )
    report = report_for(network, plan)
    logger.debug("counted %s %s (%s) in %.2f s", model, parsed, convention, time.perf_counter() - start)
    return report


def format_percent(value: float) -> str:
    """Format a percentage with at least two decimals and three significant digits (0.00372%)."""
    if value == 0:
        return "0.00%"
    decimals = max(2, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}%"


def format_count(report: ParameterReport) -> str:
    """Render a report as a table, with the study's figures beside it where it published them."""
    lines = [format_report(report)]
    # The table rounds to two decimals, which shows LLaVA's LN share of 0.0037% as 0.00%.
    lines.append(
        f"trainable: {report.trainable:,} of {report.total:,} = {format_percent(100 * report.trainable_ratio)}"
    )
    if report.peft_ratio is not None:
        lines.append(
            f"PEFT: {report.peft:,} of {report.peft_group_total:,} in the method's groups "
            f"= {format_percent(100 * report.peft_ratio)}"
        )
    table_number = next((m.table for m in MODELS.values() if m.architecture == report.architecture), None)
    table = published.get_table(table_number) if table_number else None
    if table is None or report.paradigm not in table.cells:
        return "\n".join(lines)
    row = table.cells[report.paradigm]
    figures = f"trainable {row['trainable_params'].text} ({row['trainable_params_pct'].text})"
    same = row["trainable_params"].value == report.trainable
    if "peft_params" in row:
        figures += f", PEFT {row['peft_params'].text} ({row['peft_params_pct'].text})"
        same = same and (row["peft_params"].value or 0) == report.peft
    verdict = "match" if same else "differ from"
    lines.append(
        f"published (Table {table.number}): {figures}; the kit's {report.convention} counts {verdict} them"
    )
    finding = COUNT_FINDINGS.get((table.number, report.paradigm))
    if finding and report.convention == "paper":
        lines.append(f"note: {finding}")
    return "\n".join(lines)


# Published parameter figures that no counting rule reproduces, with the arithmetic that shows why.
# compare_with_published marks exactly these rows as mismatches (tests/test_counting.py checks it).
COUNT_FINDINGS: dict[tuple[int, str], str] = {
    (1, "T,FFN,T"): (
        "#PEFT Params is printed as 41.27%, but its own PEFT count over the JTM's parameters is "
        "56,669,184 / 137,258,496 = 41.2865%, i.e. 41.29%. The other JTM rows (LN, Attention, LoRA, "
        "Prefix) divide by the same 137,258,496 and agree; 41.27% would need a denominator between "
        "about 137.297 and 137.330 million (implied_total_range computes the exact bounds), 38 to 71 "
        "thousand above the JTM's size, so the percentage is likely a typo."
    ),
    (2, "LN,F,LN,F"): (
        "The printed count 266,737,664 equals LN,T,LN,T's, so it includes the connector and the LM "
        "head that this paradigm freezes. LN in the vision tower and the LLM alone is 100,352 + 262,144 "
        "= 362,496 (0.00514%); 266,737,664 - 362,496 = 266,375,168 is exactly the connector (4,198,400) "
        "plus both vocabulary matrices (2 x 32,004 x 4,096)."
    ),
    (2, "F,F,FFN,F"): (
        "Every other F,T,X,T row exceeds its F,F,X,F row by the connector and LM head, 266,375,168; "
        "for FFN the gap is 266,113,024, 262,144 less. F,T,FFN,T's LLM share is 2,885,681,152 "
        "= 32 x 2 x 4,096 x 11,008 (two MLP matrices, no norms, like the Attention rows); the printed "
        "2,885,943,296 is that plus 262,144, F,F,LN,F's 64 RMSNorm weights, as if LN stayed trainable. "
        "Its 40.96% agrees with both counts."
    ),
}


def implied_total_range(counts: list[int], printed: list[published.Printed]) -> tuple[float, float]:
    """Return the totals (min, max) for which every ``count / total`` rounds to its printed percentage.

    A row with a printed percentage p and d decimals admits totals in
    count / (p + 0.5 x 10^-d) ... count / (p - 0.5 x 10^-d), in percent; the range is their intersection
    (empty when min > max).
    """
    low, high = 0.0, float("inf")
    for count, cell in zip(counts, printed):
        if count == 0 or cell.value is None:
            continue
        low = max(low, 100 * count / (cell.value + cell.half_unit))
        if cell.value > cell.half_unit:
            high = min(high, 100 * count / (cell.value - cell.half_unit))
    return low, high


def _pct(part: int, whole: int) -> float | None:
    return 100 * part / whole if whole else None


def _agrees(cell: published.Printed, computed: float | None) -> bool:
    if cell.value is None:
        return computed is None or computed == 0
    return computed is not None and cell.agrees(computed)


def compare_with_published(table: int, convention: str = "paper") -> pd.DataFrame:
    """Count every row of Table 1 or 2 and set the kit's figures beside the published ones.

    The frame has one row per paradigm, in the table's order. For each published figure it gives the
    printed text, the kit's value and a match flag: counts must be equal, percentages must agree to
    their printed precision. ``match`` joins those flags, and ``finding`` is the explanation from
    :data:`COUNT_FINDINGS`, if any. The ``*_self_consistent`` columns check a printed percentage
    against the printed count over the kit's total (or group size) and do not enter ``match``.
    """
    source = published.get_table(table)
    model = next((m for m in MODELS.values() if m.table == table), None)
    if model is None:
        raise CountingError(f"Table {table} reports no parameter counts: use Table 1 or 2")
    records = []
    for paradigm in source.paradigms:
        report = count_parameters_for(model.name, paradigm, convention)
        cells = source.cells[paradigm]
        record = {"paradigm": paradigm, "total": report.total}
        pct = _pct(report.trainable, report.total)
        record.update(
            published_trainable=cells["trainable_params"].value,
            kit_trainable=report.trainable,
            trainable_match=cells["trainable_params"].value == report.trainable,
            published_trainable_pct=cells["trainable_params_pct"].text,
            kit_trainable_pct=pct,
            trainable_pct_agrees=_agrees(cells["trainable_params_pct"], pct),
            # Whether the printed percentage fits the printed count over the kit's total.
            trainable_pct_self_consistent=_agrees(
                cells["trainable_params_pct"], _pct(cells["trainable_params"].value, report.total)
            ),
        )
        if "peft_params" in cells:
            peft_pct = _pct(report.peft, report.peft_group_total)
            published_peft = cells["peft_params"].value
            record.update(
                published_peft=published_peft,
                kit_peft=report.peft,
                peft_match=(published_peft or 0) == report.peft,
                published_peft_pct=cells["peft_params_pct"].text,
                kit_peft_pct=peft_pct,
                peft_pct_agrees=_agrees(cells["peft_params_pct"], peft_pct),
                peft_pct_self_consistent=_agrees(
                    cells["peft_params_pct"], _pct(published_peft or 0, report.peft_group_total)
                ),
            )
        flags = [value for key, value in record.items() if key.endswith(("_match", "_agrees"))]
        record["match"] = all(flags)
        record["finding"] = COUNT_FINDINGS.get((table, paradigm), "") if convention == "paper" else ""
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    for column in ("published_trainable", "published_peft"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame
