"""``medlnkit bench`` at size tiny: every field is written; helpers read runs and judge targets.

Timing figures are never asserted here: they depend on the machine and its load.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from medlnkit.bench import (
    SIZES,
    TARGETS,
    _run_source,
    _write_results,
    busy_machine_warnings,
    check_results_path,
    default_results_path,
    evaluate_run_target,
    evaluate_targets,
    format_bench,
    format_markdown,
    load_results,
    measure_notebook_runs,
    get_size,
    llava_unavailable,
    run_bench,
)
from medlnkit.benchmarks.isolation import WorkerError, run_isolated
from medlnkit.benchmarks.runs import SOURCE_ROOT, find_latest_run, read_run_timing
from medlnkit.benchmarks.workloads import LLAVA_METHODS, MISS_METHODS
from medlnkit.cli import main
from medlnkit.errors import MedlnkitError
from medlnkit.runner import NOTEBOOKS

HEADLINE = (
    "ln_over_full_step_time",
    "ln_over_full_peak_memory",
    "ln_over_full_peak_rss",
    "ln_over_full_training_tensors",
    "ln_over_peft_ln_step_time",
    "ln_over_peft_ln_separate_step_time",
    "ln_over_peft_ln_peak_memory",
    "ln_over_peft_ln_tensor_memory",
    "ln_over_peft_ln_checkpoint_size",
    "batched_over_sequential_generation",
)

STEP_FIELDS = (
    "step_seconds_median",
    "step_seconds_spread",
    "forward_seconds_median",
    "backward_seconds_median",
    "optimizer_seconds_median",
    "rss_before_mb",
    "peak_rss_mb",
    "peak_increase_mb",
    "training_state_mb",
    "saved_for_backward_mb",
    "tensor_memory_mb",
    "final_loss",
)


MODELS = ("miss", "llava")


def _require(model: str) -> None:
    if model == "llava" and llava_unavailable():
        pytest.skip(f"LLaVA is not benchmarked here: {llava_unavailable()}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.json"
    results = run_bench(size="tiny", out=out)
    return results, out


def test_tiny_run_writes_its_results(tiny_results):
    results, out = tiny_results
    assert out.is_file()
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))


def test_tiny_run_headline_ratios(tiny_results):
    results, _ = tiny_results
    for key in HEADLINE:
        assert _is_number(results[key]), f"{key} = {results[key]!r}"
        assert results[key] > 0, key


def test_tiny_run_machine_and_model(tiny_results):
    results, _ = tiny_results
    machine = results["machine"]
    assert machine["usable_cores"] >= 1
    assert machine["torch"]
    assert machine["cpu_model"]
    assert "MISS smoke" in results["model"]
    assert results["size"] == "tiny"
    assert "run_bench" in results["command"]


@pytest.mark.parametrize("model, methods", [("miss", MISS_METHODS), ("llava", LLAVA_METHODS)])
def test_tiny_run_measures_every_method(tiny_results, model, methods):
    _require(model)
    section = tiny_results[0]["training_steps"][model]
    assert list(section["methods"]) == [m.key for m in methods]
    timed_steps = getattr(SIZES["tiny"], model).timed_steps
    for key, record in section["methods"].items():
        assert "error" not in record, f"{key}: {record.get('error')}"
        for field in STEP_FIELDS:
            assert _is_number(record[field]), f"{key}.{field} = {record[field]!r}"
        assert len(record["step_seconds"]) == timed_steps
        assert record["checkpoint_bytes"] > 0, key
        assert 0 < record["trainable_parameters"] <= record["model_parameters"], key
        assert _is_number(section["ratios"][key]["step_time_over_full"]), key


@pytest.mark.parametrize("model, frozen_vision", [("miss", "LN-frozen-vit"), ("llava", "LN-frozen-vision")])
def test_tiny_run_trains_what_each_method_selects(tiny_results, model, frozen_vision):
    _require(model)
    methods = tiny_results[0]["training_steps"][model]["methods"]
    full = methods["full"]
    assert full["trainable_parameters"] == full["model_parameters"]
    # peft's LN-tuning targets the kit's own norm modules, so both train the same count.
    assert methods["peft-LN"]["trainable_parameters"] == methods["LN"]["trainable_parameters"]
    assert methods[frozen_vision]["trainable_parameters"] < methods["LN"]["trainable_parameters"]
    # Frozen weights carry no gradient and no AdamW state. That state is counted exactly, unlike RSS.
    assert methods["LN"]["training_state_mb"] < full["training_state_mb"] / 100
    assert methods["LN"]["checkpoint_bytes"] < full["checkpoint_bytes"] / 100
    # Autograd keeps a linear layer's input only when its weight trains.
    assert methods["LN"]["saved_for_backward_mb"] < full["saved_for_backward_mb"]


@pytest.mark.parametrize("model", MODELS)
def test_tiny_run_kit_ln_against_peft(tiny_results, model):
    _require(model)
    section = tiny_results[0]["training_steps"][model]
    kit, peft = section["methods"]["LN"], section["methods"]["peft-LN"]
    # The same computation saves the same activations; peft also keeps a copy of every tuned layer.
    assert kit["saved_for_backward_mb"] == peft["saved_for_backward_mb"]
    assert kit["tensor_memory_mb"] < peft["tensor_memory_mb"]
    paired = section["ln_against_peft_ln"]
    assert len(paired["ratios"]) == getattr(SIZES["tiny"], model).paired_steps
    assert _is_number(paired["ratio_median"])


@pytest.mark.parametrize("model", MODELS)
def test_tiny_run_summarizes_each_model(tiny_results, model):
    _require(model)
    results, _ = tiny_results
    for key in HEADLINE:
        assert _is_number(results["summary"][model][key]), f"{model}.{key}"


def test_tiny_run_headline_is_miss(tiny_results):
    results, _ = tiny_results
    assert results["ln_over_full_step_time"] == results["summary"]["miss"]["ln_over_full_step_time"]


@pytest.mark.parametrize("model", MODELS)
def test_tiny_run_generation(tiny_results, model):
    _require(model)
    generation = tiny_results[0]["generation"][model]
    assert "error" not in generation, generation.get("error")
    assert generation["questions"] == SIZES["tiny"].generation_questions
    assert _is_number(generation["batched_questions_per_second"])
    assert _is_number(generation["sequential_questions_per_second"])


def test_tiny_run_miss_batched_answers_match(tiny_results):
    generation = tiny_results[0]["generation"]["miss"]
    # MISS's batched generation masks question padding, so it must give the one-at-a-time answers.
    assert generation["answers_identical"] == generation["questions"]


def test_tiny_run_counting(tiny_results):
    results, _ = tiny_results
    counts = {record["model"]: record for record in results["counting"]}
    assert counts["llava-med-v1"]["total_parameters"] == 7_045_826_560
    assert _is_number(counts["miss"]["first_seconds"])


def test_tiny_run_skips_notebook_runs_with_reasons(tiny_results):
    runs = tiny_results[0]["notebook_runs"]
    assert "size full only" in runs["smoke"]["skipped"]
    assert "GPU" in runs["paper"]["skipped"]
    assert "skipped" in runs["cpu"] or "notebooks_seconds" in runs["cpu"]


def test_tiny_run_judges_every_target(tiny_results):
    targets = tiny_results[0]["targets"]
    expected = [(m, t.key) for m in ("miss", "llava") for t in TARGETS]
    assert [(t["model"], t["key"]) for t in targets] == [*expected, ("cpu run", "notebook_sequence_minutes")]
    for target in targets[:-1]:
        if target["model"] == "llava" and llava_unavailable():
            continue
        assert isinstance(target["met"], bool), target["key"]


def test_format_bench_lists_methods_and_targets(tiny_results):
    text = format_bench(tiny_results[0])
    methods = MISS_METHODS if llava_unavailable() else (*MISS_METHODS, *LLAVA_METHODS)
    for method in methods:
        assert f"\n{method.key} " in text
    assert "targets:" in text
    assert "batched generation" in text


def test_unknown_size():
    with pytest.raises(MedlnkitError, match="unknown benchmark size 'huge'"):
        get_size("huge")


def test_default_results_path_names_size():
    import datetime as dt

    day = dt.date(2026, 1, 2)
    assert str(default_results_path("full", day)) == "bench/results/bench-2026-01-02.json"
    assert str(default_results_path("quick", day)) == "bench/results/bench-2026-01-02-quick.json"


def test_evaluate_targets_bounds():
    summary = {t.key: t.bound for t in TARGETS}
    summary["ln_over_full_step_time"] = 0.9
    summary["batched_over_sequential_generation"] = None
    verdicts = {t["key"]: t["met"] for t in evaluate_targets(summary)}
    assert verdicts["ln_over_full_step_time"] is False
    assert verdicts["batched_over_sequential_generation"] is None
    assert verdicts["ln_over_peft_ln_step_time"] is True


def _fail_in_worker() -> dict:
    raise ValueError("broken on purpose")


def test_worker_error_carries_the_message():
    with pytest.raises(WorkerError, match="ValueError: broken on purpose"):
        run_isolated(_fail_in_worker)


def _write_run(
    folder, notebooks: dict, planned: list[str], failed: tuple[str, ...] = (), call: dict | None = None
) -> None:
    import yaml

    (folder / "notebooks").mkdir(parents=True)
    config = {"profile": {"name": "cpu"}, "data_dir": None, "notebooks": planned}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    if call is not None:
        (folder / "env.json").write_text(json.dumps({"cpu_count": 2, "usable_cores": 2, "call": call}))
    for name, duration in notebooks.items():
        papermill = {"duration": duration, "exception": True if name in failed else None}
        notebook = {"cells": [], "metadata": {"papermill": papermill}, "nbformat": 4, "nbformat_minor": 5}
        (folder / "notebooks" / f"{name}.ipynb").write_text(json.dumps(notebook))


WHOLE_CALL = {"notebooks": list(NOTEBOOKS), "reused_folder": False}


def test_read_run_timing_whole_sequence(tmp_path):
    run = tmp_path / "runs" / "2026-01-02-cpu"
    _write_run(run, {name: 10.0 for name in NOTEBOOKS}, list(NOTEBOOKS), call=WHOLE_CALL)
    timing = read_run_timing(run)
    assert timing["whole_sequence"] is True
    assert timing["complete"] is True
    assert timing["notebooks_seconds"] == pytest.approx(10.0 * len(NOTEBOOKS))
    assert timing["data_dir"] is None
    assert timing["usable_cores"] == 2
    assert evaluate_run_target({"cpu": timing})["met"] is True


@pytest.mark.parametrize(
    "call",
    [
        {"notebooks": ["02_miss_tuning"], "reused_folder": True},
        {"notebooks": list(NOTEBOOKS), "reused_folder": True},
        {"notebooks": list(NOTEBOOKS)[1:], "reused_folder": False},
    ],
)
def test_read_run_timing_partial_call(tmp_path, call):
    # The runner lists the union of all calls in config.yaml, so only env.json shows the last call.
    run = tmp_path / "runs" / "2026-01-02-cpu"
    _write_run(run, {name: 10.0 for name in NOTEBOOKS}, list(NOTEBOOKS), call=call)
    timing = read_run_timing(run)
    assert timing["whole_sequence"] is False
    assert "--only or into an existing folder" in evaluate_run_target({"cpu": timing})["not_judged"]


def test_read_run_timing_without_call(tmp_path):
    run = tmp_path / "runs" / "2026-01-02-cpu"
    _write_run(run, {name: 10.0 for name in NOTEBOOKS}, list(NOTEBOOKS))
    timing = read_run_timing(run)
    assert timing["whole_sequence"] is None
    assert "written by an older medlnkit" in evaluate_run_target({"cpu": timing})["not_judged"]


def test_read_run_timing_ignores_stray_notebooks(tmp_path):
    run = tmp_path / "runs" / "2026-01-02-cpu"
    _write_run(run, {**{name: 10.0 for name in NOTEBOOKS}, "99_extra": 100.0}, list(NOTEBOOKS), call=WHOLE_CALL)
    assert read_run_timing(run)["notebooks_seconds"] == pytest.approx(10.0 * len(NOTEBOOKS))


@pytest.mark.parametrize("metadata", [None, {"papermill": None}, {"papermill": {"duration": "620"}}])
def test_read_run_timing_odd_metadata(tmp_path, metadata):
    run = tmp_path / "runs" / "2026-01-02-cpu"
    _write_run(run, {"00_tour": 12.5}, ["00_tour"])
    notebook = {"cells": [], "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}
    (run / "notebooks" / "00_tour.ipynb").write_text(json.dumps(notebook))
    timing = read_run_timing(run)
    assert timing["missing_notebooks"] == ["00_tour"]
    assert timing["complete"] is False


def test_read_run_timing_failed_notebook(tmp_path):
    run = tmp_path / "runs" / "2026-01-02-cpu"
    _write_run(run, {name: 10.0 for name in NOTEBOOKS}, list(NOTEBOOKS), failed=("03_llava_med_tuning",))
    timing = read_run_timing(run)
    assert timing["complete"] is False
    assert timing["failed_notebooks"] == ["03_llava_med_tuning"]


@pytest.mark.parametrize(
    "broken, message",
    [
        ("notebooks/00_tour.ipynb", "00_tour.ipynb could not be read as JSON"),
        ("config.yaml", "config.yaml could not be read"),
        ("env.json", "env.json could not be read as JSON"),
    ],
)
def test_read_run_timing_broken_file(tmp_path, broken, message):
    run = tmp_path / "runs" / "2026-01-02-cpu"
    _write_run(run, {"00_tour": 12.5}, ["00_tour"])
    (run / broken).write_text('{"cells": [' if broken.endswith(".ipynb") or broken.endswith(".json") else "a: [b")
    with pytest.raises(MedlnkitError, match=message):
        read_run_timing(run)


def test_read_run_timing_notebooks_not_list(tmp_path):
    run = tmp_path / "runs" / "2026-01-02-cpu"
    _write_run(run, {"00_tour": 12.5}, ["00_tour"])
    (run / "config.yaml").write_text("profile: {name: cpu}\nnotebooks: 00_tour\n")
    with pytest.raises(MedlnkitError, match="has an invalid notebooks field"):
        read_run_timing(run)


def test_broken_cpu_run_kept_as_error(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "2026-01-02-cpu"
    _write_run(run, {"00_tour": 12.5}, ["00_tour"])
    (run / "notebooks" / "00_tour.ipynb").write_text('{"cells": [')
    monkeypatch.setattr("medlnkit.bench.find_latest_run", lambda profile: run)
    runs = measure_notebook_runs(get_size("tiny"))
    assert "could not be read as JSON" in runs["cpu"]["error"]
    assert runs["cpu"]["run_dir"] == str(run)
    assert evaluate_run_target(runs)["met"] is None


def test_read_run_timing_sums_notebooks(tmp_path):
    run = tmp_path / "runs" / "2026-01-02-cpu"
    _write_run(run, {"00_tour": 12.5, "01_count": 30.0}, ["00_tour", "01_count"])
    timing = read_run_timing(run)
    assert timing["profile"] == "cpu"
    assert timing["notebooks_seconds"] == pytest.approx(42.5)
    assert timing["complete"] is True
    assert find_latest_run("cpu", roots=[tmp_path]) == run.resolve()


def test_read_run_timing_flags_missing_notebooks(tmp_path):
    run = tmp_path / "runs" / "2026-01-02-cpu"
    _write_run(run, {"00_tour": 12.5}, ["00_tour", "01_count"])
    timing = read_run_timing(run)
    assert timing["complete"] is False
    assert timing["missing_notebooks"] == ["01_count"]


def test_read_run_timing_rejects_other_folders(tmp_path):
    with pytest.raises(MedlnkitError, match="config.yaml not found"):
        read_run_timing(tmp_path)


def _cpu_run(seconds=840.0, complete=True, cores=2, whole_sequence=True, data_dir=None, profile="cpu") -> dict:
    return {
        "run_dir": "runs/2026-01-02-cpu",
        "profile": profile,
        "notebooks_seconds": seconds,
        "complete": complete,
        "cpu_count": cores,
        "whole_sequence": whole_sequence,
        "data_dir": data_dir,
        "missing_notebooks": [] if complete else ["06_figures"],
        "failed_notebooks": [],
    }


@pytest.mark.parametrize(
    "run, met, reason",
    [
        (_cpu_run(), True, None),
        (_cpu_run(seconds=901.0), False, None),
        (_cpu_run(complete=False), None, "did not finish: 06_figures"),
        (_cpu_run(cores=16), None, "ran on 16 cores, not 2"),
        (_cpu_run(whole_sequence=False), None, "was last run with --only or into an existing folder"),
        (_cpu_run(whole_sequence=None), None, "written by an older medlnkit"),
        (_cpu_run(profile="smoke"), None, "ran the smoke profile, not cpu"),
        (_cpu_run(data_dir="/data/vqa_rad"), None, "read /data/vqa_rad, not the embedded sample"),
        ({"skipped": "no runs/*-cpu folder"}, None, "no runs/*-cpu folder"),
    ],
)
def test_run_target_verdicts(run, met, reason):
    target = evaluate_run_target({"cpu": run})
    assert target["met"] is met
    assert target["bound"] == 15.0
    if reason is None:
        assert "not_judged" not in target
    else:
        assert reason in target["not_judged"]


def test_run_target_reason_rendered(tiny_results):
    results = json.loads(json.dumps(tiny_results[0]))
    results["targets"][-1] = evaluate_run_target({"cpu": _cpu_run(whole_sequence=False)})
    assert "not judged: runs/2026-01-02-cpu was last run with --only" in format_bench(results)
    assert "not judged: runs/2026-01-02-cpu was last run with --only" in format_markdown(results)


def test_run_target_value_in_minutes():
    assert evaluate_run_target({"cpu": _cpu_run(seconds=840.0)})["value"] == pytest.approx(14.0)
    assert evaluate_run_target({})["value"] is None


def test_read_run_timing_reads_env(tmp_path):
    run = tmp_path / "runs" / "2026-01-02-cpu"
    _write_run(run, {"00_tour": 12.5}, ["00_tour"])
    env = {"git_commit": "abc123", "time": "2026-01-02T10:00:00", "cpu_count": 2, "torch_threads": 2}
    (run / "env.json").write_text(json.dumps(env))
    timing = read_run_timing(run)
    assert timing["git_commit"] == "abc123"
    assert timing["cpu_count"] == 2
    assert timing["started"] == "2026-01-02T10:00:00"


def test_cli_render_prints_stored_results(tiny_results, capsys):
    _, out = tiny_results
    assert main(["bench", "--render", str(out), "--markdown"]) == 0
    text = capsys.readouterr().out
    assert "| LN | `LN,LN,LN` |" in text
    assert "| generation | questions |" in text
    assert "| llava-med-v1 | `F,F,LN,F` | 7,045,826,560 |" in text
    assert "| notebook sequence | notebooks s | source |" in text


def test_cli_render_terminal_tables(tiny_results, capsys):
    _, out = tiny_results
    assert main(["bench", "--render", str(out)]) == 0
    assert "targets:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "was not found"),
        ("{not json", "is not valid JSON"),
        ('{"schema_version": 99}', "is not a medlnkit bench results file of schema version 1"),
    ],
)
def test_cli_render_bad_file(tmp_path, capsys, content, message):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    assert main(["bench", "--render", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert str(path) in err
    assert "Traceback" not in err


def test_cli_render_rejects_measurement_options(tmp_path, capsys):
    assert main(["bench", "--render", str(tmp_path / "results.json"), "--quick"]) == 2
    err = capsys.readouterr().err
    assert "--render prints a stored results file" in err
    assert "drop --quick and --out" in err


def test_results_path_that_is_a_folder(tmp_path):
    with pytest.raises(MedlnkitError, match="is a folder"):
        check_results_path(tmp_path)


def test_results_path_read_only_file(tmp_path):
    existing = tmp_path / "results.json"
    existing.write_text("{}")
    existing.chmod(0o444)
    if os.access(existing, os.W_OK):
        pytest.skip("this user (root) can write a read-only file")
    with pytest.raises(MedlnkitError, match="is not writable"):
        check_results_path(existing)


def test_results_path_under_a_file(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    with pytest.raises(MedlnkitError, match="cannot be created"):
        run_bench(size="tiny", out=blocker / "x.json")


def test_cli_bad_out_stops_before_measuring(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    monkeypatch.setattr("medlnkit.bench.measure_steps", lambda *args: pytest.fail("measured despite a bad --out"))
    assert main(["bench", "--quick", "--out", str(blocker / "x.json")]) == 2
    err = capsys.readouterr().err
    assert f"results file {blocker / 'x.json'}" in err
    assert "Traceback" not in err


def test_failed_write_keeps_results(tmp_path):
    target = tmp_path / "gone" / "results.json"
    with pytest.raises(MedlnkitError, match="the results were saved to ") as raised:
        _write_results({"schema_version": 1, "value": 0.5}, target)
    saved = str(raised.value).rsplit("saved to ", 1)[1]
    assert json.loads(open(saved).read()) == {"schema_version": 1, "value": 0.5}
    os.remove(saved)


def test_default_results_path_keeps_earlier_runs(tmp_path, monkeypatch):
    import datetime as dt

    monkeypatch.chdir(tmp_path)
    day = dt.date(2026, 1, 2)
    first = default_results_path("full", day)
    first.parent.mkdir(parents=True)
    first.write_text("{}")
    assert default_results_path("full", day).name == "bench-2026-01-02-2.json"
    (first.parent / "bench-2026-01-02-2.json").write_text("{}")
    assert default_results_path("full", day).name == "bench-2026-01-02-3.json"


def _loaded(results: dict, start: float, after: float) -> dict:
    results = json.loads(json.dumps(results))
    results["machine"]["usable_cores"] = 2
    results["machine"]["load_average_1_5_15"] = [start, start, start]
    results["machine"]["load_average_at_end"] = [start, start, start]
    for record in results["training_steps"]["miss"]["methods"].values():
        record["load_average_1min_after"] = after
    return results


def test_busy_machine_warning(tiny_results):
    busy = _loaded(tiny_results[0], start=1.0, after=4.4)
    warnings = busy_machine_warnings(busy)
    assert len(warnings) == 1
    assert "reached 4.4 on 2 usable cores" in warnings[0]
    busy["warnings"] = warnings
    assert "WARNING: the 1-minute load average reached 4.4" in format_bench(busy)
    assert "**warning:** the 1-minute load average reached 4.4" in format_markdown(busy)


def test_idle_machine_no_warning(tiny_results):
    assert busy_machine_warnings(_loaded(tiny_results[0], start=0.5, after=2.0)) == []


def test_tiny_run_records_warnings(tiny_results):
    assert isinstance(tiny_results[0]["warnings"], list)


def test_render_without_fields(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text('{"schema_version": 1}')
    assert main(["bench", "--render", str(path)]) == 2
    err = capsys.readouterr().err
    assert "lacks machine, training_steps, generation, counting, notebook_runs, targets" in err


@pytest.mark.parametrize("markdown", [False, True])
def test_render_damaged_fields(tiny_results, tmp_path, capsys, markdown):
    results = json.loads(json.dumps(tiny_results[0]))
    results["machine"] = {}
    results["targets"].append({})
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert main(["bench", "--render", str(path), *(["--markdown"] if markdown else [])]) == 2
    err = capsys.readouterr().err
    assert f"results file {path} has an unexpected field (KeyError" in err
    assert "Traceback" not in err


def test_render_a_folder(tmp_path, capsys):
    assert main(["bench", "--render", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


COMMITTED_RESULTS = sorted((SOURCE_ROOT / "bench" / "results").glob("bench-*.json"))


@pytest.mark.parametrize("path", COMMITTED_RESULTS, ids=[p.name for p in COMMITTED_RESULTS])
def test_committed_results_render(path):
    results = load_results(path)
    assert "targets:" in format_bench(results)
    assert "| model | target | value | bound | result |" in format_markdown(results)


def test_run_source_without_env():
    text = _run_source({"run_dir": "runs/x-cpu", "notebooks_seconds": 10.0})
    assert text == "runs/x-cpu: commit not recorded"


def test_format_bench_shows_skipped_model(tiny_results):
    results = json.loads(json.dumps(tiny_results[0]))
    results["training_steps"]["llava"] = {"skipped": "no LLaVA builders"}
    results["generation"]["llava"] = {"skipped": "no LLaVA builders"}
    text = format_bench(results)
    assert "training step, llava: not measured: no LLaVA builders" in text
    assert "generation llava: no LLaVA builders" in text


def test_format_markdown_has_tables(tiny_results):
    text = format_markdown(tiny_results[0])
    assert "| method | paradigm |" in text
    assert "| LN | `LN,LN,LN` |" in text
    assert "measured on the CPU" in text
