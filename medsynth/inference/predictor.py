"""The grid predictor: a network's output for a whole normalised image on the model grid, by sliding windows.

As MONAI separates its inferers from the model, :class:`GridPredictor` holds how a network is applied
(window size and overlap, 2D slice-wise or 2.5D slabs, flips, mixed precision) and nothing of the network
or of the data: validation in the families and ``translate``/``attribute`` use the same predictor. The pre
steps (model grid, normalisation) are :mod:`medsynth.data.volumes`; the post steps are :meth:`GridPredictor.to_units`
(denormalisation) and ``ModelGrid.inverse`` with the geometry the pre step kept.

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

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import Tensor, nn

from medsynth.data.intensity import Intensity

# Set while a case is retried after a GPU out-of-memory error: one window at a time, blending on the CPU.
_REDUCED_MEMORY: contextvars.ContextVar[bool] = contextvars.ContextVar("reduced_memory", default=False)


@contextlib.contextmanager
def reduced_memory() -> Iterator[None]:
    """Within this block :class:`GridPredictor` runs one window at a time and blends on the CPU.

    The batch runner retries a case that ran out of GPU memory under it; a correct run never enters it,
    so it costs nothing there.
    """
    token = _REDUCED_MEMORY.set(True)
    try:
        yield
    finally:
        _REDUCED_MEMORY.reset(token)

# 100³: a whole head-sized model grid in one pass. Activations grow with the window: at 4 M voxels the default
# generator (widths 32…256) alone peaked at 1.5 GB, so a CT-sized input went over 2 GB (docs/performance.md).
MAX_WINDOW_VOXELS = 1_000_000


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


@dataclass(frozen=True)
class GridPredictor:
    """How a network runs on a whole normalised image: ``dims`` 2 runs it on the axial slices (the Z axis
    becomes the batch) with 2D windows, and with ``context_slices`` k > 0 (2.5D) each slice comes with its k
    neighbours on either side as extra channels (:func:`slice_context`); windows of ``patch_size`` (or, with
    ``window_divisor`` — a network free of window statistics, whose input sizes must be multiples of it —
    as large as :func:`window_size` allows: usually the whole image), Gaussian-blended with ``overlap``,
    ``sw_batch_size`` windows per call, under autocast to ``amp_dtype`` when given. Windows are padded with
    -1, the normalised background, where the image is smaller than a window.
    """

    dims: int
    patch_size: tuple[int, ...]
    overlap: float = 0.25
    sw_batch_size: int = 4
    amp_dtype: torch.dtype | None = None
    window_divisor: int | None = None
    context_slices: int = 0

    @torch.no_grad()  # a network that needs gradients (saliency) enables them inside its forward
    def __call__(self, network: nn.Module, image: Tensor, flips: Sequence[int] = ()) -> Tensor:
        """Output (1, C', X, Y, Z) of ``network`` for a normalised (1, C, X, Y, Z) image, on the network's
        device; ``flips`` (spatial axes 0..2) mirrors the input and un-mirrors the output (test-time
        augmentation)."""
        spatial = [int(axis) + 2 for axis in flips]
        image = image.to(network_device(network))
        x = torch.flip(image, spatial) if spatial else image
        if self.dims == 2:
            slices = slice_context(x[0], self.context_slices)  # (Z, C·(2k+1), X, Y)
            roi = window_size(self.patch_size, slices.shape[2:], self.window_divisor)
            y = self._windows(network, slices, roi).permute(1, 2, 3, 0)[None]
        else:
            roi = window_size(self.patch_size, x.shape[2:], self.window_divisor)
            y = self._windows(network, x, roi)
        return torch.flip(y, spatial) if spatial else y

    def volume(self, network: nn.Module, image: np.ndarray | Tensor) -> Tensor:
        """Output (C', X, Y, Z) of ``network`` for one normalised (C, X, Y, Z) image (array or tensor)."""
        return self(network, torch.as_tensor(image)[None])[0]

    def to_units(self, network: nn.Module, image: np.ndarray | Tensor, target: Intensity) -> np.ndarray:
        """:meth:`volume` taken back to ``target``'s units (HU for a CT), (C', X, Y, Z): the post step."""
        return target.denormalise(self.volume(network, image).cpu().numpy())

    def _windows(self, network: nn.Module, image: Tensor, roi: Sequence[int]) -> Tensor:
        reduced = _REDUCED_MEMORY.get()
        amp_dtype = self.amp_dtype

        def predictor(patch: Tensor) -> Tensor:
            if amp_dtype is None:
                return network(patch)
            with torch.autocast(device_type=patch.device.type, dtype=amp_dtype):
                return network(patch).float()

        return sliding_window_inference(image, roi_size=tuple(roi), sw_batch_size=1 if reduced else self.sw_batch_size,
                                        predictor=predictor, overlap=self.overlap, mode="gaussian", cval=-1.0,
                                        sw_device=image.device,
                                        device=torch.device("cpu") if reduced else _aggregation_device(image),
                                        progress=False)



def slice_context(volume: Tensor, context_slices: int) -> Tensor:
    """The axial slices of a (C, X, Y, Z) volume as a batch (Z, C·(2k+1), X, Y), each with its k =
    ``context_slices`` neighbours below and above as channels (contrast-major: channel c·(2k+1) + j holds
    contrast c at slice z − k + j). Slices beyond the ends repeat the end slice, as in training
    (:func:`medsynth.data.patches.cut_slab`)."""
    k = int(context_slices)
    if k == 0:
        return volume.permute(3, 0, 1, 2)
    channels, depth = volume.shape[0], volume.shape[-1]
    index = (torch.arange(depth, device=volume.device)[:, None] + torch.arange(-k, k + 1, device=volume.device))
    stacked = volume[..., index.clamp(0, depth - 1)]  # (C, X, Y, Z, 2k+1)
    return stacked.permute(3, 0, 4, 1, 2).reshape(depth, channels * (2 * k + 1), *volume.shape[1:3])


def inference_layout(network: nn.Module) -> nn.Module:
    """``network`` (in place) in the memory layout that runs it fastest here: channels-last for 2D convolutions
    on the CPU, where oneDNN's channels-last kernels ran the real-anatomy 2.5D generator 1.4x faster in float32
    and, with ``--cpu-bf16``, 1.75x (docs/performance.md); others as they are (channels_last_3d gained nothing
    for the 3D generator on the CPU, and on a GPU it is unmeasured). The arithmetic is the same; sums run in
    another order, so a voxel's HU may differ by the last rounding."""
    if channels_last_format(network) is torch.channels_last and network_device(network).type == "cpu":
        network.to(memory_format=torch.channels_last)
    return network


def channels_last_format(network: nn.Module) -> torch.memory_format | None:
    """channels_last_3d for a network with 3D convolutions, channels_last for one with only 2D ones, None without."""
    convolutions = (nn.Conv2d, nn.ConvTranspose2d, nn.Conv3d, nn.ConvTranspose3d)
    kinds = {m.weight.dim() for m in network.modules() if isinstance(m, convolutions)}
    if 5 in kinds:
        return torch.channels_last_3d
    return torch.channels_last if kinds else None


def network_device(network: nn.Module) -> torch.device:
    """Where ``network`` computes: its parameters' device, or the ``device`` an engine wrapper declares."""
    parameter = next(network.parameters(), None)
    return parameter.device if parameter is not None else getattr(network, "device", torch.device("cpu"))


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
