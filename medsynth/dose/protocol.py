"""The dose protocol's fixed choices: beams, grid, prescription, the default target and the patient frame.

Plain numpy and nibabel only, so the protocol can be read (and tested) without the ``dose`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel.orientations as orientations
import numpy as np
from scipy import ndimage

from medsynth.choices import Modality
from medsynth.errors import InputError

__all__ = ["PATIENT_FRAME", "TARGET_RADIUS_MM", "DoseSettings", "Modality", "PatientFrame", "default_target"]

# The patient frame pyRadPlan (like matRad and DICOM) plans in: x to the patient's left, y posterior,
# z superior. Gantry angles are IEC: 0° is a beam entering from anterior, 90° from the patient's left.
PATIENT_FRAME = ("L", "P", "S")

# Default target: a sphere of this radius (mm) around the body voxel deepest below the body surface.
TARGET_RADIUS_MM = 15.0


@dataclass(frozen=True)
class DoseSettings:
    """The plan and the comparison, fixed for every case so that results are comparable.

    Doses are for one 2 Gy fraction; every difference is reported in % of ``prescription_gy``.
    ``dose_grid_mm`` is the isotropic dose-calculation grid (gamma is evaluated on it; DVH points and
    dose differences on the CT grid after linear interpolation, as pyRadPlan returns them).
    """

    photon_gantry_deg: tuple[float, ...] = (0.0, 72.0, 144.0, 216.0, 288.0)
    proton_gantry_deg: tuple[float, ...] = (0.0, 90.0, 270.0)
    prescription_gy: float = 2.0
    dose_grid_mm: float = 5.0
    bixel_mm: float = 5.0  # photon beamlet width and proton lateral spot spacing at the isocentre
    max_iterations: int = 100  # fluence optimisation (L-BFGS-B) iterations
    gamma_cutoff_percent: float = 10.0  # reference points below this % of the maximum dose are not scored
    gamma_interp_fraction: int = 10  # evaluation grid step = DTA / this, as Low & Dempsey recommend


@dataclass(frozen=True)
class PatientFrame:
    """How a file's voxel order maps onto the patient frame (L, P, S), and back."""

    to_frame: np.ndarray
    from_frame: np.ndarray
    spacing: tuple[float, float, float]  # mm along the frame's x, y, z

    @classmethod
    def of(cls, affine: np.ndarray) -> PatientFrame:
        """The frame of an image with this nibabel-style (RAS+) affine."""
        affine = np.asarray(affine, dtype=np.float64)
        source = orientations.io_orientation(affine)
        target = orientations.axcodes2ornt(PATIENT_FRAME)
        file_spacing = np.linalg.norm(affine[:3, :3], axis=0)
        spacing = [0.0, 0.0, 0.0]
        for axis, (frame_axis, _) in enumerate(source):
            spacing[int(frame_axis)] = float(file_spacing[axis])
        return cls(orientations.ornt_transform(source, target), orientations.ornt_transform(target, source),
                   (spacing[0], spacing[1], spacing[2]))

    def forward(self, array: np.ndarray) -> np.ndarray:
        """``array`` (file voxel order) reordered to (L, P, S)."""
        return np.ascontiguousarray(orientations.apply_orientation(array, self.to_frame))

    def backward(self, array: np.ndarray) -> np.ndarray:
        """``array`` in (L, P, S) order back in the file's voxel order."""
        return np.ascontiguousarray(orientations.apply_orientation(array, self.from_frame))


def default_target(body: np.ndarray, spacing: tuple[float, ...], radius_mm: float = TARGET_RADIUS_MM) -> np.ndarray:
    """The default target: a sphere inside the body, deterministic for a given body mask.

    Centre: the body voxel farthest from the body's surface (Euclidean distance in mm; among equally
    deep voxels the one nearest the body's centroid, then the first in C order). Radius:
    ``radius_mm``, at most half that depth so the sphere stays well inside. Clipped to the body.
    ``body`` is boolean (X, Y, Z), ``spacing`` its voxel size in mm. Raises :class:`InputError` if
    the body is too thin to hold a sphere of at least one voxel.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    depth = ndimage.distance_transform_edt(np.pad(body, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    deepest = np.argwhere(depth >= depth.max() - 1e-6)
    centroid = np.argwhere(body).mean(axis=0)
    centre = deepest[np.argmin(np.linalg.norm((deepest - centroid) * spacing, axis=1))]
    radius = min(radius_mm, float(depth.max()) / 2)
    if radius < spacing.max():
        raise InputError(f"the body is only {depth.max():.1f} mm deep; too thin for a default target, "
                         "give one with --target.")
    grid = np.ogrid[tuple(slice(0, n) for n in body.shape)]
    distance2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing, strict=True))
    return (distance2 <= radius**2) & body
