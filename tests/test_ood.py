"""Slake-tuned LLaVA tested out of distribution: data sources, fallbacks, the smoke sweep, errors."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures.dataset_layouts import build_mimic_cxr, build_slake, build_vqa_rad_mevf

from medlnkit.errors import DataError, InvalidParadigmError, MedlnkitError
from medlnkit.ood import (
    TABLE4_PARADIGMS,
    TABLE5_PARADIGMS,
    OodData,
    load_ood_data,
    ood_budget,
    resolve_sources,
    run_ood_paradigm,
    run_ood_sweep,
)
from medlnkit.profiles import get_profile
from medlnkit.published import get_table


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run the tiny smoke models on one thread: extra threads only add synchronisation on such sizes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def folders(tmp_path):
    return {
        "slake": build_slake(tmp_path / "slake"),
        "vqa_rad": build_vqa_rad_mevf(tmp_path / "vqa_rad"),
        "mimic": build_mimic_cxr(tmp_path / "mimic"),
    }


@pytest.fixture()
def fixture_data(folders) -> OodData:
    return load_ood_data(slake_dir=folders["slake"], vqa_rad_dir=folders["vqa_rad"], mimic_dir=folders["mimic"], budget=ood_budget("smoke"))


def test_paradigm_lists_match_published():
    assert TABLE4_PARADIGMS == get_table(4).paradigms
    assert set(TABLE5_PARADIGMS) == set(get_table(5).paradigms)


def test_sources_from_data_dir(folders):
    assert resolve_sources(folders["vqa_rad"], None, None) == (None, folders["vqa_rad"])
    assert resolve_sources(folders["slake"], None, None) == (folders["slake"], None)
    assert resolve_sources(folders["slake"], None, folders["vqa_rad"]) == (folders["slake"], folders["vqa_rad"])


def test_explicit_folder_wins_over_data_dir(folders, tmp_path):
    other = build_vqa_rad_mevf(tmp_path / "other")
    assert resolve_sources(other, None, folders["vqa_rad"]) == (None, folders["vqa_rad"])


def test_swapped_folders_raise(folders):
    with pytest.raises(DataError, match="slake_dir=.* is a vqa-rad folder, not slake: pass it as vqa_rad_dir"):
        resolve_sources(None, folders["vqa_rad"], None)


def test_missing_folder_names_it(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        resolve_sources(None, None, tmp_path / "nowhere")


def test_fixture_sources_load(fixture_data, folders):
    assert fixture_data.train_name == "slake"
    assert fixture_data.vqa_test_name == "vqa-rad"
    assert fixture_data.report_test_name == "mimic-cxr"
    assert [r.qid for r in fixture_data.vqa_test] == ["11", "12", "13"]
    assert len(fixture_data.report_test) == 3
    assert not fixture_data.synthetic_pairing
    assert all(r.dataset == "slake" for r in fixture_data.train)
    described = fixture_data.describe()
    assert f"Slake training split from {folders['slake']}" in described
    assert "MIMIC-CXR test split" in described


def test_slake_without_images_falls_back(tmp_path):
    slake = build_slake(tmp_path / "slake", with_images=False)
    data = load_ood_data(slake_dir=slake, budget=ood_budget("smoke"), report_test_limit=2)
    assert data.train_name == "embedded-sample"
    assert all(r.dataset == "embedded-sample" for r in data.train)
    assert f"the Slake folder {slake}" in data.describe()
    assert "none of their images" in data.describe()


def test_defaults_say_not_out_of_distribution():
    data = load_ood_data(budget=ood_budget("smoke"), report_test_limit=2)
    assert data.train_name == data.vqa_test_name == "embedded-sample"
    assert len(data.train) == 16
    assert len(data.report_test) == 2
    assert data.synthetic_pairing
    assert "not an out-of-distribution test" in data.describe()
    assert "zero-shot report test set: held-out IU X-ray reports" in data.describe()


def test_sweep_writes_both_tables(tmp_path, fixture_data):
    profile = get_profile("smoke")
    table4, table5 = run_ood_sweep(profile, fixture_data, tmp_path / "out", paradigms=["F,T,LN,T", "F,F,LoRA,F"], quiet=True)
    assert list(table4["paradigm"]) == ["F,T,LN,T", "F,F,LoRA,F"]
    assert list(table5["paradigm"]) == ["F,T,LN,T", "F,F,LoRA,F"]
    assert set(get_table(4).column_names) <= set(table4.columns)
    assert set(get_table(5).column_names) <= set(table5.columns)
    assert table4["n_test"].tolist() == [3, 3]
    assert table5["n_test"].tolist() == [3, 3]
    assert table4["test_data"].unique().tolist() == ["vqa-rad"]
    assert table5["test_data"].unique().tolist() == ["mimic-cxr"]
    assert table4["global_acc_pct"].between(0, 100).all()
    folder = tmp_path / "out" / "ood" / "F-T-LN-T"
    vqa_rows = [json.loads(line) for line in (folder / "predictions_vqa.jsonl").read_text().splitlines()]
    report_rows = [json.loads(line) for line in (folder / "predictions_report.jsonl").read_text().splitlines()]
    assert [row["id"] for row in vqa_rows] == ["11", "12", "13"]
    assert len(report_rows) == 3
    stamp = (folder / "result.json").stat().st_mtime_ns
    run_ood_paradigm(profile, fixture_data, "F,T,LN,T", tmp_path / "out", quiet=True)
    assert (folder / "result.json").stat().st_mtime_ns == stamp


def test_bad_paradigm_fails_before_training(tmp_path, fixture_data):
    with pytest.raises(InvalidParadigmError, match="Bogus"):
        run_ood_sweep(get_profile("smoke"), fixture_data, tmp_path / "out", paradigms=["F,F,LN,F", "Bogus,F,LN,F"])
    assert not (tmp_path / "out" / "ood").exists()


def test_empty_test_set_raises(tmp_path, fixture_data):
    fixture_data.vqa_test = []
    with pytest.raises(DataError, match="got 3, 0 and 3"):
        run_ood_paradigm(get_profile("smoke"), fixture_data, "F,F,LN,F", tmp_path / "out")


def test_unknown_budget_profile():
    with pytest.raises(MedlnkitError, match="'laptop'"):
        ood_budget("laptop")


def test_real_vqa_rad_and_slake_questions(vqa_rad_root, slake_root):
    data = load_ood_data(vqa_rad_root, slake_root, budget=ood_budget("smoke"), report_test_limit=2)
    assert data.vqa_test_name == "vqa-rad"
    assert data.available["vqa_test"] == 451
    assert len(data.vqa_test) == 16
    if data.train_name == "embedded-sample":
        assert "none of their images" in data.describe()
