"""Output formats: how an image named by case id is stored."""

from __future__ import annotations

from enum import StrEnum


class OutputFormat(StrEnum):
    """``nifti``: ``<name>.nii.gz``; ``mha``: ``<name>.mha`` (SynthRAD 2025's format); ``dicom``: a series
    folder ``<name>/`` (synthetic CT only)."""

    NIFTI = "nifti"
    MHA = "mha"
    DICOM = "dicom"


_SUFFIX = {OutputFormat.NIFTI: ".nii.gz", OutputFormat.MHA: ".mha", OutputFormat.DICOM: ""}


def image_name(name: str, fmt: OutputFormat | str) -> str:
    """The file (or, for DICOM, folder) name of an output image called ``name``."""
    return name + _SUFFIX[OutputFormat(fmt)]
