"""Time one training step and measure its memory and checkpoint, for one method in one process.

A step is what :func:`medlnkit.training.train_model` does per batch: forward with the loss,
backward, an AdamW step over the trainable parameters only, and ``zero_grad(set_to_none=True)``.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from medlnkit.benchmarks.isolation import (
    current_rss_bytes,
    peak_rss_bytes,
    release_free_memory,
    reset_peak_rss,
)
from medlnkit.benchmarks.workloads import Method, Workload, apply_method, build_workload

logger = logging.getLogger(__name__)

MB = 1024 * 1024


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def training_state_bytes(parameters: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> int:
    """Return the bytes of the gradients and the optimizer state (AdamW: two moments per weight).

    The gradients are freed after each step, so they are counted from the parameters: during
    backward and the optimizer step every trainable parameter has a gradient of its own size.
    """
    gradients = _tensor_bytes(parameters)
    state = sum(_tensor_bytes(values.values()) for values in optimizer.state.values())
    return gradients + state


def save_trainable(module: torch.nn.Module, method: Method, folder: Path) -> int:
    """Save a method's checkpoint and return its size on disk in bytes.

    The kit saves the trainable parameters with safetensors; peft saves its adapter with
    ``save_pretrained`` (also safetensors). Tied parameters are stored once.
    """
    from safetensors.torch import save_file

    if method.implementation == "peft":
        module.save_pretrained(str(folder))
    else:
        tensors = {
            name: parameter.detach().contiguous()
            for name, parameter in module.named_parameters()
            if parameter.requires_grad
        }
        save_file(tensors, str(folder / "trainable.safetensors"))
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


def saved_for_backward_bytes(module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """Run one forward pass and return the bytes of the tensors autograd saves for the backward pass.

    Storages are counted once, however many tensors view them, and parameters and buffers are left
    out: this is the activation memory a method keeps, independent of the allocator.
    """
    own = {t.untyped_storage().data_ptr() for t in (*module.parameters(), *module.buffers())}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = module(**batch).loss
    del loss  # frees the graph and the saved tensors
    return sum(saved.values())


def _prepare(workload: Workload, method: Method):
    network, batch, architecture = build_workload(workload)
    module = apply_method(network, architecture, method)
    parameters = [p for p in module.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(f"method {method.key} ({method.paradigm}) left no parameter trainable")
    optimizer = torch.optim.AdamW(parameters, lr=1e-5, weight_decay=0.05)
    module.train()
    return network, module, parameters, optimizer, batch


def _train_step(
    module: torch.nn.Module, batch: dict, optimizer: torch.optim.Optimizer
) -> tuple[torch.Tensor, list[float]]:
    """Run one step; return the loss and the wall times of forward, backward and the optimizer step."""
    marks = [time.perf_counter()]
    loss = module(**batch).loss
    marks.append(time.perf_counter())
    loss.backward()
    marks.append(time.perf_counter())
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    marks.append(time.perf_counter())
    return loss, [end - start for start, end in zip(marks, marks[1:])]


def measure_training_step(workload: Workload, method: Method, warmup: int, repeats: int) -> dict:
    """Run ``warmup + repeats`` training steps of ``method`` and return times, memory and checkpoint size.

    Memory is the process's peak RSS during the steps minus its RSS just before them, i.e. what
    training adds to the loaded model and batch: activations kept for backward, gradients and
    AdamW state. The first steps are warm-up (AdamW allocates its state there) and are excluded
    from the time but not from the peak. The same parts are also counted exactly from the tensors.
    """
    network, module, parameters, optimizer, batch = _prepare(workload, method)

    release_free_memory()
    rss_before = current_rss_bytes()
    peak_was_reset = reset_peak_rss()
    seconds, cpu_seconds, phases = [], [], []
    for _ in range(warmup + repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        loss, phase_seconds = _train_step(module, batch, optimizer)
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu_started)
        phases.append(phase_seconds)
    peak = peak_rss_bytes()
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    final_loss = loss.item()
    if not math.isfinite(final_loss):
        raise ValueError(f"method {method.key}: the loss became {final_loss}")

    state_bytes = training_state_bytes(parameters, optimizer)
    model_bytes = _tensor_bytes(module.parameters()) + _tensor_bytes(module.buffers())
    saved_bytes = saved_for_backward_bytes(module, batch)
    del optimizer
    with tempfile.TemporaryDirectory(prefix="medlnkit-bench-") as folder:
        checkpoint_bytes = save_trainable(module, method, Path(folder))

    timed = seconds[warmup:]
    unique = {id(p): p for p in network.parameters()}
    return {
        "method": method.key,
        "paradigm": method.paradigm,
        "implementation": method.implementation,
        "note": method.note,
        "trainable_parameters": sum(p.numel() for p in parameters),
        "model_parameters": sum(p.numel() for p in unique.values()),
        "step_seconds_median": statistics.median(timed),
        "step_seconds": timed,
        # (max - min) / median of the timed steps: a rough measure of the timing noise.
        "step_seconds_spread": (max(timed) - min(timed)) / statistics.median(timed),
        "warmup_seconds": seconds[:warmup],
        # Medians over the timed steps of each phase; zero_grad is counted with the optimizer step.
        "forward_seconds_median": statistics.median(p[0] for p in phases[warmup:]),
        "backward_seconds_median": statistics.median(p[1] for p in phases[warmup:]),
        "optimizer_seconds_median": statistics.median(p[2] for p in phases[warmup:]),
        # CPU time of all threads: less sensitive than wall time to other processes on the cores.
        "step_cpu_seconds_median": statistics.median(cpu_seconds[warmup:]),
        "rss_before_mb": rss_before / MB,
        "peak_rss_mb": peak / MB,
        "peak_increase_mb": (peak - rss_before) / MB,
        "peak_measure": "VmHWM reset before the first step" if peak_was_reset else "ru_maxrss since start",
        "training_state_mb": state_bytes / MB,
        "saved_for_backward_mb": saved_bytes / MB,
        # Parameters and buffers (peft's copies of the tuned layers included), gradients, AdamW
        # state and saved activations: the tensors alive at the end of a forward pass in training.
        "tensor_memory_mb": (model_bytes + state_bytes + saved_bytes) / MB,
        "checkpoint_bytes": checkpoint_bytes,
        "final_loss": final_loss,
        "torch_threads": torch.get_num_threads(),
        # Runnable processes averaged over the last minute: above the core count, other work
        # competed for the cores during these steps and slowed them.
        "load_average_1min_after": load_after,
    }


def measure_paired_step_time(workload: Workload, first: Method, second: Method, warmup: int, pairs: int) -> dict:
    """Time two methods on identical copies of one model, alternating their steps, in one process.

    Each pair runs one step of each method back to back, in alternating order, so a change in the
    machine's load affects both sides of a pair alike. The result is the median of the per-pair
    time ratios ``first / second``. Memory is not measured here (both models share the process).
    """
    sides = [_prepare(workload, method) for method in (first, second)]
    for _ in range(warmup):
        for _network, module, _parameters, optimizer, batch in sides:
            _train_step(module, batch, optimizer)
    seconds: list[list[float]] = [[], []]
    for index in range(pairs):
        order = (0, 1) if index % 2 == 0 else (1, 0)
        for side in order:
            _network, module, _parameters, optimizer, batch = sides[side]
            started = time.perf_counter()
            _train_step(module, batch, optimizer)
            seconds[side].append(time.perf_counter() - started)
    ratios = [a / b for a, b in zip(*seconds)]
    return {
        "first": first.key,
        "second": second.key,
        "pairs": pairs,
        "first_seconds": seconds[0],
        "second_seconds": seconds[1],
        "ratios": ratios,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
