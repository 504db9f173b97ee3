"""``medlnkit bench``: measure what LN-tuning saves against full fine-tuning, the other methods and peft.

One run measures, each in a fresh worker process (see :mod:`medlnkit.benchmarks.isolation`):

* one training step per method (full, LN, Attn, FFN, LoRA, Prefix, and peft's LN-tuning) on MISS:
  median step time after warm-up, the peak RSS the steps add to the loaded model, the exact bytes of
  gradients and AdamW state, and the size of the checkpoint of the trainable parameters;
* the time to count parameters on the meta device (MISS and the 7B LLaVA-Med);
* generation throughput, batched against one question at a time;
* at size ``full``, the wall time of the smoke profile's notebook sequence; the cpu profile's time
  is read from the newest ``runs/*-cpu`` folder, never run here (it takes much longer).

Sizes: ``full`` (MISS-base at 480 px, the default), ``quick`` (MISS-base at 224 px, fewer repeats)
and ``tiny`` (the smoke model, for tests; its figures mean nothing). Results are written as JSON.

NOTE: every measurement runs on the CPU, memory included (RSS). There is no CUDA path yet, so the
7B LLaVA-Med architecture is counted here but never trained.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from medlnkit.benchmarks.counts import measure_count_time
from medlnkit.benchmarks.generation import measure_llava_generation, measure_miss_generation
from medlnkit.benchmarks.isolation import WorkerError, run_isolated
from medlnkit.benchmarks.machine import machine_record
from medlnkit.benchmarks.runs import find_latest_run, read_run_timing, time_notebook_run
from medlnkit.benchmarks.steps import measure_paired_step_time, measure_training_step
from medlnkit.benchmarks.workloads import METHODS, MODEL_DESCRIPTIONS, Workload, workload_architecture
from medlnkit.errors import MedlnkitError
from medlnkit.profiles import get_profile

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class StepSettings:
    """The training-step measurement of one model."""

    model: str  # a workload model key (see medlnkit.benchmarks.workloads)
    batch_size: int  # questions per training step
    warmup_steps: int  # steps run before timing (AdamW allocates its state in the first)
    timed_steps: int  # steps whose median time is reported
    paired_steps: int  # alternating step pairs of the kit's and peft's LN-tuning in one process


@dataclass(frozen=True)
class BenchSize:
    """How much a benchmark run measures; ``full`` is the one whose figures are reported."""

    name: str
    miss: StepSettings
    llava: StepSettings
    generation_profile: str  # the MISS and LLaVA profile whose models generate answers
    generation_questions: int  # test questions of the embedded sample
    generation_rounds: int  # alternating rounds of batched and one-at-a-time generation
    count_repeats: int  # timed counts after the first
    notebook_profiles: tuple[str, ...]  # profiles whose whole notebook sequence is run and timed
    threads: int | None = None  # torch threads per worker (None: torch's default)


# MISS trains 2 questions per step (the study's batch of 16 at 480 px would take minutes per step on
# a CPU); LLaVA trains the cpu profile's batch of 8.
SIZES = {
    "full": BenchSize(
        "full", StepSettings("miss-base-480", 2, 1, 3, 6), StepSettings("llava-cpu", 8, 1, 5, 10),
        "cpu", 64, 2, 5, ("smoke",),
    ),
    "quick": BenchSize(
        "quick", StepSettings("miss-base-224", 2, 1, 2, 4), StepSettings("llava-cpu", 8, 1, 3, 4),
        "cpu", 32, 1, 3, (),
    ),
    "tiny": BenchSize(
        "tiny", StepSettings("miss-smoke", 2, 1, 1, 2), StepSettings("llava-smoke", 2, 1, 1, 2),
        # One thread: the tiny figures mean nothing, and on a busy machine a second thread only
        # adds waits at every operation's synchronisation.
        "smoke", 4, 1, 1, (), threads=1,
    ),
}  # fmt: skip

# Counted on the meta device: the study's two architectures under an LN paradigm each.
COUNTS = (("miss", "T,LN,T"), ("llava-med-v1", "F,F,LN,F"))


@dataclass(frozen=True)
class Target:
    """A figure the kit promises, with the bound that it must meet."""

    key: str  # a top-level field of the results
    description: str
    bound: float
    at_most: bool  # True: value <= bound; False: value >= bound


TARGETS = (
    Target("ln_over_full_step_time", "LN-tuning step time at most 0.75 x full fine-tuning's", 0.75, True),
    Target(
        "ln_over_full_peak_memory",
        "LN-tuning's training memory (peak RSS over the loaded model) at most 0.5 x full fine-tuning's",
        0.5,
        True,
    ),
    # Both implementations do the same arithmetic, so the true time ratio is close to 1. It is
    # measured with alternating steps in one process, whose single-pair ratios ranged from 0.98 to
    # 1.013 on an idle machine; the bound allows for that resolution.
    Target(
        "ln_over_peft_ln_step_time",
        "the kit's LN-tuning step no slower than peft's (paired median, 2% resolution)",
        1.02,
        True,
    ),
    # Peak RSS of identical runs varied by up to 100 MB, more than the true difference, so memory is
    # compared on the tensors themselves: parameters, gradients, AdamW state and saved activations.
    Target(
        "ln_over_peft_ln_tensor_memory",
        "the kit's LN-tuning tensor memory no larger than peft's (exact)",
        1.0,
        True,
    ),
    Target("ln_over_peft_ln_checkpoint_size", "the kit's LN checkpoint no larger than peft's", 1.0, True),
    Target("batched_over_sequential_generation", "batched generation at least 3 x one question at a time", 3.0, False),
)


# The default profile's whole notebook sequence (``make run``), read from its run folder.
RUN_PROFILE = "cpu"
RUN_MINUTES_BOUND = 15.0
RUN_CORES = 2


def _run_not_judged(record: dict) -> str | None:
    """Return why a cpu run record cannot be judged against the 15-minute bound, or None when it can."""
    if "notebooks_seconds" not in record:
        return record.get("error") or record.get("skipped") or "no run was read"
    where = record.get("run_dir", "the run folder")
    if record.get("profile") != RUN_PROFILE:
        return f"{where} ran the {record.get('profile')} profile, not {RUN_PROFILE}"
    if record.get("whole_sequence") is None:
        return f"{where} does not record how it was run (written by an older medlnkit); run `make run` again"
    if not record["whole_sequence"]:
        return (
            f"{where} was last run with --only or into an existing folder, which reuses finished results; "
            "run `make run` into a new folder (remove the old one first)"
        )
    if record.get("data_dir"):
        return f"{where} read {record['data_dir']}, not the embedded sample of the default run"
    if not record.get("complete"):
        lost = [*record.get("missing_notebooks", []), *record.get("failed_notebooks", [])]
        return f"{where} did not finish: {', '.join(lost) or 'notebooks missing'}"
    cores = record.get("usable_cores") or record.get("cpu_count")
    if cores != RUN_CORES:
        return f"{where} ran on {cores or 'an unknown number of'} cores, not {RUN_CORES}"
    return None


def evaluate_run_target(notebook_runs: dict) -> dict:
    """Judge the default profile's notebook sequence against its bound of 15 minutes on 2 cores.

    ``met`` is None, with the reason in ``not_judged``, unless the run read is the whole sequence on
    the embedded sample, finished, on 2 cores.
    """
    record = notebook_runs.get(RUN_PROFILE) or {}
    minutes = record["notebooks_seconds"] / 60 if "notebooks_seconds" in record else None
    reason = _run_not_judged(record)
    target = {
        "model": f"{RUN_PROFILE} run",
        "key": "notebook_sequence_minutes",
        "description": f"the {RUN_PROFILE} profile's notebook sequence under {RUN_MINUTES_BOUND:.0f} "
        f"minutes on {RUN_CORES} cores",
        "bound": RUN_MINUTES_BOUND,
        "comparison": "<=",
        "value": minutes,
        "met": None if reason else minutes <= RUN_MINUTES_BOUND,
    }
    if reason:
        target["not_judged"] = reason
    return target


def get_size(name: str) -> BenchSize:
    """Return the settings of a benchmark size, raising MedlnkitError for an unknown name."""
    if name not in SIZES:
        raise MedlnkitError(f"unknown benchmark size {name!r}: expected one of {', '.join(SIZES)}")
    return SIZES[name]


def default_results_path(size: str, today: dt.date | None = None) -> Path:
    """Return ``bench/results/bench-<date>.json`` (``bench-<date>-<size>.json`` for other sizes).

    When that file exists, ``-2``, ``-3`` and so on are appended, so a second run the same day
    keeps the first one's results.
    """
    stamp = (today or dt.date.today()).isoformat()
    suffix = "" if size == "full" else f"-{size}"
    path = Path("bench") / "results" / f"bench-{stamp}{suffix}.json"
    number = 2
    while path.exists():
        path = path.with_name(f"bench-{stamp}{suffix}-{number}.json")
        number += 1
    return path


def check_results_path(path: Path) -> Path:
    """Create the folder of ``path`` and check that a file can be written there, before measuring.

    Raises MedlnkitError naming the path when it is a folder, when its folder cannot be created, or
    when the folder or an existing file there is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise MedlnkitError(f"results file {path} is a folder: pass a file name such as {path / 'bench.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MedlnkitError(
            f"the folder of results file {path} cannot be created ({error}): pass --out with a writable path"
        ) from error
    if not os.access(path.parent, os.W_OK):
        raise MedlnkitError(f"the folder {path.parent} is not writable: pass --out with a writable path")
    if path.exists() and not os.access(path, os.W_OK):
        raise MedlnkitError(f"results file {path} is not writable: pass --out with another file")
    return path


