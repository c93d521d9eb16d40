"""VA-GAN: visual attribution with a map that makes a patient's image look healthy (Baumgartner et al., 2018).

Networks (the paper's names): the map generator M, a U-Net predicting an additive map, so that
y = x + M(x) is the patient image x made to look healthy; the critic C, a Wasserstein critic that
sees control images c as real and y as fake.

Losses (WGAN-GP, Gulrajani et al., 2017):
    L_C = E[C(y)] − E[C(c)] + λ_GP·E[(‖∇ĉ C(ĉ)‖₂ − 1)²],  ĉ = ε·c + (1 − ε)·y,  ε ~ U(0, 1),  λ_GP = 10
    L_M = −E[C(y)] + λ_map·‖M(x)‖₁,  ‖·‖₁ taken as the voxel mean; λ_map = 100 on the official code's
    112×112 images, scaled by √(N / 112²) for images of N voxels (see :func:`map_weight`)
C takes several steps per step of M: 5, and 100 during the first 25 steps of M and every 100th.

Sign convention, used throughout medsynth: the map is M(x), the change that *removes* the disease,
so it correlates with −effect where effect = patient − control; a perfect map has NCC(M(x), −effect) = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from medsynth.data.attribution import AttributionData, PreparedImage
from medsynth.data.intensity import MRScaling
from medsynth.data.patches import PatchSampler
from medsynth.data.splits import SplitPlan
from medsynth.data.volumes import IntensityRegion
from medsynth.engine.context import StepContext
from medsynth.engine.family import Family, ModelExport, Validation
from medsynth.errors import UsageError
from medsynth.inference.predictor import GridPredictor
from medsynth.losses.adversarial import gradient_penalty
from medsynth.metrics.similarity import ncc
from medsynth.modelfile import AttributionMetadata, data_fingerprint
from medsynth.nets.generators import head_width

MAP_SIGN = ("map = M(x), the intensity change that makes the image look healthy (healthy = image + map); "
            "it correlates with -effect, effect = patient - control")
OFFICIAL_LAMBDA_MAP = 100.0
OFFICIAL_IMAGE_SIZE = (112, 112)  # the official code's synthetic images, where λ_map = 100 was set
OUTPUT_INIT_SCALE = 0.01  # M starts close to "no change" (y ≈ x) instead of adding noise as large as the image
_PREVIEW_PIXELS = 160


@dataclass
class VAGANConfig:
    """Networks, losses and critic schedule of VA-GAN (paper or official-code defaults)."""

    dims: int = 3
    patch_size: tuple[int, ...] | None = None  # None: whole slices (2D) or volumes (3D), padded to fit the U-Net
    spacing: tuple[float, ...] | None = None  # None: median spacing of the training set
    channels: tuple[int, ...] = (16, 32, 64, 128)  # M: 16 base channels as in the official code
    num_res_units: int = 2  # residual units per level of M (with the 1×1 head; measured in docs/vagan.md)
    head_channels: int | None = None  # M's features before its 1×1 output conv; None: channels[0] with res units
    critic_channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    lambda_gp: float = 10.0
    lambda_map: float | None = None  # None: the official 100 scaled to the image size (map_weight)
    lr: float = 1e-4  # official code; the paper states 1e-3
    betas: tuple[float, ...] = (0.0, 0.9)
    critic_steps: int = 5  # critic updates per update of M ...
    critic_steps_boost: int = 100  # ... except during the first `boost_first` steps and every `boost_every`-th
    boost_first: int = 25
    boost_every: int = 100  # 0: never
    slab: float = 1.0  # 2D: central fraction of the head's axial slices drawn for training
    mr_scaling: MRScaling = MRScaling.PERCENTILE
    intensity_region: IntensityRegion = IntensityRegion.IMAGE
    flip_axes: tuple[int, ...] = (0,)  # left-right mirroring keeps a head plausible
    val_cases: int = -1  # held-out patients with effect maps; -1: 10 % (at least 1 when ≥ 4 such patients)
    val_overlap: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dims not in (2, 3):
            raise UsageError("--dims must be 2 or 3.")
        if self.patch_size is not None:
            self.patch_size = tuple(self.patch_size) * (self.dims if len(self.patch_size) == 1 else 1)
            if len(self.patch_size) != self.dims:
                raise UsageError(f"patch size {self.patch_size} needs {self.dims} values for --dims {self.dims}.")
            if any(p % self.divisor for p in self.patch_size):
                raise UsageError(f"patch size {self.patch_size} must be a multiple of {self.divisor} "
                                 "for this U-Net depth.")
        if min(self.critic_steps, self.critic_steps_boost) < 1 or min(self.boost_first, self.boost_every) < 0:
            raise UsageError("critic step counts must be at least 1 (boost_first, boost_every at least 0).")
        if not 0.0 < self.slab <= 1.0:
            raise UsageError("slab is a fraction of the head's slices, in (0, 1].")

    @property
    def divisor(self) -> int:
        """Image sides must be multiples of this for the U-Net's downsampling to invert exactly."""
        return 2 ** (len(self.channels) - 1)


