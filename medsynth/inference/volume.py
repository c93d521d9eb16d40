"""One volume through a translation network: model grid, sliding windows, exact return to the input grid.

A network whose output does not depend on window statistics (batch norm in evaluation mode, no
instance norm) is run on the whole volume when it fits ``MAX_WINDOW_VOXELS``, else on windows as large
as that allows: a voxel's synthetic CT then does not depend on where window borders fall, because there
are none (or few, far apart). Networks that normalise per window (instance norm) keep their training
patch size as the window.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from torch import Tensor, nn

from medsynth.data.geometry import ModelGrid
from medsynth.data.intensity import CTIntensity, Intensity, MRIntensity, normalise_mr_body
from medsynth.errors import InputError
from medsynth.io.image import Volume, read_image

# Largest difference of any affine entry (mm) at which a mask still lies on its image's grid.
MASK_AFFINE_TOLERANCE = 1e-4
# Set while a case is retried after a GPU out-of-memory error: one window at a time, blending on the CPU.
_REDUCED_MEMORY: contextvars.ContextVar[bool] = contextvars.ContextVar("reduced_memory", default=False)


@contextlib.contextmanager
def reduced_memory() -> Iterator[None]:
    """Within this block :func:`predict_grid` runs one window at a time and blends on the CPU.

    The batch runner retries a case that ran out of GPU memory under it; a correct run never enters it,
    so it costs nothing there.
    """
    token = _REDUCED_MEMORY.set(True)
    try:
        yield
    finally:
        _REDUCED_MEMORY.reset(token)

MAX_WINDOW_VOXELS = 4_000_000  # about 160³: a whole CPU-sized volume in one pass, a few GB of activations


def window_size(patch_size: Sequence[int], shape: Sequence[int], divisor: int | None,
                max_voxels: int = MAX_WINDOW_VOXELS) -> tuple[int, ...]:
    """The sliding-window size for an image of spatial ``shape``.

    ``divisor`` None: the training patch (the network normalises per window). Otherwise the network
    accepts any size that is a multiple of ``divisor``: the whole image rounded up to it when that holds
    at most ``max_voxels``, else the largest multiple k of the patch (per axis, capped by the image) that does.
    """
    patch = tuple(int(p) for p in patch_size)
    if divisor is None:
        return patch
    whole = tuple(max(p, -(-int(n) // divisor) * divisor) for p, n in zip(patch, shape, strict=True))
    if int(np.prod(whole)) <= max_voxels:
        return whole
    best = patch
    for k in range(2, 64):
        candidate = tuple(min(p * k, w) for p, w in zip(patch, whole, strict=True))
        if int(np.prod(candidate)) > max_voxels or candidate == best:
            break
        best = candidate
    return best


def predict_grid(network: nn.Module, image: Tensor, dims: int, patch_size: Sequence[int], overlap: float = 0.25,
                 sw_batch_size: int = 4, amp_dtype: torch.dtype | None = None,
                 window_divisor: int | None = None) -> Tensor:
    """Network output for a normalised (1, 1, X, Y, Z) image by Gaussian-blended sliding windows.

    A 2D network runs on the axial slices (the Z axis becomes the batch) with 2D windows. Windows are
    padded with -1, the normalised background, where the image is smaller than a window. With
    ``window_divisor`` (a network free of window statistics, whose input sizes must be multiples of it)
    the windows are as large as :func:`window_size` allows: usually the whole image.
    """
    device = next(network.parameters()).device
    image = image.to(device)
    if dims == 2:
        slices = image[0].permute(3, 0, 1, 2)  # (Z, 1, X, Y)
        roi = window_size(patch_size, slices.shape[2:], window_divisor)
        out = _windows(network, slices, roi, overlap, sw_batch_size, amp_dtype)
        return out.permute(1, 2, 3, 0)[None]
    roi = window_size(patch_size, image.shape[2:], window_divisor)
    return _windows(network, image, roi, overlap, sw_batch_size, amp_dtype)


def _windows(network: nn.Module, image: Tensor, patch_size: Sequence[int], overlap: float, sw_batch_size: int,
             amp_dtype: torch.dtype | None) -> Tensor:
    reduced = _REDUCED_MEMORY.get()
    if reduced:
        sw_batch_size = 1

    def predictor(patch: Tensor) -> Tensor:
        if amp_dtype is None:
            return network(patch)
        with torch.autocast(device_type=patch.device.type, dtype=amp_dtype):
            return network(patch).float()

    return sliding_window_inference(image, roi_size=tuple(patch_size), sw_batch_size=sw_batch_size,
                                    predictor=predictor, overlap=overlap, mode="gaussian", cval=-1.0,
                                    sw_device=image.device,
                                    device=torch.device("cpu") if reduced else _aggregation_device(image),
                                    progress=False)


def _aggregation_device(image: Tensor) -> torch.device:
    """Blend windows on the GPU when the output and weight buffers fit comfortably, else on the CPU.

    The aggregation buffers are two float32 copies of the volume; a large volume on a small GPU
    would otherwise fail after the windows themselves had fitted.
    """
    if image.device.type != "cuda":
        return image.device
    free, _ = torch.cuda.mem_get_info(image.device)
    needed = 2 * image.numel() * 4
    return image.device if needed < 0.25 * free else torch.device("cpu")


def enable_mc_dropout(network: nn.Module) -> int:
    """Put only the dropout layers in training mode (MC dropout); returns how many there are."""
    layers = [m for m in network.modules() if isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Dropout3d))]
    for layer in layers:
        layer.train()
    return len(layers)


def normalise_source(image: np.ndarray, intensity: Intensity, foreground: np.ndarray | None = None) -> np.ndarray:
    """The network input: MR scaled on its foreground (``foreground``, else its own body:
    :func:`normalise_mr_body`), CT windowed."""
    if isinstance(intensity, MRIntensity):
        return normalise_mr_body(intensity, image) if foreground is None else intensity.normalise(image, foreground)
    return intensity.normalise(image)


def read_mask(path: Path, like: Volume) -> np.ndarray:
    """A user-supplied body mask (voxels > 0) of the image ``like``, on its grid.

    Raises :class:`InputError` when the mask cannot be read, lies on another grid (shape, or an affine
    entry off by more than ``MASK_AFFINE_TOLERANCE`` mm) or is empty.
    """
    mask = read_image(path, ndim=like.array.ndim, check_values=False)
    if mask.array.shape != like.array.shape:
        raise InputError(f"{path}: mask shape {mask.array.shape} differs from the image's {like.array.shape} "
                         f"({like.path}); give the mask on the image's grid.")
    deviation = float(np.max(np.abs(mask.meta.affine - like.meta.affine)))
    if deviation > MASK_AFFINE_TOLERANCE:
        raise InputError(f"{path}: mask affine differs from the image's ({like.path}) by up to {deviation:.4g} mm; "
                         "give the mask on the image's grid.")
    inside = mask.array > 0
    if not inside.any():
        raise InputError(f"{path}: the mask is empty; give a mask that covers the body.")
    return inside


def mask_on_grid(grid: ModelGrid, mask: np.ndarray, like: Volume) -> np.ndarray:
    """A mask on the input grid of ``like`` moved onto the model grid (nearest neighbour)."""
    return grid.forward(mask.astype(np.float32), like.meta, mode="nearest").as_tensor().numpy()[0] > 0.5


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
    window_divisor: int | None = None  # set for networks free of window statistics (see predict_grid)

    @torch.no_grad()
    def model_space(self, image: Tensor, overlap: float, flips: tuple[int, ...] = ()) -> Tensor:
        """Normalised output on the model grid; ``flips`` mirrors the input and un-mirrors the output."""
        spatial = [axis + 2 for axis in flips]
        x = torch.flip(image, spatial) if spatial else image
        y = predict_grid(self.network, x, self.dims, self.patch_size, overlap, self.sw_batch_size, self.amp_dtype,
                         self.window_divisor)
        return torch.flip(y, spatial) if spatial else y

    def passes(self, tta: bool, samples: int) -> list[tuple[int, ...]]:
        """Flip sets of the forward passes: identity, plus the training flips with TTA, cycled over K samples."""
        variants: list[tuple[int, ...]] = [()] + ([(a,) for a in self.flip_axes] if tta else [])
        count = max(samples, len(variants))
        return [variants[i % len(variants)] for i in range(count)]

    def prepare(self, volume: Volume | Sequence[Volume], mask: np.ndarray | None = None) -> PreparedVolume:
        """CPU work before the network: model grid and normalisation (runs in the prefetch thread).

        ``mask`` (boolean, the input's grid) is the body whose intensities scale an MR input; without
        it the body mask is computed from the image. Several volumes are the MR contrasts of one case,
        in the model's channel order; they must share one grid (:class:`InputError` naming the file
        otherwise), and the output takes the first's grid.
        """
        volumes = [volume] if isinstance(volume, Volume) else list(volume)
        check_one_grid(volumes)
        grids = [self.grid.forward(v.array, v.meta) for v in volumes]
        foreground = None if mask is None else mask_on_grid(self.grid, mask, volumes[0])
        channels = [normalise_source(g.as_tensor().numpy()[0], self.source, foreground) for g in grids]
        return PreparedVolume(volumes[0], grids[0], torch.from_numpy(np.stack(channels))[None])

    def run(self, prepared: PreparedVolume, overlap: float = 0.25, tta: bool = False, samples: int = 0
            ) -> tuple[np.ndarray, np.ndarray | None]:
        """The output on the input grid (target units: HU for CT) and, with ``samples`` ≥ 2 stochastic
        passes (MC dropout, cycling through the TTA flips), their voxel-wise standard deviation."""
        self.network.eval()
        if samples >= 2:
            enable_mc_dropout(self.network)
        stats = _RunningMoments()
        for flips in self.passes(tta, samples):
            output = self.model_space(prepared.image, overlap, flips)[0, 0].float().cpu().numpy()
            stats.add(self.target.denormalise(output))
        self.network.eval()
        mean = self.grid.inverse(torch.from_numpy(stats.mean)[None], prepared.on_grid)[0]
        std = self.grid.inverse(torch.from_numpy(stats.std)[None], prepared.on_grid)[0] if samples >= 2 else None
        return mean, std

    def __call__(self, volume: Volume, overlap: float = 0.25, tta: bool = False, samples: int = 0
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Translate one volume: :meth:`prepare` then :meth:`run`."""
        return self.run(self.prepare(volume), overlap, tta, samples)


