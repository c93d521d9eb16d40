"""What a model's training MR looked like, and how far an input is from it (SPEC §8: trust without a CT).

Features of an MR as the network sees it — normalised, on the model grid — that separate a new contrast or scanner
(the intensity distribution of the body after normalisation moves) from a new body region or field of view (the
body's volume and extent change):

- ``q10``, ``q50``, ``q90``: quantiles of the normalised intensities inside the body (voxels above −0.95, the
  normalised background being −1);
- ``rim_minus_core``: the mean normalised intensity of the body's outer 10 mm less that of its inside beyond 20 mm.
  Normalisation fixes the intensity distribution (histogram standardisation maps any contrast onto the same
  landmarks), not which tissue is bright: on T1 the subcutaneous fat of the rim is brightest, on T2 the fluid
  inside; a new contrast moves this feature even where the quantiles cannot move;
- ``volume_l``: the body's volume in litres; ``extent_x/y/z_mm``: its bounding box along the model grid's axes.

The model file stores each feature's mean and standard deviation over the training cases; an input's distance is
its largest |feature − mean| / scale, the scale being the standard deviation but no less than a floor (0.1 for
intensities, 20 % of the mean for sizes: one or two training cases have no spread worth the name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

_BODY_ABOVE = -0.95
UNUSUAL_DISTANCE = 3.0  # an input this many scales from the training mean in any feature is flagged
_INTENSITY = ("q10", "q50", "q90", "rim_minus_core")
_RIM_MM = 10.0


def mr_features(image: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """The features of a normalised MR (X, Y, Z) on a grid of ``spacing`` mm (see the module's docstring)."""
    body = image > _BODY_ABOVE
    if not body.any():
        return {}
    q10, q50, q90 = (float(v) for v in np.percentile(image[body], (10, 50, 90)))
    spacing = [float(s) for s in spacing] + [1.0] * (3 - len(spacing))
    features = {"q10": q10, "q50": q50, "q90": q90, "volume_l": float(body.sum() * np.prod(spacing[:3]) / 1e6)}
    steps = max(1, round(_RIM_MM / min(spacing[:body.ndim])))
    inner = ndi.binary_erosion(body, iterations=steps)
    core = ndi.binary_erosion(inner, iterations=steps)
    if inner.any() and core.any():
        features["rim_minus_core"] = float(image[body & ~inner].mean() - image[core].mean())
    for axis, name in enumerate("xyz"[:body.ndim]):
        spanned = np.flatnonzero(body.any(axis=tuple(a for a in range(body.ndim) if a != axis)))
        features[f"extent_{name}_mm"] = float((spanned[-1] - spanned[0] + 1) * spacing[axis])
    return features


def training_profile(cases: Iterable[Mapping[str, float]]) -> dict[str, list[float]]:
    """Feature -> [mean, standard deviation] over the training cases' :func:`mr_features`."""
    rows = [case for case in cases if case]
    names = sorted(set.intersection(*(set(row) for row in rows))) if rows else []
    return {name: [float(np.mean([r[name] for r in rows])), float(np.std([r[name] for r in rows]))] for name in names}


@dataclass(frozen=True)
class InputCheck:
    """How far an input lies from the training MR, and why when it is unusual."""

    distance: float
    reasons: tuple[str, ...] = ()

    @property
    def unusual(self) -> bool:
        return self.distance > UNUSUAL_DISTANCE

    def summary(self) -> str:
        """``in range (distance 1.2)`` or ``unusual: q50 0.61 vs 0.10 ± 0.10 (distance 5.1)``."""
        if not self.unusual:
            return f"in range (distance {self.distance:.1f})"
        return f"unusual: {'; '.join(self.reasons)} (distance {self.distance:.1f})"


def check_input(features: Mapping[str, float], profile: Mapping[str, Sequence[float]]) -> InputCheck | None:
    """An input's :class:`InputCheck` against a model's profile; None when either has no features."""
    shared = [name for name in profile if name in features]
    if not shared:
        return None
    scores = {}
    for name in shared:
        mean, sd = profile[name]
        floor = 0.1 if name in _INTENSITY else 0.2 * abs(mean)
        scores[name] = abs(features[name] - mean) / max(sd, floor, 1e-6)
    worst = sorted(shared, key=scores.get, reverse=True)
    reasons = tuple(f"{name} {features[name]:.3g} vs {profile[name][0]:.3g} ± {profile[name][1]:.2g}"
                    for name in worst if scores[name] > UNUSUAL_DISTANCE)
    return InputCheck(float(scores[worst[0]]), reasons)
