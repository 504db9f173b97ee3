"""Paradigm strings: one tuning state per module group, written as the study's tables write them.

MISS has the groups ``vit, jtm, dec`` ("T,LN,T"); LLaVA-Med has ``vision, connector, llm, lm_head``
("F,F,LN,F"). A state is ``T`` (fully trainable), ``F`` (frozen), an intrinsic method that trains only
one kind of existing parameter (``LN``, ``Attn``, ``FFN``) or an extrinsic method that adds new
parameters (``LoRA``, ``Prefix``).
"""

from __future__ import annotations

from dataclasses import dataclass

from medlnkit.errors import InvalidParadigmError

FULL = "T"
FROZEN = "F"
INTRINSIC_METHODS = ("LN", "Attn", "FFN")
EXTRINSIC_METHODS = ("LoRA", "Prefix")
STATES = (FULL, FROZEN, *INTRINSIC_METHODS, *EXTRINSIC_METHODS)

# Spellings used in the study's tables and in common usage, mapped to the canonical state.
_ALIASES = {
    "t": FULL,
    "trainable": FULL,
    "f": FROZEN,
    "frozen": FROZEN,
    "ln": "LN",
    "layernorm": "LN",
    "norm": "LN",
    "attn": "Attn",
    "attention": "Attn",
    "ffn": "FFN",
    "mlp": "FFN",
    "lora": "LoRA",
    "prefix": "Prefix",
}

MISS_GROUPS = ("vit", "jtm", "dec")
LLAVA_GROUPS = ("vision", "connector", "llm", "lm_head")
ARCHITECTURE_GROUPS = {"miss": MISS_GROUPS, "llava": LLAVA_GROUPS}

# States each group supports. Prefix-tuning prepends key/value vectors to self-attention over a
# token sequence that the method controls, which is only defined for the text transformers; the
# connector and the LM head contain no attention, norm or FFN blocks of their own.
_ALLOWED = {
    "miss": {
        "vit": (FULL, FROZEN, "LN", "Attn", "FFN", "LoRA"),
        "jtm": STATES,
        "dec": STATES,
    },
    "llava": {
        "vision": (FULL, FROZEN, "LN", "Attn", "FFN", "LoRA"),
        "connector": (FULL, FROZEN),
        "llm": STATES,
        "lm_head": (FULL, FROZEN),
    },
}


@dataclass(frozen=True)
class Paradigm:
    """A parsed paradigm: the architecture and one canonical state per group, in group order."""

    architecture: str
    states: tuple[str, ...]

    @property
    def groups(self) -> tuple[str, ...]:
        return ARCHITECTURE_GROUPS[self.architecture]

    def state(self, group: str) -> str:
        return dict(zip(self.groups, self.states))[group]

    def items(self) -> list[tuple[str, str]]:
        return list(zip(self.groups, self.states))

    @property
    def methods(self) -> set[str]:
        """Return the PEFT methods (neither T nor F) that this paradigm uses."""
        return {s for s in self.states if s not in (FULL, FROZEN)}

    def __str__(self) -> str:
        return ",".join(self.states)


def _canonical_state(token: str, text: str) -> str:
    key = token.strip().lower()
    if key not in _ALIASES:
        raise InvalidParadigmError(
            f"invalid state {token.strip()!r} in paradigm {text!r}: "
            f"valid states are {', '.join(STATES)}"
        )
    return _ALIASES[key]


def parse_paradigm(text: str | Paradigm, architecture: str = "miss") -> Paradigm:
    """Parse ``"T,LN,T"``-style text into a :class:`Paradigm`, raising ``ValueError`` when invalid.

    Brackets and spaces are accepted ("[F, T, LN, T]"), and so are the spellings of the study's
    tables ("LayerNorm", "Attention").
    """
    if isinstance(text, Paradigm):
        if text.architecture != architecture:
            raise InvalidParadigmError(
                f"paradigm {str(text)!r} is for {text.architecture!r}, not {architecture!r}"
            )
        return text
    if architecture not in ARCHITECTURE_GROUPS:
        raise InvalidParadigmError(
            f"unknown architecture {architecture!r}: expected one of {', '.join(ARCHITECTURE_GROUPS)}"
        )
    groups = ARCHITECTURE_GROUPS[architecture]
    stripped = str(text).strip().strip("[]()")
    tokens = [t for t in stripped.split(",")]
    if len(tokens) != len(groups) or any(not t.strip() for t in tokens):
        example = "T,LN,T" if architecture == "miss" else "F,F,LN,F"
        raise InvalidParadigmError(
            f"invalid paradigm {text!r} for {architecture}: expected {len(groups)} comma-separated "
            f"states for the groups {','.join(groups)}, for example {example!r}"
        )
    states = tuple(_canonical_state(t, str(text)) for t in tokens)
    for group, state in zip(groups, states):
        allowed = _ALLOWED[architecture][group]
        if state not in allowed:
            raise InvalidParadigmError(
                f"paradigm {text!r}: state {state!r} is not supported for the {architecture} group "
                f"{group!r}; valid states there are {', '.join(allowed)}"
            )
    return Paradigm(architecture, states)


# The 16 MISS paradigms of the study's Table 1, in the table's row order.
TABLE1_PARADIGMS = (
    "T,T,T",
    "T,LN,LN", "T,LN,T", "T,T,LN",
    "T,Attn,Attn", "T,Attn,T", "T,T,Attn",
    "T,FFN,FFN", "T,FFN,T", "T,T,FFN",
    "T,LoRA,LoRA", "T,LoRA,T", "T,T,LoRA",
    "T,Prefix,Prefix", "T,Prefix,T", "T,T,Prefix",
)  # fmt: skip

# The 14 LLaVA-Med paradigms of the study's Table 2, in the table's row order.
TABLE2_PARADIGMS = (
    "LN,F,LN,F", "F,F,LN,F", "LN,T,LN,T", "F,T,LN,T",
    "Attn,F,Attn,F", "F,F,Attn,F", "Attn,T,Attn,T", "F,T,Attn,T",
    "F,T,FFN,T", "F,F,FFN,F",
    "F,F,LoRA,F", "F,T,LoRA,T",
    "F,F,Prefix,F", "F,T,Prefix,T",
)  # fmt: skip
