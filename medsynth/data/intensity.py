"""Intensity normalisation to [-1, 1] and back (SPEC §2); its parameters live in the model file."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from medsynth.errors import InputError

CT_WINDOW = (-1024.0, 3071.0)


class MRScaling(StrEnum):
    """Per-volume MR scaling: foreground percentiles to [-1, 1], or a foreground z-score."""

    PERCENTILE = "percentile"
    ZSCORE = "zscore"


@dataclass(frozen=True)
class CTIntensity:
    """CT: clip to ``window`` HU and map it linearly onto [-1, 1]."""

    window: tuple[float, float] = CT_WINDOW

    def normalise(self, hu: np.ndarray) -> np.ndarray:
        low, high = self.window
        return (2.0 * (np.clip(hu, low, high) - low) / (high - low) - 1.0).astype(np.float32)

    def denormalise(self, x: np.ndarray) -> np.ndarray:
        low, high = self.window
        return ((np.asarray(x, dtype=np.float32) + 1.0) * 0.5 * (high - low) + low).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {"modality": "ct", "window": list(self.window)}


@dataclass(frozen=True)
class MRIntensity:
    """MR: per volume, foreground percentiles (0.5, 99.5) to [-1, 1]; or foreground z-score.

    The scale is learnt from each volume itself, so there is nothing to invert on output; a
    synthetic MR is written in the normalised units times ``output_scale``.
    """

    scaling: MRScaling = MRScaling.PERCENTILE
    percentiles: tuple[float, float] = (0.5, 99.5)
    output_scale: float = 1000.0

    def normalise(self, image: np.ndarray, foreground: np.ndarray) -> np.ndarray:
        values = image[foreground] if foreground.any() else image.ravel()
        if MRScaling(self.scaling) is MRScaling.ZSCORE:
            mean, std = float(values.mean()), float(values.std())
            if std == 0:
                raise InputError("the MR foreground is constant; it holds no image.")
            return ((image - mean) / std).astype(np.float32)
        low, high = np.percentile(values, self.percentiles)
        del values
        if high <= low:
            raise InputError("the MR foreground has no intensity range; it holds no image.")
        # In place on one float32 copy: a CT-sized volume must not need several float64 temporaries.
        out = image.astype(np.float32, copy=True)
        out -= np.float32(low)
        out *= np.float32(2.0 / (high - low))
        out -= np.float32(1.0)
        return np.clip(out, -1.0, 1.0, out=out)

    def denormalise(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) + 1.0) * 0.5 * self.output_scale).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {"modality": "mr", **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}}


Intensity = CTIntensity | MRIntensity


def intensity_from_json(document: dict[str, Any]) -> Intensity:
    """Rebuild the normalisation stored in a model file."""
    if document["modality"] == "ct":
        return CTIntensity(window=tuple(document["window"]))
    return MRIntensity(scaling=MRScaling(document["scaling"]), percentiles=tuple(document["percentiles"]),
                       output_scale=float(document["output_scale"]))
