"""The published tables as data: parsing of printed cells, shapes, precision and the printed notes."""

from __future__ import annotations

import pandas as pd
import pytest

from medlnkit import published
from medlnkit.errors import MedlnkitError
from medlnkit.paradigms import TABLE1_PARADIGMS, TABLE2_PARADIGMS, parse_paradigm
from medlnkit.published import Printed, cell, precision_frame, printed_frame, table_frame


@pytest.mark.parametrize(
    "raw, value, decimals, percent, bold",
    [
        ("41.27%", 41.27, 2, True, False),
        ("0.00372%", 0.00372, 5, True, False),
        ("100%", 100, 0, True, False),
        ("56669184", 56669184, 0, False, False),
        ("**56,832**", 56832, 0, False, True),
        ("61.4", 61.4, 1, False, False),
        ("**0.04%**", 0.04, 2, True, True),
        ("-", None, None, False, False),
    ],
)
def test_printed_parse(raw, value, decimals, percent, bold):
    parsed = Printed.parse(raw)
    assert parsed.value == value
    assert parsed.decimals == decimals
    assert parsed.percent is percent
    assert parsed.bold is bold
    assert parsed.text == raw.strip("*")


def test_printed_parse_counts_are_int():
    assert isinstance(Printed.parse("2,147,483,648").value, int)


def test_printed_parse_rejects_text():
    with pytest.raises(ValueError, match="'n/a'"):
        Printed.parse("n/a")


def test_printed_agrees_to_precision():
    assert Printed.parse("41.27%").agrees(41.274)
    assert Printed.parse("41.27%").agrees(41.265)
    assert not Printed.parse("41.27%").agrees(41.2865)
    assert Printed.parse("0.00372%").agrees(100 * 262144 / 7045826560)
    assert not Printed.parse("0.00372%").agrees(0.00378)
    assert Printed.parse("61.4").agrees(61.43)


def test_printed_dash_has_no_value():
    with pytest.raises(ValueError):
        Printed.parse("-").agrees(0.0)


@pytest.mark.parametrize("number, rows", [(1, 16), (2, 14), (3, 5), (4, 10), (5, 8)])
def test_table_row_counts(number, rows):
    assert len(published.get_table(number).rows) == rows
    assert len(table_frame(number)) == rows


def test_parameter_tables_follow_paradigm_lists():
    assert published.TABLE1.paradigms == TABLE1_PARADIGMS
    assert published.TABLE2.paradigms == TABLE2_PARADIGMS


@pytest.mark.parametrize("number", sorted(published.TABLES))
def test_paradigms_are_canonical(number):
    table = published.get_table(number)
    for paradigm in table.paradigms:
        assert str(parse_paradigm(paradigm, table.architecture)) == paradigm


def test_table_frame_types():
    frame = table_frame(1)
    assert str(frame["trainable_params"].dtype) == "Int64"
    assert str(frame["peft_params_pct"].dtype) == "Float64"
    assert frame.loc[0, "peft_params"] is pd.NA
    assert list(frame.columns[:4]) == ["paradigm", "vit", "jtm", "dec"]
    assert frame.loc[8, "jtm"] == "FFN"


def test_precision_frame_keeps_printed_decimals():
    precision = precision_frame(2).set_index("paradigm")
    assert precision.loc["F,F,LN,F", "trainable_params_pct"] == 5
    assert precision.loc["Attn,F,Attn,F", "opened_acc_pct"] == 1
    assert precision.loc["F,F,Attn,F", "opened_acc_pct"] == 2


def test_printed_frame_keeps_text():
    text = printed_frame(1).set_index("paradigm")
    assert text.loc["T,FFN,T", "peft_params"] == "56669184"
    assert text.loc["T,T,T", "peft_params_pct"] == "-"


def test_cell_accepts_table_spelling():
    assert cell(2, "LayerNorm,F,LayerNorm,F", "trainable_params").value == 266737664


