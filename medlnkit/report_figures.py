"""Kit tables beside the published ones, Figure 3's loss curves and parameters against accuracy.

Notebook 06 reads whatever the earlier notebooks left in a run folder: ``tables/*.csv`` and the
per-paradigm ``losses.csv`` files of each sweep. Every function here accepts a missing table or
an empty loss history, so the figures notebook runs after any subset of the other notebooks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless under papermill and CI; notebooks still display the returned figures
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from medlnkit.errors import MedlnkitError  # noqa: E402
from medlnkit.paradigms import ARCHITECTURE_GROUPS, EXTRINSIC_METHODS, INTRINSIC_METHODS, parse_paradigm  # noqa: E402
from medlnkit.published import get_table, table_frame  # noqa: E402

PEFT_METHODS = (*INTRINSIC_METHODS, *EXTRINSIC_METHODS)
PEFT_WILDCARD = "PEFT"  # matches any PEFT method in a paradigm pattern, as in "F,T,PEFT,T"

LOSS_COLUMNS = ["paradigm", "step", "epoch", "loss"]


@dataclass(frozen=True)
class KitTable:
    """A result table that a notebook writes under ``tables/``, and the published table it mirrors."""

    number: int  # the published table (1-5)
    file: str  # file name under tables/
    notebook: str  # the notebook that writes it
    description: str


KIT_TABLES = (
    KitTable(1, "table1_miss.csv", "02_miss_tuning", "MISS tuned and tested on VQA"),
    KitTable(2, "table2_llava.csv", "03_llava_med_tuning", "LLaVA-Med tuned and tested on VQA"),
    KitTable(3, "table3_report_generation.csv", "04_report_generation", "LLaVA-Med tuned on IU X-ray reports"),
    KitTable(4, "table4_ood_vqa_rad.csv", "05_ood_and_zero_shot", "VQA-tuned LLaVA-Med on another VQA test set"),
    KitTable(5, "table5_zero_shot_report.csv", "05_ood_and_zero_shot", "VQA-tuned LLaVA-Med, zero-shot reports"),
)

# Kit column names that differ from the published column names (see medlnkit.published).
COLUMN_ALIASES = {
    "open_acc": "opened_acc_pct",
    "closed_acc": "closed_acc_pct",
    "global_acc": "global_acc_pct",
    "trainable_pct": "trainable_params_pct",
    "peft_pct": "peft_params_pct",
    "bertscore_recall": "bertscore_recall_pct",
    "mean_answer_tokens": "mean_tokens",
}

COMPARE_COLUMNS = ["paradigm", "column", "header", "unit", "published", "kit", "kit_minus_published"]


def kit_table(number: int) -> KitTable:
    """Return the kit table that mirrors published Table ``number``."""
    for table in KIT_TABLES:
        if table.number == number:
            return table
    raise MedlnkitError(f"the kit has no result table for Table {number!r}: expected one of 1, 2, 3, 4, 5")


def table_inventory(out_dir: Path) -> pd.DataFrame:
    """List each kit result table with whether ``out_dir/tables/`` contains it, and its row count."""
    rows = []
    for table in KIT_TABLES:
        path = Path(out_dir) / "tables" / table.file
        present = path.is_file()
        rows.append(
            {
                "table": table.number,
                "file": table.file,
                "notebook": table.notebook,
                "present": present,
                "rows": len(pd.read_csv(path)) if present else 0,
            }
        )
    return pd.DataFrame(rows)


def read_kit_table(out_dir: Path, number: int) -> pd.DataFrame | None:
    """Read the kit's result table for Table ``number`` from ``out_dir/tables``; None when absent."""
    path = Path(out_dir) / "tables" / kit_table(number).file
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    if "paradigm" not in frame.columns:
        raise MedlnkitError(f"{path} has no 'paradigm' column: it was not written by {kit_table(number).notebook}")
    return frame


def published_name(kit_column: str) -> str:
    """Return the published column name that a kit column corresponds to."""
    return COLUMN_ALIASES.get(kit_column, kit_column)