@dataclass
class PreparedVolume:
    """A volume ready for the network: the input, its model-grid copy (for the inverse) and the tensor."""

    volume: Volume
    on_grid: MetaTensor
    image: Tensor


class _RunningMoments:
    """Welford's running mean and sample standard deviation: memory stays flat for any number of passes."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    def add(self, value: np.ndarray) -> None:
        self.count += 1
        if self.mean is None:
            self.mean, self._m2 = value.astype(np.float32), np.zeros_like(value, dtype=np.float32)
            return
        delta = value - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (value - self.mean)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self._m2 / max(self.count - 1, 1)).astype(np.float32)


def check_one_grid(volumes: Sequence[Volume]) -> None:
    """Raise :class:`InputError` naming the first volume whose shape or affine differs from the first's."""
    first = volumes[0]
    for other in volumes[1:]:
        if other.meta.shape != first.meta.shape or not np.allclose(other.meta.affine, first.meta.affine, atol=1e-4):
            raise InputError(f"{other.path}: this MR channel is not on the grid of {first.path} (shape "
                             f"{other.meta.shape} vs {first.meta.shape}, or its affine); give every contrast "
                             "on one grid (`medsynth prepare` resamples them onto the first).")


def is_ct(intensity: Intensity) -> bool:
    return isinstance(intensity, CTIntensity)
