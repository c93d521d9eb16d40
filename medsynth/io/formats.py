"""Output formats: how an image named by case id is stored."""

from __future__ import annotations

from medsynth.choices import OutputFormat

__all__ = ["OutputFormat", "image_name"]


_SUFFIX = {OutputFormat.NIFTI: ".nii.gz", OutputFormat.MHA: ".mha", OutputFormat.DICOM: ""}


def image_name(name: str, fmt: OutputFormat | str) -> str:
    """The file (or, for DICOM, folder) name of an output image called ``name``."""
    return name + _SUFFIX[OutputFormat(fmt)]
