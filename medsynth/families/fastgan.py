"""FastGAN on CT slices (Liu et al., ICLR 2021): unconditional generation of single-channel HU slices.

Networks (the paper's names): generator G with skip-layer excitation, discriminator D with two small
decoders for self-supervision (``medsynth/nets/fastgan.py``). Both see every image through DiffAugment
T (``medsynth/data/diffaugment.py``). With x a real slice, z ~ N(0, I) and u, u' ~ U(0.8, 1) drawn anew
for every logit (the official code's "random targets"):

    L_D = E[relu(u − D(T(x)))] + E[relu(u' + D(T(G(z))))] + L_rec
    L_rec = d(Dec_whole(f₈(T(x))), ↓T(x)) + d(Dec_part(q(f₁₆(T(x)))), ↓q(T(x)))
    L_G = −E[D(T(G(z)))]

where f₈, f₁₆ are D's 8² and 16² features, q a random quarter crop, ↓ resizing to the decoder size and d
the L1 or squared error (LPIPS in the paper: here a perceptual distance only from a local TorchScript
file). Adam 2e-4, betas (0.5, 0.999); the engine keeps the EMA of G (decay 0.999) and exports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsynth.data.diffaugment import diff_augment, parse_policy
from medsynth.data.intensity import CT_WINDOW, CTIntensity
from medsynth.data.slices import BODY_THRESHOLD_HU, load_slices, slice_body_mask
from medsynth.data.splits import SplitPlan
from medsynth.engine.context import StepContext
from medsynth.engine.family import Family, ModelExport
from medsynth.errors import UsageError
from medsynth.inference.generation import display_slice, synthesise
from medsynth.metrics.anatomy import anatomy_values
from medsynth.metrics.generation import body_hu_histogram, histogram_wasserstein
from medsynth.modelfile import GenerationMetadata, data_fingerprint
from medsynth.nets.fastgan import RESOLUTIONS, quarter

TARGET_RANGE = (0.8, 1.0)  # the hinge's random targets (official code)
PREVIEW_COUNT = 6
VALIDATION_ANATOMY = ("body_outline", "two_lungs", "spine", "anatomy_complete")


class ReconLoss(StrEnum):
    """Distance d of D's self-supervised reconstruction loss."""

    L1 = "l1"
    MSE = "mse"
    PERCEPTUAL = "perceptual"  # needs perceptual_model: a local TorchScript file, d(a, b) -> (B,)


@dataclass
class FastGANConfig:
    """FastGAN settings (official-code defaults where it gives them; resolution 128 suits a CPU)."""

    resolution: int = 128
    nz: int = 256
    ngf: int = 64
    ndf: int = 64
    window: tuple[float, ...] = CT_WINDOW  # HU mapped to [-1, 1]
    body_fraction: float = 0.05  # slices whose body covers less of the slice are skipped
    body_threshold: float = BODY_THRESHOLD_HU
    recon_loss: ReconLoss = ReconLoss.L1
    perceptual_model: str | None = None
    diffaugment: tuple[str, ...] = ("brightness", "contrast", "translation")
    hflip: bool = False  # off: mirrored anatomy (a heart on the right) is not plausible CT
    lr: float = 2e-4
    betas: tuple[float, ...] = (0.5, 0.999)
    val_samples: int = 64  # generated slices for the validation histogram distance
    seed: int = 0

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise UsageError(f"resolution {self.resolution} is not one of {', '.join(map(str, RESOLUTIONS))}.")
        if len(self.window) != 2 or self.window[0] >= self.window[1]:
            raise UsageError(f"window {list(self.window)} must be two HU values, low < high.")
        if min(self.nz, self.ngf, self.ndf) < 1 or self.val_samples < 2:
            raise UsageError("nz, ngf and ndf must be at least 1 and val_samples at least 2.")
        if not 0.0 <= self.body_fraction < 1.0:
            raise UsageError(f"body_fraction {self.body_fraction} must lie in [0, 1).")
        try:
            parse_policy(self.diffaugment)
        except ValueError as error:
            raise UsageError(f"diffaugment: {error}.") from None
        if (self.recon_loss == ReconLoss.PERCEPTUAL) != (self.perceptual_model is not None):
            raise UsageError("recon_loss 'perceptual' and perceptual_model (a TorchScript file) go together.")
        if self.perceptual_model is not None and not Path(self.perceptual_model).is_file():
            raise UsageError(f"{self.perceptual_model}: no such perceptual model file; give a local TorchScript file.")


