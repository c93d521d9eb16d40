"""Finding images in folders and naming them by case id."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from medsynth.errors import InputError
from medsynth.io.dicom import is_dicom_folder
from medsynth.io.formats import image_suffixes


def case_id(path: Path) -> str:
    """The file name without its image suffix (``case_001.nii.gz`` -> ``case_001``, ``mr.dcm`` -> ``mr``); a
    folder's own name."""
    name = Path(path).name
    for suffix in (*image_suffixes(), ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def is_image_file(path: Path) -> bool:
    """A file whose name ends with a supported image suffix."""
    return path.is_file() and path.name.lower().endswith(image_suffixes()) and not path.name.startswith(".")


def list_images(folder: Path) -> dict[str, Path]:
    """Case id -> path for every image file and DICOM series folder directly inside ``folder``.

    Hidden files (our own partial writes among them) are ignored. Two files with one case id
    (``a.nii`` and ``a.nii.gz``) are an error, since either choice would be a guess.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: is not a folder.")
    found: dict[str, Path] = {}
    for entry in _visible(folder):
        if not (is_image_file(entry) or is_dicom_folder(entry)):
            continue
        cid = case_id(entry)
        if cid in found:
            raise InputError(f"{folder}: case '{cid}' appears twice ({found[cid].name}, {entry.name}); keep one.")
        found[cid] = entry
    return found


# --- several MR contrasts per case, named as nnU-Net names them: <case>_0000, <case>_0001, ... ---------

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def channel_of(cid: str) -> tuple[str, str] | None:
    """``"case_7_0001"`` -> ``("case_7", "0001")``; None for an id without a 4-digit channel suffix."""
    match = _CHANNEL.match(cid)
    return (match["case"], match["channel"]) if match else None


def group_channels(files: dict[str, Path], channels: Sequence[str] | None = None) -> dict[str, tuple[Path, ...]]:
    """Case id -> its channel files in channel order, from ids such as ``<case>_0000``, ``<case>_0001``.

    With ``channels`` (the suffixes a model was trained on) every file must carry one of them and
    every case must have them all; without, the channels are those of the files, and every case must
    have the same set. Raises :class:`InputError` naming the first file or case that does not fit.
    """
    grouped: dict[str, dict[str, Path]] = {}
    for cid, path in sorted(files.items()):
        parts = channel_of(cid)
        if parts is None or (channels is not None and parts[1] not in channels):
            wanted = ", ".join(f"_{c}" for c in channels) if channels else "_0000, _0001, ..."
            raise InputError(f"{path}: is not named <case>_NNNN; MR channels are files <case>{wanted} "
                             "(nnU-Net naming).")
        grouped.setdefault(parts[0], {})[parts[1]] = path
    expected = sorted(channels) if channels is not None else sorted({c for g in grouped.values() for c in g})
    if expected != channel_suffixes(len(expected)):
        raise InputError(f"MR channels {', '.join(expected)}: number them _0000, _0001, ... without gaps, "
                         "as nnU-Net does.")
    for case, found in grouped.items():
        missing = [c for c in expected if c not in found]
        if missing:
            raise InputError(f"case '{case}': has no MR channel file {case}_{missing[0]} (found "
                             f"{', '.join(sorted(found))}); every case needs channels {', '.join(expected)}.")
    order = list(channels) if channels is not None else expected
    return {case: tuple(found[c] for c in order) for case, found in grouped.items()}


def channel_suffixes(count: int) -> list[str]:
    """The file suffixes of ``count`` MR channels: ``["0000", "0001", ...]``."""
    return [f"{k:04d}" for k in range(count)]
