"""The MISS sweep on the smoke model: results on disk, reuse after a rerun, failures keep results."""

from __future__ import annotations

import json

import pytest

from medlnkit.data.sources import VQASplits
from medlnkit.profiles import get_profile
from medlnkit.sweep import paradigm_slug, run_miss_sweep, run_paradigm
from tests.helpers import square_records


@pytest.fixture()
def splits(tmp_path):
    records = square_records(tmp_path / "images", count=12)
    return VQASplits("synthetic", records[:8], records[8:], tmp_path, {"train": 8, "test": 4})


def test_sweep_writes_and_reuses_results(tmp_path, splits):
    profile = get_profile("smoke", epochs=1)
    table = run_miss_sweep(profile, splits, tmp_path / "out", paradigms=["T,LN,T", "T,T,Prefix"], quiet=True)
    assert list(table["paradigm"]) == ["T,LN,T", "T,T,Prefix"]
    assert table["n_test"].tolist() == [4, 4]
    for paradigm in table["paradigm"]:
        folder = tmp_path / "out" / "miss" / paradigm_slug(paradigm)
        result = json.loads((folder / "result.json").read_text())
        assert result["steps"] == 1
        assert len((folder / "predictions.jsonl").read_text().splitlines()) == 4
    stamp = (tmp_path / "out" / "miss" / "T-LN-T" / "result.json").stat().st_mtime_ns
    run_paradigm(profile, splits, "T,LN,T", tmp_path / "out", quiet=True)
    assert (tmp_path / "out" / "miss" / "T-LN-T" / "result.json").stat().st_mtime_ns == stamp


def test_changed_settings_invalidate_cache(tmp_path, splits):
    run_paradigm(get_profile("smoke", epochs=1), splits, "T,LN,T", tmp_path, quiet=True)
    result = run_paradigm(get_profile("smoke", epochs=2), splits, "T,LN,T", tmp_path, quiet=True)
    assert result["steps"] == 2


def test_bad_paradigm_keeps_finished_results(tmp_path, splits):
    profile = get_profile("smoke", epochs=1)
    run_paradigm(profile, splits, "T,T,T", tmp_path, quiet=True)
    with pytest.raises(ValueError, match="invalid state 'Bogus'"):
        run_miss_sweep(profile, splits, tmp_path, paradigms=["T,T,T", "T,Bogus,T"], quiet=True)
    assert (tmp_path / "miss" / "T-T-T" / "result.json").exists()
