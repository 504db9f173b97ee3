"""Parameter report: a pure count of total, trainable and PEFT parameters per module group."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from medlnkit.paradigms import FROZEN, FULL, Paradigm
from medlnkit.tuning.selectors import get_rules, group_of, is_added_parameter


@dataclass
class GroupCount:
    """Counts for one module group. ``total`` excludes added parameters; ``trainable`` includes them."""

    group: str
    state: str
    total: int = 0
    trainable: int = 0
    added: int = 0
    peft: int = 0


@dataclass
class ParameterReport:
    """Counts for a whole model under a paradigm.

    ``peft`` is the study's "PEFT Params": the parameters a method trains inside the groups it is
    applied to. These are the selected LN / Attn / FFN parameters, or the added LoRA / Prefix
    parameters. It is 0 when the paradigm uses only T and F.
    """

    architecture: str
    paradigm: str
    convention: str
    total: int
    trainable: int
    added: int
    peft: int
    peft_group_total: int  # base parameters of the groups a method is applied to
    groups: dict[str, GroupCount] = field(default_factory=dict)

    @property
    def trainable_ratio(self) -> float:
        """Return trainable / total, the study's "#Params"."""
        return self.trainable / self.total if self.total else 0.0

    @property
    def peft_ratio(self) -> float | None:
        """Return peft / (base parameters of the method's groups), the study's "#PEFT Params"."""
        return self.peft / self.peft_group_total if self.peft_group_total else None

    def to_dict(self) -> dict:
        record = asdict(self)
        record["trainable_ratio"] = self.trainable_ratio
        record["peft_ratio"] = self.peft_ratio
        return record


def parameter_report(
    model: nn.Module, paradigm: Paradigm, convention: str = "paper", peft_names: set[str] | None = None
) -> ParameterReport:
    """Count a model's parameters after :func:`medlnkit.tuning.apply_paradigm` set requires_grad.

    ``peft_names`` are the names the method trains, from the tuning plan. When it is None, every
    trainable parameter of a group whose state is a method counts as PEFT.
    """
    rules = get_rules(paradigm.architecture)
    groups = {g: GroupCount(g, s) for g, s in paradigm.items()}
    for name, param in model.named_parameters():
        group = group_of(name, rules)
        if group is None:
            raise ValueError(f"parameter {name!r} belongs to no {paradigm.architecture} group")
        count = groups[group]
        size = param.numel()
        added = is_added_parameter(name)
        if added:
            count.added += size
        else:
            count.total += size
        if param.requires_grad:
            count.trainable += size
            in_method_group = count.state not in (FULL, FROZEN)
            if (peft_names is not None and name in peft_names) or (peft_names is None and in_method_group):
                count.peft += size
    method_groups = [c for c in groups.values() if c.state not in (FULL, FROZEN)]
    return ParameterReport(
        architecture=paradigm.architecture,
        paradigm=str(paradigm),
        convention=convention,
        total=sum(c.total for c in groups.values()),
        trainable=sum(c.trainable for c in groups.values()),
        added=sum(c.added for c in groups.values()),
        peft=sum(c.peft for c in groups.values()),
        peft_group_total=sum(c.total for c in method_groups),
        groups=groups,
    )


def format_report(report: ParameterReport) -> str:
    """Render a report as a short table for terminals and notebooks."""
    lines = [
        f"{report.architecture} {report.paradigm} ({report.convention} convention)",
        f"{'group':<10}{'state':<8}{'total':>15}{'trainable':>15}{'added':>12}{'peft':>15}",
    ]
    for c in report.groups.values():
        lines.append(f"{c.group:<10}{c.state:<8}{c.total:>15,}{c.trainable:>15,}{c.added:>12,}{c.peft:>15,}")
    lines.append(
        f"{'all':<18}{report.total:>15,}{report.trainable:>15,}{report.added:>12,}{report.peft:>15,}"
    )
    peft_ratio = "-" if report.peft_ratio is None else f"{100 * report.peft_ratio:.2f}%"
    lines.append(f"trainable {100 * report.trainable_ratio:.2f}% of total; PEFT {peft_ratio} of its groups")
    return "\n".join(lines)
