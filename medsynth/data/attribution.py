"""The attribution layout (SPEC §2) prepared for VA-GAN and its saliency baseline: controls, training patients
and held-out patients with effect maps, on one model grid, normalised, with the slices 2D training draws."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth.data.bodymask import body_mask
from medsynth.data.geometry import model_grid
from medsynth.data.intensity import MRIntensity, MRScaling
from medsynth.data.layouts import Case, Datalist, discover_unpaired, read_cases
from medsynth.data.splits import SplitPlan
from medsynth.data.volumes import IntensityRegion, fit_mr_intensity, normalisation_region, on_grid
from medsynth.io.image import Volume, model_ndim

_HEAD_FRACTION = 0.1  # an axial slice takes part in 2D training when the head covers this share of it


@dataclass
class PreparedImage:
    """One image on the model grid, normalised, with what training and evaluation need of it."""

    name: str
    image: np.ndarray  # (1, X, Y, Z) in [-1, 1]
    slices: np.ndarray  # axial indices drawn in 2D training
    effect: np.ndarray | None = None  # (X, Y, Z) ground truth on the model grid, input units


class AttributionData:
    """Controls, training patients and held-out patients with effect maps (SPEC §2 attribution layout).

    Held-out patients are the last ``val_cases`` (by case id) of those with an ``effect/`` map; effect
    maps are never used for training.
    """

    def __init__(self, root: Path, spacing: Sequence[float] | None = None,
                 scaling: MRScaling = MRScaling.PERCENTILE, region: IntensityRegion = IntensityRegion.IMAGE,
                 val_cases: int = -1, slab: float = 1.0, dims: int = 3, split: SplitPlan | None = None) -> None:
        folders = discover_unpaired(Path(root), ("control", "patient"), ("effect",))
        controls = [Case(cid, {"control": path}) for cid, path in folders["control"].items()]
        patients = [Case(cid, {"patient": path, **({"effect": folders["effect"][cid]} if cid in folders["effect"]
                                                   else {})}) for cid, path in folders["patient"].items()]
        # Only patients with an effect map can validate; controls and the other patients always train.
        self.split = (split or SplitPlan()).split(
            [f"patient/{c.id}" for c in patients if "effect" in c], val_cases,
            always_train=[f"control/{c.id}" for c in controls] + [f"patient/{c.id}" for c in patients
                                                                  if "effect" not in c])
        held = [c for c in patients if f"patient/{c.id}" in self.split.val]
        training = [c for c in patients if c not in held]
        self.datalist = Datalist(controls + training, held, Path(root))
        # A 2D model also trains on 2D images, (H, W) or (H, W, 1).
        volumes = read_cases(controls + training + held, Path(root), ("patient", "effect"), model_ndim(dims))
        self.grid = model_grid([next(iter(v.values())).meta for v in volumes], spacing)
        self.region = IntensityRegion(region)
        images = [on_grid(self.grid, v.get("control") or v["patient"]) for v in volumes]
        # HISTOGRAM scaling: landmarks fitted on the training images (controls and training patients), each
        # over the region its scale comes from, as attribute will scale a new image
        self.intensity = fit_mr_intensity(MRIntensity(scaling=scaling), images[:len(controls) + len(training)],
                                          lambda image: normalisation_region(image, self.region))
        prepared = [self._prepare(v.id, image, v.get("effect"), slab) for v, image in zip(volumes, images, strict=True)]
        del images
        self.controls = prepared[:len(controls)]
        self.patients = prepared[len(controls):len(controls) + len(training)]
        self.validation = prepared[len(controls) + len(training):]

    def _prepare(self, name: str, image: np.ndarray, effect: Volume | None, slab: float) -> PreparedImage:
        """One image on the model grid (X, Y, Z), normalised, with its effect map and training slices."""
        normalised = self.intensity.normalise(image, normalisation_region(image, self.region))
        effect_grid = None if effect is None else on_grid(self.grid, effect)
        body = body_mask(image, modality="mr")
        return PreparedImage(name, normalised[None], _central_slices(body, slab), effect_grid)

    def whole_size(self, dims: int, divisor: int) -> tuple[int, ...]:
        """The smallest patch holding every training image (or axial slice), in multiples of ``divisor``."""
        largest = np.max([p.image.shape[1:dims + 1] for p in self.controls + self.patients], axis=0)
        return tuple(int(-(-s // divisor) * divisor) for s in largest)


def _central_slices(foreground: np.ndarray, slab: float) -> np.ndarray:
    """Axial slices the head covers by at least 10 %, cut down to their central ``slab`` fraction."""
    covered = np.flatnonzero(foreground.mean(axis=(0, 1)) >= _HEAD_FRACTION)
    if covered.size == 0:
        covered = np.arange(foreground.shape[2])
    keep = max(1, round(covered.size * slab))
    first = (covered.size - keep) // 2
    return covered[first:first + keep]
