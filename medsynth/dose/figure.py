"""A case's dose figure: CT dose, sCT dose, their difference and the gamma map on the target's axial slice."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps

from medsynth.viz import mid_slices, overlay_signed_map, save_grid, window

# Doses below this fraction of the prescription are left uncoloured, as in a planning system's colour wash.
_WASH_FROM = 0.1
_DIFFERENCE_LIMIT = 0.1  # the difference panel saturates at ±10 % of the prescription


def write_case_figure(path: Path, hu: np.ndarray, spacing: tuple[float, ...], shown: Sequence,
                      prescription: float) -> Path:
    """One row per plan kind: CT dose | sCT dose | sCT − CT | gamma 2%/2 mm (0–2), axial, through the dose peak.

    ``hu`` and the arrays in ``shown`` (:class:`medsynth.dose.evaluate.CaseDoses`) are (X, Y, Z) in the
    patient frame (L, P, S) with voxel size ``spacing`` (mm). The PNG is written atomically.
    """
    # Patient-frame axes run to the left, posterior and superior: in RAS+ the first two are negative.
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    rows, titles = [], []
    for doses in shown:
        peak = np.unravel_index(int(np.argmax(doses.ct_dose)), doses.ct_dose.shape)
        centre = (hu.shape[0] - 1 - int(peak[0]), hu.shape[1] - 1 - int(peak[1]), int(peak[2]))

        def axial(volume: np.ndarray, centre: tuple[int, int, int] = centre) -> np.ndarray:
            return mid_slices(volume, affine, centre).axial

        grey = window(axial(hu), -1000, 1500)
        difference = axial(doses.sct_dose - doses.ct_dose)
        rows.append([_wash(grey, axial(doses.ct_dose) / prescription),
                     _wash(grey, axial(doses.sct_dose) / prescription),
                     overlay_signed_map(grey, difference, limit=_DIFFERENCE_LIMIT * prescription),
                     _gamma_panel(grey, axial(doses.gamma))])
        titles += [f"{doses.kind}: CT dose", f"{doses.kind}: sCT dose", "sCT-CT ±10%",
                   f"gamma 2%/2mm: {doses.pass_rate:.1f}%"]
    # Three times enlarged so that the titles fit above panels of small volumes.
    return save_grid(path, rows, titles, scale=3)


def _wash(grey: np.ndarray, relative: np.ndarray) -> np.ndarray:
    """Jet colours for 10–110 % of the prescription over the grey CT slice."""
    colour = colormaps["jet"](np.clip(relative / 1.1, 0.0, 1.0))[..., :3] * 255.0
    return _blend(grey, colour, 0.6 * (relative >= _WASH_FROM))


def _gamma_panel(grey: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Gamma from 0 (green) through 1 (yellow) to 2 (red) where it was scored."""
    colour = colormaps["RdYlGn_r"](np.clip(np.nan_to_num(gamma) / 2.0, 0.0, 1.0))[..., :3] * 255.0
    return _blend(grey, colour, 0.8 * ~np.isnan(gamma))


def _blend(grey: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    rgb = np.repeat(grey[..., None].astype(np.float32), 3, axis=-1)
    return np.rint(rgb + alpha[..., None] * (colour - rgb)).astype(np.uint8)
