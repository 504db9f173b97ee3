"""The shared MISS training loop: what each step leaves behind and how it stops on bad input."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from medlnkit.profiles import TrainSettings
from medlnkit.training import train_model


class Recorder(nn.Module):
    """A one-layer regression that notes, at each forward pass, whether any gradient is still stored."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.layer = nn.Linear(3, 1)
        self.scale = scale
        self.gradients_held = []

    def forward(self, inputs, targets):
        self.gradients_held.append(any(p.grad is not None for p in self.parameters()))
        loss = ((self.layer(inputs).squeeze(-1) - targets) ** 2).mean() * self.scale
        return SimpleNamespace(loss=loss)


def collate(chunk):
    return {"inputs": torch.stack([x for x, _ in chunk]), "targets": torch.stack([y for _, y in chunk])}


def records(count=8):
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(3, generator=generator), torch.randn((), generator=generator)) for _ in range(count)]


def settings(**changes):
    values = dict(epochs=2, batch_size=4, learning_rate=1e-2, weight_decay=0.0)
    values.update(changes)
    return TrainSettings(**values)


def test_gradients_freed_before_forward():
    model = Recorder()
    result = train_model(model, records(), collate, settings())
    assert result.steps == 4
    assert model.gradients_held == [False] * 4
    assert all(p.grad is None for p in model.parameters())


def test_training_lowers_the_loss():
    result = train_model(Recorder(), records(), collate, settings(epochs=20, learning_rate=5e-2))
    assert result.losses[-1] < result.losses[0]


def test_non_finite_loss_names_the_step():
    with pytest.raises(ValueError, match="loss became nan at step 1: lower the learning rate"):
        train_model(Recorder(scale=float("nan")), records(), collate, settings())


def test_frozen_model_rejected():
    model = Recorder()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter is trainable"):
        train_model(model, records(), collate, settings())
