"""Parameter selectors for LayerNorm, Attention and FFN, per architecture and counting convention.

Every rule works on parameter names as ``model.named_parameters()`` returns them, plus the class of
the module that owns each parameter (norm layers are found by class, not by name).

Two conventions:

* ``paper`` reproduces the study's counts. For BLIP's text towers the study's Attention counts
  include the LayerNorm that sits inside each ``attention.output`` / ``crossattention.output`` block
  (T,Attn,T trains 56,733,696 JTM parameters = 12 layers x (2 x 2,362,368 projection parameters
  + 2 x 1,536 norm parameters)), while its FFN counts are the two MLP matrices only
  (56,669,184 = 12 x 4,722,432).
* ``strict`` separates the kinds cleanly: every norm layer is LN, attention is only the q, k, v and
  output projections, FFN is every MLP matrix.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field

from torch import nn

CONVENTIONS = ("paper", "strict")
KINDS = ("LN", "Attn", "FFN")


@dataclass(frozen=True)
class ArchitectureRules:
    """Name patterns (regular expressions, matched with ``re.search``) for one architecture."""

    name: str
    groups: dict[str, str]  # group -> pattern matching the parameter names of that group
    attention: str  # parameters of attention blocks (projections, and in BLIP text their norm)
    ffn: str  # parameters of the feed-forward (MLP) blocks
    lora_targets: dict[str, str]  # group -> full-match pattern of the Linear modules LoRA adapts
    norm_class_names: tuple[str, ...] = ("LayerNorm", "RMSNorm")
    # Norm parameters that the ``paper`` convention leaves out of LN (see each architecture).
    paper_ln_exclude: str | None = None
    # FFN parameters that the ``paper`` convention leaves out of FFN (see each architecture).
    paper_ffn_exclude: str | None = None
    notes: dict[str, str] = field(default_factory=dict)


MISS_RULES = ArchitectureRules(
    name="miss",
    groups={"vit": r"^vision_model\.", "jtm": r"^text_encoder\.", "dec": r"^text_decoder\."},
    # BLIP text: attention.* and crossattention.* (self/cross attention and their output block);
    # BLIP vision: self_attn.* (fused qkv and projection).
    attention=r"\.(attention|crossattention|self_attn)\.",
    # BLIP text: intermediate.dense and the layer's output.dense; BLIP vision: mlp.fc1 / mlp.fc2.
    ffn=r"\.layer\.\d+\.(intermediate\.dense|output\.dense)\.|\.mlp\.",
    # The study applies LoRA to the query and value projections of self-attention only:
    # 294,912 JTM parameters = 12 layers x 2 matrices x rank 8 x (768 + 768).
    lora_targets={
        "vit": r"vision_model\.encoder\.layers\.\d+\.self_attn\.qkv",
        "jtm": r"text_encoder\.encoder\.layer\.\d+\.attention\.self\.(query|value)",
        "dec": r"text_decoder\.bert\.encoder\.layer\.\d+\.attention\.self\.(query|value)",
    },
)

RULES: dict[str, ArchitectureRules] = {"miss": MISS_RULES}

# Modules that register the rules (and the Prefix installer) of an architecture when imported.
_RULE_MODULES = {"llava": "medlnkit.models.llava"}


def register_rules(rules: ArchitectureRules) -> None:
    """Add or replace the rules of an architecture (the LLaVA builder registers its own)."""
    RULES[rules.name] = rules


def get_rules(architecture: str) -> ArchitectureRules:
    """Return the rules of an architecture, importing the module that registers them if needed."""
    if architecture not in RULES and architecture in _RULE_MODULES:
        importlib.import_module(_RULE_MODULES[architecture])
    if architecture not in RULES:
        raise ValueError(f"unknown architecture {architecture!r}: expected one of {sorted(RULES)}")
    return RULES[architecture]


def _norm_parameter_names(model: nn.Module, rules: ArchitectureRules) -> set[str]:
    names = set()
    for module_name, module in model.named_modules():
        class_name = type(module).__name__
        if isinstance(module, nn.LayerNorm) or any(n in class_name for n in rules.norm_class_names):
            for param_name, _ in module.named_parameters(prefix=module_name, recurse=False):
                names.add(param_name)
    return names


def group_of(name: str, rules: ArchitectureRules) -> str | None:
    """Return the group a parameter name belongs to, or None when no group pattern matches."""
    for group, pattern in rules.groups.items():
        if re.search(pattern, name):
            return group
    return None


def select_parameters(
    model: nn.Module, architecture: str, group: str, kind: str, convention: str = "paper"
) -> set[str]:
    """Return the names of the base parameters of ``group`` that a ``kind`` method trains.

    ``kind`` is ``LN``, ``Attn`` or ``FFN``. Added parameters (LoRA, prefixes) are never selected.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown parameter kind {kind!r}: expected one of {', '.join(KINDS)}")
    if convention not in CONVENTIONS:
        raise ValueError(
            f"unknown counting convention {convention!r}: expected one of {', '.join(CONVENTIONS)}"
        )
    rules = get_rules(architecture)
    norms = _norm_parameter_names(model, rules)
    selected = set()
    for name, _ in model.named_parameters():
        if group_of(name, rules) != group or is_added_parameter(name):
            continue
        if kind == "LN":
            take = name in norms
            if take and convention == "paper" and rules.paper_ln_exclude:
                take = re.search(rules.paper_ln_exclude, name) is None
        elif kind == "Attn":
            take = re.search(rules.attention, name) is not None
            if convention == "strict":
                take = take and name not in norms
        else:
            take = re.search(rules.ffn, name) is not None and name not in norms
            if take and convention == "paper" and rules.paper_ffn_exclude:
                take = re.search(rules.paper_ffn_exclude, name) is None
        if take:
            selected.add(name)
    return selected


ADDED_MARKERS = ("lora_", "prefix_encoder.")


def is_added_parameter(name: str) -> bool:
    """Return True for parameters that LoRA or Prefix-tuning added to the base model."""
    return any(marker in name for marker in ADDED_MARKERS)
