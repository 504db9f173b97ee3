"""Measure what LoRA's dropout costs on the cpu LLaVA model: saved activations and forward time.

peft applies the dropout to the input of every adapted projection, so each one adds a tensor that
autograd keeps for backward. Run from the repository root:

    PYTHONPATH=. python bench/lora_dropout.py [--out bench/results/lora-dropout-<date>.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

from medlnkit.benchmarks.machine import machine_record
from medlnkit.benchmarks.steps import saved_for_backward_bytes
from medlnkit.benchmarks.workloads import Workload, build_workload
from medlnkit.models.llava import LORA_SETTINGS, PREFIX_SETTINGS
from medlnkit.tuning import apply_paradigm

PARADIGM = "LoRA,F,LoRA,F"
FORWARD_REPEATS = 4  # The first pass warms up and is left out of the median.


def measure(dropout: float) -> dict:
    """Build the benchmark's LLaVA workload with LoRA at ``dropout`` and measure one batch's forward pass."""
    model, batch, _ = build_workload(Workload("llava-cpu", batch_size=8))
    lora = replace(LORA_SETTINGS, dropout=dropout)
    apply_paradigm(model, PARADIGM, "llava", lora=lora, prefix=PREFIX_SETTINGS)
    model.train()
    saved = saved_for_backward_bytes(model, batch)
    seconds = []
    for _ in range(FORWARD_REPEATS):
        started = time.perf_counter()
        loss = model(**batch).loss
        seconds.append(time.perf_counter() - started)
        del loss
    return {
        "dropout": dropout,
        "saved_for_backward_mb": saved / 2**20,
        "forward_seconds_median": statistics.median(seconds[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path("bench") / "results" / f"lora-dropout-{dt.date.today().isoformat()}.json"
    parser.add_argument("--out", type=Path, default=default, help="results file (JSON)")
    args = parser.parse_args()

    results = {
        "command": "PYTHONPATH=. python bench/lora_dropout.py",
        "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_record(),
        "paradigm": PARADIGM,
        "rank": LORA_SETTINGS.rank,
        "batch_size": 8,
        "runs": [measure(LORA_SETTINGS.dropout), measure(0.0)],
    }
    for run in results["runs"]:
        print(
            f"dropout {run['dropout']}: saved activations {run['saved_for_backward_mb']:.1f} MB, "
            f"forward {run['forward_seconds_median']:.2f} s (median of {FORWARD_REPEATS - 1})"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
