"""Kit tables beside the published ones, loss histories from run folders, and the figures."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from medlnkit.errors import InvalidParadigmError, MedlnkitError
from medlnkit.figures import save_figure
from medlnkit.published import table_frame
from medlnkit.report_figures import (
    compare_with_published,
    kit_table,
    matches_pattern,
    plot_comparison,
    plot_loss_panels,
    plot_params_vs_accuracy_beside,
    read_kit_table,
    read_loss_histories,
    select_paradigms,
    summarize_agreement,
    table_inventory,
)


def kit_table1(global_acc: dict[str, float]) -> pd.DataFrame:
    """Return a table1_miss.csv-shaped frame with the given global accuracies (percent)."""
    return pd.DataFrame(
        {
            "paradigm": list(global_acc),
            "open_acc": [10.0] * len(global_acc),
            "global_acc": list(global_acc.values()),
            "trainable_params": [1000 * (i + 1) for i in range(len(global_acc))],
        }
    )


def write_losses(folder, paradigm: str | None, losses: list[float]) -> None:
    folder.mkdir(parents=True)
    steps = range(1, len(losses) + 1)
    pd.DataFrame({"step": steps, "epoch": 1, "loss": losses}).to_csv(folder / "losses.csv", index=False)
    if paradigm is not None:
        (folder / "result.json").write_text(json.dumps({"paradigm": paradigm}))


def test_inventory_of_empty_folder(tmp_path):
    inventory = table_inventory(tmp_path)
    assert inventory["table"].tolist() == [1, 2, 3, 4, 5]
    assert not inventory["present"].any()
    assert inventory["rows"].sum() == 0


def test_inventory_counts_present_table(tmp_path):
    (tmp_path / "tables").mkdir()
    kit_table1({"T,T,T": 50.0, "T,LN,T": 40.0}).to_csv(tmp_path / "tables" / "table1_miss.csv", index=False)
    inventory = table_inventory(tmp_path).set_index("table")
    assert bool(inventory.loc[1, "present"])
    assert inventory.loc[1, "rows"] == 2
    assert not inventory.loc[3, "present"]


def test_read_kit_table_absent_is_none(tmp_path):
    assert read_kit_table(tmp_path, 4) is None


def test_read_kit_table_without_paradigm_column(tmp_path):
    (tmp_path / "tables").mkdir()
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "tables" / "table3_report_generation.csv", index=False)
    with pytest.raises(MedlnkitError, match="no 'paradigm' column"):
        read_kit_table(tmp_path, 3)


def test_unknown_table_number():
    with pytest.raises(MedlnkitError, match="Table 7"):
        kit_table(7)


def test_compare_maps_kit_columns():
    compare = compare_with_published(kit_table1({"T,T,T": 50.0, "[T, LN, T]": 40.0}), 1)
    row = compare[(compare["paradigm"] == "T,LN,T") & (compare["column"] == "global_acc_pct")].iloc[0]
    assert row["published"] == pytest.approx(78.61)
    assert row["kit"] == pytest.approx(40.0)
    assert row["kit_minus_published"] == pytest.approx(40.0 - 78.61)
    assert set(compare["column"]) == {"opened_acc_pct", "global_acc_pct", "trainable_params"}


def test_compare_keeps_paradigms_of_both_sides():
    compare = compare_with_published(kit_table1({"T,T,T": 50.0}), 1)
    global_rows = compare[compare["column"] == "global_acc_pct"]
    assert len(global_rows) == 16
    assert global_rows["kit"].notna().sum() == 1
    assert global_rows["paradigm"].iloc[0] == "T,T,T"


def test_compare_adds_unpublished_paradigm_last():
    kit = pd.DataFrame({"paradigm": ["F,F,LN,F", "F,T,T,T"], "meteor_pct": [11.0, 9.0]})
    compare = compare_with_published(kit, 3)
    assert compare["paradigm"].iloc[-1] == "F,T,T,T"
    last = compare.iloc[-1]
    assert math.isnan(last["published"])
    assert last["kit"] == 9.0


def test_compare_rejects_bad_paradigm():
    kit = pd.DataFrame({"paradigm": ["F,F,Bogus,F"], "meteor_pct": [1.0]})
    with pytest.raises(InvalidParadigmError, match="Bogus"):
        compare_with_published(kit, 3)


def test_agreement_of_published_copy():
    published = table_frame(1)
    kit = published.rename(columns={"global_acc_pct": "global_acc"})[["paradigm", "global_acc"]]
    summary = summarize_agreement(compare_with_published(kit, 1), 1)
    assert summary["shared_paradigms"] == 16
    assert summary["mean_kit_minus_published"] == pytest.approx(0.0)
    assert summary["spearman"] == pytest.approx(1.0)


def test_agreement_needs_three_paradigms():
    summary = summarize_agreement(compare_with_published(kit_table1({"T,T,T": 50.0, "T,LN,T": 40.0}), 1), 1)
    assert summary["shared_paradigms"] == 2
    assert summary["spearman"] is None


@pytest.mark.parametrize(
    ("paradigm", "pattern", "architecture", "expected"),
    [
        ("F,T,LoRA,T", "F,T,PEFT,T", "llava", True),
        ("F,T,LN,T", "[F, T, PEFT, T]", "llava", True),
        ("F,F,LN,F", "F,T,PEFT,T", "llava", False),
        ("F,T,T,T", "F,T,PEFT,T", "llava", False),
        ("T,Prefix,T", "T,PEFT,T", "miss", True),
        ("T,T,LN", "T,PEFT,T", "miss", False),
        ("T,LN,T", "T,LN,T", "miss", True),
    ],
)
def test_matches_pattern(paradigm, pattern, architecture, expected):
    assert matches_pattern(paradigm, pattern, architecture) is expected


def test_pattern_with_wrong_group_count():
    with pytest.raises(MedlnkitError, match="'T,PEFT' has 2 states"):
        matches_pattern("T,LN,T", "T,PEFT", "miss")


def test_select_paradigms_keeps_order():
    chosen = select_paradigms(["T,T,T", "T,LoRA,T", "T,LN,T", "T,LoRA,T"], "T,PEFT,T", "miss")
    assert chosen == ["T,LoRA,T", "T,LN,T"]


def test_loss_histories_from_folders(tmp_path):
    write_losses(tmp_path / "llava" / "F-T-LN-T", "F,T,LN,T", [3.0, 2.0])
    write_losses(tmp_path / "llava" / "F-F-LoRA-F", None, [4.0, 3.5, 3.0])
    losses = read_loss_histories(tmp_path, "llava")
    assert list(losses.columns) == ["paradigm", "step", "epoch", "loss"]
    assert losses.groupby("paradigm").size().to_dict() == {"F,F,LoRA,F": 3, "F,T,LN,T": 2}


def test_loss_histories_of_absent_sweep(tmp_path):
    losses = read_loss_histories(tmp_path, "llava")
    assert losses.empty
    assert list(losses.columns) == ["paradigm", "step", "epoch", "loss"]


def test_figures_are_written(tmp_path):
    compare = compare_with_published(kit_table1({"T,T,T": 50.0, "T,LN,T": 40.0}), 1)
    write_losses(tmp_path / "miss" / "T-LN-T", "T,LN,T", [3.0, 2.5, 2.0])
    panels = [("MISS", read_loss_histories(tmp_path, "miss"), "paradigm"), ("LLaVA", read_loss_histories(tmp_path, "llava"), "p")]
    figures = {
        "compare.png": plot_comparison(compare, 1),
        "losses.png": plot_loss_panels(panels),
        "scatter.png": plot_params_vs_accuracy_beside(kit_table1({"T,T,T": 50.0}), table_frame(1), "MISS"),
    }
    for name, fig in figures.items():
        path = save_figure(fig, tmp_path / "figures" / name)
        assert path.stat().st_size > 10_000, name


def test_comparison_without_shared_values():
    kit = pd.DataFrame({"paradigm": ["T,T,T"], "trainable_params": [5]})
    with pytest.raises(MedlnkitError, match="shares no value column"):
        plot_comparison(compare_with_published(kit, 1), 1)


def test_loss_panels_need_a_panel():
    with pytest.raises(MedlnkitError, match="no loss panels"):
        plot_loss_panels([])