def map_weight(lambda_map: float | None, image_size: Sequence[int]) -> float:
    """λ_map for images of ``image_size``: ``lambda_map`` when given, else the official code's 100 at
    112×112 scaled by √(N / 112²), N the voxels of one image.

    With ‖M‖₁ a voxel mean, L1 pulls each voxel of the map with λ/N, while the critic (Lipschitz-1 by
    the penalty) pushes with about 1/√N per voxel when its gradient is spread; only λ/√N keeps the
    balance of the official setting (measured in docs/vagan.md).
    """
    if lambda_map is not None:
        return float(lambda_map)
    return OFFICIAL_LAMBDA_MAP * math.sqrt(math.prod(image_size) / math.prod(OFFICIAL_IMAGE_SIZE))


def critic_iterations(step: int, config: VAGANConfig) -> int:
    """Critic updates before update ``step`` (0-based) of M: many early on, to start from a good critic,
    and periodically, to keep the Wasserstein estimate sharp (official code)."""
    boosted = step < config.boost_first or (config.boost_every > 0 and step % config.boost_every == 0)
    return config.critic_steps_boost if boosted else config.critic_steps


def held_out_ncc(data: AttributionData, map_of: Callable[[np.ndarray], np.ndarray]) -> dict[str, float]:
    """NCC(map, −effect) over the whole model grid for each held-out patient of ``data``; ``map_of`` maps a
    normalised (1, X, Y, Z) image to its (X, Y, Z) map."""
    return {case.name: ncc(map_of(case.image), -case.effect) for case in data.validation}


def _shrink_last_layer(network: nn.Module, factor: float) -> None:
    """Scale the weights and bias of the last convolution of ``network`` by ``factor``."""
    convolutions = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    last = [m for m in network.modules() if isinstance(m, convolutions)][-1]
    with torch.no_grad():
        for parameter in (last.weight, last.bias):
            parameter.mul_(factor)


def draw_image(rng: np.random.Generator, group: Sequence[PreparedImage], sampler: PatchSampler) -> np.ndarray:
    """A random image of ``group`` cut to the sampler's patch: a whole axial slice (2D) or a patch (3D),
    centred and padded with the background where the patch is larger than the image."""
    case, draw = sampler.whole(rng, group)
    return sampler.cut(case.image, draw)


