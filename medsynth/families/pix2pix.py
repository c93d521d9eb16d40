"""pix2pix (2D) / vox2vox (3D): paired MR→CT translation with a conditional GAN (Isola et al., 2017).

Networks (the paper's names): generator G, a U-Net with tanh output; discriminator D, a PatchGAN
that sees the MR together with a CT, real or synthetic: D(x, y).

Losses, with x the MR and y the CT:
    L_D = ½·[ℓ(D(x, y), 1) + ℓ(D(x, G(x)), 0)]
    L_G = ℓ(D(x, G(x)), 1) + λ_L1·‖G(x) − y‖₁,  λ_L1 = 100
where ℓ is least squares (LSGAN, default) or binary cross-entropy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsynth.data.bodymask import body_mask
from medsynth.data.geometry import ModelGrid, median_spacing
from medsynth.data.intensity import CTIntensity, MRIntensity, MRScaling
from medsynth.data.layouts import Datalist, discover_paired, read_cases
from medsynth.data.patches import body_anchors, cut_patch, draw_patch
from medsynth.engine.context import StepContext
from medsynth.errors import UsageError
from medsynth.families.base import Family, ModelExport, spatial_patch, unet_strides
from medsynth.inference.volume import predict_grid
from medsynth.losses.adversarial import GanLoss, discriminator_loss, generator_loss, patch_prediction
from medsynth.metrics.synthrad import synthrad2023
from medsynth.metrics.tissue import bone_dice
from medsynth.modelfile import data_fingerprint
from medsynth.nets.generators import head_width


@dataclass
class Pix2PixConfig:
    """Network and loss settings of pix2pix/vox2vox (paper defaults where the paper gives them)."""

    dims: int = 3
    patch_size: tuple[int, ...] = (64, 64, 64)
    spacing: tuple[float, ...] | None = None  # None: median spacing of the training set
    channels: tuple[int, ...] = (32, 64, 128, 256)
    strides: tuple[int, ...] | None = None  # None: 2 at every level
    num_res_units: int = 2  # residual units per U-Net level (measured in docs/pix2pix.md)
    head_channels: int | None = None  # features before G's 1×1 output conv; None: channels[0] with res units
    dropout: float = 0.0  # > 0 enables MC-dropout uncertainty at inference
    disc_channels: int = 64
    disc_layers: int = 3
    gan_loss: GanLoss = GanLoss.LSGAN
    lambda_l1: float = 100.0
    lr: float = 2e-4
    lr_d: float | None = None  # D's learning rate; None: lr
    betas: tuple[float, ...] = (0.5, 0.999)
    mr_scaling: MRScaling = MRScaling.PERCENTILE
    body_fraction: float = 0.9  # share of patches centred inside the body
    flip_axes: tuple[int, ...] = (0,)  # left-right mirroring keeps a head anatomically plausible
    val_cases: int = -1  # held-out cases from a folder dataset; -1: 10 % (at least 1 when ≥ 4 cases)
    val_overlap: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        self.patch_size = spatial_patch(self.dims, self.patch_size)
        smallest = 2 ** (self.disc_layers + 2)  # the PatchGAN needs > 1 output voxel for its norm
        if min(self.patch_size) < smallest:
            raise UsageError(f"patch size {self.patch_size} is too small for a {self.disc_layers}-layer "
                             f"discriminator; use at least {smallest} or fewer disc_layers.")
        self.strides = unet_strides(self.strides, self.channels)
        divisor = int(np.prod(self.strides))
        if any(p % divisor for p in self.patch_size):
            raise UsageError(f"patch size {self.patch_size} must be a multiple of {divisor} for this U-Net depth.")


@dataclass
class PreparedCase:
    """A training or validation case on the model grid, normalised, with its body mask."""

    name: str
    mr: np.ndarray  # (1, X, Y, Z) in [-1, 1]
    ct: np.ndarray  # (1, X, Y, Z) in [-1, 1]
    mask: np.ndarray  # (X, Y, Z) bool
    anchors: np.ndarray


def split_validation(datalist: Datalist, val_cases: int) -> Datalist:
    """Hold out the last cases of a folder dataset (sorted by id) unless the datalist names its own."""
    if datalist.validation or val_cases == 0:
        return datalist
    count = val_cases if val_cases > 0 else (max(1, len(datalist.training) // 10) if len(datalist.training) >= 4 else 0)
    if count >= len(datalist.training):
        raise UsageError(f"{count} validation cases leave none for training; lower val_cases.")
    return Datalist(datalist.training[:-count or None], datalist.training[len(datalist.training) - count:],
                    datalist.source)


class Pix2Pix(Family):
    """The pix2pix/vox2vox family on the shared engine."""

    name = "pix2pix"
    best_metric = ("mae", True)

    def __init__(self, config: Pix2PixConfig, data: Path) -> None:
        super().__init__()
        self.config = config
        self.datalist = split_validation(discover_paired(data, ("mr", "ct"), ("mask",)), config.val_cases)
        ndim = (2, 3) if config.dims == 2 else 3  # a 2D model also trains on 2D images
        training = read_cases(self.datalist.training, self.datalist.source, ("mr", "ct", "mask"), ndim)
        validation = read_cases(self.datalist.validation, self.datalist.source, ("mr", "ct", "mask"), ndim)
        spacing = config.spacing or median_spacing([case["ct"].meta for case in training])
        self.grid = ModelGrid(spacing)
        self.ct_intensity = CTIntensity()
        self.mr_intensity = MRIntensity(scaling=config.mr_scaling)
        self.training = [self._prepare(case) for case in training]
        self.validation = [self._prepare(case) for case in validation]
        self._build_networks()

    def _prepare(self, case: dict) -> PreparedCase:
        mr = self.grid.forward(case["mr"].array, case["mr"].meta).numpy()
        ct = self.grid.forward(case["ct"].array, case["ct"].meta).numpy()
        if "mask" in case:
            mask = self.grid.forward(case["mask"].array, case["mask"].meta, mode="nearest").numpy()[0] > 0.5
        else:
            mask = body_mask(ct[0])
        mr_norm = self.mr_intensity.normalise(mr[0], body_mask(mr[0]))[None]
        return PreparedCase(case["mr"].path.name, mr_norm, self.ct_intensity.normalise(ct), mask, body_anchors(mask))

    def _build_networks(self) -> None:
        c = self.config
        self.add_network("G", "medsynth.UNetGenerator", spatial_dims=c.dims, in_channels=1, out_channels=1,
                         channels=list(c.channels), strides=list(c.strides),
                         num_res_units=c.num_res_units, dropout=c.dropout,
                         head_channels=head_width(c.head_channels, c.channels, c.num_res_units),
                         tanh_output=True)
        self.add_network("D", "monai.PatchDiscriminator", spatial_dims=c.dims, num_layers_d=c.disc_layers,
                         channels=c.disc_channels, in_channels=2, out_channels=1, norm="INSTANCE",
                         last_conv_kernel_size=4)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        return {**self.adam_per_network(("G",), c.lr, c.betas),
                **self.adam_per_network(("D",), c.lr if c.lr_d is None else c.lr_d, c.betas)}

    def sample(self, index: int) -> dict[str, Tensor]:
        rng = np.random.default_rng([self.config.seed, index])
        case = self.training[int(rng.integers(len(self.training)))]
        draw = draw_patch(rng, case.mask.shape, self.config.patch_size, case.anchors,
                          self.config.body_fraction, self.config.flip_axes)
        return {"mr": torch.from_numpy(cut_patch(case.mr, draw, self.config.patch_size, -1.0)),
                "ct": torch.from_numpy(cut_patch(case.ct, draw, self.config.patch_size, -1.0))}

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        mr, ct = batch["mr"], batch["ct"]
        with ctx.autocast():
            fake = ctx.trained("G")(mr)
            d_real = patch_prediction(ctx.trained("D")(torch.cat([mr, ct], 1)))
            d_fake = patch_prediction(ctx.trained("D")(torch.cat([mr, fake.detach()], 1)))
            loss_d = discriminator_loss(d_real, d_fake, self.config.gan_loss)
        ctx.optimize("D", loss_d)
        with ctx.frozen("D") as discriminator, ctx.autocast():
            loss_adv = generator_loss(patch_prediction(discriminator(torch.cat([mr, fake], 1))), self.config.gan_loss)
            loss_l1 = F.l1_loss(fake.float(), ct.float())
            loss_g = loss_adv + self.config.lambda_l1 * loss_l1
        ctx.optimize("G", loss_g)
        return {"D": loss_d, "G_adv": loss_adv, "G_L1": loss_l1}

    def translate_grid(self, generator: nn.Module, mr: np.ndarray, device: torch.device) -> np.ndarray:
        """Synthetic CT in HU for a normalised MR (1, X, Y, Z) on the model grid."""
        generator.eval()
        with torch.no_grad():
            out = predict_grid(generator, torch.from_numpy(mr)[None].to(device), self.config.dims,
                               self.config.patch_size, self.config.val_overlap)
        return self.ct_intensity.denormalise(out[0, 0].cpu().numpy())

    def validate(self, networks: Mapping[str, nn.Module], device: torch.device) -> dict[str, float]:
        """SynthRAD2023 MAE/PSNR/SSIM and bone Dice on the held-out cases, inside the body mask."""
        if not self.validation:
            return {}
        rows = []
        for case in self.validation:
            pred = self.translate_grid(networks["G"], case.mr, device)
            ref = self.ct_intensity.denormalise(case.ct[0])
            rows.append({**synthrad2023(pred, ref, case.mask), "bone_dice": bone_dice(pred, ref, case.mask)})
        networks["G"].train()
        return {key: float(np.nanmean([row[key] for row in rows])) for key in rows[0]}

    def preview(self, batch: dict[str, Tensor], networks: Mapping[str, nn.Module]) -> list[list[np.ndarray]]:
        from medsynth.viz import mid_slices, window

        case = (self.validation or self.training)[0]
        device = next(networks["G"].parameters()).device
        pred = self.translate_grid(networks["G"], case.mr, device)
        networks["G"].train()
        ref = self.ct_intensity.denormalise(case.ct[0])
        panels = [window(case.mr[0], -1, 1), window(pred, -1000, 1500), window(ref, -1000, 1500),
                  window(np.abs(pred - ref) * case.mask, 0, 500)]
        return [[mid_slices(p)[0] for p in panels]]

    def export(self) -> ModelExport:
        c = self.config
        return ModelExport(networks=("G",), metadata={
            "spatial_dims": c.dims,
            "patch_size": list(c.patch_size),
            "spacing": list(self.grid.spacing),
            "orientation": "RAS",
            "flip_axes": list(c.flip_axes),
            "directions": {"mr2ct": {"network": "G", "source": self.mr_intensity.to_json(),
                                     "target": self.ct_intensity.to_json()}},
            "mc_dropout": c.dropout > 0,
            "data_fingerprint": data_fingerprint(self.datalist.files()),
            "training_cases": len(self.training),
        })
