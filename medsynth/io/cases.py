"""Finding images in folders and naming them by case id."""

from __future__ import annotations

from pathlib import Path

from medsynth.errors import InputError
from medsynth.io.image import IMAGE_SUFFIXES

_DICOM_PREAMBLE = 128


def case_id(path: Path) -> str:
    """The file name without its image suffix (``case_001.nii.gz`` -> ``case_001``); a folder's own name."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_dicom_file(path: Path) -> bool:
    """True for a DICOM Part-10 file (``DICM`` after the 128-byte preamble) or a ``.dcm`` file."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(_DICOM_PREAMBLE)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_folder(path: Path) -> bool:
    """A folder whose visible files include DICOM files is one series (case)."""
    return path.is_dir() and any(f.is_file() and is_dicom_file(f) for f in _visible(path))


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def is_image_file(path: Path) -> bool:
    """A file whose name ends with a supported image suffix."""
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


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


def resolve_inputs(path: Path, role: str = "mr") -> dict[str, Path]:
    """Cases named by INPUT: one image file, one DICOM series folder, a folder of images, or a SynthRAD
    task folder or case folder (``<case>/mr.nii.gz``, ...), of which the ``role`` file of each case is taken.
    """
    from medsynth.io.casefolders import role_files, synthrad_cases

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the path.")
    if path.is_file():
        return {case_id(path): path}
    if is_dicom_folder(path):
        return {path.name: path}
    synthrad = synthrad_cases(path)
    if synthrad is not None:
        return role_files(synthrad, role, path)
    cases = list_images(path)
    if not cases:
        raise InputError(f"{path}: holds no images (.nii, .nii.gz, .mha, .nrrd or DICOM series folders).")
    return cases
