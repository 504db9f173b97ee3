"""The training loop shared by the notebooks: AdamW over the trainable parameters, a loss history."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from medlnkit.profiles import TrainSettings

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Loss per optimizer step and wall time of one fine-tuning run."""

    losses: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0

    def history(self) -> list[dict]:
        return [{"step": i + 1, "epoch": e, "loss": l} for i, (e, l) in enumerate(zip(self.epochs, self.losses))]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def batches(items: Sequence, batch_size: int, shuffle: bool, generator: random.Random | None = None):
    """Yield lists of ``batch_size`` items (the last may be shorter), shuffled when asked."""
    order = list(range(len(items)))
    if shuffle:
        (generator or random.Random(0)).shuffle(order)
    for start in range(0, len(order), batch_size):
        yield [items[i] for i in order[start : start + batch_size]]


def train_model(
    model: nn.Module,
    records: Sequence,
    collate: Callable[[Sequence], dict[str, torch.Tensor]],
    settings: TrainSettings,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Fine-tune the parameters with ``requires_grad`` on ``records`` and return the loss history.

    Raises ValueError when nothing is trainable or when a loss is not finite, so that a broken run
    stops before it wastes time. ``progress(step, total_steps, loss)`` is called after every step.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("no parameter is trainable: check the paradigm")
    if not records:
        raise ValueError("the training split is empty")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    seed_everything(settings.seed)
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    shuffler = random.Random(settings.seed)
    steps_per_epoch = math.ceil(len(records) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    result = TrainResult()
    model.train()
    started = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        for chunk in batches(records, settings.batch_size, shuffle=True, generator=shuffler):
            batch = collate(chunk)
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise ValueError(f"loss became {loss.item()} at step {result.steps + 1}: lower the learning rate")
            loss.backward()
            optimizer.step()
            # Freed here, not before backward, so the next forward pass runs without them.
            optimizer.zero_grad(set_to_none=True)
            result.steps += 1
            result.losses.append(loss.item())
            result.epochs.append(epoch)
            if progress is not None:
                progress(result.steps, total_steps, result.losses[-1])
    result.seconds = time.perf_counter() - started
    model.eval()
    return result
