"""Evaluation metrics: SynthRAD image similarity, per-tissue errors, NCC and Dice, and their reports."""

from medsynth.metrics.report import CaseFailure, CaseResult, EvaluationReport, MetricSummary
from medsynth.metrics.similarity import dice_per_label, ncc
from medsynth.metrics.synthrad import masked_ms_ssim, ssim_map, synthrad2023, synthrad2025
from medsynth.metrics.tissue import bone_dice, tissue_mae, tissue_metrics

__all__ = [
    "CaseFailure",
    "CaseResult",
    "EvaluationReport",
    "MetricSummary",
    "bone_dice",
    "dice_per_label",
    "masked_ms_ssim",
    "ncc",
    "ssim_map",
    "synthrad2023",
    "synthrad2025",
    "tissue_mae",
    "tissue_metrics",
]