def hinge_random_targets(d_real: Tensor, d_fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """L = mean(relu(u − D(x))) + mean(relu(u' + D(G(z)))), u, u' ~ U(0.8, 1) per logit, u drawn first.

    Targets below 1 keep D from pushing its logits all the way to the margin: a softer D (official code).
    """
    low, high = TARGET_RANGE

    def targets(like: Tensor) -> Tensor:
        return low + (high - low) * torch.rand(like.shape, generator=generator, device=like.device)

    u_real, u_fake = targets(d_real), targets(d_fake)
    return F.relu(u_real - d_real.float()).mean() + F.relu(u_fake + d_fake.float()).mean()


def reconstruction_targets(real: Tensor, part: int, size: int) -> tuple[Tensor, Tensor]:
    """What D's decoders must reproduce: the whole image and its quarter ``part``, each resized to ``size``²."""
    def resize(x: Tensor) -> Tensor:
        return F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)

    return resize(real), resize(quarter(real, part))


def reconstruction_loss(reconstructions: tuple[Tensor, Tensor], targets: tuple[Tensor, Tensor], kind: ReconLoss,
                        perceptual: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    """L_rec = d(whole′, whole) + d(part′, part): mean absolute or squared error, or a perceptual distance."""
    def distance(a: Tensor, b: Tensor) -> Tensor:
        if kind == ReconLoss.L1:
            return F.l1_loss(a.float(), b)
        if kind == ReconLoss.MSE:
            return F.mse_loss(a.float(), b)
        return perceptual(a.float(), b).mean()

    return sum(distance(a, b) for a, b in zip(reconstructions, targets, strict=True))


class FastGAN(Family):
    """FastGAN on the shared engine: G, D with decoders, DiffAugment, EMA of G."""

    name = "fastgan"
    ema_networks = ("G",)
    best_metric = ("hu_wasserstein", True)
    # The official code: batch 8 and a constant learning rate throughout.
    train_defaults: ClassVar[dict[str, Any]] = {"batch_size": 8, "decay_start": 1.0}

    def __init__(self, config: FastGANConfig, data: Path, split: SplitPlan | None = None) -> None:
        super().__init__()
        self.config = config
        plan = split or SplitPlan(seed=config.seed)
        if plan.folds:
            raise UsageError("fastgan learns the distribution of all its slices: there is no case to hold out, "
                             "so --folds does not apply.")
        self.intensity = CTIntensity(window=(float(config.window[0]), float(config.window[1])))
        self.slices = load_slices(data, config.resolution, self.intensity.window, config.body_fraction,
                                  config.body_threshold)
        self.split = plan.split(list(self.slices.files), val_cases=0,
                                note="validation compares generated slices with the training slices")
        self.real_histogram = body_hu_histogram(self.slices.hu, config.body_threshold)
        self.perceptual = self._load_perceptual()
        c = config
        self.add_network("G", "medsynth.FastGANGenerator", resolution=c.resolution, nz=c.nz, ngf=c.ngf,
                         out_channels=1)
        self.add_network("D", "medsynth.FastGANDiscriminator", resolution=c.resolution, ndf=c.ndf, in_channels=1)

    def _load_perceptual(self) -> nn.Module | None:
        if self.config.perceptual_model is None:
            return None
        try:
            network = torch.jit.load(self.config.perceptual_model, map_location="cpu").eval()
        except (RuntimeError, ValueError) as error:
            raise UsageError(f"{self.config.perceptual_model}: not a TorchScript file ({type(error).__name__}); "
                             "save the perceptual model with torch.jit.save.") from error
        for parameter in network.parameters():  # fixed: gradients flow through it to D's decoders only
            parameter.requires_grad_(False)
        return network

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_network(("D", "G"), self.config.lr, self.config.betas)

    def sample(self, index: int) -> dict[str, Tensor]:
        rng = np.random.default_rng([self.config.seed, index])
        hu = self.slices.hu[int(rng.integers(len(self.slices)))]
        if self.config.hflip and rng.random() < 0.5:
            hu = hu[::-1]  # axis 0 is x (left-right) in RAS
        return {"image": torch.from_numpy(self.intensity.normalise(hu))[None]}

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        real = batch["image"]
        z = torch.randn(real.shape[0], self.config.nz, device=real.device)
        part = int(torch.randint(4, ()).item())
        policy = self.config.diffaugment
        with ctx.autocast():
            fake = diff_augment(ctx.trained("G")(z), policy)
            real = diff_augment(real, policy)
            d_real, *reconstructions = ctx.trained("D")(real, part=part)
            d_fake = ctx.trained("D")(fake.detach())
            loss_hinge = hinge_random_targets(d_real, d_fake)
            targets = reconstruction_targets(real, part, reconstructions[0].shape[-1])
            loss_rec = reconstruction_loss(tuple(reconstructions), targets, self.config.recon_loss,
                                           self._perceptual_on(ctx.device))
        ctx.optimize("D", loss_hinge + loss_rec)
        with ctx.frozen("D") as discriminator, ctx.autocast():
            loss_g = -discriminator(fake).float().mean()
        ctx.optimize("G", loss_g)
        return {"D_hinge": loss_hinge, "D_rec": loss_rec, "G": loss_g}

    def _perceptual_on(self, device: torch.device) -> nn.Module | None:
        return None if self.perceptual is None else self.perceptual.to(device)

    def generated_hu(self, generator: nn.Module, count: int, device: torch.device) -> np.ndarray:
        """``count`` slices (HU, as ``generate`` writes them) from fixed latents, so runs compare over steps."""
        images = synthesise(generator, self.config.nz, range(count), self.config.seed, None, device)
        return np.rint(self.intensity.denormalise(images.numpy()))

    def validate(self, networks: Mapping[str, nn.Module], device: torch.device) -> dict[str, float]:
        """HU-histogram W₁ inside the body, generated vs training slices, the generated body fraction and the
        shares of generated slices with a body outline, two lungs, a spine and all three (``metrics/anatomy``)."""
        hu = self.generated_hu(networks["G"], self.config.val_samples, device)
        threshold = self.config.body_threshold
        anatomy = anatomy_values(hu, threshold)
        return {"hu_wasserstein": histogram_wasserstein(body_hu_histogram(hu, threshold), self.real_histogram),
                "body_fraction": float(np.mean([slice_body_mask(s, threshold).mean() for s in hu])),
                **{name: float(anatomy[name].mean()) for name in VALIDATION_ANATOMY}}

    def preview(self, batch: dict[str, Tensor], networks: Mapping[str, nn.Module]) -> list[list[np.ndarray]]:
        """Top row: slices from the EMA generator (fixed latents); bottom row: training slices."""
        device = next(networks["G"].parameters()).device
        generated = self.generated_hu(networks["G"], PREVIEW_COUNT, device)
        real = self.slices.hu[np.linspace(0, len(self.slices) - 1, PREVIEW_COUNT).astype(int)]
        return [[display_slice(s) for s in generated], [display_slice(s) for s in real]]

    def export(self) -> ModelExport:
        c = self.config
        return ModelExport(networks=("G",), metadata=GenerationMetadata(
            resolution=c.resolution, nz=c.nz, intensity=self.intensity, spacing=tuple(self.slices.spacing),
            slice_thickness=self.slices.thickness, body_fraction=c.body_fraction, body_threshold=c.body_threshold,
            data_fingerprint=data_fingerprint(list(self.slices.files.values())), training_slices=len(self.slices)))
