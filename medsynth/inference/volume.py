"""One volume through a translation network: model grid and normalisation, the grid predictor
(:class:`~medsynth.inference.predictor.GridPredictor`), denormalisation and exact return to the input grid."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from torch import Tensor, nn

from medsynth.data.geometry import ModelGrid
from medsynth.data.intensity import CTIntensity, Intensity
from medsynth.data.volumes import mask_on_grid, normalise_source, to_grid
from medsynth.inference.predictor import GridPredictor
from medsynth.io.grids import check_same_grid
from medsynth.io.image import Volume
from medsynth.metrics.calibration import ErrorCalibration, spread_kind


# Largest difference of any affine entry (mm) at which a mask still lies on its image's grid.
def enable_mc_dropout(network: nn.Module) -> int:
    """Put only the dropout layers in training mode (MC dropout); returns how many drop anything (p > 0)."""
    layers = [m for m in network.modules() if isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Dropout3d)) and m.p > 0]
    for layer in layers:
        layer.train()
    return len(layers)


@dataclass
class Member:
    """One network of an ensemble, with the window size and the training flips of its model."""

    network: nn.Module
    patch_size: tuple[int, ...]
    flip_axes: tuple[int, ...] = ()
    source: Intensity | None = None  # its own input normalisation (learnt per training set); None: the ensemble's


def flip_passes(flip_axes: Sequence[int], tta: bool, samples: int) -> list[tuple[int, ...]]:
    """Flip sets of one network's forward passes: identity, plus each training flip with TTA, cycled
    over ``samples`` stochastic passes (0 for a deterministic network: each variant once)."""
    variants: list[tuple[int, ...]] = [()] + ([(int(a),) for a in flip_axes] if tta else [])
    count = max(samples, len(variants))
    return [variants[i % len(variants)] for i in range(count)]


@dataclass
class VolumeTranslator:
    """Translation networks (one model, or an ensemble sharing one grid and normalisation) with
    everything needed to apply them to a volume on its own grid."""

    members: list[Member]
    dims: int
    grid: ModelGrid
    source: Intensity
    target: Intensity
    amp_dtype: torch.dtype | None = None
    sw_batch_size: int = 4
    label: str = "model"  # family and run, for provenance in outputs (DICOM Series Description)
    fingerprint: str = ""  # the model file's (an ensemble's: modelfile.ensemble_fingerprint), stamped into outputs
    input_profile: dict[str, list[float]] | None = None  # the training MR's features (data/profile.py)
    window_divisor: int | None = None  # set for networks free of window statistics (see GridPredictor)
    mr_channels: tuple[str, ...] = ("0000",)  # the model's MR contrasts, in channel order
    context_slices: int = 0  # 2.5D: neighbouring slices on either side fed as channels (2D models)
    mc_dropout: bool = False  # some member has dropout layers for MC-dropout passes
    calibration: ErrorCalibration | None = None  # a single model's spread -> expected error (metrics/calibration)

    def spread_kind(self, tta: bool, samples: int) -> str | None:
        """What the spread of a run with ``tta`` and ``samples`` passes measures (metrics.calibration.spread_kind)."""
        return spread_kind(tta, any(m.flip_axes for m in self.members), self.mc_dropout, samples)

    def predictor(self, member: Member, overlap: float) -> GridPredictor:
        """The grid predictor of one member: its window size with the ensemble's window rule."""
        return GridPredictor(self.dims, member.patch_size, overlap, self.sw_batch_size, self.amp_dtype,
                             self.window_divisor, self.context_slices)

    def prepare(self, volume: Volume | Sequence[Volume], mask: np.ndarray | None = None) -> PreparedVolume:
        """CPU work before the network: model grid and normalisation (runs in a prefetch thread).

        ``mask`` (boolean, the input's grid) is the body whose intensities scale an MR input; without
        it the body mask is computed from the image. Several volumes are the MR contrasts of one case,
        in the model's channel order; they must share one grid (:class:`InputError` naming the file
        otherwise), and the output takes the first's grid. Only the normalised image keeps voxels:
        the volumes' arrays are released (replaced by empty ones) and the model-grid copies dropped, as
        the inverse needs their geometry only; so a CT-sized volume is held once, not three times.
        """
        volumes = [volume] if isinstance(volume, Volume) else list(volume)
        check_one_grid(volumes)
        foreground = None if mask is None else mask_on_grid(self.grid, mask, volumes[0].meta)
        sources = {_key(m.source or self.source): m.source or self.source for m in self.members} or \
            {_key(self.source): self.source}
        channels: dict[str, list[np.ndarray]] = {key: [] for key in sources}
        geometry = None
        for v in volumes:
            moved = to_grid(self.grid, v, release=True)  # released before the body mask's peak
            for key, source in sources.items():
                channels[key].append(normalise_source(moved.values, source, foreground))
            if geometry is None:
                geometry = moved.geometry
            del moved
        images = {key: torch.from_numpy(c[0][None] if len(c) == 1 else np.stack(c))[None]
                  for key, c in channels.items()}
        image = images[_key(self.source)] if _key(self.source) in images else next(iter(images.values()))
        return PreparedVolume(volumes[0], geometry, image, images)

    def run(self, prepared: PreparedVolume, overlap: float = 0.25, tta: bool = False, samples: int = 0
            ) -> tuple[np.ndarray, np.ndarray | None]:
        """The output on the input grid (target units: HU for CT) and, with ``samples`` ≥ 2, the
        voxel-wise standard deviation of every pass: (X, Y, Z), or (C, X, Y, Z) for a network with C > 1
        output channels (a CycleGAN's CT→MR generator giving C MR contrasts).

        Each member runs its identity pass, its training flips with ``tta``, and — when it has dropout
        layers and ``samples`` ≥ 2 — ``samples`` MC-dropout passes cycling through those flips. All
        passes of all members are averaged in the normalised space (the target's inverse is linear,
        so this is also the mean in HU); the standard deviation therefore includes the spread between
        ensemble members.
        """
        stats = _RunningMoments()
        for member in self.members:
            member.network.eval()
            stochastic = samples >= 2 and enable_mc_dropout(member.network) > 0
            for flips in flip_passes(member.flip_axes, tta, samples if stochastic else 0):
                image = (prepared.images or {}).get(_key(member.source or self.source), prepared.image)
                stats.add(self.predictor(member, overlap)(member.network, image, flips)[0].float().cpu().numpy())
            member.network.eval()
        scale, offset = _linear_inverse(self.target)
        mean = stats.mean
        mean *= scale  # in place: the target's inverse is linear, and a CT-sized output is held once
        mean += offset
        single = mean.shape[0] == 1  # one output channel: returned without the channel axis, as always
        mean = self.grid.inverse(torch.from_numpy(mean), prepared.on_grid)
        if samples < 2:
            return (mean[0] if single else mean), None
        std = self.grid.inverse(torch.from_numpy(stats.std * scale), prepared.on_grid)
        return (mean[0], std[0]) if single else (mean, std)

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
    images: dict[str, Tensor] | None = None  # per input normalisation, when ensemble members differ in it


