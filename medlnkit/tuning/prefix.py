"""Prefix-tuning for BLIP's text encoder and decoder.

peft's prefix tuning passes ``past_key_values`` into the wrapped model, which BLIP's question
answering model does not accept (it raises "got multiple values for keyword argument
'inputs_embeds'"), and it would only reach one of the two text towers. Here each self-attention
block of a tower prepends trained key and value vectors to the keys and values it computes, so the
prefixes reach every layer of both towers, training and generation alike. Cross-attention to the
image is left unchanged, as in prefix-tuning of encoder-decoder models (Li and Liang, 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import EncoderDecoderCache
from transformers.models.blip.modeling_blip_text import BlipTextSelfAttention


@dataclass(frozen=True)
class PrefixSettings:
    """Prefix-tuning hyper-parameters.

    The defaults reproduce the study's Prefix counts: 10 virtual tokens, reparameterised through a
    two-layer MLP whose hidden size equals the model width, so one BERT-base tower trains
    10 x 768 + (768 x 768 + 768) + (768 x 18,432 + 18,432) = 14,772,480 parameters.
    """

    num_virtual_tokens: int = 10
    projection: bool = True  # reparameterise through an MLP (Li and Liang) instead of raw vectors
    projection_size: int | None = None  # MLP hidden size; None means the model width


class PrefixEncoder(nn.Module):
    """Trained prefix keys and values for every layer of one transformer tower."""

    def __init__(self, num_layers: int, hidden_size: int, num_heads: int, settings: PrefixSettings):
        super().__init__()
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.num_virtual_tokens = settings.num_virtual_tokens
        self.projection = settings.projection
        if settings.projection:
            inner = settings.projection_size or hidden_size
            self.embedding = nn.Embedding(settings.num_virtual_tokens, hidden_size)
            self.down = nn.Linear(hidden_size, inner)
            self.up = nn.Linear(inner, num_layers * 2 * hidden_size)
        else:
            self.embedding = nn.Embedding(settings.num_virtual_tokens, num_layers * 2 * hidden_size)
        # Small initial prefixes keep the pretrained model's behaviour at step 0.
        nn.init.normal_(self.embedding.weight, std=0.02)

    def key_values(self, layer_idx: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return this layer's prefix keys and values, each (batch, heads, tokens, head_dim)."""
        width = 2 * self.hidden_size
        rows = slice(layer_idx * width, (layer_idx + 1) * width)
        if self.projection:
            hidden = torch.tanh(self.down(self.embedding.weight))
            # Only this layer's slice of the output projection is computed.
            pairs = F.linear(hidden, self.up.weight[rows], self.up.bias[rows])
        else:
            pairs = self.embedding.weight[:, rows]
        head_dim = self.hidden_size // self.num_heads
        pairs = pairs.view(self.num_virtual_tokens, 2, self.num_heads, head_dim)
        keys, values = pairs.permute(1, 2, 0, 3).unbind(0)  # each (heads, tokens, head_dim)
        expand = (batch_size, -1, -1, -1)
        return keys.unsqueeze(0).expand(expand), values.unsqueeze(0).expand(expand)


class PrefixBlipTextSelfAttention(BlipTextSelfAttention):
    """BLIP text self-attention whose keys and values start with a tower's trained prefix.

    Instances are converted in place by :func:`add_blip_prefixes`, so parameter names and
    pretrained weights stay those of ``BlipTextSelfAttention``.
    """

    prefix_encoder: PrefixEncoder  # set as a plain attribute, so it is not registered twice

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache=None,
        past_key_values=None,
        **kwargs,
    ):
        if encoder_hidden_states is not None:
            raise RuntimeError("prefix attention was installed on a cross-attention block")
        cache = cache if cache is not None else past_key_values
        batch_size = hidden_states.shape[0]
        hidden_shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
        query = self.query(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.key(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.value(hidden_states).view(hidden_shape).transpose(1, 2)
        if cache is not None:
            # The cache contains the real tokens only, so positions and cache length stay unchanged.
            self_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
            key, value = self_cache.update(key, value, self.layer_idx, kwargs=kwargs)

        prefix_key, prefix_value = self.prefix_encoder.key_values(self.layer_idx, batch_size)
        key = torch.cat([prefix_key.to(key.dtype), key], dim=2)
        value = torch.cat([prefix_value.to(value.dtype), value], dim=2)

        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        if attention_mask is not None:
            scores = scores + _extend_mask(attention_mask, self.prefix_encoder.num_virtual_tokens).to(scores.device)
        probs = nn.functional.softmax(scores, dim=-1)
        context = torch.matmul(self.dropout(probs), value)
        context = context.permute(0, 2, 1, 3).contiguous()
        return context.view(*context.shape[:-2], self.all_head_size), probs


def _extend_mask(mask: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Prepend ``num_prefix`` always-visible key positions to an additive or boolean mask."""
    if mask.dtype == torch.bool:
        # A boolean mask marks visible positions with True; turn it into an additive one.
        blocked = torch.finfo(torch.float32).min
        mask = torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, blocked)
    visible = torch.zeros(*mask.shape[:-1], num_prefix, dtype=mask.dtype, device=mask.device)
    return torch.cat([visible, mask], dim=-1)


def add_blip_prefixes(tower: nn.Module, settings: PrefixSettings) -> PrefixEncoder:
    """Attach a :class:`PrefixEncoder` to a BLIP text tower and route its self-attention through it.

    ``tower`` is ``BlipTextModel`` (the encoder) or ``BlipTextLMHeadModel`` (the decoder). The encoder
    is registered as ``tower.prefix_encoder``, so its parameters belong to the tower's group.
    """
    config = tower.config
    # Built on the tower's device, so a model on the meta device gets meta prefixes (no memory).
    with torch.device(next(tower.parameters()).device):
        encoder = PrefixEncoder(
            config.num_hidden_layers, config.hidden_size, config.num_attention_heads, settings
        )
    tower.prefix_encoder = encoder
    converted = 0
    for name, module in tower.named_modules():
        if type(module) is BlipTextSelfAttention and ".crossattention." not in f".{name}.":
            module.__class__ = PrefixBlipTextSelfAttention
            module.__dict__["prefix_encoder"] = encoder
            converted += 1
    if converted != config.num_hidden_layers:
        raise RuntimeError(
            f"expected {config.num_hidden_layers} BLIP self-attention blocks, converted {converted}"
        )
    return encoder
