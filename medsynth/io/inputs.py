"""What a command's INPUT names: one image, one DICOM series, a folder of images, or SynthRAD case folders."""

from __future__ import annotations

from pathlib import Path

from medsynth.errors import InputError
from medsynth.io.casefolders import role_files, synthrad_cases
from medsynth.io.cases import case_id, list_images
from medsynth.io.dicom import is_dicom_folder
from medsynth.io.formats import suffix_hint


def resolve_inputs(path: Path, role: str = "mr") -> dict[str, Path]:
    """Cases named by INPUT: one image file, one DICOM series folder, a folder of images, or a SynthRAD
    task folder or case folder (``<case>/mr.nii.gz``, ...), of which the ``role`` file of each case is taken.
    """
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
        raise InputError(f"{path}: holds no images ({suffix_hint()} or DICOM series folders).")
    return cases
