"""Run each measurement in a fresh process, and read that process's resident memory.

Memory is measured as resident set size (RSS) from ``/proc``, because torch's CPU tensors are
allocated outside Python's allocator (tracemalloc does not see them). Every measurement runs in a
new process so that one method's leftovers (freed but cached memory, a higher peak) cannot change
the next method's figures.

The processes are forked from a ``forkserver`` that has already imported torch, transformers and
peft but has run no tensor operation. A child therefore starts in about 0.1 s instead of the 6 s
of a fresh interpreter, and it inherits no OpenMP thread pool, which is what makes forking safe.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import multiprocessing
import os
import resource
import traceback
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

# Imported once by the fork server, so each worker starts with them loaded.
PRELOAD_MODULES = [
    "torch",
    "transformers",
    "peft",
    "safetensors.torch",
    "medlnkit.benchmarks.workloads",
    # Skipped by the fork server when missing: the LLaVA part is then reported as not measured.
    "medlnkit.models.llava",
]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_context: multiprocessing.context.BaseContext | None = None


class WorkerError(RuntimeError):
    """A measurement failed inside its worker process; the message carries the worker's error."""


def _get_context() -> multiprocessing.context.BaseContext:
    global _context
    if _context is None:
        if "forkserver" in multiprocessing.get_all_start_methods():
            _context = multiprocessing.get_context("forkserver")
            # Has no effect when this process already started a fork server (then workers
            # import the modules themselves, which is slower but gives the same figures).
            _context.set_forkserver_preload(PRELOAD_MODULES)
        else:
            _context = multiprocessing.get_context("spawn")
    return _context


def _child(function: Callable[..., dict], args: tuple, threads: int | None, connection) -> None:
    try:
        if threads:
            import torch

            torch.set_num_threads(threads)
        result = function(*args)
        connection.send(("ok", result))
    except BaseException as error:  # reported to the parent, which raises WorkerError
        summary = "".join(traceback.format_exception_only(type(error), error)).strip()
        frames = traceback.extract_tb(error.__traceback__)[-3:]
        where = "; ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames)
        connection.send(("error", f"{summary} (at {where})"))
    finally:
        connection.close()


def run_isolated(function: Callable[..., dict], *args, threads: int | None = None) -> dict:
    """Call ``function(*args)`` in a fresh worker process and return its result (a picklable dict).

    ``threads`` sets torch's intra-op threads in the worker (None keeps torch's default, one per
    physical core).

    Raises WorkerError with the worker's exception when it fails, and when the worker dies without
    an answer (for example killed by the kernel when memory runs out).
    """
    context = _get_context()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(function, args, threads, sender), daemon=True)
    process.start()
    sender.close()
    try:
        status, payload = receiver.recv()
    except EOFError:
        process.join()
        raise WorkerError(
            f"the worker for {function.__name__} exited with code {process.exitcode} before "
            "reporting a result (a negative code is the signal that ended it; -9 is usually "
            "the out-of-memory killer)"
        ) from None
    finally:
        receiver.close()
    process.join()
    if status == "error":
        raise WorkerError(f"{function.__name__} failed in its worker: {payload}")
    return payload


def current_rss_bytes() -> int:
    """Return this process's resident set size in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; return False where the kernel rejects it.

    Writing 5 to ``/proc/self/clear_refs`` does this on Linux 4.0 and later.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """Return this process's peak RSS in bytes since start, or since the last :func:`reset_peak_rss`."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss is in kilobytes on Linux and cannot be reset.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def release_free_memory() -> None:
    """Collect garbage and hand glibc's free heap pages back to the system (``malloc_trim``).

    Without this, memory freed while building a model stays resident, and a later allocation can
    reuse it without raising RSS, which would hide part of a step's memory.
    """
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name)
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
