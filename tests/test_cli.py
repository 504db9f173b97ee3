"""Command-line errors: one clear line naming the value, exit status 2, no traceback."""

from __future__ import annotations

import json

import pytest

from medlnkit.cli import main
from medlnkit.runner import select_notebooks


def run_cli(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_unknown_profile(capsys, tmp_path):
    status, _, err = run_cli(capsys, "run", "--profile", "laptop", "--out", str(tmp_path / "r"))
    assert status == 2
    assert "unknown profile 'laptop'" in err
    assert "smoke, cpu, paper" in err
    assert "Traceback" not in err


def test_unknown_notebook(capsys, tmp_path):
    status, _, err = run_cli(capsys, "run", "--profile", "smoke", "--only", "09_nothing", "--out", str(tmp_path / "r"))
    assert status == 2
    assert "unknown notebook '09_nothing'" in err
    assert "02_miss_tuning" in err


def test_missing_data_folder(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    status, _, err = run_cli(capsys, "run", "--profile", "smoke", "--data-dir", str(missing), "--out", str(tmp_path / "r"))
    assert status == 2
    assert str(missing) in err
    assert "does not exist" in err


def test_data_folder_of_unknown_layout(capsys, tmp_path):
    (tmp_path / "data" / "pictures").mkdir(parents=True)
    status, _, err = run_cli(capsys, "run", "--profile", "smoke", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "r"))
    assert status == 2
    assert "neither VQA-RAD" in err
    assert "pictures" in err


def test_notebook_selection_by_number_and_name():
    assert select_notebooks(["02"]) == ["02_miss_tuning"]
    assert select_notebooks(["02_miss_tuning.ipynb", "00"]) == ["00_architecture_tour", "02_miss_tuning"]
    assert select_notebooks(None)[0] == "00_architecture_tour"


@pytest.mark.parametrize("paradigm", ["T,X,T", "T,LN"])
def test_count_invalid_paradigm(capsys, paradigm):
    status, _, err = run_cli(capsys, "count", "--model", "miss", "--paradigm", paradigm)
    assert status == 2
    assert repr(paradigm) in err or paradigm.split(",")[1] in err


def test_count_json_contract(capsys):
    status, out, _ = run_cli(capsys, "count", "--model", "miss", "--paradigm", "T,LN,T", "--json")
    assert status == 0
    record = json.loads(out)
    assert record["total"] == 361_478_972
    assert record["trainable"] == 224_277_308
    assert record["peft"] == 56_832
    assert record["groups"]["jtm"]["peft"] == 56_832


@pytest.mark.slow
def test_undecodable_image_stops_run_with_name(capsys, tmp_path):
    from fixtures.dataset_layouts import build_vqa_rad_mevf

    root = build_vqa_rad_mevf(tmp_path / "vqa_rad")
    (root / "images" / "synpic200.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "run"
    status, _, err = run_cli(capsys, "run", "--profile", "smoke", "--data-dir", str(root), "--out", str(out), "--only", "02")
    assert status == 2
    assert "synpic200.jpg" in err
    assert "02_miss_tuning" in err
    assert "Traceback" not in err
    assert (out / "config.yaml").exists()
    assert (out / "notebooks" / "02_miss_tuning.ipynb").exists()


def test_out_path_that_is_a_file(capsys, tmp_path):
    target = tmp_path / "results.jsonl"
    target.write_text("{}\n")
    status, _, err = run_cli(capsys, "run", "--profile", "smoke", "--only", "00", "--out", str(target))
    assert status == 2
    assert "cannot write the run folder" in err
    assert "Traceback" not in err


def test_run_folder_of_other_profile_rejected(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("profile:\n  name: cpu\ndata_dir: null\nnotebooks: [00_architecture_tour]\n")
    status, _, err = run_cli(capsys, "run", "--profile", "smoke", "--only", "00", "--out", str(out))
    assert status == 2
    assert "profile 'cpu'" in err
    assert "another --out" in err


def test_missing_image_fails_before_notebooks(capsys, tmp_path):
    from fixtures.dataset_layouts import build_vqa_rad_mevf

    root = build_vqa_rad_mevf(tmp_path / "vqa_rad", omit_images=("synpic300.jpg",))
    out = tmp_path / "run"
    status, _, err = run_cli(capsys, "run", "--profile", "smoke", "--data-dir", str(root), "--out", str(out))
    assert status == 2
    assert "synpic300.jpg" in err
    assert not (out / "notebooks").exists()
