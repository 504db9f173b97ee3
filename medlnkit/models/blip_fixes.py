"""A fix for BLIP's cross-attention padding mask in transformers 5.x (seen in 5.25.0).

``BlipTextLayer`` passes the encoder's mask to cross-attention as ``attention_mask``, and
``BlipTextSelfAttention`` then reads ``encoder_attention_mask`` (None) for cross-attention, so the
decoder attends to the question's padding tokens. A padded question in a batch then gets a different
answer than alone. The fix routes the mask to where the block reads it.
"""

from __future__ import annotations

from torch import nn
from transformers.models.blip.modeling_blip_text import BlipTextSelfAttention


class MaskedCrossAttention(BlipTextSelfAttention):
    """BLIP cross-attention that applies the mask it receives as ``attention_mask``."""

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None, **kwargs):
        if encoder_hidden_states is not None and encoder_attention_mask is None:
            encoder_attention_mask = attention_mask
        return super().forward(
            hidden_states,
            attention_mask=attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            **kwargs,
        )


def fix_cross_attention_masks(model: nn.Module) -> int:
    """Convert every BLIP cross-attention block of ``model`` in place; return how many were converted."""
    converted = 0
    for name, module in model.named_modules():
        if type(module) is BlipTextSelfAttention and name.endswith("crossattention.self"):
            module.__class__ = MaskedCrossAttention
            converted += 1
    return converted
