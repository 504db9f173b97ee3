"""The study's five published tables as data, cell by cell as printed, with pandas views.

Chen et al., "Efficiency in Focus: LayerNorm as a Catalyst for Fine-tuning Medical Visual Language
Pre-trained Models" (2024), Tables 1-5:

1. MISS on Slake: accuracies and parameter counts of 16 paradigms;
2. LLaVA-Med on Slake: accuracies, parameter counts, BERTScore recall and mean tokens of 14 paradigms;
3. LLaVA-Med trained on OpenI (IU X-ray), tested on MIMIC-CXR: METEOR, ROUGE-L and mean tokens;
4. LLaVA-Med trained on Slake, tested on VQA-RAD: accuracies, BERTScore, METEOR, ROUGE-L, mean tokens;
5. LLaVA-Med trained on Slake, tested zero-shot on MIMIC-CXR report generation.

Each cell is stored as the text the table prints ("41.27%", "56669184", "**82.91**" where the table
sets it in bold), so its printed precision is kept. :class:`Printed` parses the value, the number of
decimals and the unit, and :meth:`Printed.agrees` checks a computed value against that precision.
Percentages keep the printed number (41.27 for "41.27%"); accuracies of Tables 1, 2 and 4 are printed
without a "%" sign but are percentages too, so every ``*_pct`` column is in percent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from medlnkit.errors import MedlnkitError
from medlnkit.paradigms import ARCHITECTURE_GROUPS, parse_paradigm


@dataclass(frozen=True)
class Printed:
    """One table cell as printed: its text, the number it shows and that number's precision."""

    text: str  # as printed, bold markers removed: "41.27%", "56,832", "56669184", "-"
    value: int | float | None  # the number shown (41.27 for "41.27%"); None for "-"
    decimals: int | None  # digits after the decimal point; None for "-"
    percent: bool  # the cell prints a "%" sign
    bold: bool  # the table sets the cell in bold (its best value of a column or group)

    @classmethod
    def parse(cls, raw: str) -> Printed:
        """Parse a cell written as printed, with ``**`` around a bold cell ("**56,832**")."""
        text = raw.strip()
        bold = text.startswith("**") and text.endswith("**")
        text = text.strip("*").strip()
        if text == "-":
            return cls(text, None, None, False, bold)
        percent = text.endswith("%")
        digits = text.rstrip("%").replace(",", "")
        try:
            if "." in digits:
                value: int | float = float(digits)
                decimals = len(digits.split(".")[1])
            else:
                value = int(digits)
                decimals = 0
        except ValueError:
            raise ValueError(f"cell {raw!r} is not a number, a percentage or '-'") from None
        return cls(text, value, decimals, percent, bold)

    @property
    def half_unit(self) -> float:
        """Return half a unit of the last printed digit: the largest rounding error of the cell."""
        if self.decimals is None:
            raise ValueError("the cell '-' has no precision")
        return 0.5 * 10.0 ** (-self.decimals)

    def agrees(self, computed: float) -> bool:
        """Return True when ``computed`` (in the cell's unit) rounds to the printed number.

        A value exactly half a unit away counts as agreeing, since the study's rounding rule is unknown.
        """
        if self.value is None:
            raise ValueError("the cell '-' has no value to compare with")
        # The small slack absorbs binary floating-point error in values such as 41.265.
        return abs(computed - self.value) <= self.half_unit * (1 + 1e-9)


@dataclass(frozen=True)
class Column:
    """A value column: the kit's name, the table's header and the unit of its numbers."""

    name: str
    header: str
    unit: str  # "%" (percent), "count" (parameters) or "tokens"