def compare_with_published(kit: pd.DataFrame, number: int) -> pd.DataFrame:
    """Return one row per (paradigm, value column) with the published and the kit value.

    Rows cover every paradigm of either table, published order first; a value missing on one
    side is NaN. Only columns that both tables have are compared, and the units are the
    published ones (percent for ``*_pct``, tokens, parameter counts).
    """
    published = table_frame(number)
    table = get_table(number)
    architecture = table.architecture
    kit = kit.copy()
    kit["paradigm"] = [str(parse_paradigm(p, architecture)) for p in kit["paradigm"]]
    kit = kit.rename(columns={c: published_name(c) for c in kit.columns})
    kit_by_paradigm = kit.drop_duplicates("paradigm", keep="last").set_index("paradigm")
    published_by_paradigm = published.set_index("paradigm")
    order = list(published["paradigm"]) + [p for p in kit_by_paradigm.index if p not in set(published["paradigm"])]

    rows = []
    for paradigm in order:
        for column in table.columns:
            if column.name not in kit_by_paradigm.columns:
                continue
            published_value = _number(published_by_paradigm[column.name].get(paradigm))
            kit_value = _number(kit_by_paradigm[column.name].get(paradigm))
            rows.append(
                {
                    "paradigm": paradigm,
                    "column": column.name,
                    "header": column.header,
                    "unit": column.unit,
                    "published": published_value,
                    "kit": kit_value,
                    "kit_minus_published": kit_value - published_value,
                }
            )
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def _number(value) -> float:
    """Return a float, NaN for a missing value (None, pandas NA, NaN)."""
    if value is None or pd.isna(value):
        return math.nan
    return float(value)


def plot_comparison(compare: pd.DataFrame, number: int):
    """Draw published and kit values side by side, one panel per compared column.

    Parameter counts are left out: their kit values come from the profile's smaller models and
    would need a log scale of their own (notebook 01 compares the paper-sized counts).
    """
    shown = compare[compare["unit"] != "count"]
    columns = list(dict.fromkeys(shown["column"]))
    if not columns:
        raise MedlnkitError(f"nothing to plot for Table {number}: the kit table shares no value column with it")
    paradigms = list(dict.fromkeys(shown["paradigm"]))
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    width = max(4.0, 0.45 * len(paradigms) + 1.5)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.4 * nrows), squeeze=False)
    positions = range(len(paradigms))
    for ax, column in zip(axes.flat, columns):
        part = shown[shown["column"] == column].set_index("paradigm").reindex(paradigms)
        ax.bar([x - 0.2 for x in positions], part["published"], width=0.4, label="published", color="0.6")
        ax.bar([x + 0.2 for x in positions], part["kit"], width=0.4, label="this run", color="tab:blue")
        # A marker on every value this run has, so that a zero stays distinguishable from a paradigm not run.
        ax.scatter([x + 0.2 for x in positions], part["kit"], s=8, color="tab:blue", zorder=3)
        unit = part["unit"].dropna().iloc[0]
        ax.set_title(part["header"].dropna().iloc[0], fontsize=9)
        ax.set_ylabel("%" if unit == "%" else unit, fontsize=8)
        ax.set_xticks(list(positions))
        ax.set_xticklabels(paradigms, rotation=60, ha="right", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(columns) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Table {number}: published values beside this run's", fontsize=10)
    fig.tight_layout()
    return fig


def read_loss_histories(out_dir: Path, sweep: str) -> pd.DataFrame:
    """Read every ``out_dir/<sweep>/<paradigm>/losses.csv`` into one table (paradigm, step, epoch, loss).

    The paradigm comes from the ``result.json`` beside the losses, or from the folder name
    ("F-T-LN-T" for "F,T,LN,T") when that file is missing. Returns an empty table when the
    sweep folder does not exist.
    """
    folder = Path(out_dir) / sweep
    frames = []
    for path in sorted(folder.glob("*/losses.csv")):
        result = path.parent / "result.json"
        paradigm = json.loads(result.read_text()).get("paradigm") if result.is_file() else None
        frame = pd.read_csv(path)
        if frame.empty:
            continue
        frame.insert(0, "paradigm", paradigm or path.parent.name.replace("-", ","))
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=LOSS_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def matches_pattern(paradigm: str, pattern: str, architecture: str) -> bool:
    """Return True when ``paradigm`` fits ``pattern``, where "PEFT" matches any PEFT method.

    For example "F,T,LoRA,T" fits "F,T,PEFT,T" but "F,T,T,T" and "F,F,LN,F" do not.
    """
    groups = ARCHITECTURE_GROUPS[architecture]
    pattern_states = [s.strip() for s in pattern.strip().strip("[]").split(",")]
    if len(pattern_states) != len(groups):
        raise MedlnkitError(
            f"pattern {pattern!r} has {len(pattern_states)} states, but {architecture} has the groups {','.join(groups)}"
        )
    is_wildcard = [s.upper() == PEFT_WILDCARD for s in pattern_states]
    # Parsing the pattern with F in the wildcard positions validates and canonicalises its fixed states.
    fixed = parse_paradigm(",".join("F" if wild else s for s, wild in zip(pattern_states, is_wildcard)), architecture)
    states = parse_paradigm(paradigm, architecture).states
    for state, expected, wild in zip(states, fixed.states, is_wildcard):
        if (state not in PEFT_METHODS) if wild else (state != expected):
            return False
    return True


def select_paradigms(paradigms: Iterable[str], pattern: str, architecture: str) -> list[str]:
    """Return the paradigms that fit ``pattern`` (see matches_pattern), in their given order."""
    return [p for p in dict.fromkeys(paradigms) if matches_pattern(p, pattern, architecture)]


def plot_loss_panels(panels: Sequence[tuple[str, pd.DataFrame, str]], smooth: int = 1):
    """Plot training loss against optimizer step, one panel per (title, losses, legend title).

    ``losses`` has the columns paradigm, step, loss; an empty one draws a panel that says so.
    ``smooth`` is a moving-average window in steps.
    """
    if not panels:
        raise MedlnkitError("no loss panels to plot: pass at least one (title, losses, legend title)")
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.3), squeeze=False)
    for ax, (title, losses, legend_title) in zip(axes.flat, panels):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss (cross-entropy per target token)")
        ax.grid(alpha=0.3)
        if losses.empty:
            ax.text(0.5, 0.5, "no loss history in this run folder", ha="center", va="center", transform=ax.transAxes)
            continue
        for paradigm, frame in losses.groupby("paradigm", sort=False):
            values = frame["loss"].rolling(smooth, min_periods=1).mean() if smooth > 1 else frame["loss"]
            ax.plot(frame["step"], values, label=paradigm, linewidth=1.4)
        ax.legend(fontsize=7, title=legend_title, title_fontsize=8)
    fig.tight_layout()
    return fig


