"""The tuning engine: paradigms applied to models, parameter selectors and parameter reports."""

from medlnkit.tuning.apply import LoraSettings, TuningPlan, apply_paradigm, report_for
from medlnkit.tuning.prefix import PrefixSettings
from medlnkit.tuning.report import ParameterReport, format_report, parameter_report
from medlnkit.tuning.selectors import select_parameters

__all__ = [
    "LoraSettings",
    "ParameterReport",
    "PrefixSettings",
    "TuningPlan",
    "apply_paradigm",
    "format_report",
    "parameter_report",
    "report_for",
    "select_parameters",
]
