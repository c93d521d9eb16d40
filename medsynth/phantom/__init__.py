"""The digital head phantom (SPEC §6): deterministic CT, T1-like MR, labels and patient versions."""

from medsynth.phantom.anatomy import (
    LABEL_NAMES,
    TISSUE_NAMES,
    AttributionCase,
    Disease,
    HeadVolumes,
    head_affine,
    make_attribution_case,
    make_head,
    oracle_ct,
)
from medsynth.phantom.kinds import PhantomKind, PhantomSummary, write_phantom

__all__ = [
    "LABEL_NAMES",
    "TISSUE_NAMES",
    "AttributionCase",
    "Disease",
    "HeadVolumes",
    "PhantomKind",
    "PhantomSummary",
    "head_affine",
    "make_attribution_case",
    "make_head",
    "oracle_ct",
    "write_phantom",
]
