"""SynthRAD-style per-case folders: ``TASK/<case>/mr.nii.gz``, ``ct.nii.gz``, ``mask.nii.gz`` (or ``.mha``).

In this layout the file name is the role and the folder name is the case id. A folder is a *case
folder* when its images are all named by a role; it is a *task folder* when its subfolders are case
folders. Either is recognised whole or refused in one line — a task folder beside loose images, or a
case folder beside images that are not roles, would otherwise be half read.
"""

from __future__ import annotations

from pathlib import Path

from medsynth.errors import InputError
from medsynth.io.cases import case_id, is_image_file, list_images
from medsynth.io.dicom import is_dicom_folder

# The file names SynthRAD 2023/2025 use (cbct: task 2), plus label maps for CycleGAN's shape loss.
ROLES = ("mr", "ct", "mask", "cbct", "mr_labels", "ct_labels", "labels")

CaseRoles = dict[str, Path]  # role -> file


def case_folder_roles(folder: Path) -> CaseRoles | None:
    """Role -> file of a SynthRAD case folder; None when ``folder`` is not one.

    Raises :class:`InputError` when role files sit beside other images (a half-recognisable folder).
    """
    folder = Path(folder)
    if not folder.is_dir() or is_dicom_folder(folder):
        return None
    # Recognise by name first, so that a folder of another layout is left to its own checks.
    if not any(case_id(p).lower() in ROLES and is_image_file(p) for p in folder.iterdir()):
        return None
    images = list_images(folder)
    roles = {cid.lower(): path for cid, path in images.items() if cid.lower() in ROLES}
    others = sorted(path.name for cid, path in images.items() if cid.lower() not in ROLES)
    if others:
        raise InputError(f"{folder}: holds SynthRAD role files ({', '.join(p.name for p in roles.values())}) beside "
                         f"other images ({', '.join(others[:3])}); a case folder holds only "
                         f"{', '.join(ROLES[:3])} (.nii.gz or .mha) — move the others out.")
    return roles


def task_cases(folder: Path) -> dict[str, CaseRoles] | None:
    """Case id -> role files for a SynthRAD task folder; None when ``folder`` is not one.

    Subfolders without images (SynthRAD's ``overview/``) are ignored; loose images or image-holding
    subfolders that are not case folders, beside case folders, are an :class:`InputError`.
    """
    folder = Path(folder)
    if not folder.is_dir() or is_dicom_folder(folder):
        return None
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    cases = {sub.name: roles for sub in subfolders if (roles := case_folder_roles(sub)) is not None}
    if not cases:
        return None
    loose = sorted(p.name for p in list_images(folder).values())
    strays = sorted(sub.name for sub in subfolders if sub.name not in cases and list_images(sub))
    if loose or strays:
        shown = ", ".join((loose + [s + "/" for s in strays])[:3])
        raise InputError(f"{folder}: holds {len(cases)} SynthRAD case folders beside images or folders of another "
                         f"layout ({shown}); keep one layout per folder.")
    return cases


def synthrad_cases(path: Path) -> dict[str, CaseRoles] | None:
    """Case id -> role files when ``path`` is a task folder or one case folder (its name the case id)."""
    path = Path(path)
    roles = case_folder_roles(path)
    if roles is not None:
        return {path.name: roles}
    return task_cases(path)


def role_files(cases: dict[str, CaseRoles], role: str, source: Path) -> dict[str, Path]:
    """Case id -> the ``role`` file of every case; every case must have one."""
    missing = sorted(case for case, roles in cases.items() if role not in roles)
    if missing:
        raise InputError(f"{source}: SynthRAD case folder(s) {', '.join(missing[:3])}"
                         f"{' and more' if len(missing) > 3 else ''} hold no {role} image ({role}.nii.gz or "
                         f"{role}.mha); add it or move the case out.")
    return {case: roles[role] for case, roles in cases.items()}
