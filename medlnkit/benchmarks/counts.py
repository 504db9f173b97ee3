"""Time parameter counting on the meta device, as ``medlnkit count`` runs it."""

from __future__ import annotations

import statistics
import time

from medlnkit.counting import count_parameters_for


def measure_count_time(model: str, paradigm: str, repeats: int) -> dict:
    """Count ``model`` under ``paradigm`` ``1 + repeats`` times; return the first and the median time.

    The first call in a fresh process also imports the model classes and builds them for the first
    time. Later calls show the cost of one count on its own.
    """
    seconds = []
    for _ in range(1 + repeats):
        started = time.perf_counter()
        report = count_parameters_for(model, paradigm)
        seconds.append(time.perf_counter() - started)
    return {
        "model": model,
        "paradigm": paradigm,
        "total_parameters": report.total,
        "trainable_parameters": report.trainable,
        "first_seconds": seconds[0],
        "median_seconds": statistics.median(seconds[1:]) if repeats else seconds[0],
        "repeats": repeats,
    }
