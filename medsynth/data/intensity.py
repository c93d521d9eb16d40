"""Intensity normalisation to [-1, 1] and back (SPEC §2); its parameters live in the model file."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

from medsynth.data.bodymask import body_mask
from medsynth.errors import InputError

CT_WINDOW = (-1024.0, 3071.0)


class MRScaling(StrEnum):
    """Per-volume MR scaling: foreground percentiles to [-1, 1], a foreground z-score, or a piecewise-linear
    histogram standardisation of the body (Nyúl & Udupa, 1999) onto landmarks learnt from the training set."""

    PERCENTILE = "percentile"
    ZSCORE = "zscore"
    HISTOGRAM = "histogram"


# Landmarks anchored on tissue: the body histogram's main peak (the dominant soft tissue) and quantiles of
# the voxels darker and brighter than it, so that a change of the tissue mix on one side (a smaller field of
# view, more fat) moves the landmarks less than plain percentiles of the whole body would. A gamma or
# contrast change between landmarks is undone piecewise-linearly.
DARK_PERCENTILES = (2.0, 25.0, 50.0, 75.0)  # of the body voxels darker than the peak
BRIGHT_PERCENTILES = (25.0, 50.0, 75.0, 98.0)  # of those brighter
LANDMARK_COUNT = len(DARK_PERCENTILES) + 1 + len(BRIGHT_PERCENTILES)


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
    """MR: per volume, foreground percentiles (0.5, 99.5) to [-1, 1]; foreground z-score; or histogram
    standardisation (``HISTOGRAM``): the body's tissue-anchored landmarks (:func:`body_landmarks`) are mapped
    piecewise-linearly onto ``landmarks`` (learnt by :meth:`fit_landmarks`, from -1 to 1), clipped to [-1, 1].

    Histogram standardisation holds anatomy in place whatever the scanner's offset, scale, gamma or
    contrast: every tissue keeps its rank in the body's histogram, and the body's own histogram (not the
    image's, whose background share follows the field of view) sets the scale.

    The scale is learnt from each volume itself, so there is nothing to invert on output; a
    synthetic MR is written in the normalised units times ``output_scale``.
    """

    scaling: MRScaling = MRScaling.PERCENTILE
    percentiles: tuple[float, float] = (0.5, 99.5)
    output_scale: float = 1000.0
    landmarks: tuple[float, ...] = ()  # HISTOGRAM: standard values of the body landmarks; () = even

    def normalise(self, image: np.ndarray, foreground: np.ndarray) -> np.ndarray:
        """``image`` (any shape) in normalised units, scaled on the voxels of ``foreground`` (bool, same shape).

        Raises InputError when the foreground holds no intensity range.
        """
        values = foreground_values(image, foreground)
        if MRScaling(self.scaling) is MRScaling.HISTOGRAM:
            standard = np.asarray(self.landmarks or np.linspace(-1.0, 1.0, LANDMARK_COUNT))
            return np.interp(image, body_landmarks(values), standard).astype(np.float32)
        if MRScaling(self.scaling) is MRScaling.ZSCORE:
            mean, std = float(values.mean(dtype=np.float64)), float(values.std(dtype=np.float64))  # no overflow
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

    def fit_landmarks(self, bodies: Iterable[np.ndarray]) -> MRIntensity:
        """This scaling with the standard landmarks of Nyúl's method learnt from the body voxels of each
        training MR: each volume's landmarks scaled linearly so that its ends go to -1 and 1, then averaged."""
        if MRScaling(self.scaling) is not MRScaling.HISTOGRAM:
            return self
        scaled = []
        for values in bodies:
            points = body_landmarks(values)
            scaled.append(2.0 * (points - points[0]) / (points[-1] - points[0]) - 1.0)
        return MRIntensity(self.scaling, self.percentiles, self.output_scale,
                           tuple(round(float(v), 6) for v in np.mean(scaled, axis=0)))

    def to_json(self) -> dict[str, Any]:
        return {"modality": "mr", **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}}


Intensity = CTIntensity | MRIntensity


def intensity_from_json(document: dict[str, Any]) -> Intensity:
    """Rebuild the normalisation stored in a model file."""
    if document["modality"] == "ct":
        return CTIntensity(window=tuple(document["window"]))
    return MRIntensity(scaling=MRScaling(document["scaling"]), percentiles=tuple(document["percentiles"]),
                       output_scale=float(document["output_scale"]),
                       landmarks=tuple(document.get("landmarks", ())))  # absent in models before histogram scaling


def body_landmarks(values: np.ndarray) -> np.ndarray:
    """``LANDMARK_COUNT`` increasing landmarks of MR body voxels: ``DARK_PERCENTILES`` of the voxels darker
    than the histogram's main peak, the peak, and ``BRIGHT_PERCENTILES`` of the brighter ones.

    Raises InputError when the values hold no intensity range.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    low, high = np.percentile(values, (1.0, 99.0))
    if not high > low:
        raise InputError("the MR foreground has no intensity range; it holds no image.")
    counts, edges = np.histogram(values, bins=128, range=(low, high))
    peak_bin = int(np.argmax(gaussian_filter1d(counts.astype(np.float64), 2.0)))
    peak = 0.5 * (edges[peak_bin] + edges[peak_bin + 1])
    dark, bright = values[values < peak], values[values >= peak]
    points = np.concatenate([np.percentile(dark if dark.size else values, DARK_PERCENTILES), [peak],
                             np.percentile(bright if bright.size else values, BRIGHT_PERCENTILES)])
    span = high - low
    # ties (a flat stretch of the histogram) would make np.interp ill-defined; nudge them apart
    return np.maximum.accumulate(points) + np.arange(points.size) * span * 1e-6


def foreground_values(image: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """The voxels of ``image`` an MR scaling is computed on: those of ``foreground``, or all when it is empty."""
    return image[foreground] if foreground.any() else image.ravel()


def mr_scaling_body(intensity: MRIntensity, image: np.ndarray) -> np.ndarray:
    """The body a 3D MR (X, Y, Z) is scaled on by :func:`normalise_mr_body`: the MR body mask, which no offset
    or scale of the MR moves. Histogram standardisation uses the body itself (no background in its
    statistics); the older scalings keep the dilated mask they were trained with."""
    dilation = 0 if MRScaling(intensity.scaling) is MRScaling.HISTOGRAM else 3
    return body_mask(image, dilation=dilation, modality="mr")


def normalise_mr_body(intensity: MRIntensity, image: np.ndarray) -> np.ndarray:
    """A 3D MR (X, Y, Z) normalised on its own body (:func:`mr_scaling_body`)."""
    return intensity.normalise(image, mr_scaling_body(intensity, image))