def _write_results(results: dict, path: Path) -> None:
    """Write ``results`` to ``path``. If that fails, write them to a temporary file named in the raised error."""
    text = json.dumps(results, indent=2) + "\n"
    try:
        path.write_text(text)
    except OSError as error:
        with tempfile.NamedTemporaryFile("w", prefix="medlnkit-bench-", suffix=".json", delete=False) as handle:
            handle.write(text)
        raise MedlnkitError(
            f"writing results file {path} failed ({error}); the results were saved to {handle.name}"
        ) from error


def _command_line(quick: bool, size: str) -> str:
    argv = sys.argv
    if argv and Path(argv[0]).name in ("medlnkit", "__main__.py") and "bench" in argv[1:]:
        return "medlnkit " + " ".join(argv[1:])
    return f"medlnkit.bench.run_bench(quick={quick}, size={size!r}) called from {Path(argv[0]).name if argv else 'Python'}"


def _attempt(label: str, function, *args, threads: int | None = None) -> dict:
    """Run one measurement in its own worker; return its result, or ``{"error": ...}`` when it fails."""
    logger.info("measuring %s", label)
    started = time.perf_counter()
    try:
        result = run_isolated(function, *args, threads=threads)
    except WorkerError as error:
        logger.error("%s failed: %s", label, error)
        return {"error": str(error)}
    logger.info("measured %s in %.0f s", label, time.perf_counter() - started)
    return result


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator in (None, 0):
        return None
    return numerator / denominator