@pytest.mark.parametrize(
    "number, paradigm, column, named",
    [(6, "T,T,T", "trainable_params", "6"), (1, "T,F,T", "trainable_params", "T,F,T"),
     (1, "T,T,T", "bleu", "bleu")],
)  # fmt: skip
def test_cell_rejects_unknown(number, paradigm, column, named):
    with pytest.raises(MedlnkitError, match=named):
        cell(number, paradigm, column)


@pytest.mark.parametrize("number", [1, 2, 4])
def test_global_accuracy_between_opened_and_closed(number):
    for row in table_frame(number).itertuples():
        low, high = sorted([row.opened_acc_pct, row.closed_acc_pct])
        assert low <= row.global_acc_pct <= high, row.paradigm


def test_bold_marks_table1_best_global():
    bold = published.bold_frame(1).set_index("paradigm")
    assert bold.loc["T,T,T", "global_acc_pct"]
    assert not bold.loc["T,LN,T", "global_acc_pct"]


# --- Each printed note, recomputed from the tables ----------------------------------------------


def _value(number: int, paradigm: str, column: str) -> float:
    return cell(number, paradigm, column).value


def _closed_weight(paradigm: str) -> float:
    opened, closed, total = (_value(1, paradigm, c) for c in ("opened_acc_pct", "closed_acc_pct", "global_acc_pct"))
    return (opened - total) / (opened - closed)


def test_notes_name_real_cells():
    for note in published.PRINTED_NOTES:
        table = published.get_table(note.table)
        assert note.column in table.column_names
        assert note.paradigm is None or note.paradigm in table.paradigms


def test_note_table1_closed_weights():
    weights = {p: _closed_weight(p) for p in TABLE1_PARADIGMS}
    outliers = {p for p, w in weights.items() if not 0.333 <= round(w, 3) <= 0.338}
    assert outliers == {"T,T,T", "T,Attn,Attn"}
    assert round(weights["T,T,T"], 3) == 0.632
    assert round(weights["T,Attn,Attn"], 3) == 0.665
    assert round(1 - weights["T,Attn,Attn"], 3) == 0.335


def test_note_prefix_ratio():
    ratio = _value(1, "T,Prefix,T", "peft_params") / _value(1, "T,LN,T", "peft_params")
    assert round(ratio) == 260


def test_note_table2_global_changes():
    changes = [
        _value(2, f"F,T,{m},T", "global_acc_pct") - _value(2, f"F,F,{m},F", "global_acc_pct")
        for m in ("LN", "Attn", "FFN")
    ]
    assert [round(c, 2) for c in changes] == [-0.47, -2.26, -1.60]
    vision = _value(2, "Attn,T,Attn,T", "global_acc_pct") - _value(2, "F,T,Attn,T", "global_acc_pct")
    assert round(vision, 2) == 0.95


def test_note_table3_rows_repeat():
    columns = published.TABLE3.column_names
    assert [_value(3, "F,F,Attn,F", c) for c in columns] == [_value(3, "F,F,LN,F", c) for c in columns]


def test_note_table4_split_sizes():
    for row in table_frame(4).itertuples():
        open_right = row.opened_acc_pct * 200 / 100
        closed_right = row.closed_acc_pct * 251 / 100
        assert open_right == pytest.approx(round(open_right), abs=0.01), row.paradigm
        assert closed_right == pytest.approx(round(closed_right), abs=0.02), row.paradigm
        overall = 100 * (round(open_right) + round(closed_right)) / 451
        assert cell(4, row.paradigm, "global_acc_pct").agrees(overall), row.paradigm


def test_note_table4_meteor_repeats_recall():
    assert _value(4, "F,F,Attn,F", "meteor_pct") == _value(4, "F,F,Attn,F", "rouge_l_recall_pct")
    others = [_value(4, p, "meteor_pct") for p in published.TABLE4.paradigms if p != "F,F,Attn,F"]
    assert (min(others), max(others)) == (11.87, 19.23)


def test_notes_frame_has_every_note():
    assert len(published.notes_frame()) == len(published.PRINTED_NOTES)
