"""The four phantom data sets written to disk, each in the layout its model family reads (SPEC §2).

Subjects are numbered across the whole data set, and case ``case_NNN`` is subject ``NNN`` of
dataset seed ``seed``, so groups that must hold different people (unpaired MR and CT, controls
and patients) get disjoint case ids as well as disjoint anatomy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth.choices import PhantomKind
from medsynth.errors import UsageError
from medsynth.io.image import ImageMeta, write_ct, write_image, write_labels
from medsynth.io.outputs import prepare_output_dir
from medsynth.phantom.anatomy import (
    DEFAULT_SHAPE,
    DEFAULT_SPACING,
    HeadVolumes,
    make_attribution_case,
    make_head,
)

DEFAULT_CASES = 8
MIN_SIZE = 16
_SLICE_STRIDE = 2  # neighbouring slices are near duplicates; every other one keeps the variety
_SLICE_MIN_HEAD = 0.1  # fraction of a slice the head must cover for the slice to be kept

Progress = Callable[[int, int], None]  # called with (subjects done, subjects in total)


@dataclass(frozen=True)
class PhantomSummary:
    """What :func:`write_phantom` wrote."""

    kind: PhantomKind
    out: Path
    subjects: int
    files: int
    folders: tuple[str, ...]

    def describe(self) -> str:
        where = ", ".join(f"{name}/" for name in self.folders) if self.folders else (
            "<case>/mr, ct, mask .mha" if self.kind is PhantomKind.SYNTHRAD else "2D slices")
        return f"{self.kind} phantom: {self.subjects} subjects, {self.files} files in {self.out} ({where})"


def case_name(index: int) -> str:
    """Case id of subject ``index``: ``case_000``, ``case_001``, ..."""
    return f"case_{index:03d}"


def write_phantom(
    kind: PhantomKind | str,
    out: str | Path,
    cases: int = DEFAULT_CASES,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: float = DEFAULT_SPACING,
    seed: int = 0,
    overwrite: bool = False,
    progress: Progress | None = None,
    misregistration_mm: float = 0.0,
    t2: bool = False,
) -> PhantomSummary:
    """Write ``cases`` subjects per group of a phantom data set of ``kind`` into folder ``out``.

    paired: ``mr/``, ``ct/``, ``mask/``, ``labels/`` of the same subjects. unpaired: ``mr/`` and
    ``ct/`` of different subjects with ``mr_labels/`` and ``ct_labels/``. attribution: healthy
    ``control/`` subjects, ``patient/`` versions of other subjects and their ``effect/`` maps (MR).
    slices: axial 2D CT slices ``<case>_z###.nii.gz`` of ``cases`` heads. synthrad: the paired
    subjects in SynthRAD 2025's per-case layout, ``<case>/mr.mha``, ``ct.mha``, ``mask.mha``. ``misregistration_mm``
    moves each paired MR slightly against its CT. ``t2`` adds a T2-like contrast to paired or unpaired
    data: the MR channels are then ``mr/<case>_0000`` (T1) and ``mr/<case>_0001`` (T2), as nnU-Net names them.
    The same arguments give identical files.
    """
    kind = _parse_kind(kind)
    shape = _check_geometry(cases, shape, spacing)
    out = _prepare_output(Path(out), overwrite)
    if t2 and kind not in (PhantomKind.PAIRED, PhantomKind.UNPAIRED):
        raise UsageError("--t2 is available for the paired and unpaired phantoms only.")
    plan = _Plan(out, cases, shape, float(spacing), seed, progress or _no_progress, misregistration_mm, t2)
    files = _WRITERS[kind](plan)
    subjects = cases if kind in (PhantomKind.PAIRED, PhantomKind.SLICES, PhantomKind.SYNTHRAD) else 2 * cases
    return PhantomSummary(kind=kind, out=out, subjects=subjects, files=files, folders=_FOLDERS[kind])


def _parse_kind(kind: PhantomKind | str) -> PhantomKind:
    try:
        return PhantomKind(kind)
    except ValueError:
        choices = ", ".join(k.value for k in PhantomKind)
        raise UsageError(f"unknown phantom kind {kind!r}; choose one of {choices}.") from None


def _check_geometry(cases: int, shape: tuple[int, ...], spacing: float) -> tuple[int, int, int]:
    if cases < 1:
        raise UsageError(f"--cases is {cases}; write at least 1 case.")
    if len(shape) != 3 or min(shape) < MIN_SIZE:
        raise UsageError(f"--shape {tuple(shape)} is too small; give 3 sizes of at least {MIN_SIZE} voxels.")
    if not (math.isfinite(spacing) and spacing > 0):
        raise UsageError(f"--spacing {spacing} mm is not a voxel size; give a positive number of mm.")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def _prepare_output(out: Path, overwrite: bool) -> Path:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: is a file; give a folder for the phantom.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out}: exists and is not empty; choose a new folder or pass --overwrite.")
    return prepare_output_dir(out, [])


def _no_progress(done: int, total: int) -> None:
    """Default progress callback: report nothing."""


@dataclass(frozen=True)
class _Plan:
    """The checked arguments of one :func:`write_phantom` call."""

    out: Path
    cases: int
    shape: tuple[int, int, int]
    spacing: float
    seed: int
    progress: Progress
    misregistration_mm: float
    t2: bool = False

    def head(self, index: int, misregistration_mm: float = 0.0) -> HeadVolumes:
        return make_head((self.seed, index), self.shape, self.spacing, misregistration_mm=misregistration_mm,
                         t2=self.t2)

    def path(self, folder: str, index: int) -> Path:
        return self.out / folder / f"{case_name(index)}.nii.gz"


def _meta(head: HeadVolumes) -> ImageMeta:
    return ImageMeta.from_affine(head.affine, head.ct.shape)


def _write_mr(plan: _Plan, index: int, head: HeadVolumes) -> int:
    """The MR of subject ``index``: ``mr/<case>``, or with a T2 ``mr/<case>_0000`` (T1) and ``_0001`` (T2)."""
    contrasts = [head.mr] if head.t2 is None else [head.mr, head.t2]
    for channel, mr in enumerate(contrasts):
        name = case_name(index) if head.t2 is None else f"{case_name(index)}_{channel:04d}"
        write_image(plan.out / "mr" / f"{name}.nii.gz", mr, _meta(head))
    return len(contrasts)


def _write_paired(plan: _Plan) -> int:
    for index in range(plan.cases):
        head = plan.head(index, plan.misregistration_mm)
        meta = _meta(head)
        _write_mr(plan, index, head)
        write_ct(plan.path("ct", index), head.ct, meta)
        write_labels(plan.path("mask", index), head.mask, meta)
        write_labels(plan.path("labels", index), head.labels, meta)
        plan.progress(index + 1, plan.cases)
    return (3 + (2 if plan.t2 else 1)) * plan.cases


def _write_synthrad(plan: _Plan) -> int:
    for index in range(plan.cases):
        head = plan.head(index, plan.misregistration_mm)
        meta, folder = _meta(head), plan.out / case_name(index)
        write_image(folder / "mr.mha", head.mr, meta)
        write_ct(folder / "ct.mha", head.ct, meta)
        write_labels(folder / "mask.mha", head.mask, meta)
        plan.progress(index + 1, plan.cases)
    return 3 * plan.cases


def _write_unpaired(plan: _Plan) -> int:
    # MR subjects are 0..cases-1 and CT subjects cases..2*cases-1: nobody appears in both.
    total, files = 2 * plan.cases, 0
    for index in range(total):
        head = plan.head(index)
        modality = "mr" if index < plan.cases else "ct"
        if modality == "mr":
            files += _write_mr(plan, index, head) + 1
        else:
            write_ct(plan.path("ct", index), head.ct, _meta(head))
            files += 2
        write_labels(plan.path(f"{modality}_labels", index), head.labels, _meta(head))
        plan.progress(index + 1, total)
    return files


def _write_attribution(plan: _Plan) -> int:
    # Controls are subjects 0..cases-1, patients cases..2*cases-1; each patient's own healthy
    # version is rendered only to compute its ground-truth effect, never written as a control.
    total = 2 * plan.cases
    for index in range(plan.cases):
        head = plan.head(index)
        write_image(plan.path("control", index), head.mr, _meta(head))
        plan.progress(index + 1, total)
    for index in range(plan.cases, total):
        case = make_attribution_case((plan.seed, index), plan.shape, plan.spacing)
        meta = _meta(case.patient)
        write_image(plan.path("patient", index), case.patient.mr, meta)
        write_image(plan.path("effect", index), case.mr_effect, meta)
        plan.progress(index + 1, total)
    return 3 * plan.cases


def _write_slices(plan: _Plan) -> int:
    files = 0
    for index in range(plan.cases):
        head = plan.head(index)
        for z in head_slices(head.mask):
            meta = ImageMeta.from_affine(slice_affine(head.affine, z), head.ct.shape[:2])
            write_ct(plan.out / f"{case_name(index)}_z{z:03d}.nii.gz", head.ct[:, :, z], meta)
            files += 1
        plan.progress(index + 1, plan.cases)
    return files


def head_slices(mask: np.ndarray, stride: int = _SLICE_STRIDE) -> list[int]:
    """Axial indices whose slice is at least 10% head, every ``stride``-th of them."""
    covered = mask.reshape(-1, mask.shape[2]).mean(axis=0) >= _SLICE_MIN_HEAD
    return [int(z) for z in np.flatnonzero(covered)[::stride]]


def slice_affine(affine: np.ndarray, z: int) -> np.ndarray:
    """Affine of axial slice ``z`` as a 2D image: the 3D affine with the slice index folded in."""
    sliced = np.array(affine, dtype=np.float64)
    sliced[:3, 3] += z * sliced[:3, 2]
    return sliced


_FOLDERS = {
    PhantomKind.PAIRED: ("ct", "labels", "mask", "mr"),
    PhantomKind.UNPAIRED: ("ct", "ct_labels", "mr", "mr_labels"),
    PhantomKind.ATTRIBUTION: ("control", "effect", "patient"),
    PhantomKind.SLICES: (),
    PhantomKind.SYNTHRAD: (),
}
_WRITERS = {
    PhantomKind.PAIRED: _write_paired,
    PhantomKind.UNPAIRED: _write_unpaired,
    PhantomKind.ATTRIBUTION: _write_attribution,
    PhantomKind.SLICES: _write_slices,
    PhantomKind.SYNTHRAD: _write_synthrad,
}