def _field(record: dict | None, key: str) -> float | None:
    return None if record is None or "error" in record else record.get(key)


def step_ratios(methods: dict[str, dict]) -> dict[str, dict]:
    """Return each method's step time, training memory and peak RSS as fractions of full fine-tuning's."""
    full = methods.get("full")
    ratios = {}
    for key, record in methods.items():
        ratios[key] = {
            "step_time_over_full": _ratio(_field(record, "step_seconds_median"), _field(full, "step_seconds_median")),
            "step_cpu_time_over_full": _ratio(
                _field(record, "step_cpu_seconds_median"), _field(full, "step_cpu_seconds_median")
            ),
            "peak_memory_over_full": _ratio(_field(record, "peak_increase_mb"), _field(full, "peak_increase_mb")),
            "peak_rss_over_full": _ratio(_field(record, "peak_rss_mb"), _field(full, "peak_rss_mb")),
            "checkpoint_over_full": _ratio(_field(record, "checkpoint_bytes"), _field(full, "checkpoint_bytes")),
        }
    return ratios


def measure_steps(settings: StepSettings, threads: int | None = None) -> dict:
    """Measure every method of the model's architecture, each in a fresh worker, then LN against peft."""
    architecture = workload_architecture(settings.model)
    workload = Workload(settings.model, settings.batch_size)
    methods = {}
    for method in METHODS[architecture]:
        methods[method.key] = _attempt(
            f"{settings.model} {method.key} ({method.paradigm}, {method.implementation})",
            measure_training_step, workload, method, settings.warmup_steps, settings.timed_steps,
            threads=threads,
        )  # fmt: skip
    by_key = {method.key: method for method in METHODS[architecture]}
    paired = _attempt(
        f"{settings.model} LN against peft-LN, alternating steps",
        measure_paired_step_time, workload, by_key["LN"], by_key["peft-LN"], settings.warmup_steps,
        settings.paired_steps, threads=threads,
    )  # fmt: skip
    return {
        "model": MODEL_DESCRIPTIONS[settings.model],
        "model_key": settings.model,
        "batch_size": settings.batch_size,
        "warmup_steps": settings.warmup_steps,
        "timed_steps": settings.timed_steps,
        "methods": methods,
        "ratios": step_ratios(methods),
        "ln_against_peft_ln": paired,
    }


