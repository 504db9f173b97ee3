"""Data sources: the embedded real-image sample and loaders for the study's benchmarks."""

from medlnkit.data.records import ReportRecord, VQARecord

__all__ = ["ReportRecord", "VQARecord"]
