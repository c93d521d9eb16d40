"""Calibrate a model's spread against its actual error on cases with a reference CT, stored in the model file.

After training, ``train`` runs this on the run's validation cases; ``translate --tta --uncertainty K`` then
turns each spread map into an expected-error map in HU and a predicted MAE with an interval
(:mod:`medsynth.metrics.calibration`). The calibration translates each case exactly as ``translate`` does
(same grid, normalisation, windows, flips), scores |sCT − CT| in the CT's body mask (the evaluation
protocol's mask) and fits the spread → error curve.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth.choices import Direction
from medsynth.data.bodymask import body_mask_any
from medsynth.io.image import Volume
from medsynth.metrics.calibration import ErrorCalibration, fit_error_calibration
from medsynth.modelfile import update_metadata
from medsynth.services.options import TranslateOptions
from medsynth.services.translate import load_translator

#: MC-dropout passes of a calibration (and the documented pairing at translate: ``--uncertainty 4``)
CALIBRATION_SAMPLES = 4


@dataclass(frozen=True)
class CalibrationCase:
    """A case to calibrate on: its MR volume(s) in the model's channel order, reference CT and optional mask."""

    id: str
    mr: Volume | Sequence[Volume]
    ct: Volume
    mask: np.ndarray | None = None


def calibrate_model(model_file: Path, cases: Iterable[CalibrationCase], device: str = "cpu"
                    ) -> ErrorCalibration | None:
    """Fit and store the spread → expected-error calibration of ``model_file`` on ``cases`` (MR→CT).

    Returns None, storing nothing, when the model has no spread to calibrate (no training flips and no
    dropout) or no case has body voxels.
    """
    options = TranslateOptions(device=device, tta=True, uncertainty=CALIBRATION_SAMPLES)
    translator = load_translator(Path(model_file), Direction.MR2CT, options)
    kind = translator.spread_kind(options.tta, options.uncertainty)
    if kind is None:
        return None

    def scored():
        for case in cases:
            mean, std = translator.run(translator.prepare(case.mr), options.overlap, options.tta,
                                       options.uncertainty)
            body = body_mask_any(case.ct.array) if case.mask is None else case.mask.astype(bool)
            # translate's mask for a predicted MAE: the sCT's own body (services/translate.py)
            yield case.id, np.abs(mean - case.ct.array.astype(np.float32)), std, body, body_mask_any(mean)

    try:
        calibration = fit_error_calibration(scored(), kind)
    except ValueError:
        return None
    update_metadata(Path(model_file), {"error_calibration": calibration.to_json()})
    return calibration