def llava_unavailable() -> str | None:
    """Return why LLaVA cannot be benchmarked in this tree, or None when it can."""
    if importlib.util.find_spec("medlnkit.models.llava") is None:
        return "medlnkit.models.llava (the LLaVA builders) is not in this installation"
    return None


def measure_notebook_runs(size: BenchSize) -> dict:
    """Time the notebook sequence of the size's profiles, and read the cpu profile's from runs/."""
    runs = {}
    for profile in size.notebook_profiles:
        with tempfile.TemporaryDirectory(prefix=f"medlnkit-bench-run-{profile}-") as folder:
            try:
                runs[profile] = time_notebook_run(profile, Path(folder) / "run")
            except MedlnkitError as error:
                logger.error("timing the %s notebook run failed: %s", profile, error)
                runs[profile] = {"error": str(error)}
    if "smoke" not in runs:
        runs["smoke"] = {"skipped": f"the smoke notebook run is timed at size full only (this run: {size.name})"}
    latest = find_latest_run("cpu")
    if latest is None:
        runs["cpu"] = {
            "skipped": "no runs/*-cpu folder with executed notebooks: `medlnkit run --profile cpu` "
            "writes one, and the next bench reads its times"
        }
    else:
        try:
            runs["cpu"] = read_run_timing(latest)
        # Any failure is kept as an error, because this is the last step and every measurement is done.
        except (MedlnkitError, TypeError, AttributeError, ValueError, KeyError) as error:
            logger.error("reading the cpu run in %s failed: %s", latest, error)
            runs["cpu"] = {"error": str(error), "run_dir": str(latest)}
    runs["paper"] = {"skipped": "the paper profile needs a GPU, the study's weights and the datasets"}
    return runs


def evaluate_targets(summary: dict, model: str = "miss") -> list[dict]:
    """Return each target with its value in ``summary`` and whether it is met (None when not measured)."""
    evaluated = []
    for target in TARGETS:
        value = summary.get(target.key)
        if value is None:
            met = None
        elif target.at_most:
            met = value <= target.bound
        else:
            met = value >= target.bound
        evaluated.append(
            {
                "model": model,
                "key": target.key,
                "description": target.description,
                "bound": target.bound,
                "comparison": "<=" if target.at_most else ">=",
                "value": value,
                "met": met,
            }
        )
    return evaluated


def summarize(steps: dict, generation: dict) -> dict:
    """Return the headline ratios of one model: LN against full fine-tuning and peft, and generation."""
    methods = steps.get("methods", {})
    ln, full, peft = methods.get("LN"), methods.get("full"), methods.get("peft-LN")

    def training_tensors(record: dict | None) -> float | None:
        state, saved = _field(record, "training_state_mb"), _field(record, "saved_for_backward_mb")
        return None if state is None or saved is None else state + saved

    return dict(
        ln_over_full_step_time=_ratio(_field(ln, "step_seconds_median"), _field(full, "step_seconds_median")),
        ln_over_full_step_cpu_time=_ratio(
            _field(ln, "step_cpu_seconds_median"), _field(full, "step_cpu_seconds_median")
        ),
        ln_over_full_peak_memory=_ratio(_field(ln, "peak_increase_mb"), _field(full, "peak_increase_mb")),
        ln_over_full_peak_rss=_ratio(_field(ln, "peak_rss_mb"), _field(full, "peak_rss_mb")),
        # Gradients, AdamW state and saved activations, counted from the tensors.
        ln_over_full_training_tensors=_ratio(training_tensors(ln), training_tensors(full)),
        ln_over_peft_ln_step_time=_field(steps.get("ln_against_peft_ln"), "ratio_median"),
        ln_over_peft_ln_separate_step_time=_ratio(
            _field(ln, "step_seconds_median"), _field(peft, "step_seconds_median")
        ),
        ln_over_peft_ln_peak_memory=_ratio(_field(ln, "peak_increase_mb"), _field(peft, "peak_increase_mb")),
        ln_over_peft_ln_tensor_memory=_ratio(_field(ln, "tensor_memory_mb"), _field(peft, "tensor_memory_mb")),
        ln_over_peft_ln_checkpoint_size=_ratio(_field(ln, "checkpoint_bytes"), _field(peft, "checkpoint_bytes")),
        batched_over_sequential_generation=_field(generation, "batched_over_sequential"),
    )


