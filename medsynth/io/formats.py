"""The one format registry: which :class:`~medsynth.io.contract.ImageFormat` reads a path, which writes an
output format, and how an image named by case id is stored. A new format is a module in ``io/`` and one
line in :data:`FORMATS` (or, from outside the package, one :func:`register_format` call).
"""

from __future__ import annotations

from pathlib import Path

from medsynth.errors import UsageError
from medsynth.io.contract import ImageFormat
from medsynth.io.dicom_format import Dicom
from medsynth.io.mha import MetaImage
from medsynth.io.nifti import Nifti

#: In the order messages list them and ``--format`` offers them.
FORMATS: list[ImageFormat] = [Nifti(), MetaImage(), Dicom()]


def register_format(fmt: ImageFormat) -> ImageFormat:
    """Add ``fmt`` after the formats there; returns it. Raises :class:`ValueError` when its output-format
    name or one of its suffixes is already another format's."""
    for other in FORMATS:
        shared = set(fmt.suffixes + fmt.written) & set(other.suffixes + other.written)
        if (fmt.name and fmt.name == other.name) or shared:
            raise ValueError(f"format {fmt.title or type(fmt).__name__}: its name or suffixes "
                             f"({', '.join(sorted(shared)) or fmt.name}) are already {other.title}'s.")
    FORMATS.append(fmt)
    return fmt


def unregister_format(fmt: ImageFormat) -> None:
    """Remove ``fmt`` (the object :func:`register_format` was given)."""
    FORMATS.remove(fmt)


def format_for(path: Path) -> ImageFormat | None:
    """The format that reads ``path`` (by suffix; DICOM: a folder or ``.dcm`` file), None when none does."""
    return next((fmt for fmt in FORMATS if fmt.claims(Path(path))), None)


def writer_for(path: Path) -> ImageFormat:
    """The format that writes an output named ``path``, by its suffix; :class:`UsageError` when none does."""
    found = next((fmt for fmt in FORMATS if fmt.writes(Path(path))), None)
    if found is None:
        offered = [f"{fmt.title} ({', '.join(fmt.written)})" for fmt in FORMATS if fmt.written]
        raise UsageError(f"{path}: outputs are {_either(offered)}.")
    return found


def output_format(name: str) -> ImageFormat:
    """The format whose output-format name (``--format``) is ``name``; :class:`UsageError` when none is."""
    found = next((fmt for fmt in FORMATS if fmt.name and fmt.name == str(name)), None)
    if found is None:
        raise UsageError(f"--format {name}: no such output format; use {_either(list(output_formats(True)))}.")
    return found


def output_formats(ct_series: bool) -> tuple[str, ...]:
    """The output-format names, with (``ct_series``) or without the formats that hold a patient's CT only."""
    return tuple(fmt.name for fmt in FORMATS if fmt.name and (ct_series or not fmt.ct_only))


def map_format(name: str) -> str:
    """The output format of float maps written beside images in format ``name``: itself, or NIfTI when it
    holds CT only (a DICOM sCT comes with NIfTI maps)."""
    return "nifti" if output_format(name).ct_only else output_format(name).name


def image_name(name: str, fmt: str) -> str:
    """The file (or, for DICOM, folder) name of an output image called ``name`` in output format ``fmt``."""
    return output_format(fmt).output_name(name)


def image_suffixes() -> tuple[str, ...]:
    """Every file suffix a format reads (lower case): case discovery finds image files by them."""
    return tuple(suffix for fmt in FORMATS for suffix in fmt.suffixes)


def suffix_hint() -> str:
    """The image files medsynth reads, as messages name them: ``.nii, .nii.gz, .mha, .nrrd``."""
    return ", ".join(fmt.hint for fmt in FORMATS if fmt.hint)


def _either(items: list[str]) -> str:
    return " or ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " or " + items[-1]