class _RunningMoments:
    """Welford's running mean and sample standard deviation: memory stays flat for any number of passes.

    The first value is kept as given (a fresh float32 array owned from then on), and the squared
    deviations are allocated only when a second value arrives: a single pass costs no extra volume.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    def add(self, value: np.ndarray) -> None:
        self.count += 1
        if self.mean is None:
            self.mean = value if value.dtype == np.float32 else value.astype(np.float32)
            return
        if self._m2 is None:
            self.mean = self.mean.copy()  # no longer the caller's array once it is updated
            self._m2 = np.zeros_like(self.mean)
        delta = value - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (value - self.mean)

    @property
    def std(self) -> np.ndarray:
        if self._m2 is None:
            return np.zeros_like(self.mean)
        return np.sqrt(self._m2 / max(self.count - 1, 1)).astype(np.float32)


def _linear_inverse(intensity: Intensity) -> tuple[float, float]:
    """(scale, offset) of the intensity's inverse, value = scale·x + offset; checked to be linear."""
    at = intensity.denormalise(np.array([-1.0, 0.0, 1.0], np.float32)).astype(np.float64)
    scale, offset = at[2] - at[1], at[1]
    if not np.isclose(at[0], offset - scale, rtol=1e-5, atol=1e-3):
        raise ValueError(f"{type(intensity).__name__}.denormalise is not linear; ensembles average it linearly.")
    return float(scale), float(offset)


def check_one_grid(volumes: Sequence[Volume]) -> None:
    """Raise :class:`InputError` naming the first volume whose shape or affine differs from the first's."""
    for other in volumes[1:]:
        check_same_grid(other, volumes[0], "this MR channel's",
                        "give every contrast on one grid (`medsynth prepare` resamples them onto the first)")


def _key(intensity: Intensity) -> str:
    return json.dumps(intensity.to_json(), sort_keys=True, default=str)


def is_ct(intensity: Intensity) -> bool:
    return isinstance(intensity, CTIntensity)