def run_bench(quick: bool = False, out: Path | None = None, size: str | None = None) -> dict:
    """Run the benchmark, write its results as JSON to ``out`` and return them.

    ``size`` is ``full``, ``quick`` or ``tiny``; when None, ``quick`` selects it. ``out`` defaults
    to :func:`default_results_path`. A measurement that fails is recorded as ``{"error": ...}`` and
    the run goes on; the ratios that need it are then None.
    """
    settings = get_size(size or ("quick" if quick else "full"))
    path = check_results_path(Path(out) if out is not None else default_results_path(settings.name))
    started = time.perf_counter()
    results = {
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": _command_line(quick, settings.name),
        "size": settings.name,
        "settings": asdict(settings),
        "machine": machine_record(),
        "model": MODEL_DESCRIPTIONS[settings.miss.model],
    }
    profile = get_profile(settings.generation_profile)
    generation_args = (settings.generation_questions, profile.miss_train.eval_batch_size, settings.generation_rounds)
    threads = settings.threads
    results["training_steps"] = {"miss": measure_steps(settings.miss, threads)}
    results["generation"] = {
        "miss": _attempt(
            f"MISS {profile.name} generation", measure_miss_generation, profile.name, *generation_args,
            threads=threads,
        )  # fmt: skip
    }
    reason = llava_unavailable()
    if reason is None:
        results["training_steps"]["llava"] = measure_steps(settings.llava, threads)
        generation_args = (settings.generation_questions, profile.llava_train.eval_batch_size, settings.generation_rounds)
        results["generation"]["llava"] = _attempt(
            f"LLaVA {profile.name} generation", measure_llava_generation, profile.name, *generation_args,
            threads=threads,
        )  # fmt: skip
    else:
        logger.warning("LLaVA is not measured: %s", reason)
        results["training_steps"]["llava"] = {"skipped": reason}
        results["generation"]["llava"] = {"skipped": reason}
    results["counting"] = [
        _attempt(
            f"counting {model} {paradigm}", measure_count_time, model, paradigm, settings.count_repeats,
            threads=threads,
        )  # fmt: skip
        for model, paradigm in COUNTS
    ]
    results["notebook_runs"] = measure_notebook_runs(settings)
    results["summary"] = {
        model: summarize(results["training_steps"][model], results["generation"][model])
        for model in ("miss", "llava")
    }
    # The study's efficiency claim is about MISS, so its ratios are the headline figures.
    results.update(results["summary"]["miss"])
    results["targets"] = [
        target for model, summary in results["summary"].items() for target in evaluate_targets(summary, model)
    ]
    results["targets"].append(evaluate_run_target(results["notebook_runs"]))
    results["machine"]["load_average_at_end"] = _load_average()
    results["warnings"] = busy_machine_warnings(results)
    for warning in results["warnings"]:
        logger.warning(warning)
    results["seconds"] = time.perf_counter() - started

    _write_results(results, path)
    logger.info("wrote %s", path)
    return results