def plot_params_vs_accuracy_beside(kit: pd.DataFrame, published: pd.DataFrame, title: str,
                                   kit_accuracy: str = "global_acc", published_accuracy: str = "global_acc_pct"):  # fmt: skip
    """Scatter trainable parameters (log scale) against accuracy: this run left, the study right.

    Both frames need ``paradigm``, ``trainable_params`` and their accuracy column in percent.
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, frame, accuracy, label in (
        (axes[0], kit, kit_accuracy, "this run"),
        (axes[1], published, published_accuracy, "published"),
    ):
        points = frame.dropna(subset=["trainable_params", accuracy])
        ax.scatter(points["trainable_params"].astype(float), points[accuracy].astype(float))
        for _, row in points.iterrows():
            ax.annotate(row["paradigm"], (float(row["trainable_params"]), float(row[accuracy])), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("global accuracy (%)")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# The column each table ranks its paradigms by, for the one-line summary of agreement.
HEADLINE_COLUMNS = {
    1: "global_acc_pct",
    2: "global_acc_pct",
    3: "rouge_l_f1_pct",
    4: "global_acc_pct",
    5: "rouge_l_f1_pct",
}


def summarize_agreement(compare: pd.DataFrame, number: int) -> dict:
    """Summarise how a kit table agrees with the published one on its headline column.

    Returns the column, the paradigms with a value on both sides, the mean of kit minus
    published, and the Spearman rank correlation (None with fewer than three shared paradigms,
    or when one side is constant).
    """
    column = HEADLINE_COLUMNS[number]
    part = compare[compare["column"] == column].dropna(subset=["published", "kit"])
    summary = {
        "table": number,
        "column": column,
        "shared_paradigms": len(part),
        "mean_kit_minus_published": float(part["kit_minus_published"].mean()) if len(part) else None,
        "spearman": None,
    }
    if len(part) >= 3 and part["kit"].nunique() > 1 and part["published"].nunique() > 1:
        summary["spearman"] = float(part["kit"].rank().corr(part["published"].rank()))
    return summary
