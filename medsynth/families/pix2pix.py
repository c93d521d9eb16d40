"""pix2pix (2D) / vox2vox (3D): paired MR→CT translation with a conditional GAN (Isola et al., 2017).

Networks (the paper's names): generator G, a U-Net with tanh output; discriminator D, a PatchGAN
that sees the MR together with a CT, real or synthetic: D(x, y).

Losses, with x the MR and y the CT:
    L_D = ½·[ℓ(D(x, y), 1) + ℓ(D(x, G(x)), 0)]
    L_G = ℓ(D(x, G(x)), 1) + λ_L1·‖G(x) − y‖₁,  λ_L1 = 100
where ℓ is least squares (LSGAN, default) or binary cross-entropy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import Tensor, nn

from medsynth.baselines import IntensityLookup
from medsynth.data.augment import PairedAugment, SliceThickness
from medsynth.data.intensity import CTIntensity, MRScaling
from medsynth.data.paired import PairedData, PreparedCase
from medsynth.data.patches import PatchSampler
from medsynth.data.splits import SplitPlan
from medsynth.data.tissue import TISSUE_EDGES_HU, TISSUE_NAMES, tissue_labels_torch
from medsynth.engine.context import StepContext
from medsynth.engine.family import Family, ModelExport, Validation
from medsynth.errors import UsageError
from medsynth.families.base import spatial_patch, unet_strides
from medsynth.inference.predictor import GridPredictor
from medsynth.io.cases import channel_suffixes
from medsynth.io.image import Volume
from medsynth.losses.adversarial import GanLoss, discriminator_loss, generator_loss, patch_prediction
from medsynth.metrics.tissue import mean_rows, validation_rows
from medsynth.modelfile import DirectionSpec, TranslationMetadata, data_fingerprint
from medsynth.nets.generators import GeneratorNorm, head_width


@dataclass
class Pix2PixConfig:
    """Network and loss settings of pix2pix/vox2vox (paper defaults where the paper gives them)."""

    dims: int = 3
    context_slices: int = 0  # 2.5D (dims 2): k neighbouring slices on either side as input channels
    patch_size: tuple[int, ...] = (64, 64, 64)
    spacing: tuple[float, ...] | None = None  # None: median spacing of the training set, no finer than min_spacing
    min_spacing: float = 1.0  # mm; finer data is coarsened so that a window sees enough anatomy (docs/pix2pix.md)
    channels: tuple[int, ...] = (32, 64, 128, 256)
    strides: tuple[int, ...] | None = None  # None: 2 at every level
    num_res_units: int = 2  # residual units per U-Net level (measured in docs/pix2pix.md)
    head_channels: int | None = None  # features before G's 1×1 output conv; None: channels[0] with res units
    norm: GeneratorNorm = GeneratorNorm.BATCH  # batch: inference does not depend on where windows fall
    padding: str = "replicate"  # G's convolution padding; replicate hides window borders (docs/pix2pix.md)
    dropout: float = 0.0  # > 0 enables MC-dropout uncertainty at inference
    disc_channels: int = 64
    disc_layers: int = 3
    gan_loss: GanLoss = GanLoss.LSGAN
    lambda_l1: float = 100.0
    gan_weight: float = 1.0  # weight of G's adversarial term; 0: supervised regression, no discriminator
    tissue_weight: float = 0.0  # weight of the tissue head's CE + Dice (data/tissue.py); 0: no tissue head
    perception_weight: float = 0.0  # weight of the frozen tissue segmenter's CE + Dice on G(x); 0: no segmenter
    seg_pretrain_steps: int = 1000  # the first steps train the segmenter S on the training CTs alone
    seg_channels: tuple[int, ...] = (16, 32, 64)
    lr: float = 2e-4
    lr_d: float | None = None  # D's learning rate; None: lr
    betas: tuple[float, ...] = (0.5, 0.999)
    mr_scaling: MRScaling = MRScaling.HISTOGRAM
    augment: float = 0.5  # how often each MR augmentation is drawn (data/augment.py); 0: none
    thick_slices: float = 0.0  # 2D/2.5D: how often the MR is made 1.5-2.5x thicker (data/augment.SliceThickness)
    anatomy_augment: float = 0.0  # how often an elastic deformation with wide rotation/scaling is drawn; 0: none
    body_fraction: float = 0.9  # share of patches centred inside the body
    flip_axes: tuple[int, ...] = (0,)  # left-right mirroring keeps a head anatomically plausible
    val_cases: int = -1  # seeded hold-out without --folds (RUN/split.json); -1: 10 % (at least 1 from 4 cases)
    val_overlap: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        self.patch_size = spatial_patch(self.dims, self.patch_size)
        smallest = 2 ** (self.disc_layers + 2)  # the PatchGAN needs > 1 output voxel for its norm
        if min(self.gan_weight, self.tissue_weight, self.perception_weight) < 0 or self.seg_pretrain_steps < 0:
            raise UsageError(f"gan_weight ({self.gan_weight}), tissue_weight ({self.tissue_weight}), perception_weight "
                             f"({self.perception_weight}) and seg_pretrain_steps ({self.seg_pretrain_steps}) are >= 0 "
                             "(a weight of 0 switches its term off).")
        if self.gan_weight > 0 and min(self.patch_size) < smallest:
            raise UsageError(f"patch size {self.patch_size} is too small for a {self.disc_layers}-layer "
                             f"discriminator; use at least {smallest} or fewer disc_layers.")
        self.strides = unet_strides(self.strides, self.channels)
        divisor = int(np.prod(self.strides))
        if any(p % divisor for p in self.patch_size):
            raise UsageError(f"patch size {self.patch_size} must be a multiple of {divisor} for this U-Net depth.")
        if self.context_slices < 0 or (self.context_slices and self.dims != 2):
            raise UsageError(f"context_slices ({self.context_slices}) is for 2D models (2.5D input): dims 2 "
                             "and k >= 0 neighbouring slices on either side.")
        if not 0.0 <= self.augment <= 1.0 or not 0.0 <= self.anatomy_augment <= 1.0:
            raise UsageError(f"augment ({self.augment}) and anatomy_augment ({self.anatomy_augment}) are "
                             "probabilities in [0, 1].")
        if not 0.0 <= self.thick_slices <= 1.0 or (self.thick_slices and self.dims != 2):
            raise UsageError(f"thick_slices ({self.thick_slices}) is a probability in [0, 1] for 2D/2.5D models "
                             "(dims 2).")
        self.norm = GeneratorNorm(self.norm)


class Pix2Pix(Family):
    """The pix2pix/vox2vox family on the shared engine."""

    name = "pix2pix"
    best_metric = ("mae", True)

    def __init__(self, config: Pix2PixConfig, data: Path, split: SplitPlan | None = None) -> None:
        super().__init__()
        self.config = config
        self.data = PairedData(data, split or SplitPlan(seed=config.seed), config.val_cases, config.dims,
                               config.mr_scaling, config.spacing, config.min_spacing)
        self.split = self.data.split
        self.augment = PairedAugment(config.dims, config.augment, anatomy=config.anatomy_augment)
        self.thickness = SliceThickness(config.thick_slices)
        self.sampler = PatchSampler(config.patch_size, config.seed, config.body_fraction, config.flip_axes)
        self.lookup = IntensityLookup.fit((c.raw_mr, self.data.ct_intensity.denormalise(c.ct[0]), c.mask)
                                          for c in self.data.training)
        self._lookup_scores: dict[str, float] | None = None
        self._build_networks()

    def _build_networks(self) -> None:
        c = self.config
        self.add_network("G", "medsynth.UNetGenerator", spatial_dims=c.dims,
                         in_channels=self.input_channels,
                         out_channels=1, channels=list(c.channels), strides=list(c.strides),
                         num_res_units=c.num_res_units, dropout=c.dropout,
                         head_channels=head_width(c.head_channels, c.channels, c.num_res_units),
                         norm=str(c.norm), padding_mode=c.padding, tanh_output=True,
                         **({"tissue_classes": len(TISSUE_NAMES)} if c.tissue_weight > 0 else {}))
        if c.tissue_weight > 0 and not head_width(c.head_channels, c.channels, c.num_res_units):
            raise UsageError("tissue_weight needs a generator head (num_res_units > 0 or head_channels > 0).")
        self.tissue_loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)  # nnU-Net's batch Dice
        self.tissue_edges = torch.from_numpy(self.data.ct_intensity.normalise(np.asarray(TISSUE_EDGES_HU)))
        if c.perception_weight > 0:  # the tissue segmenter of the segmentation-perception loss, CT in, classes out
            self.add_network("S", "medsynth.UNetGenerator", spatial_dims=c.dims, in_channels=1,
                             out_channels=len(TISSUE_NAMES), channels=list(c.seg_channels),
                             strides=[2] * (len(c.seg_channels) - 1), num_res_units=1, norm="instance",
                             tanh_output=False)
        if c.gan_weight == 0:
            return  # supervised regression: no discriminator to build, train or checkpoint
        self.add_network("D", "monai.PatchDiscriminator", spatial_dims=c.dims, num_layers_d=c.disc_layers,
                         channels=c.disc_channels, in_channels=self.input_channels + 1, out_channels=1, norm="INSTANCE",
                         last_conv_kernel_size=4)

    def validation_references(self) -> Iterator[tuple[str, list[Volume], Volume, np.ndarray | None]]:
        return self.data.validation_references()

    @property
    def input_channels(self) -> int:
        """G's input channels: every MR contrast, at each of the 2k+1 slices of a 2.5D slab."""
        return self.data.mr_channels * (2 * self.config.context_slices + 1)

    @property
    def window_divisor(self) -> int | None:
        """With batch norm G runs on inputs of any size that is a multiple of its total stride (whole volumes);
        None with instance norm, whose statistics are those of one training-sized window."""
        return int(np.prod(self.config.strides)) if self.config.norm is GeneratorNorm.BATCH else None

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        return {**self.adam_per_network(tuple(n for n in ("G", "S") if n in self.networks), c.lr, c.betas),
                **self.adam_per_network(tuple(n for n in ("D",) if n in self.networks),
                                        c.lr if c.lr_d is None else c.lr_d, c.betas)}

    def sample(self, index: int) -> dict[str, Tensor]:
        rng = self.sampler.rng(index)
        case, draw = self.sampler.body(rng, self.data.training)
        k = self.config.context_slices
        slab = self.sampler.cut(case.mr, draw, context_slices=k + self.thickness.margin)
        mr = self.thickness.apply(slab, self.data.mr_channels, k, self.thickness.draw(rng))
        mr, ct = self.augment(mr, self.sampler.cut(case.ct, draw), int(rng.integers(2**31)))
        return {"mr": torch.from_numpy(np.ascontiguousarray(mr)), "ct": torch.from_numpy(np.ascontiguousarray(ct))}

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """One step on MR x and CT y (normalised), tissue classes t = classes(y) (data/tissue.py):

        L_S = [CE + Dice](S(y), t)  (the first seg_pretrain_steps steps only, when w_perc > 0; then S is frozen)
        L_D = GAN(D(x, y), real) + GAN(D(x, G(x)), fake)  (skipped when gan_weight w_adv = 0)
        L_G = w_adv·GAN(D(x, G(x)), real) + λ_L1·|G(x) − y|₁ + w_tissue·[CE + Dice](T(x), t)
              + w_perc·[CE + Dice](S(G(x)), t)

        where T(x) are the logits of G's tissue head (on when w_tissue > 0) and S the tissue segmenter trained
        on the training CTs (the segmentation-perception loss of the SynthRAD2025 winners, with a segmenter
        medsynth trains itself instead of a downloaded TotalSegmentator).
        """
        c, mr, ct = self.config, batch["mr"], batch["ct"]
        labels = tissue_labels_torch(ct.float(), self.tissue_edges)
        if c.perception_weight > 0 and ctx.step < c.seg_pretrain_steps:
            with ctx.autocast():
                loss_s = self.tissue_loss(ctx.trained("S")(ct).float(), labels)
            ctx.optimize("S", loss_s)
            return {"S": loss_s}
        losses: dict[str, Tensor] = {}
        with ctx.autocast():
            out = ctx.trained("G")(mr, tissue=True) if c.tissue_weight > 0 else (ctx.trained("G")(mr), None)
            fake, logits = out
        if c.gan_weight > 0:
            with ctx.autocast():
                d_real = patch_prediction(ctx.trained("D")(torch.cat([mr, ct], 1)))
                d_fake = patch_prediction(ctx.trained("D")(torch.cat([mr, fake.detach()], 1)))
                losses["D"] = discriminator_loss(d_real, d_fake, c.gan_loss)
            ctx.optimize("D", losses["D"])
            with ctx.frozen("D") as discriminator, ctx.autocast():
                losses["G_adv"] = generator_loss(patch_prediction(discriminator(torch.cat([mr, fake], 1))), c.gan_loss)
        losses["G_L1"] = F.l1_loss(fake.float(), ct.float())
        loss_g = c.lambda_l1 * losses["G_L1"] + c.gan_weight * losses.get("G_adv", 0.0)
        if logits is not None:
            losses["G_tissue"] = self.tissue_loss(logits.float(), labels)
            loss_g = loss_g + c.tissue_weight * losses["G_tissue"]
        if c.perception_weight > 0:
            with ctx.frozen("S") as segmenter, ctx.autocast():
                losses["G_perception"] = self.tissue_loss(segmenter(fake).float(), labels)
            loss_g = loss_g + c.perception_weight * losses["G_perception"]
        ctx.optimize("G", loss_g)
        return losses

    @property
    def predictor(self) -> GridPredictor:
        """Validation and previews run G as translate does (window rule, 2.5D slabs)."""
        c = self.config
        return GridPredictor(c.dims, c.patch_size, c.val_overlap, window_divisor=self.window_divisor,
                             context_slices=c.context_slices)

    def validate(self, networks: Mapping[str, nn.Module], device: torch.device) -> dict[str, float]:
        """The means of :meth:`validate_cases`."""
        return self.validate_cases(networks, device).means

    def validate_cases(self, networks: Mapping[str, nn.Module], device: torch.device) -> Validation:
        """SynthRAD2023 MAE/PSNR/SSIM and bone Dice of each held-out case, inside its body mask; their means, and
        beside them the no-context lookup table's mean MAE and bone Dice on the same cases (``lookup_mae``,
        ``lookup_bone_dice``)."""
        if not self.data.validation:
            return Validation({})
        rows = _rows(self.data.validation, lambda case: self.predictor.to_units(networks["G"], case.mr,
                                                                             self.data.ct_intensity)[0],
                     self.data.ct_intensity)
        if self._lookup_scores is None:
            lookup = mean_rows(_rows(self.data.validation, lambda case: self.lookup.predict(case.raw_mr, case.mask),
                                     self.data.ct_intensity))
            self._lookup_scores = {"lookup_mae": lookup["mae"], "lookup_bone_dice": lookup["bone_dice"]}
        return Validation({**mean_rows(rows), **self._lookup_scores},
                          [{"case": case.name, **row} for case, row in zip(self.data.validation, rows, strict=True)])

    def verdict(self, metrics: Mapping[str, float]) -> list[str]:
        """A loud warning when the model is not better than the lookup table on the validation cases."""
        if "mae" not in metrics or "lookup_mae" not in metrics or metrics["mae"] < metrics["lookup_mae"]:
            return []
        return [f"WARNING: the model is NOT better than a no-context MR-intensity lookup table on the "
                f"validation cases (MAE {metrics['mae']:.1f} HU vs {metrics['lookup_mae']:.1f} HU, bone Dice "
                f"{metrics.get('bone_dice', float('nan')):.2f} vs {metrics['lookup_bone_dice']:.2f}); train longer, "
                f"check the data (MR/CT registration, normalisation) or use a coarser model grid "
                f"(docs/pix2pix.md)."]

    def preview(self, batch: dict[str, Tensor], networks: Mapping[str, nn.Module]) -> list[list[np.ndarray]]:
        from medsynth.viz import mid_slices, window

        case = (self.data.validation or self.data.training)[0]
        pred = self.predictor.to_units(networks["G"], case.mr, self.data.ct_intensity)[0]
        ref = self.data.ct_intensity.denormalise(case.ct[0])
        panels = [window(case.mr[0], -1, 1), window(pred, -1000, 1500), window(ref, -1000, 1500),
                  window(np.abs(pred - ref) * case.mask, 0, 500)]
        return [[mid_slices(p)[0] for p in panels]]

    def export(self) -> ModelExport:
        c, data = self.config, self.data
        return ModelExport(networks=("G",), metadata=TranslationMetadata(
            spatial_dims=c.dims, context_slices=c.context_slices, patch_size=c.patch_size, spacing=data.grid.spacing,
            window_divisor=self.window_divisor, flip_axes=c.flip_axes,
            mr_channels=tuple(channel_suffixes(data.mr_channels)),  # file suffixes, in input-channel order
            directions={"mr2ct": DirectionSpec("G", data.mr_intensity, data.ct_intensity)}, mc_dropout=c.dropout > 0,
            data_fingerprint=data_fingerprint(self.data.files()), training_cases=len(self.data.training),
            input_profile=data.input_profile,
            provenance={"generator_norm": str(c.norm), "gan_weight": c.gan_weight, "tissue_weight": c.tissue_weight,
                        "perception_weight": c.perception_weight}))


def _rows(cases: list[PreparedCase], predict, ct_intensity: CTIntensity) -> list[dict[str, float]]:
    """SynthRAD2023 metrics and bone Dice of ``predict(case)`` (HU) for each of ``cases``, in each case's mask."""
    return validation_rows((predict(case), ct_intensity.denormalise(case.ct[0]), case.mask) for case in cases)
