"""The LLaVA sweep on the smoke model: result files, cache reuse, the Table 2 table and the loss figure."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import medlnkit.llava_sweep as llava_sweep
from medlnkit.data.sources import VQASplits
from medlnkit.llava_sweep import load_loss_histories, plot_llava_loss_curves, run_llava_sweep
from medlnkit.profiles import TrainSettings, get_profile
from tests.helpers import square_records

PARADIGMS = ["F,F,LN,F", "F,T,LoRA,T"]


@pytest.fixture(scope="module")
def profile():
    settings = TrainSettings(
        epochs=1, batch_size=4, learning_rate=1e-3, max_answer_tokens=4, eval_batch_size=8, threads=1
    )
    return replace(get_profile("smoke"), llava_train=settings)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    records = square_records(tmp_path_factory.mktemp("squares"), count=12)
    return VQASplits("synthetic", records[:8], records[8:], None, {"train": 8, "test": 4})


@pytest.fixture(scope="module")
def swept(profile, splits, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return out, run_llava_sweep(profile, splits, out, paradigms=PARADIGMS, quiet=True)


@pytest.mark.slow
def test_sweep_table_rows_and_columns(swept):
    _, table = swept
    assert table["paradigm"].tolist() == PARADIGMS
    assert table.loc[0, ["vision", "connector", "llm", "lm_head"]].tolist() == ["F", "F", "LN", "F"]
    for column in (
        "open_acc",
        "closed_acc",
        "global_acc",
        "open_recall",
        "bertscore_recall",
        "mean_answer_tokens",
        "trainable_params",
    ):
        assert column in table.columns
    assert table.loc[0, "trainable_params"] < table.loc[1, "trainable_params"]
    assert (table["steps"] == 2).all()
    assert table["global_acc"].between(0, 100).all()


@pytest.mark.slow
def test_sweep_writes_result_files(swept, splits):
    out, _ = swept
    folder = out / "llava" / "F-F-LN-F"
    record = json.loads((folder / "result.json").read_text())
    assert record["paradigm"] == "F,F,LN,F"
    assert record["n_test"] == len(splits.test)
    assert record["template"] == "smollm2_chatml"
    predictions = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert [row["id"] for row in predictions] == [r.qid for r in splits.test]


@pytest.mark.slow
def test_sweep_reuses_finished_paradigms(swept, profile, splits, monkeypatch):
    out, table = swept

    def no_build(*args, **kwargs):
        raise AssertionError("a cached sweep must not build the model")

    monkeypatch.setattr(llava_sweep, "build_llava", no_build)
    again = run_llava_sweep(profile, splits, out, paradigms=PARADIGMS, quiet=True)
    assert again.equals(table)


@pytest.mark.slow
def test_changed_settings_invalidate_cache(swept, profile, splits, monkeypatch):
    out, _ = swept
    built = []
    original = llava_sweep.build_llava
    monkeypatch.setattr(llava_sweep, "build_llava", lambda *a, **k: built.append(1) or original(*a, **k))
    changed = replace(profile, llava_train=replace(profile.llava_train, learning_rate=2e-3))
    run_llava_sweep(changed, splits, out / "changed", paradigms=PARADIGMS[:1], quiet=True)
    run_llava_sweep(changed, splits, out, paradigms=PARADIGMS[:1], quiet=True)
    assert len(built) == 2


@pytest.mark.slow
def test_loss_histories_and_figure(swept):
    out, table = swept
    losses = load_loss_histories(out, table["paradigm"])
    assert set(losses["paradigm"]) == set(PARADIGMS)
    assert {"step", "loss", "learning_rate"} <= set(losses.columns)
    fig = plot_llava_loss_curves(losses, "smoke")
    assert fig.axes[0].get_legend().get_title().get_text() == "paradigm (vision,connector,llm,lm_head)"


def test_missing_histories_give_empty_table(tmp_path):
    assert load_loss_histories(tmp_path, ["F,F,LN,F"]).empty