def busy_machine_warnings(results: dict) -> list[str]:
    """Return a warning when the 1-minute load average exceeded the usable cores plus one.

    The benchmark's own threads add about one unit per core. A higher load means that other
    processes competed for the cores, which makes the times unreliable.
    """
    machine = results.get("machine") or {}
    cores = machine.get("usable_cores") or 1
    loads = [(machine.get("load_average_1_5_15") or [None])[0], (machine.get("load_average_at_end") or [None])[0]]
    for section in results.get("training_steps", {}).values():
        loads += [record.get("load_average_1min_after") for record in section.get("methods", {}).values()]
    loads = [load for load in loads if load is not None]
    if not loads or max(loads) <= cores + 1:
        return []
    return [
        f"the 1-minute load average reached {max(loads):.1f} on {cores} usable cores: other processes "
        "competed for the cores, so the times and their ratios are not reliable; rerun on an idle machine"
    ]


REQUIRED_FIELDS = ("machine", "training_steps", "generation", "counting", "notebook_runs", "targets")


def load_results(path: Path) -> dict:
    """Read a results file that :func:`run_bench` wrote, raising MedlnkitError when it is not one."""
    path = Path(path)
    if path.is_dir():
        raise MedlnkitError(f"results file {path} is a folder: pass a file under bench/results/")
    if not path.is_file():
        raise MedlnkitError(f"results file {path} was not found: pass a file under bench/results/")
    try:
        results = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MedlnkitError(f"results file {path} is not valid JSON ({error}): pass a file that medlnkit bench wrote") from error
    if not isinstance(results, dict) or results.get("schema_version") != SCHEMA_VERSION:
        raise MedlnkitError(
            f"results file {path} is not a medlnkit bench results file of schema version {SCHEMA_VERSION}: "
            "pass a file that medlnkit bench wrote"
        )
    missing = [field for field in REQUIRED_FIELDS if not isinstance(results.get(field), (dict, list))]
    if missing:
        raise MedlnkitError(f"results file {path} lacks {', '.join(missing)}: rerun medlnkit bench to write a complete one")
    return results


def _load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _phases(record: dict) -> str:
    keys = ("forward_seconds_median", "backward_seconds_median", "optimizer_seconds_median")
    return " / ".join(_number(record.get(key)) for key in keys)


def _paired_line(record: dict | None) -> str:
    if record is None or "error" in record:
        return f"LN against peft-LN, alternating steps: {(record or {}).get('error', 'not measured')}"
    return (
        f"LN against peft-LN, alternating steps: median time ratio {record['ratio_median']:.3f} "
        f"(single pairs {record['ratio_min']:.3f} to {record['ratio_max']:.3f}, {record['pairs']} pairs)"
    )