@dataclass(frozen=True)
class PublishedTable:
    """One of the study's tables: caption, setting, columns and rows in printed order."""

    number: int
    caption: str
    architecture: str  # "miss" or "llava": how the paradigm strings are parsed
    model: str
    train_data: str
    test_data: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[str, tuple[str, ...]], ...]  # (paradigm, cells as printed, in column order)
    cells: dict[str, dict[str, Printed]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        cells = {}
        for paradigm, printed in self.rows:
            if len(printed) != len(self.columns):
                raise ValueError(
                    f"Table {self.number} row {paradigm}: {len(printed)} cells for {len(self.columns)} columns"
                )
            canonical = str(parse_paradigm(paradigm, self.architecture))
            if canonical != paradigm:
                raise ValueError(f"Table {self.number}: write {paradigm!r} as {canonical!r}")
            cells[paradigm] = {c.name: Printed.parse(t) for c, t in zip(self.columns, printed)}
        object.__setattr__(self, "cells", cells)

    @property
    def paradigms(self) -> tuple[str, ...]:
        return tuple(paradigm for paradigm, _ in self.rows)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


_ACCURACY = (
    Column("opened_acc_pct", "Opened", "%"),
    Column("closed_acc_pct", "Closed", "%"),
    Column("global_acc_pct", "Global", "%"),
)
_REPORT_METRICS = (
    Column("meteor_pct", "METEOR Score", "%"),
    Column("rouge_l_recall_pct", "Rouge-L Recall", "%"),
    Column("rouge_l_precision_pct", "Rouge-L Precision", "%"),
    Column("rouge_l_f1_pct", "Rouge-L F1", "%"),
    Column("mean_tokens", "Mean Token", "tokens"),
)

TABLE1 = PublishedTable(
    number=1,
    caption="Comparison of accuracy (ACC-%) of MISS on Slake dataset using different methods of fine-tuning.",
    architecture="miss",
    model="MISS",
    train_data="Slake train",
    test_data="Slake test",
    columns=(
        *_ACCURACY,
        Column("trainable_params", "Trainable Params", "count"),
        Column("trainable_params_pct", "#Params", "%"),
        Column("peft_params", "PEFT Params", "count"),
        Column("peft_params_pct", "#PEFT Params", "%"),
    ),
    rows=(
        ("T,T,T", ("**82.91**", "81.47", "**82.00**", "361,478,972", "100%", "-", "-")),
        ("T,LN,LN", ("40.79", "38.03", "39.87", "86,454,528", "23.92%", "115,200", "0.04%")),
        ("T,LN,T", ("75.64", "**84.51**", "78.61", "224,277,308", "62.04%", "**56,832**", "**0.04%**")),
        ("T,T,LN", ("73.65", "77.46", "74.93", "223,656,192", "61.87%", "58,368", "0.04%")),
        ("T,Attn,Attn", ("64.51", "74.65", "71.25", "199,806,720", "55.27%", "113,467,392", "41.24%")),
        ("T,Attn,T", ("78.47", "85.92", "80.96", "280,954,172", "**77.72%**", "56,733,696", "41.33%")),
        ("T,T,Attn", ("75.50", "64.23", "71.72", "280,331,520", "77.55%", "56,733,696", "41.15%")),
        ("T,FFN,FFN", ("74.79", "54.65", "68.05", "199,677,696", "55.24%", "113,338,368", "41.19%")),
        ("T,FFN,T", ("76.63", "**84.51**", "79.26", "280,889,660", "77.71%", "56669184", "41.27%")),
        ("T,T,FFN", ("76.20", "49.86", "67.39", "280,267,008", "77.53%", "56669184", "41.10%")),
        ("T,LoRA,LoRA", ("68.14", "50.70", "62.29", "86,929,152", "24.05%", "589,824", "0.21%")),
        ("T,LoRA,T", ("76.77", "82.81", "78.79", "224,515,388", "62.11%", "294,912", "0.21%")),
        ("T,T,LoRA", ("78.52", "79.44", "78.83", "223,892,736", "61.94%", "294,912", "0.21%")),
        ("T,Prefix,Prefix", ("41.50", "32.95", "38.61", "115,884,288", "32.06%", "29,544,960", "10.74%")),
        ("T,Prefix,T", ("75.92", "83.38", "78.42", "238,992,956", "66.12%", "14,772,480", "10.76%")),
        ("T,T,Prefix", ("76.82", "82.25", "78.65", "238,370,304", "65.94%", "14,772,480", "10.71%")),
    ),
)  # fmt: skip

TABLE2 = PublishedTable(
    number=2,
    caption="Comparison of results of LLaVA-Med on the Slake dataset using different methods of fine-tuning.",
    architecture="llava",
    model="LLaVA-Med",
    train_data="Slake train",
    test_data="Slake test",
    columns=(
        *_ACCURACY,
        Column("trainable_params_pct", "#Params", "%"),
        Column("trainable_params", "Trainable Params", "count"),
        Column("bertscore_recall_pct", "BERTS-Recall", "%"),
        Column("mean_tokens", "Mean Token", "tokens"),
    ),
    rows=(
        ("LN,F,LN,F", ("59.53", "**69.95**", "63.62", "3.79%", "266,737,664", "46.35%", "**28.27**")),
        ("F,F,LN,F", ("58.76", "69.71", "63.05", "0.00372%", "**262,144**", "46.24%", "27.81")),
        ("LN,T,LN,T", ("59.84", "67.55", "62.87", "3.79%", "266,737,664", "46.93%", "26.81")),
        ("F,T,LN,T", ("60.31", "66.11", "62.58", "3.78%", "266,637,312", "46.93%", "26.50")),
        ("Attn,F,Attn,F", ("61.4", "67.79", "63.9", "31.91%", "2,248,245,248", "49.25%", "25.24")),
        ("F,F,Attn,F", ("**61.71**", "68.03", "64.18", "30.48%", "2,147,483,648", "49.11%", "25.95")),
        ("Attn,T,Attn,T", ("60.93", "65.87", "62.87", "35.69%", "2,514,620,416", "48.47%", "25.89")),
        ("F,T,Attn,T", ("58.76", "66.83", "61.92", "34.26%", "2,413,858,816", "48.49%", "25.85")),
        ("F,T,FFN,T", ("64.5", "62.26", "63.62", "44.74%", "3,152,056,320", "51.98%", "16.42")),
        ("F,F,FFN,F", ("**64.34**", "66.59", "**65.22**", "40.96%", "2,885,943,296", "52.07%", "17.37")),
        ("F,F,LoRA,F", ("58.14", "64.42", "60.6", "0.14%", "9,994,240", "47.55%", "25.43")),
        ("F,T,LoRA,T", ("58.76", "65.38", "61.36", "3.92%", "276,369,408", "47.26%", "25.72")),
        ("F,F,Prefix,F", ("56.9", "67.07", "60.89", "15.48%", "1,090,805,760", "46.19%", "26.61")),
        ("F,T,Prefix,T", ("59.22", "**70.19**", "63.52", "19.26%", "1,357,180,928", "46.28%", "26.58")),
    ),
)  # fmt: skip

TABLE3 = PublishedTable(
    number=3,
    caption="Comparison of LLaVA-Med competence on the MIMIC test dataset which SFT on the OpenI dataset.",
    architecture="llava",
    model="LLaVA-Med",
    train_data="OpenI (IU X-ray)",
    test_data="MIMIC-CXR test",
    columns=_REPORT_METRICS,
    rows=(
        ("F,F,LN,F", ("12.85%", "12.58%", "15.92%", "13.61%", "122.66")),
        ("F,F,Attn,F", ("12.85%", "12.58%", "15.92%", "13.61%", "122.66")),
        ("F,F,FFN,F", ("**24.53%**", "**17.01%**", "**23.84%**", "**19.34%**", "**123.11**")),
        ("F,F,LoRA,F", ("12.95%", "12.57%", "15.93%", "13.62%", "122.70")),
        ("F,F,Prefix,F", ("12.99%", "12.47%", "15.92%", "13.54%", "122.72")),
    ),
)  # fmt: skip

TABLE4 = PublishedTable(
    number=4,
    caption="Comparison of LLaVA-Med competence on the VQA-RAD test dataset which SFT on the Slake dataset.",
    architecture="llava",
    model="LLaVA-Med",
    train_data="Slake train",
    test_data="VQA-RAD test",
    columns=(
        *_ACCURACY,
        Column("bertscore_precision_pct", "Bertscore Precision", "%"),
        Column("bertscore_recall_pct", "Bertscore Recall", "%"),
        Column("bertscore_f1_pct", "Bertscore F1", "%"),
        *_REPORT_METRICS,
    ),
    rows=(
        ("F,T,LN,T", ("54.50", "**73.71**", "65.19", "29.77%", "49.00%", "36.53%", "12.53%", "7.91%", "1.48%", "2.30%", "29.52")),
        ("F,T,Attn,T", ("50.50", "63.35", "57.65", "29.97%", "49.27%", "36.73%", "11.87%", "7.97%", "1.46%", "2.30%", "31.12")),
        ("F,T,FFN,T", ("56.50", "64.54", "60.98", "35.44%", "52.05%", "41.89%", "19.23%", "26.35%", "9.80%", "13.51%", "18.50")),
        ("F,T,LoRA,T", ("55.00", "**73.71**", "**65.41**", "30.06%", "49.52%", "36.87%", "12.03%", "7.89%", "1.50%", "2.29%", "27.52")),
        ("F,T,Prefix,T", ("51.00", "70.12", "61.64", "29.89%", "48.85%", "36.58%", "12.71%", "8.53%", "1.57%", "2.45%", "28.87")),
        ("F,F,LN,F", ("54.50", "**75.30**", "**66.08**", "29.90%", "48.84%", "36.60%", "12.97%", "7.84%", "1.50%", "2.33%", "29.52")),
        ("F,F,Attn,F", ("55.50", "71.71", "64.52", "30.25%", "49.64%", "37.08%", "8.44%", "8.44%", "1.66%", "2.58%", "29.45")),
        ("F,F,FFN,F", ("52.00", "61.35", "57.21", "35.20%", "51.76%", "41.60%", "18.43%", "24.31%", "8.96%", "12.40%", "19.16")),
        ("F,F,LoRA,F", ("49.50", "70.92", "61.42", "30.08%", "49.80%", "36.96%", "12.46%", "7.91%", "1.51%", "2.33%", "29.04")),
        ("F,F,Prefix,F", ("51.00", "69.72", "61.42", "29.76%", "48.49%", "36.36%", "12.81%", "8.11%", "1.54%", "2.41%", "29.21")),
    ),
)  # fmt: skip

TABLE5 = PublishedTable(
    number=5,
    caption="Comparison of LLaVA-Med zero-shot competence on the MIMIC test dataset which SFT on the Slake dataset.",
    architecture="llava",
    model="LLaVA-Med",
    train_data="Slake train",
    test_data="MIMIC-CXR test (zero-shot report generation)",
    columns=_REPORT_METRICS,
    rows=(
        ("F,T,LN,T", ("11.86%", "11.27%", "18.54%", "13.54%", "71.78")),
        ("F,T,Attn,T", ("11.88%", "11.15%", "17.98%", "13.33%", "73.73")),
        ("F,T,FFN,T", ("12.12%", "11.24%", "18.07%", "13.42%", "73.23")),
        ("F,T,LoRA,T", ("11.57%", "10.99%", "17.91%", "13.18%", "71.51")),
        ("F,F,LN,F", ("12.07%", "11.40%", "18.26%", "13.56%", "75.00")),
        ("F,F,Attn,F", ("12.17%", "11.50%", "18.20%", "13.65%", "75.01")),
        ("F,F,FFN,F", ("12.81%", "11.48%", "17.84%", "13.53%", "76.88")),
        ("F,F,LoRA,F", ("11.91%", "11.25%", "18.07%", "13.40%", "72.93")),
    ),
)  # fmt: skip

TABLES: dict[int, PublishedTable] = {t.number: t for t in (TABLE1, TABLE2, TABLE3, TABLE4, TABLE5)}


@dataclass(frozen=True)
class PrintedNote:
    """A printed figure that disagrees with another printed figure of the study (not with the kit)."""

    table: int
    paradigm: str | None  # None for a note about the whole table
    column: str
    note: str


# Checked by hand against the tables above; tests/test_published.py recomputes each one.
PRINTED_NOTES = (
    PrintedNote(1, "T,T,T", "global_acc_pct",
                "Global 82.00 lies between opened 82.91 and closed 81.47 at a closed-question weight of 0.632; "
                "the other rows but T,Attn,Attn give 0.333 to 0.338, and swapping opened and closed gives 0.368."),
    PrintedNote(1, "T,Attn,Attn", "global_acc_pct",
                "Global 71.25 implies a closed-question weight of 0.665 against 0.333 to 0.338 in the other rows "
                "but T,T,T; with opened and closed swapped it is 0.335, so the two cells may be swapped."),
    PrintedNote(1, "T,LN,T", "peft_params",
                "The text quotes LN-tuning's PEFT parameters under [T, PEFT, T] as 56,823; the table prints 56,832."),
    PrintedNote(1, "T,Prefix,T", "peft_params",
                "The text says Prefix-tuning tunes about twenty times more PEFT parameters than LN-tuning; "
                "the table gives 14,772,480 / 56,832 = 260 times."),
    PrintedNote(2, "F,F,FFN,F", "mean_tokens",
                "The text says mean tokens drop from 28.27 to 17.38; the table prints 17.37."),
    PrintedNote(2, "F,T,Attn,T", "global_acc_pct",
                "The text gives the global-accuracy change of [F, T, PEFT, T] over [F, F, PEFT, F] as -0.5%, "
                "-2.1% and -3.3% for LN, Attention and FFN; the table gives -0.47, -2.26 and -1.60 points."),
    PrintedNote(2, "Attn,T,Attn,T", "global_acc_pct",
                "The text says tuning the vision tower's attention changes global accuracy by +0.85% under "
                "[PEFT, T, PEFT, T]; the table gives 62.87 - 61.92 = +0.95 points."),
    PrintedNote(3, "F,F,Attn,F", "meteor_pct",
                "Every cell of this row equals the F,F,LN,F row's (12.85%, 12.58%, 15.92%, 13.61%, 122.66)."),
    PrintedNote(4, "F,T,FFN,T", "mean_tokens",
                "The text gives FFN-tuning's mean output length as 18.51; the table prints 18.50."),
    PrintedNote(4, None, "global_acc_pct",
                "Every opened accuracy is a whole number of 200 questions and every closed accuracy a whole "
                "number of 251, and each global is their sum over 451: the test split had 200 open and 251 "
                "closed questions, not the 179 and 272 of the MEVF split's answer_type labels."),
    PrintedNote(4, "F,F,Attn,F", "meteor_pct",
                "METEOR 8.44% repeats the row's ROUGE-L recall; the other rows' METEOR lies between 11.87% "
                "and 19.23%, so the cell may be a copy of its neighbour."),
)  # fmt: skip


def get_table(number: int) -> PublishedTable:
    """Return published Table ``number`` (1-5), raising MedlnkitError for any other number."""
    if number not in TABLES:
        raise MedlnkitError(f"the study has no Table {number!r}: expected one of {sorted(TABLES)}")
    return TABLES[number]


def cell(number: int, paradigm: str, column: str) -> Printed:
    """Return one printed cell; ``paradigm`` may use any spelling parse_paradigm accepts."""
    table = get_table(number)
    key = str(parse_paradigm(paradigm, table.architecture))
    if key not in table.cells:
        raise MedlnkitError(f"Table {number} has no row {key!r}: its rows are {', '.join(table.paradigms)}")
    if column not in table.column_names:
        raise MedlnkitError(
            f"Table {number} has no column {column!r}: its columns are {', '.join(table.column_names)}"
        )
    return table.cells[key][column]


def _frame(number: int, attribute: str) -> pd.DataFrame:
    table = get_table(number)
    groups = ARCHITECTURE_GROUPS[table.architecture]
    records = []
    for paradigm in table.paradigms:
        record = {"paradigm": paradigm}
        record.update(zip(groups, paradigm.split(",")))
        for name, printed in table.cells[paradigm].items():
            record[name] = getattr(printed, attribute)
        records.append(record)
    return pd.DataFrame.from_records(records)


def table_frame(number: int) -> pd.DataFrame:
    """Return Table ``number`` as a DataFrame: paradigm, one column per group, then the values.

    Parameter counts are nullable integers, the rest floats; "-" cells are missing values.
    """
    frame = _frame(number, "value")
    for column in get_table(number).columns:
        dtype = "Int64" if column.unit == "count" else "Float64"
        frame[column.name] = frame[column.name].astype(dtype)
    return frame


def precision_frame(number: int) -> pd.DataFrame:
    """Return, for each value cell of Table ``number``, the number of decimals it is printed with."""
    frame = _frame(number, "decimals")
    for name in get_table(number).column_names:
        frame[name] = frame[name].astype("Int64")
    return frame


def printed_frame(number: int) -> pd.DataFrame:
    """Return Table ``number`` as the strings it prints ("41.27%", "56669184", "-")."""
    return _frame(number, "text")


def bold_frame(number: int) -> pd.DataFrame:
    """Return which cells of Table ``number`` are set in bold."""
    return _frame(number, "bold")


def notes_frame() -> pd.DataFrame:
    """Return :data:`PRINTED_NOTES` as a DataFrame."""
    return pd.DataFrame([vars(note) for note in PRINTED_NOTES])
