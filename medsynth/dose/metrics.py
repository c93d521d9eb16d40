"""Dose comparison metrics: gamma pass rates, dose differences, DVH points and proton range shifts.

Every difference is synthetic-CT dose minus CT dose. Arrays are (X, Y, Z) on one grid with the
voxel size given in mm; doses in Gy. The gamma index is pymedphys' (import this module only after
:func:`medsynth.dose.require_dose_extra`).
"""

from __future__ import annotations

import numpy as np
import pymedphys
from scipy import ndimage

from medsynth.dose.planning import BeamAxis

# Gamma criteria reported: (dose difference in % of the reference maximum, distance to agreement in mm).
GAMMA_CRITERIA = ((2.0, 2.0), (1.0, 1.0))
# Gamma is searched up to this value; beyond it a point fails anyway, and stopping saves time.
MAX_GAMMA = 2.0
# The distal fall-off point of a proton beam's depth-dose profile, as a fraction of its maximum.
DISTAL_LEVEL = 0.8
_PROFILE_STEP_MM = 0.5


def gamma_index(reference: np.ndarray, evaluated: np.ndarray, spacing: tuple[float, ...], dose_percent: float,
                distance_mm: float, cutoff_percent: float = 10.0, interp_fraction: int = 10) -> np.ndarray:
    """Global 3D gamma of ``evaluated`` against ``reference`` (same grid), capped at :data:`MAX_GAMMA`.

    The dose criterion is ``dose_percent`` % of the reference maximum; reference points below
    ``cutoff_percent`` % of it are not scored and come back as NaN. Returns an array like ``reference``.
    """
    axes = tuple(np.arange(n) * float(s) for n, s in zip(reference.shape, spacing, strict=True))
    gamma = pymedphys.gamma(axes, reference, axes, evaluated, dose_percent, distance_mm,
                            lower_percent_dose_cutoff=cutoff_percent, interp_fraction=interp_fraction,
                            max_gamma=MAX_GAMMA, local_gamma=False)
    return np.asarray(gamma, dtype=np.float64)


def pass_rate(gamma: np.ndarray) -> float:
    """Percentage of scored points (not NaN) with gamma ≤ 1; NaN if no point was scored."""
    scored = gamma[~np.isnan(gamma)]
    return float(np.count_nonzero(scored <= 1.0) / scored.size * 100.0) if scored.size else float("nan")


def dose_differences(reference: np.ndarray, evaluated: np.ndarray, body: np.ndarray, target: np.ndarray,
                     prescription: float) -> dict[str, float]:
    """Dose differences in % of the prescription.

    ``mad_body``: mean |ΔD| in the body; ``mad_high``: mean |ΔD| where the reference dose exceeds 90 %
    of the prescription; ``d98``/``d50``/``d2``: differences of the target's near-minimum, median and
    near-maximum dose (the dose received by 98, 50 and 2 % of it); ``dmean``: difference of the
    body's mean dose.
    """
    scale = 100.0 / prescription
    high = reference > 0.9 * prescription
    difference = np.abs(evaluated - reference)
    result = {"mad_body": float(difference[body].mean()) * scale,
              "mad_high": float(difference[high].mean()) * scale if high.any() else float("nan"),
              "dmean": float(evaluated[body].mean() - reference[body].mean()) * scale}
    for name, volume_percent in (("d98", 98.0), ("d50", 50.0), ("d2", 2.0)):
        dvh_point = [float(np.percentile(dose[target], 100.0 - volume_percent)) for dose in (reference, evaluated)]
        result[name] = (dvh_point[1] - dvh_point[0]) * scale
    return result


def distal_falloff_mm(dose: np.ndarray, axis: BeamAxis, spacing: tuple[float, ...]) -> float:
    """Depth (mm from the isocentre along the beam) where the beam's dose falls to 80 % of its maximum.

    The profile is sampled along the central axis every 0.5 mm with linear interpolation; the
    crossing after the maximum is interpolated linearly between samples. NaN if the beam has no dose
    on its axis or never falls off inside the volume.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    reach = float(np.linalg.norm(np.asarray(dose.shape) * spacing))
    depths = np.arange(-reach, reach, _PROFILE_STEP_MM)
    points = axis.isocentre[:, None] + np.outer(axis.direction / spacing, depths)
    profile = ndimage.map_coordinates(dose, points, order=1, mode="constant", cval=0.0)
    peak = int(np.argmax(profile))
    level = DISTAL_LEVEL * profile[peak]
    if not level > 0:
        return float("nan")
    below = np.flatnonzero(profile[peak:] < level)
    if below.size == 0:
        return float("nan")
    after = peak + int(below[0])
    before = after - 1
    fraction = (profile[before] - level) / (profile[before] - profile[after])
    return float(depths[before] + fraction * (depths[after] - depths[before]))


def range_shifts(reference_beams: list[np.ndarray], evaluated_beams: list[np.ndarray], axes: list[BeamAxis],
                 spacing: tuple[float, ...]) -> list[float]:
    """Per beam, the shift (mm) of the distal 80 % point: positive where the beam reaches deeper on the sCT."""
    return [distal_falloff_mm(e, a, spacing) - distal_falloff_mm(r, a, spacing)
            for r, e, a in zip(reference_beams, evaluated_beams, axes, strict=True)]
