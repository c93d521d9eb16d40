"""One raw case through ``prepare``: N4, registration, resampling onto the MR grid, mask, crop, outputs."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsynth.data.bodymask import body_mask
from medsynth.errors import InputError
from medsynth.io.grids import grid_mismatch
from medsynth.io.image import ImageMeta, Volume, read_image, write_ct, write_image, write_labels
from medsynth.io.itk import from_sitk, to_sitk
from medsynth.prepare.overlay import save_overlay
from medsynth.prepare.sources import RawCase
from medsynth.prepare.steps import (
    AIR_HU,
    CT_CLIP,
    Registration,
    field_of_view,
    itk_parameters,
    motion_of,
    n4_correct,
    normalised_mutual_information,
    register,
    resample,
)


@dataclass
class CaseSettings:
    """What ``prepare`` does to each case (the CLI's options)."""

    register: Registration = Registration.RIGID
    n4: bool = True
    crop_margin_mm: float | None = None  # None: keep the MR's whole grid
    seed: int = 0


@dataclass
class CaseOutcome:
    """A case's row in the report: status, what registration found, and the files written."""

    case: str
    status: str  # prepared, skipped or failed
    seconds: float = 0.0
    reason: str = ""
    registration: str = ""
    translation_mm: list[float] | None = None  # RAS, where the CT's anatomy sat relative to the MR's
    distance_mm: float | None = None
    rotation_deg: float | None = None
    scale: list[float] | None = None
    nmi_before: float | None = None  # normalised mutual information MR/CT in the body, 1 (none) .. 2
    nmi_after: float | None = None
    ct_coverage: float | None = None  # share of the MR body inside the CT's field of view
    bias_range: list[float] | None = None  # N4 field's 1st and 99th percentile in the body (1 = no bias)
    transform: dict | None = None  # the rigid/affine part in ITK's terms (see steps.itk_parameters)
    outputs: list[str] = field(default_factory=list)


def output_paths(case: RawCase, out: Path) -> dict[str, Path]:
    """Where a case's outputs go: ``mr``/``mr_0001``... (one per contrast), ``ct``, ``mask``, ``labels``."""
    paths = {}
    for index in range(len(case.mr)):
        name = f"{case.case}_{index:04d}" if case.channel_named or len(case.mr) > 1 else case.case
        paths["mr" if index == 0 else f"mr_{index:04d}"] = out / "mr" / f"{name}.nii.gz"
    paths.update(ct=out / "ct" / f"{case.case}.nii.gz", mask=out / "mask" / f"{case.case}.nii.gz")
    if case.labels is not None:
        paths["labels"] = out / "labels" / f"{case.case}.nii.gz"
    paths["overlay"] = out / "overlays" / f"{case.case}.png"
    return paths


def prepare_case(case: RawCase, out: Path, settings: CaseSettings) -> CaseOutcome:
    """Align one raw case onto its MR grid and write it; raises :class:`InputError` for unusable input."""
    import SimpleITK as sitk

    started = time.perf_counter()
    mr = [read_image(p) for p in case.mr]
    ct = read_image(case.ct)
    reference = to_sitk(mr[0].array, mr[0].meta)
    channels = [reference] + [_onto(other, mr[0], reference) for other in mr[1:]]
    mr_body = body_mask(mr[0].array)
    body_image = to_sitk(mr_body.astype(np.uint8), mr[0].meta)
    outcome = CaseOutcome(case.case, "prepared", registration=settings.register.value)
    if settings.n4:
        corrected = [n4_correct(image, body_image) for image in channels]
        channels = [image for image, _ in corrected]
        bias = from_sitk(corrected[0][1])[mr_body]
        outcome.bias_range = [float(v) for v in np.percentile(bias, (1, 99))]
    moving = to_sitk(np.clip(ct.array, *CT_CLIP), ct.meta)
    transform = register(channels[0], moving, body_image, settings.register, settings.seed)
    motion = motion_of(transform, body_image)
    outcome.translation_mm = [round(v, 3) for v in motion.translation_mm]
    outcome.distance_mm, outcome.rotation_deg = motion.distance_mm, motion.rotation_deg
    outcome.scale, outcome.transform = list(motion.scale), itk_parameters(transform)
    identity = sitk.Euler3DTransform()
    ct_on_mr = from_sitk(resample(moving, reference, transform))
    fov = from_sitk(field_of_view(moving, reference, transform)) > 0
    if not fov.any():
        raise InputError(f"{case.ct}: after registration the CT does not overlap the MR at all; check that "
                         "both show the same patient and region.")
    before = from_sitk(resample(moving, reference, identity))
    fov_before = from_sitk(field_of_view(moving, reference, identity)) > 0
    mr0 = from_sitk(channels[0])
    outcome.nmi_before = _finite(normalised_mutual_information(mr0, before, mr_body & fov_before))
    outcome.nmi_after = _finite(normalised_mutual_information(mr0, ct_on_mr, mr_body & fov))
    outcome.ct_coverage = float((mr_body & fov).sum() / max(mr_body.sum(), 1))
    # The SynthRAD convention takes the body outline from the CT; voxels the CT never saw are out.
    mask = body_mask(np.where(fov, ct_on_mr, AIR_HU)) & fov
    arrays = {"mask": mask.astype(np.uint8), "ct": ct_on_mr}
    arrays.update({("mr" if i == 0 else f"mr_{i:04d}"): from_sitk(image) for i, image in enumerate(channels)})
    if case.labels is not None:
        arrays["labels"] = _labels_on_mr(read_image(case.labels, check_values=False), ct, mr[0], reference,
                                         transform)
    meta = mr[0].meta
    if settings.crop_margin_mm is not None:
        window = crop_window(mask, meta, settings.crop_margin_mm)
        arrays = {role: array[window] for role, array in arrays.items()}
        meta = crop_meta(meta, [s.start for s in window], arrays["ct"].shape)
    outcome.outputs = [str(p) for p in _write(arrays, meta, output_paths(case, out))]
    outcome.outputs.append(str(save_overlay(output_paths(case, out)["overlay"], mr0, before, ct_on_mr,
                                            mr[0].meta)))
    outcome.seconds = time.perf_counter() - started
    return outcome


def _onto(volume: Volume, first: Volume, reference):
    """Another MR contrast of the same session on the first contrast's grid (scanner coordinates)."""
    import SimpleITK as sitk

    image = to_sitk(volume.array, volume.meta)
    if _same_grid(volume, first):
        return image
    return resample(image, reference, sitk.Euler3DTransform(), default=0.0)


def _same_grid(a: Volume, b: Volume) -> bool:
    return grid_mismatch(a, b) is None


def _labels_on_mr(labels: Volume, ct: Volume, mr: Volume, reference, transform) -> np.ndarray:
    """Labels drawn on the CT move with it; labels already on the MR's grid stay where they are."""
    import SimpleITK as sitk

    moves = _same_grid(labels, ct) or not _same_grid(labels, mr)
    image = to_sitk(np.rint(labels.array).astype(np.int16), labels.meta)
    return from_sitk(resample(image, reference, transform if moves else sitk.Euler3DTransform(), labels=True,
                              default=0))


def crop_window(mask: np.ndarray, meta: ImageMeta, margin_mm: float) -> tuple[slice, ...]:
    """The mask's bounding box grown by ``margin_mm`` on every side (in voxels per axis), within the grid."""
    if margin_mm < 0:
        raise InputError(f"--crop-margin {margin_mm} mm: give 0 or more millimetres.")
    where = np.argwhere(mask)
    margin = [math.ceil(margin_mm / s) for s in meta.spacing[:3]]
    low = np.maximum(where.min(0) - margin, 0)
    high = np.minimum(where.max(0) + 1 + np.asarray(margin), mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))


def crop_meta(meta: ImageMeta, start: list[int], shape: tuple[int, ...]) -> ImageMeta:
    """Geometry of a sub-grid starting at voxel ``start``: every matrix shifted, codes kept."""
    shift = np.eye(4)
    shift[:3, 3] = start

    def moved(matrix: np.ndarray | None) -> np.ndarray | None:
        return None if matrix is None else np.asarray(matrix) @ shift

    return ImageMeta(affine=moved(meta.affine), shape=tuple(int(s) for s in shape), qform=moved(meta.qform),
                     sform=moved(meta.sform), qform_code=meta.qform_code, sform_code=meta.sform_code,
                     xyzt_units=meta.xyzt_units, source=meta.source)


def _write(arrays: dict[str, np.ndarray], meta: ImageMeta, paths: dict[str, Path]) -> list[Path]:
    written = []
    for role, array in arrays.items():
        if role == "ct":
            written.append(write_ct(paths[role], array, meta))
        elif role in ("mask", "labels"):
            written.append(write_labels(paths[role], array, meta))
        else:
            written.append(write_image(paths[role], array, meta, np.float32))
    return written


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
