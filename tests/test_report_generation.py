"""Report generation: instruction pairs from IU X-ray and MIMIC-CXR, the smoke sweep, its cache, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures.dataset_layouts import build_iu_xray_folder, build_mimic_cxr, build_vqa_rad_mevf

from medlnkit.data.records import ReportRecord
from medlnkit.errors import DataError, InvalidParadigmError, MedlnkitError
from medlnkit.profiles import get_profile
from medlnkit.published import get_table
from medlnkit.report_generation import (
    INSTRUCTION,
    ReportData,
    chest_radiographs,
    load_report_data,
    read_predictions,
    report_budget,
    report_records,
    resolve_report_sources,
    run_report_paradigm,
    run_report_sweep,
    score_texts,
)
from medlnkit.sweep import paradigm_slug
from tests.helpers import write_square_images

REPORTS = [
    "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
    "Cardiomediastinal silhouette is within normal limits. No focal consolidation.",
    "Mild cardiomegaly. Small left pleural effusion. No pneumothorax.",
    "Lungs are hyperexpanded. No acute cardiopulmonary abnormality.",
]


def report_data(folder: Path, train: int = 6, test: int = 2) -> ReportData:
    """Return real-pairing ReportData over synthetic square images and short report texts."""
    images = write_square_images(folder, train + test)
    reports = [
        ReportRecord(f"CXR{i}", (path,), REPORTS[i % len(REPORTS)], "", "iu-xray", "all")
        for i, (path, _) in enumerate(images)
    ]
    return ReportData(
        train=report_records(reports[:train], None, "train"),
        test=report_records(reports[train:], None, "test"),
        train_name="iu-xray",
        test_name="iu-xray",
        synthetic_pairing=False,
        available={"train": train, "test": test},
    )


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run the tiny smoke models on one thread: extra threads only add synchronisation on such sizes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def smoke():
    return get_profile("smoke")


def test_sweep_writes_and_reuses(tmp_path, smoke):
    data = report_data(tmp_path / "images")
    table = run_report_sweep(smoke, data, tmp_path / "out", paradigms=["F,F,LN,F", "F,F,Prefix,F"], quiet=True)
    assert list(table["paradigm"]) == ["F,F,LN,F", "F,F,Prefix,F"]
    assert set(get_table(3).column_names) <= set(table.columns)
    assert table["n_test"].tolist() == [2, 2]
    assert table[["vision", "connector", "llm", "lm_head"]].iloc[0].tolist() == ["F", "F", "LN", "F"]
    for paradigm in table["paradigm"]:
        folder = tmp_path / "out" / "report_generation" / paradigm_slug(paradigm)
        result = json.loads((folder / "result.json").read_text())
        assert result["steps"] == 2  # 6 pairs at the smoke batch size of 4
        assert (folder / "losses.csv").read_text().count("\n") == 3
        assert [row["id"] for row in read_predictions(tmp_path / "out", paradigm)] == ["CXR6", "CXR7"]
    stamp = (tmp_path / "out" / "report_generation" / "F-F-LN-F" / "result.json").stat().st_mtime_ns
    run_report_paradigm(smoke, data, "F,F,LN,F", tmp_path / "out", quiet=True)
    assert (tmp_path / "out" / "report_generation" / "F-F-LN-F" / "result.json").stat().st_mtime_ns == stamp


def test_changed_data_invalidates_cache(tmp_path, smoke):
    first = run_report_paradigm(smoke, report_data(tmp_path / "a", train=4), "F,F,LN,F", tmp_path / "out", quiet=True)
    second = run_report_paradigm(smoke, report_data(tmp_path / "b", train=8), "F,F,LN,F", tmp_path / "out", quiet=True)
    assert first["n_train"] == 4
    assert second["n_train"] == 8
    assert second["settings_key"] != first["settings_key"]


def test_bad_paradigm_fails_before_training(tmp_path, smoke):
    with pytest.raises(InvalidParadigmError, match="Bogus"):
        run_report_sweep(smoke, report_data(tmp_path / "images"), tmp_path / "out", paradigms=["F,F,LN,F", "F,F,Bogus,F"])
    assert not (tmp_path / "out" / "report_generation").exists()


def test_wheel_reports_pair_synthetically():
    data = load_report_data(report_budget("smoke"))
    assert len(data.train) == 16
    assert len(data.test) == 8
    assert data.synthetic_pairing
    assert data.test_name == "iu-xray"
    assert {r.question for r in data.train} == {INSTRUCTION}
    assert {r.image_path for r in data.train} <= set(chest_radiographs())
    assert not {r.qid for r in data.train} & {r.qid for r in data.test}
    assert "SYNTHETIC PAIRING" in data.describe()
    assert "held-out IU X-ray" in data.describe()


def test_chest_radiograph_is_rg1():
    paths = chest_radiographs()
    assert len(paths) >= 1
    assert all(path.is_file() for path in paths)


def test_iu_images_and_mimic_give_real_pairs(tmp_path):
    iu = build_iu_xray_folder(tmp_path / "iu")
    mimic = build_mimic_cxr(tmp_path / "mimic")
    data = load_report_data(report_budget("smoke"), iu_dir=iu, mimic_dir=mimic)
    assert [r.qid for r in data.train] == ["CXR1"]
    assert data.train[0].image_path.name == "CXR1_1_IM-0001-3001.png"
    assert data.test_name == "mimic-cxr"
    assert sorted(r.qid for r in data.test) == ["s50414267", "s51000001", "s52000002"]
    assert not data.synthetic_pairing
    assert {r.extra["pairing"] for r in [*data.train, *data.test]} == {"real"}


def test_iu_without_test_reports_raises(tmp_path):
    iu = build_iu_xray_folder(tmp_path / "iu")
    with pytest.raises(DataError, match="held-out IU X-ray split contains no test report"):
        load_report_data(report_budget("smoke"), iu_dir=iu)


def test_missing_iu_folder_names_it(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        load_report_data(report_budget("smoke"), iu_dir=tmp_path / "nowhere")


def test_missing_mimic_folder_names_it(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        load_report_data(report_budget("smoke"), mimic_dir=tmp_path / "nowhere")


def test_resolve_sources_from_data_dir(tmp_path):
    mimic = build_mimic_cxr(tmp_path / "mimic")
    iu = build_iu_xray_folder(tmp_path / "iu")
    vqa_rad = build_vqa_rad_mevf(tmp_path / "vqa_rad")
    assert resolve_report_sources(mimic, None, None) == (None, mimic, None)
    assert resolve_report_sources(iu, None, None) == (iu, None, None)
    iu_folder, mimic_folder, note = resolve_report_sources(vqa_rad, None, None)
    assert (iu_folder, mimic_folder) == (None, None)
    assert "neither a MIMIC-CXR nor an IU X-ray folder" in note


def test_resolve_sources_rejects_missing_folder(tmp_path):
    with pytest.raises(DataError, match="mimic_dir=.*nowhere"):
        resolve_report_sources(None, None, tmp_path / "nowhere")


def test_report_without_image_or_fallback():
    report = ReportRecord("CXR9", (), "Clear lungs.", "", "iu-xray", "all")
    with pytest.raises(DataError, match="CXR9"):
        report_records([report], None, "train")


def test_unknown_budget_profile():
    with pytest.raises(MedlnkitError, match="'laptop'"):
        report_budget("laptop")


def test_score_texts_of_identical_reports():
    scores = score_texts(REPORTS[:2], REPORTS[:2], tokenizer=str.split)
    assert scores["rouge_l_f1_pct"] == pytest.approx(100.0)
    assert scores["rouge_l_recall_pct"] == pytest.approx(100.0)
    assert scores["meteor_pct"] > 95
    assert scores["mean_tokens"] == pytest.approx((15 + 9) / 2)
    assert "bertscore_f1_pct" not in scores


def test_score_texts_of_unrelated_reports():
    scores = score_texts(["banana bread recipe"], [REPORTS[0]], tokenizer=str.split)
    assert scores["rouge_l_f1_pct"] == 0.0
    assert scores["meteor_pct"] == 0.0
