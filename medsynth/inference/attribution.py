"""Attribution maps: one volume through VA-GAN's map generator M (model grid, the model's normalisation region
or a given mask, the grid predictor :class:`~medsynth.inference.predictor.GridPredictor`, the map in the input's
units and exact return to the input grid), and the gradient saliency of a classifier, the baseline M is
compared with (Simonyan et al., 2014)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from medsynth.data.geometry import ModelGrid
from medsynth.data.intensity import MRIntensity, MRScaling
from medsynth.data.volumes import IntensityRegion, mask_on_grid, normalisation_region, to_grid
from medsynth.errors import ModelError
from medsynth.inference.predictor import GridPredictor, inference_layout
from medsynth.io.image import Volume
from medsynth.modelfile import AttributionMetadata, ModelFile


def normalised_unit(values: np.ndarray, intensity: MRIntensity) -> float:
    """Input units per normalised unit: (p99.5 − p0.5)/2 of the scaling region's ``values``, or their sd
    for z-scores.

    Multiplying M(x) by it expresses the map in the input's own intensity units.
    """
    if MRScaling(intensity.scaling) is MRScaling.ZSCORE:
        return float(values.std())
    low, high = np.percentile(values, intensity.percentiles)
    return float(high - low) / 2.0


@dataclass
class MapGenerator:
    """VA-GAN's map generator M with everything needed to apply it to a volume on its own grid."""

    network: nn.Module
    predictor: GridPredictor
    grid: ModelGrid
    intensity: MRIntensity
    region: IntensityRegion = IntensityRegion.IMAGE

    @classmethod
    def from_model(cls, model: ModelFile, device: torch.device, overlap: float, sw_batch_size: int,
                   amp_dtype: torch.dtype | None) -> MapGenerator:
        """M and its preprocessing rebuilt from a VA-GAN model file, on ``device``; ``overlap`` and
        ``sw_batch_size`` set the sliding windows, ``amp_dtype`` their autocast (None: full precision).
        Raises :class:`~medsynth.errors.ModelError` for a model that stores a CT normalisation."""
        metadata = AttributionMetadata.from_json(model.metadata, model.path)
        if not isinstance(metadata.intensity, MRIntensity):
            raise ModelError(f"{model.path}: VA-GAN models read MR-like images; this one stores a CT normalisation.")
        return cls(network=inference_layout(model.build(metadata.map_network, device)),
                   predictor=GridPredictor(metadata.spatial_dims, metadata.patch_size, overlap, sw_batch_size,
                                           amp_dtype),
                   grid=ModelGrid(metadata.spacing), intensity=metadata.intensity,
                   region=IntensityRegion(metadata.intensity_region))

    def __call__(self, volume: Volume, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The map (input units, input grid) and the healthy-looking image y = x + map.

        ``mask`` (boolean, the input's grid) replaces the model's own region for the intensity scale.
        """
        moved = to_grid(self.grid, volume)
        region = normalisation_region(moved.values, self.region) if mask is None else \
            mask_on_grid(self.grid, mask, volume.meta)
        change = self.predictor.volume(self.network, self.intensity.normalise(moved.values, region)[None])
        unit = normalised_unit(moved.values[region] if region.any() else moved.values.ravel(), self.intensity)
        change = self.grid.inverse(change.cpu() * unit, moved.geometry)[0]
        return change, volume.array + change


class GradientSaliency(nn.Module):
    """−∂f/∂x of a classifier's patient logit, image by image, wrapped as a network for the grid predictor."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            # Images are scored independently (eval mode), so the gradient of the sum is per image.
            (gradient,) = torch.autograd.grad(self.classifier(x).sum(), x)
        return -gradient
