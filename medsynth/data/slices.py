"""Axial CT slices for FastGAN: from a folder of volumes or 2D slices, square, resized, cached.

Every slice is turned to RAS in-plane order, padded with air to a square field of view (so the
anatomy keeps its aspect ratio), resized to the model resolution with an antialiasing filter and
kept in memory as int16 HU, so an epoch never re-reads a file. Slices with little body (the caps of
a volume, empty slices) are skipped. The median pixel spacing after resizing is what generated
slices are written with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from nibabel.orientations import apply_orientation, io_orientation
from scipy import ndimage as ndi

from medsynth.data.intensity import CT_WINDOW
from medsynth.data.layouts import Problems, read_datalist
from medsynth.errors import InputError
from medsynth.io.casefolders import role_files, task_cases
from medsynth.io.cases import list_images
from medsynth.io.formats import suffix_hint
from medsynth.io.image import Volume, read_image

BODY_THRESHOLD_HU = -500.0  # halfway between air and fat: the body/air boundary on CT
AIR_HU = -1024.0


@dataclass
class SliceSet:
    """Slices at the model resolution (int16 HU, RAS in-plane) and where they came from."""

    hu: np.ndarray  # (N, R, R) int16
    sources: list[str]  # case id of each slice's file
    spacing: tuple[float, float]  # median in-plane pixel spacing after resizing, mm
    thickness: float  # median slice thickness (through-plane spacing), mm
    files: dict[str, Path]  # case id -> file

    def __len__(self) -> int:
        return len(self.hu)


def slice_body_mask(hu: np.ndarray, threshold: float = BODY_THRESHOLD_HU) -> np.ndarray:
    """Body of a 2D CT slice: the largest connected region above ``threshold`` HU, holes filled.

    Filling keeps air cavities (sinuses, airways) inside the body; taking the largest region drops
    the table and noise specks. A slice with nothing above the threshold has an empty body.
    """
    labels, count = ndi.label(np.asarray(hu) > threshold)
    if count == 0:
        return np.zeros(np.shape(hu), dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndi.binary_fill_holes(labels == int(np.argmax(sizes)))


def slice_files(data: Path) -> dict[str, Path]:
    """Case id -> image of a FastGAN dataset: a folder of volumes or 2D slices, a SynthRAD task folder (each
    case's ``ct``) or a datalist with "ct" entries."""
    data = Path(data)
    if data.is_file() and data.suffix.lower() == ".json":
        return {case.id: case["ct"] for case in read_datalist(data, ("ct",)).training}
    if not data.is_dir():
        raise InputError(f"{data}: no such dataset folder; give a folder of CT volumes or 2D slices.")
    synthrad = task_cases(data)
    files = role_files(synthrad, "ct", data) if synthrad is not None else list_images(data)
    if not files:
        raise InputError(f"{data}: holds no images ({suffix_hint()} or DICOM series folders).")
    return files


def ras_slices(volume: Volume) -> tuple[np.ndarray, tuple[float, float], float]:
    """A volume's axial slices (Z, X, Y) in RAS order, or a 2D image as one slice, with spacings.

    Returns the stack, the in-plane spacing (mm) and the through-plane spacing (mm). A 2D image is
    taken as it is, whatever plane it shows; its third affine column gives the thickness.
    """
    planar = volume.array.ndim == 2
    array = volume.array[..., None] if planar else volume.array
    ornt = io_orientation(volume.meta.affine)
    ras = apply_orientation(array, ornt)
    spacing = np.empty(3)
    spacing[ornt[:, 0].astype(int)] = np.linalg.norm(volume.meta.affine[:3, :3], axis=0)
    axis = int(ornt[2, 0]) if planar else 2
    in_plane = tuple(float(s) for i, s in enumerate(spacing) if i != axis)
    return np.moveaxis(ras, axis, 0), (in_plane[0], in_plane[1]), float(spacing[axis]) or 1.0


def square_resize(stack: np.ndarray, spacing: tuple[float, float], resolution: int,
                  ) -> tuple[np.ndarray, tuple[float, float]]:
    """Pad slices (N, X, Y) with air to a square field of view in mm, then resize to ``resolution``².

    Returns float32 HU (N, R, R) and the pixel spacing after resizing.
    """
    side_mm = max(stack.shape[1] * spacing[0], stack.shape[2] * spacing[1])
    target = [max(n, round(side_mm / s)) for n, s in zip(stack.shape[1:], spacing, strict=True)]
    pads = [(0, 0)] + [((t - n) // 2, t - n - (t - n) // 2) for t, n in zip(target, stack.shape[1:], strict=True)]
    padded = np.pad(stack.astype(np.float32), pads, constant_values=AIR_HU)
    resized = F.interpolate(torch.from_numpy(padded)[:, None], size=(resolution, resolution), mode="bilinear",
                            antialias=True, align_corners=False)[:, 0].numpy()
    return resized, (target[0] * spacing[0] / resolution, target[1] * spacing[1] / resolution)


def _body_slices(stack: np.ndarray, body_fraction: float, threshold: float) -> np.ndarray:
    """Indices of slices whose body covers at least ``body_fraction`` of the slice."""
    return np.array([i for i, s in enumerate(stack) if slice_body_mask(s, threshold).mean() >= body_fraction],
                    dtype=int)


def load_slices(data: Path, resolution: int, window: tuple[float, float] = CT_WINDOW, body_fraction: float = 0.05,
                body_threshold: float = BODY_THRESHOLD_HU) -> SliceSet:
    """Read every image under ``data`` and keep its body slices at ``resolution``², clipped to ``window``.

    Unreadable files are reported together; a dataset without a single body slice is an error.
    """
    files = slice_files(data)
    problems = Problems(Path(data))
    stacks, sources, spacings, thicknesses = [], [], [], []
    for cid, file in files.items():
        try:
            stack, spacing, thickness = ras_slices(read_image(file, ndim=(2, 3)))
        except InputError as error:
            problems.add(str(error))
            continue
        keep = _body_slices(stack, body_fraction, body_threshold)
        if keep.size:
            resized, pixel = square_resize(stack[keep], spacing, resolution)
            stacks.append(np.clip(np.rint(resized), *window).astype(np.int16))
            sources += [cid] * len(keep)
            spacings += [pixel] * len(keep)
            thicknesses += [thickness] * len(keep)
    problems.raise_if_any()
    if not stacks:
        raise InputError(f"{data}: no slice has body on at least {body_fraction:.0%} of its area; check that the "
                         "images are CT in HU (air about -1000) or lower body_fraction.")
    median = np.median(np.asarray(spacings), axis=0)
    return SliceSet(np.concatenate(stacks), sources, (float(median[0]), float(median[1])),
                    float(np.median(thicknesses)), files)
