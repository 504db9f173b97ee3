"""Apply a paradigm to a model: add LoRA or prefixes where asked, then set ``requires_grad``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from medlnkit.errors import InvalidParadigmError
from medlnkit.paradigms import FROZEN, FULL, Paradigm, parse_paradigm
from medlnkit.tuning.prefix import PrefixSettings, add_blip_prefixes
from medlnkit.tuning.report import ParameterReport, parameter_report
from medlnkit.tuning.selectors import get_rules, group_of, is_added_parameter, select_parameters

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters. Rank 8 on the query and value projections reproduces the study's counts.

    The study gives neither alpha nor dropout; 16 and 0.05 are common choices (the kit's default).
    """

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05


@dataclass
class TuningPlan:
    """Result of :func:`apply_paradigm`: the trainable parameter names and the PEFT names per group."""

    paradigm: Paradigm
    convention: str
    trainable: set[str] = field(default_factory=set)
    peft: dict[str, set[str]] = field(default_factory=dict)
    added: set[str] = field(default_factory=set)

    @property
    def peft_names(self) -> set[str]:
        return set().union(*self.peft.values()) if self.peft else set()


# Prefix installers per architecture: (model, group, settings) -> None.
PrefixInstaller = Callable[[nn.Module, str, PrefixSettings], None]


def _install_miss_prefix(model: nn.Module, group: str, settings: PrefixSettings) -> None:
    tower = {"jtm": model.text_encoder, "dec": model.text_decoder}[group]
    add_blip_prefixes(tower, settings)


PREFIX_INSTALLERS: dict[str, PrefixInstaller] = {"miss": _install_miss_prefix}


def _inject_lora(model: nn.Module, architecture: str, groups: list[str], settings: LoraSettings) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    rules = get_rules(architecture)
    # One regular expression per group, each anchored to that group's modules, so a short name such
    # as q_proj never reaches a group the paradigm does not put under LoRA.
    pattern = "|".join(f"(?:{rules.lora_targets[g]})" for g in groups)
    config = LoraConfig(
        r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=pattern
    )
    inject_adapter_in_model(config, model)


def apply_paradigm(
    model: nn.Module,
    paradigm: str | Paradigm,
    architecture: str = "miss",
    convention: str = "paper",
    lora: LoraSettings | None = None,
    prefix: PrefixSettings | None = None,
) -> TuningPlan:
    """Set which parameters train under ``paradigm``, adding LoRA or prefix parameters where it names them.

    Returns the plan with the exact trainable names. A model can be tuned once: applying a paradigm
    to a model that already contains LoRA or prefix parameters raises ``ValueError``.
    """
    paradigm = parse_paradigm(paradigm, architecture)
    rules = get_rules(architecture)
    if any(is_added_parameter(n) for n, _ in model.named_parameters()):
        raise InvalidParadigmError(
            "invalid model: it already contains LoRA or prefix parameters; build a fresh model for each paradigm"
        )
    lora_groups = [g for g, s in paradigm.items() if s == "LoRA"]
    if lora_groups:
        _inject_lora(model, architecture, lora_groups, lora or LoraSettings())
    for group, state in paradigm.items():
        if state == "Prefix":
            if architecture not in PREFIX_INSTALLERS:
                raise InvalidParadigmError(f"Prefix-tuning is not available for {architecture!r}")
            PREFIX_INSTALLERS[architecture](model, group, prefix or PrefixSettings())

    plan = TuningPlan(paradigm, convention)
    selected = {
        group: select_parameters(model, architecture, group, state, convention)
        for group, state in paradigm.items()
        if state in ("LN", "Attn", "FFN")
    }
    for name, param in model.named_parameters():
        group = group_of(name, rules)
        if group is None:
            raise ValueError(f"parameter {name!r} belongs to no {architecture} group")
        state = paradigm.state(group)
        added = is_added_parameter(name)
        if added:
            plan.added.add(name)
        if state == FULL:
            train = True
        elif state == FROZEN:
            train = False
        elif state in ("LoRA", "Prefix"):
            train = added
        else:
            train = name in selected[group]
        param.requires_grad_(train)
        if train:
            plan.trainable.add(name)
            if state not in (FULL, FROZEN):
                plan.peft.setdefault(group, set()).add(name)
    logger.debug("paradigm %s: %d trainable tensors", paradigm, len(plan.trainable))
    return plan


def report_for(model: nn.Module, plan: TuningPlan) -> ParameterReport:
    """Return the parameter report of a model tuned by ``plan``."""
    return parameter_report(model, plan.paradigm, plan.convention, plan.peft_names)