def format_bench(results: dict) -> str:
    """Render benchmark results as tables for a terminal."""
    machine = results["machine"]
    lines = [
        f"medlnkit bench ({results['size']}), {results['created']}",
        f"machine: {machine['cpu_model']}, {machine['usable_cores']} cores, {_number(machine['memory_gib'], 1)} GiB, "
        f"torch {machine['torch']} ({machine['torch_threads']} threads), load at start "
        f"{', '.join(_number(v) for v in machine['load_average_1_5_15'] or [])}",
        f"command: {results['command']}",
        *(f"WARNING: {warning}" for warning in results.get("warnings", [])),
    ]
    for name, section in results["training_steps"].items():
        if "skipped" in section:
            lines += ["", f"training step, {name}: not measured: {section['skipped']}"]
            continue
        lines += ["", f"training step, {section['model']}, batch {section['batch_size']}, "
                  f"median of {section['timed_steps']} after {section['warmup_steps']} warm-up"]  # fmt: skip
        lines.append(
            f"{'method':<18}{'paradigm':<17}{'trainable':>13}{'step s':>9}  {'fwd / bwd / opt s':<20}{'x full':>6}{'cpu x':>7}"
            f"{'memory MB':>11}{'x full':>8}{'state MB':>10}{'saved MB':>10}{'ckpt MB':>10}{'load':>6}"
        )
        for key, record in section["methods"].items():
            if "error" in record:
                lines.append(f"{key:<18}{record['error']}")
                continue
            ratio = section["ratios"][key]
            lines.append(
                f"{key:<18}{record['paradigm']:<17}{record['trainable_parameters']:>13,}"
                f"{record['step_seconds_median']:>9.2f}  {_phases(record):<20}{_number(ratio['step_time_over_full']):>6}"
                f"{_number(ratio['step_cpu_time_over_full']):>7}"
                f"{record['peak_increase_mb']:>11.0f}{_number(ratio['peak_memory_over_full']):>8}"
                f"{record['training_state_mb']:>10.1f}{record['saved_for_backward_mb']:>10.1f}"
                f"{record['checkpoint_bytes'] / 2**20:>10.2f}{_number(record.get('load_average_1min_after'), 1):>6}"
            )
        lines.append(_paired_line(section.get("ln_against_peft_ln")))
    lines.append("")
    for name, record in results["generation"].items():
        if "error" in record or "skipped" in record:
            lines.append(f"generation {name}: {record.get('error') or record.get('skipped')}")
            continue
        lines.append(
            f"generation {name}: {record['questions']} questions, batched (batch {record['batch_size']}) "
            f"{record['batched_questions_per_second']:.2f}/s, one at a time "
            f"{record['sequential_questions_per_second']:.2f}/s, ratio {record['batched_over_sequential']:.1f}; "
            f"{record['answers_identical']}/{record['questions']} answers identical"
        )
    for record in results["counting"]:
        if "error" in record:
            lines.append(f"counting: {record['error']}")
            continue
        lines.append(
            f"counting {record['model']} {record['paradigm']}: {record['total_parameters']:,} parameters, "
            f"first {record['first_seconds']:.2f} s, then {record['median_seconds']:.2f} s"
        )
    for profile, record in results["notebook_runs"].items():
        if "notebooks_seconds" in record:
            if "wall_seconds" in record:
                wall, where = f", wall {record['wall_seconds']:.0f} s", ""
            else:
                wall, where = "", f" (read from {_run_source(record)})"
            lines.append(f"notebook run {profile}: notebooks {record['notebooks_seconds']:.0f} s{wall}{where}")
        else:
            lines.append(f"notebook run {profile}: {record.get('error') or record.get('skipped')}")
    lines += ["", "targets:"]
    for target in results["targets"]:
        short = {True: "met", False: "MISSED", None: "-"}[target["met"]]
        note = f" ({_verdict(target, 'MISSED')})" if target["met"] is None else ""
        lines.append(
            f"  {target.get('model', '-'):<9}{short:<8}{target['description']}: "
            f"{_number(target['value'], 3)} {target['comparison']} {target['bound']}{note}"
        )
    return "\n".join(lines)



def _run_source(record: dict) -> str:
    """Describe a notebook-run record read from a run folder: its folder, commit, cores and start."""
    details = [f"commit {record['git_commit'][:10]}" if record.get("git_commit") else "commit not recorded"]
    if record.get("cpu_count"):
        details.append(f"{record['cpu_count']} cores")
    if record.get("started"):
        details.append(f"started {record['started']}")
    if "complete" in record and not record["complete"]:
        details.append("incomplete")
    if "whole_sequence" in record and not record["whole_sequence"]:
        details.append("some notebooks only")
    return f"{record.get('run_dir', 'a run folder')}: {', '.join(details)}"


def _verdict(target: dict, missed: str) -> str:
    if target["met"] is None:
        return f"not judged: {target['not_judged']}" if target.get("not_judged") else "not measured"
    return "met" if target["met"] else missed


def _markdown_row(cells) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _markdown_other_parts(results: dict) -> list[str]:
    """Return the generation, counting and notebook-run tables of :func:`format_markdown`."""
    lines = [
        _markdown_row(["generation", "questions", "batch", "batched questions/s", "one at a time questions/s",
                       "batched x one at a time", "answers identical"]),  # fmt: skip
        _markdown_row(["---"] * 7),
    ]
    for name, record in results["generation"].items():
        if "error" in record or "skipped" in record:
            lines.append(_markdown_row([name, record.get("error") or record.get("skipped"), *[""] * 5]))
            continue
        lines.append(
            _markdown_row([
                name, record["questions"], record["batch_size"], f"{record['batched_questions_per_second']:.2f}",
                f"{record['sequential_questions_per_second']:.2f}", f"{record['batched_over_sequential']:.1f}",
                f"{record['answers_identical']}/{record['questions']}",
            ])  # fmt: skip
        )
    lines += [
        "",
        _markdown_row(["counting (meta device)", "paradigm", "parameters", "first call s", "later calls s"]),
        _markdown_row(["---"] * 5),
    ]
    for record in results["counting"]:
        if "error" in record:
            lines.append(_markdown_row(["error", record["error"], "", "", ""]))
            continue
        lines.append(
            _markdown_row([record["model"], f"`{record['paradigm']}`", f"{record['total_parameters']:,}",
                           f"{record['first_seconds']:.2f}", f"{record['median_seconds']:.2f}"])  # fmt: skip
        )
    lines += ["", _markdown_row(["notebook sequence", "notebooks s", "source"]), _markdown_row(["---"] * 3)]
    for profile, record in results["notebook_runs"].items():
        if "notebooks_seconds" not in record:
            lines.append(_markdown_row([profile, "-", record.get("error") or record.get("skipped")]))
            continue
        if "wall_seconds" in record:
            source = f"timed by the benchmark: `{record['command']}`, wall {record['wall_seconds']:.0f} s"
        else:
            source = f"read from {_run_source(record)}"
        lines.append(_markdown_row([profile, f"{record['notebooks_seconds']:.0f}", source]))
    return lines