class VAGAN(Family):
    """VA-GAN on the shared engine: M and C, WGAN-GP, the official critic schedule."""

    name = "vagan"
    best_metric = ("ncc", False)

    def __init__(self, config: VAGANConfig, data: Path, split: SplitPlan | None = None) -> None:
        super().__init__()
        self.config = config
        self.data = AttributionData(data, config.spacing, config.mr_scaling, config.intensity_region,
                                    config.val_cases, config.slab, config.dims, split or SplitPlan(seed=config.seed))
        self.split = self.data.split
        self.patch_size = tuple(config.patch_size or self.data.whole_size(config.dims, config.divisor))
        self.lambda_map = map_weight(config.lambda_map, self.patch_size)
        self.sampler = PatchSampler(self.patch_size, config.seed, flip_axes=config.flip_axes)
        self._build_networks()

    def _build_networks(self) -> None:
        c = self.config
        self.add_network("M", "medsynth.UNetGenerator", spatial_dims=c.dims, in_channels=1, out_channels=1,
                         channels=list(c.channels), strides=[2] * (len(c.channels) - 1),
                         # Residual units need the 1×1 head: without it MONAI would instance-normalise the
                         # one-channel output, forcing unit variance on a map that should be zero almost everywhere.
                         num_res_units=c.num_res_units,
                         head_channels=head_width(c.head_channels, c.channels, c.num_res_units), tanh_output=False)
        _shrink_last_layer(self.networks["M"], OUTPUT_INIT_SCALE)
        self.add_network("C", "medsynth.Critic", spatial_dims=c.dims, in_channels=1,
                         channels=list(c.critic_channels))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_network(("C", "M"), self.config.lr, self.config.betas)

    def sample(self, index: int) -> dict[str, Tensor]:
        """A control image (the critic's "real") and a patient image, drawn independently."""
        rng = self.sampler.rng(index)
        return {group: torch.from_numpy(draw_image(rng, images, self.sampler))
                for group, images in (("control", self.data.controls), ("patient", self.data.patients))}

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        for i in range(critic_iterations(ctx.step, self.config)):
            critic_losses = self._critic_step(batch if i == 0 else ctx.next_batch(), ctx)
        return {**critic_losses, **self._map_step(batch["patient"], ctx)}

    def _critic_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        control, patient = batch["control"], batch["patient"]
        with ctx.frozen("M") as generator, torch.no_grad(), ctx.autocast():
            healthy = (patient + generator(patient)).float()
        critic = ctx.trained("C")
        with ctx.autocast():
            # One pass over both groups: without normalisation layers that equals two separate passes.
            real, fake = critic(torch.cat([control, healthy])).float().chunk(2)
        wasserstein = real.mean() - fake.mean()
        # Full precision for the penalty: it is differentiated twice.
        penalty = gradient_penalty(critic, control, healthy)
        ctx.optimize("C", penalty * self.config.lambda_gp - wasserstein)
        return {"C_wasserstein": wasserstein, "C_gp": penalty}

    def _map_step(self, patient: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        with ctx.frozen("C") as critic, ctx.autocast():
            change = ctx.trained("M")(patient).float()
            adversarial = -critic(patient + change).float().mean()
        sparsity = change.abs().mean()
        ctx.optimize("M", adversarial + self.lambda_map * sparsity)
        return {"M_adv": adversarial, "M_l1": sparsity}

    @property
    def predictor(self) -> GridPredictor:
        """M on whole normalised images (slice-wise for 2D), as ``attribute`` runs it."""
        return GridPredictor(self.config.dims, self.patch_size, self.config.val_overlap)

    def validate(self, networks: Mapping[str, nn.Module], device: torch.device) -> dict[str, float]:
        """The means of :meth:`validate_cases`."""
        return self.validate_cases(networks, device).means

    def validate_cases(self, networks: Mapping[str, nn.Module], device: torch.device) -> Validation:
        """NCC(M(x), −effect) of each held-out patient; their mean (the best-model metric) and sd."""
        if not self.data.validation:
            return Validation({})
        predict = self.predictor.volume
        scores = held_out_ncc(self.data, lambda image: predict(networks["M"], image)[0].cpu().numpy())
        values = list(scores.values())
        return Validation({"ncc": float(np.nanmean(values)), "ncc_sd": float(np.nanstd(values))},
                          [{"case": case, "ncc": value} for case, value in scores.items()])

    def preview(self, batch: dict[str, Tensor], networks: Mapping[str, nn.Module]) -> list[list[np.ndarray]]:
        """Axial and coronal rows: patient, healthy y, map, and −effect where known (red > 0 > blue)."""
        from medsynth.viz import mid_slices, overlay_signed_map, window

        case = (self.data.validation or self.data.patients)[0]
        change = self.predictor.volume(networks["M"], case.image)[0].cpu().numpy()
        volumes = [case.image[0], case.image[0] + change, change]
        volumes += [] if case.effect is None else [-case.effect]
        rows = []
        for plane in (0, 1):
            image, healthy, *maps = (mid_slices(v)[plane] for v in volumes)
            grey = window(image, -1, 1)
            rows.append([grey, window(healthy, -1, 1), *(overlay_signed_map(grey, m) for m in maps)])
        # Small grids (CPU runs) are enlarged by pixel repetition so the maps stay legible.
        scale = max(1, _PREVIEW_PIXELS // max(rows[0][0].shape))
        return [[panel.repeat(scale, 0).repeat(scale, 1) for panel in row] for row in rows]

    def export(self) -> ModelExport:
        c = self.config
        return ModelExport(networks=("M",), metadata=AttributionMetadata(
            spatial_dims=c.dims, patch_size=self.patch_size, spacing=self.data.grid.spacing, flip_axes=c.flip_axes,
            map_network="M", intensity=self.data.intensity, intensity_region=self.data.region.value,
            map_sign=MAP_SIGN, data_fingerprint=data_fingerprint(self.data.datalist.files()),
            training_cases=len(self.data.controls) + len(self.data.patients),
            provenance={"lambda_map": self.lambda_map}))
