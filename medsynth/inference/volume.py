"""One volume through a translation network: model grid, sliding windows, exact return to the input grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import Tensor, nn

from medsynth.data.bodymask import body_mask
from medsynth.data.geometry import ModelGrid
from medsynth.data.intensity import CTIntensity, Intensity, MRIntensity
from medsynth.io.image import Volume


def predict_grid(network: nn.Module, image: Tensor, dims: int, patch_size: Sequence[int], overlap: float = 0.25,
                 sw_batch_size: int = 4, amp_dtype: torch.dtype | None = None) -> Tensor:
    """Network output for a normalised (1, 1, X, Y, Z) image by Gaussian-blended sliding windows.

    A 2D network runs on the axial slices (the Z axis becomes the batch) with 2D windows. Windows are
    padded with -1, the normalised background, where the image is smaller than a patch.
    """
    device = next(network.parameters()).device
    image = image.to(device)
    if dims == 2:
        slices = image[0].permute(3, 0, 1, 2)  # (Z, 1, X, Y)
        out = _windows(network, slices, patch_size, overlap, sw_batch_size, amp_dtype)
        return out.permute(1, 2, 3, 0)[None]
    return _windows(network, image, patch_size, overlap, sw_batch_size, amp_dtype)


def _windows(network: nn.Module, image: Tensor, patch_size: Sequence[int], overlap: float, sw_batch_size: int,
             amp_dtype: torch.dtype | None) -> Tensor:
    def predictor(patch: Tensor) -> Tensor:
        if amp_dtype is None:
            return network(patch)
        with torch.autocast(device_type=patch.device.type, dtype=amp_dtype):
            return network(patch).float()

    return sliding_window_inference(image, roi_size=tuple(patch_size), sw_batch_size=sw_batch_size,
                                    predictor=predictor, overlap=overlap, mode="gaussian", cval=-1.0,
                                    progress=False)


def enable_mc_dropout(network: nn.Module) -> int:
    """Put only the dropout layers in training mode (MC dropout); returns how many there are."""
    layers = [m for m in network.modules() if isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Dropout3d))]
    for layer in layers:
        layer.train()
    return len(layers)


def normalise_source(image: np.ndarray, intensity: Intensity) -> np.ndarray:
    """The network input: MR scaled on its own foreground, CT windowed."""
    if isinstance(intensity, MRIntensity):
        return intensity.normalise(image, body_mask(image))
    return intensity.normalise(image)


@dataclass
class VolumeTranslator:
    """A translation network with everything needed to apply it to a volume on its own grid."""

    network: nn.Module
    dims: int
    patch_size: tuple[int, ...]
    grid: ModelGrid
    source: Intensity
    target: Intensity
    flip_axes: tuple[int, ...] = ()
    amp_dtype: torch.dtype | None = None
    sw_batch_size: int = 4

    @torch.no_grad()
    def model_space(self, image: Tensor, overlap: float, flips: tuple[int, ...] = ()) -> Tensor:
        """Normalised output on the model grid; ``flips`` mirrors the input and un-mirrors the output."""
        spatial = [axis + 2 for axis in flips]
        x = torch.flip(image, spatial) if spatial else image
        y = predict_grid(self.network, x, self.dims, self.patch_size, overlap, self.sw_batch_size, self.amp_dtype)
        return torch.flip(y, spatial) if spatial else y

    def passes(self, tta: bool, samples: int) -> list[tuple[int, ...]]:
        """Flip sets of the forward passes: identity, plus the training flips with TTA, cycled over K samples."""
        variants: list[tuple[int, ...]] = [()] + ([(a,) for a in self.flip_axes] if tta else [])
        count = max(samples, len(variants))
        return [variants[i % len(variants)] for i in range(count)]

    def __call__(self, volume: Volume, overlap: float = 0.25, tta: bool = False, samples: int = 0
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Translate ``volume``; returns the output on the input grid (target units: HU for CT) and,
        with ``samples`` ≥ 2 stochastic passes, their voxel-wise standard deviation in the same units."""
        on_grid = self.grid.forward(volume.array, volume.meta)
        image = torch.from_numpy(normalise_source(on_grid.as_tensor().numpy()[0], self.source))[None, None]
        self.network.eval()
        if samples >= 2:
            enable_mc_dropout(self.network)
        outputs = [self.model_space(image, overlap, flips).cpu() for flips in self.passes(tta, samples)]
        self.network.eval()
        units = torch.stack([torch.from_numpy(self.target.denormalise(o[0].numpy())) for o in outputs])
        mean = self.grid.inverse(units.mean(0), on_grid)[0]
        std = self.grid.inverse(units.std(0), on_grid)[0] if samples >= 2 else None
        return mean, std


def is_ct(intensity: Intensity) -> bool:
    return isinstance(intensity, CTIntensity)