def format_markdown(results: dict) -> str:
    """Render benchmark results as Markdown tables, for docs/benchmarks.md."""
    machine = results["machine"]
    load = ", ".join(_number(v) for v in machine["load_average_1_5_15"] or [])
    load_end = ", ".join(_number(v) for v in machine.get("load_average_at_end") or [])
    source = machine.get("source") or {}
    lines = [
        f"- command: `{results['command']}` (size {results['size']}), {results['created']}, "
        f"{results.get('seconds', 0) / 60:.1f} min",
        f"- machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, "
        f"{_number(machine['memory_gib'], 1)} GiB, measured on the CPU "
        f"(CUDA available: {'yes' if machine['cuda_available'] else 'no'}); load average (1, 5, 15 min) {load} at start, "
        f"{load_end} at end",
        f"- software: Python {machine['python']}, torch {machine['torch']} ({machine['torch_threads']} threads), "
        f"transformers {machine['transformers']}, peft {machine['peft']}; source commit "
        f"{(source.get('commit') or 'unknown')[:10]}{' with local changes' if source.get('modified') else ''}",
        *(f"- **warning:** {warning}" for warning in results.get("warnings", [])),
    ]
    for name, section in results["training_steps"].items():
        lines += [""]
        if "skipped" in section:
            lines.append(f"Training step, {name}: not measured ({section['skipped']}).")
            continue
        lines += [
            f"Training step, {section['model']}; batch {section['batch_size']}, median of "
            f"{section['timed_steps']} steps after {section['warmup_steps']} warm-up:",
            "",
            _markdown_row(["method", "paradigm", "trainable", "step s", "forward / backward / AdamW s",
                           "x full", "CPU time x full",
                           "training memory MB", "x full", "grads + AdamW MB", "saved activations MB",
                           "checkpoint MB", "load after"]),  # fmt: skip
            _markdown_row(["---"] * 13),
        ]
        for key, record in section["methods"].items():
            if "error" in record:
                lines.append(_markdown_row([key, "error", record["error"], *[""] * 10]))
                continue
            ratio = section["ratios"][key]
            lines.append(
                _markdown_row([
                    key, f"`{record['paradigm']}`", f"{record['trainable_parameters']:,}",
                    f"{record['step_seconds_median']:.2f}", _phases(record), _number(ratio["step_time_over_full"]),
                    _number(ratio["step_cpu_time_over_full"]), f"{record['peak_increase_mb']:,.0f}",
                    _number(ratio["peak_memory_over_full"]), f"{record['training_state_mb']:,.1f}",
                    f"{record['saved_for_backward_mb']:,.1f}", f"{record['checkpoint_bytes'] / 2**20:,.2f}",
                    _number(record.get("load_average_1min_after"), 1),
                ])  # fmt: skip
            )
        lines += ["", _paired_line(section.get("ln_against_peft_ln")) + "."]
    lines += ["", *_markdown_other_parts(results)]
    lines += ["", _markdown_row(["model", "target", "value", "bound", "result"]), _markdown_row(["---"] * 5)]
    for target in results["targets"]:
        verdict = _verdict(target, "**missed**")
        lines.append(
            _markdown_row([target.get("model", "-"), target["description"], _number(target["value"], 3),
                           f"{target['comparison']} {target['bound']}", verdict])  # fmt: skip
        )
    return "\n".join(lines)
