"""CycleGAN with shape consistency: unpaired MR ↔ CT translation that keeps the anatomy.

Zhang, Yang & Zheng, "Translating and segmenting multimodal medical volumes with cycle- and
shape-consistency generative adversarial network" (CVPR 2018), built on CycleGAN (Zhu et al., 2017).

Networks, with the paper's names (X = MR, Y = CT): generators G: X → Y (``G_mr2ct``) and F: Y → X
(``G_ct2mr``), U-Nets with tanh output; discriminators D_Y (``D_ct``) and D_X (``D_mr``), PatchGANs;
segmenters S_Y (``S_ct``) and S_X (``S_mr``), U-Nets over the K labels of the label maps. With C MR
contrasts per case (``mr/<case>_0000``, ``_0001``, ...) the MR side has C channels: G takes C in, F gives C
out, D_X and S_X take C in; the model file records the channels (``mr_channels``) as pix2pix's does.

Losses, with x an MR, y a CT (different subjects), m_x, m_y their label maps, ℓ least squares
(LSGAN, default) and P_X, P_Y the 50-image pools:
    L_D = ½·[ℓ(D_Y(y), 1) + ℓ(D_Y(P_Y(G(x))), 0)] + ½·[ℓ(D_X(x), 1) + ℓ(D_X(P_X(F(y))), 0)]
    L_G = ℓ(D_Y(G(x)), 1) + ℓ(D_X(F(y)), 1)
          + λ_cyc·(‖F(G(x)) − x‖₁ + ‖G(F(y)) − y‖₁)                       λ_cyc = 10
          + λ_idt·(‖G(y) − y‖₁ + ‖F(x) − x‖₁)                             λ_idt = 0 (off)
          + λ_shape·([CE + Dice](S_Y(G(x)), m_x) + [CE + Dice](S_X(F(y)), m_y))  λ_shape = 1
    L_S = [CE + Dice](S_Y(y), m_y) + [CE + Dice](S_X(x), m_x)          on real labelled images
Each step updates G and F together, then both discriminators, then both segmenters; during the
first ``seg_pretrain_steps`` steps only the segmenters learn. The segmenters learn from real images
only (the paper also feeds them translated ones), so the Dice of S_Y on G(x) measures how much
anatomy survives the translation rather than how well S_Y has adapted to synthetic images.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from medsynth.data.intensity import MRScaling
from medsynth.data.patches import PatchSampler
from medsynth.data.splits import SplitPlan
from medsynth.data.unpaired import DOMAINS, DomainCase, UnpairedData
from medsynth.engine.context import StepContext
from medsynth.engine.family import Family, ModelExport
from medsynth.errors import UsageError
from medsynth.families.base import spatial_patch, unet_strides
from medsynth.inference.predictor import GridPredictor
from medsynth.io.cases import channel_suffixes
from medsynth.losses.adversarial import GanLoss, discriminator_loss, generator_loss, patch_prediction
from medsynth.losses.cycle import cycle_consistency_loss, identity_loss, segmentation_loss, shape_consistency_loss
from medsynth.losses.image_pool import PAPER_POOL_SIZE, ImagePool
from medsynth.metrics.similarity import dice_per_label
from medsynth.metrics.tissue import validation_scores
from medsynth.modelfile import DirectionSpec, TranslationMetadata, data_fingerprint
from medsynth.viz import mid_slices, overlay_labels, window

_OTHER = {"mr": "ct", "ct": "mr"}


@dataclass
class CycleGANConfig:
    """Network, loss and data settings (paper defaults where the papers give them)."""

    dims: int = 3
    patch_size: tuple[int, ...] = (64, 64, 64)
    spacing: tuple[float, ...] | None = None  # None: median spacing of the training images
    # Generators: a first stride of 1 keeps a full-resolution level, so a plain convolution (not a strided
    # transposed one, with its checkerboard) makes the output; None: (1, 2, ..., 2).
    channels: tuple[int, ...] = (32, 64, 128, 256)
    strides: tuple[int, ...] | None = None
    num_res_units: int = 0  # MONAI's residual top layer instance-normalises a single output channel
    disc_channels: int = 64
    disc_layers: int = 3
    seg_channels: tuple[int, ...] = (16, 32, 64, 128)
    gan_loss: GanLoss = GanLoss.LSGAN
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.0  # across modalities the identity loss only pulls G towards copying
    shape_weight: float = 1.0  # λ_shape; 0 leaves segmenters (if labels exist) for reporting only
    seg_pretrain_steps: int = 0  # first steps in which only the segmenters learn
    pool_size: int = PAPER_POOL_SIZE
    lr: float = 2e-4
    seg_lr: float = 1e-3  # the segmenters' task is supervised and tolerates a larger step
    betas: tuple[float, ...] = (0.5, 0.999)
    mr_scaling: MRScaling = MRScaling.PERCENTILE
    body_fraction: float = 0.9  # share of patches centred inside the body
    flip_axes: tuple[int, ...] = (0,)  # left-right mirroring keeps a head anatomically plausible
    label_names: tuple[str, ...] = ()  # names of labels 0..K-1 in metric names (default: numbers)
    val_data: str | None = None  # paired folder (mr/, ct/, optional mask/, labels/) for validation
    val_cases: int = -1  # without val_data: labelled cases held out per domain; -1: 10 % (≥ 1 from 4)
    val_overlap: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        self.patch_size = spatial_patch(self.dims, self.patch_size)
        if min(len(self.channels), len(self.seg_channels)) < 2:
            raise UsageError("channels and seg_channels need at least two U-Net levels each.")
        self.strides = unet_strides(self.strides, self.channels, first=1)
        divisor = int(np.lcm(np.prod(self.strides), 2 ** (len(self.seg_channels) - 2)))
        if any(p % divisor for p in self.patch_size):
            raise UsageError(f"patch size {self.patch_size} must be a multiple of {divisor} for these U-Nets.")
        weights = {"lambda_cycle": self.lambda_cycle, "lambda_identity": self.lambda_identity,
                   "shape_weight": self.shape_weight, "seg_pretrain_steps": self.seg_pretrain_steps,
                   "pool_size": self.pool_size}
        negative = [name for name, value in weights.items() if value < 0]
        if negative:
            raise UsageError(f"{', '.join(negative)} must not be negative.")


class CycleGAN(Family):
    """CycleGAN with shape consistency on the shared engine."""

    name = "cyclegan"
    best_metric = ("dice_mr2ct", False)

    def __init__(self, config: CycleGANConfig, data: Path, split: SplitPlan | None = None) -> None:
        super().__init__()
        self.config = config
        self.data = UnpairedData(data, split or SplitPlan(seed=config.seed), config.dims, config.spacing,
                                 config.mr_scaling, config.val_data, config.val_cases,
                                 require_labels=config.shape_weight > 0 or config.seg_pretrain_steps > 0)
        self._check_data()
        self.split, self.num_labels = self.data.split, self.data.num_labels
        self.sampler = PatchSampler(config.patch_size, config.seed, config.body_fraction, config.flip_axes)
        self.pools = {d: ImagePool(config.pool_size, seed=2 * config.seed + i) for i, d in enumerate(DOMAINS)}
        self._build_networks()

    def _check_data(self) -> None:
        """The settings that depend on the data: identity loss with one MR channel, a name for every label."""
        c, channels, count = self.config, self.data.mr_channels, self.data.num_labels
        if channels > 1 and c.lambda_identity > 0:
            raise UsageError(f"lambda_identity feeds CT to the MR→CT generator, which takes {channels} MR "
                             "channels; set lambda_identity: 0 for several MR contrasts.")
        if c.label_names and count and len(c.label_names) != count:
            raise UsageError(f"label_names lists {len(c.label_names)} names but the label maps hold {count} "
                             "labels (0 included); name every label or none.")

    # -- networks -------------------------------------------------------------------------------------
    def _build_networks(self) -> None:
        c = self.config
        width = {"mr": self.data.mr_channels, "ct": 1}  # image channels of each domain
        for source, target in (("mr", "ct"), ("ct", "mr")):
            self.add_network(f"G_{source}2{target}", "medsynth.UNetGenerator", spatial_dims=c.dims,
                             in_channels=width[source], out_channels=width[target], channels=list(c.channels),
                             strides=list(c.strides), num_res_units=c.num_res_units, tanh_output=True)
        for domain in ("ct", "mr"):
            self.add_network(f"D_{domain}", "monai.PatchDiscriminator", spatial_dims=c.dims,
                             num_layers_d=c.disc_layers, channels=c.disc_channels, in_channels=width[domain],
                             out_channels=1, norm="INSTANCE", last_conv_kernel_size=4)
        if self.num_labels:
            for domain in ("ct", "mr"):
                self.add_network(f"S_{domain}", "monai.UNet", spatial_dims=c.dims, in_channels=width[domain],
                                 out_channels=self.num_labels, channels=list(c.seg_channels),
                                 strides=[1] + [2] * (len(c.seg_channels) - 2), num_res_units=c.num_res_units,
                                 norm="instance")

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One Adam per group, as in CycleGAN's code: both generators, both discriminators, both segmenters."""
        c = self.config
        groups = {"G": ("G_mr2ct", "G_ct2mr"), "D": ("D_ct", "D_mr")}
        if self.num_labels:
            groups["S"] = ("S_ct", "S_mr")
        return {group: torch.optim.Adam(itertools.chain(*(self.networks[n].parameters() for n in names)),
                                        lr=c.seg_lr if group == "S" else c.lr, betas=tuple(c.betas))
                for group, names in groups.items()}

    # -- training -------------------------------------------------------------------------------------
    def sample(self, index: int) -> dict[str, Tensor]:
        """An MR patch and a CT patch from independently drawn cases (the domains share no subjects)."""
        rng = self.sampler.rng(index)
        return {key: value for domain in DOMAINS for key, value in self._domain_patch(rng, domain).items()}

    def _domain_patch(self, rng: np.random.Generator, domain: str) -> dict[str, Tensor]:
        case, draw = self.sampler.body(rng, self.data.training[domain])
        patch = {domain: torch.from_numpy(self.sampler.cut(case.image, draw))}
        if self.num_labels:
            # an unlabelled case gets an all-background map that its false flag keeps out of every loss
            labels = np.zeros((1, *self.config.patch_size), np.uint8) if case.labels is None \
                else self.sampler.cut(case.labels, draw, pad_value=0)
            patch[f"{domain}_labels"] = torch.from_numpy(labels.astype(np.int64))
            patch[f"{domain}_labelled"] = torch.tensor(case.labels is not None)
        return patch

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        if ctx.step < self.config.seg_pretrain_steps:
            return self._segmenter_step(batch, ctx)
        fakes, losses = self._generator_step(batch, ctx)
        losses.update(self._discriminator_step(batch, fakes, ctx))
        if self.num_labels:
            losses.update(self._segmenter_step(batch, ctx))
        return losses

    def _generator_step(self, batch: dict[str, Tensor], ctx: StepContext
                        ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """One update of G and F on L_G; returns the translations (detached) for the discriminators."""
        c = self.config
        mr, ct = batch["mr"], batch["ct"]
        g, f = ctx.trained("G_mr2ct"), ctx.trained("G_ct2mr")
        shaped = bool(self.num_labels) and c.shape_weight > 0
        others = ("D_ct", "D_mr", *(("S_ct", "S_mr") if shaped else ()))
        with contextlib.ExitStack() as frozen, ctx.autocast():
            nets = {name: frozen.enter_context(ctx.frozen(name)) for name in others}
            fake_ct, fake_mr = g(mr), f(ct)
            losses = {"G_adv": generator_loss(patch_prediction(nets["D_ct"](fake_ct)), c.gan_loss)
                      + generator_loss(patch_prediction(nets["D_mr"](fake_mr)), c.gan_loss),
                      "cycle": cycle_consistency_loss(f(fake_ct), mr) + cycle_consistency_loss(g(fake_mr), ct)}
            total = losses["G_adv"] + c.lambda_cycle * losses["cycle"]
            if c.lambda_identity > 0:
                losses["identity"] = identity_loss(g(ct), ct) + identity_loss(f(mr), mr)
                total = total + c.lambda_identity * losses["identity"]
            if shaped:
                losses["shape"] = (
                    shape_consistency_loss(nets["S_ct"], fake_ct, batch["mr_labels"], batch["mr_labelled"])
                    + shape_consistency_loss(nets["S_mr"], fake_mr, batch["ct_labels"], batch["ct_labelled"]))
                total = total + c.shape_weight * losses["shape"]
        ctx.optimize("G", total)
        return {"ct": fake_ct.detach(), "mr": fake_mr.detach()}, losses

    def _discriminator_step(self, batch: dict[str, Tensor], fakes: dict[str, Tensor], ctx: StepContext
                            ) -> dict[str, Tensor]:
        """One update of D_Y and D_X: real images against translations drawn through the pools."""
        losses = {}
        with ctx.autocast():
            for domain in DOMAINS:
                critic = ctx.trained(f"D_{domain}")
                real = patch_prediction(critic(batch[domain]))
                fake = patch_prediction(critic(self.pools[domain].query(fakes[domain])))
                losses[f"D_{domain}"] = discriminator_loss(real, fake, self.config.gan_loss)
        ctx.optimize("D", losses["D_ct"] + losses["D_mr"])
        return losses

    def _segmenter_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """One update of S_Y and S_X on the real labelled images of the batch."""
        with ctx.autocast():
            losses = {f"S_{d}": segmentation_loss(ctx.trained(f"S_{d}")(batch[d]), batch[f"{d}_labels"],
                                                  batch[f"{d}_labelled"]) for d in DOMAINS}
        ctx.optimize("S", losses["S_ct"] + losses["S_mr"])
        return losses

    # -- validation and previews ----------------------------------------------------------------------
    @property
    def predictor(self) -> GridPredictor:
        """Whole-volume outputs (C', X, Y, Z) of any network for normalised (C, X, Y, Z) images."""
        return GridPredictor(self.config.dims, self.config.patch_size, self.config.val_overlap)

    def label_name(self, label: int) -> str:
        return self.config.label_names[label] if self.config.label_names else str(label)

    def validate(self, networks: Mapping[str, nn.Module], device: torch.device) -> dict[str, float]:
        """Dice of S_CT on G(MR) (``dice_mr2ct``) and of S_MR on F(CT) per label, the segmenters' own Dice
        on real images, and with paired ``val_data`` the SynthRAD2023 metrics of G(MR) against the CT."""
        metrics: dict[str, float] = {}
        if self.num_labels:
            for source, target in (("mr", "ct"), ("ct", "mr")):
                generator = networks[f"G_{source}2{target}"]
                segmenter = networks[f"S_{target}"]
                cases = self.data.validation
                metrics.update(self._dice(f"dice_{source}2{target}", segmenter, cases[source], generator))
                metrics.update(self._dice(f"dice_real_{target}", segmenter, cases[target]))
        if self.config.val_data:
            metrics.update(self._synthrad(networks["G_mr2ct"]))
        return metrics

    def _dice(self, prefix: str, segmenter: nn.Module, cases: list[DomainCase],
              generator: nn.Module | None = None) -> dict[str, float]:
        """Mean foreground Dice and Dice per label of ``segmenter`` on the (translated) labelled cases."""
        scores = []
        for case in (c for c in cases if c.labels is not None):
            image = self.predictor.volume(generator, case.image) if generator is not None else case.image
            predicted = self.predictor.volume(segmenter, image).argmax(0).cpu().numpy()
            scores.append(dice_per_label(predicted, case.labels[0], range(1, self.num_labels)))
        if not scores:
            return {}
        per_label = {k: float(np.nanmean([s[k] for s in scores])) for k in range(1, self.num_labels)}
        return {prefix: float(np.nanmean(list(per_label.values()))),
                **{f"{prefix}_{self.label_name(k)}": v for k, v in per_label.items()}}

    def _synthrad(self, generator: nn.Module) -> dict[str, float]:
        ct, cases = self.data.ct_intensity, self.data.validation
        return validation_scores((self.predictor.to_units(generator, mr_case.image, ct)[0],
                                  ct.denormalise(ct_case.image[0]), ct_case.mask)
                                 for mr_case, ct_case in zip(cases["mr"], cases["ct"], strict=True))

    def preview(self, batch: dict[str, Tensor], networks: Mapping[str, nn.Module]) -> list[list[np.ndarray]]:
        """Per direction: source, translation, cycle reconstruction, S_target(translation), true labels."""
        return [self._preview_row(networks, source) for source in DOMAINS]

    def _preview_row(self, networks: Mapping[str, nn.Module], source: str) -> list[np.ndarray]:
        target = _OTHER[source]
        case = (self.data.validation[source] or self.data.training[source])[0]
        translated = self.predictor.volume(networks[f"G_{source}2{target}"], case.image)
        reconstructed = self.predictor.volume(networks[f"G_{target}2{source}"], translated)
        panels = [self._grey(case.image[0], source), self._grey(translated[0].cpu().numpy(), target),
                  self._grey(reconstructed[0].cpu().numpy(), source)]
        if self.num_labels:
            found = self.predictor.volume(networks[f"S_{target}"], translated).argmax(0).cpu().numpy()
            panels.append(overlay_labels(panels[1], found))
            if case.labels is not None:
                panels.append(overlay_labels(panels[0], case.labels[0]))
        return [mid_slices(panel).axial for panel in panels]

    def _grey(self, normalised: np.ndarray, domain: str) -> np.ndarray:
        if domain == "ct":
            return window(self.data.ct_intensity.denormalise(normalised), -1000.0, 1500.0)
        return window(normalised, -1.0, 1.0)

    # -- checkpoints and export -----------------------------------------------------------------------
    def state_dict_extra(self) -> dict[str, dict]:
        return {"pools": {domain: pool.state_dict() for domain, pool in self.pools.items()}}

    def load_state_dict_extra(self, state: dict[str, dict]) -> None:
        for domain, pool in self.pools.items():
            pool.load_state_dict(state["pools"][domain])

    def export(self) -> ModelExport:
        c = self.config
        mr, ct = self.data.mr_intensity, self.data.ct_intensity
        return ModelExport(networks=("G_mr2ct", "G_ct2mr"), metadata=TranslationMetadata(
            spatial_dims=c.dims, patch_size=c.patch_size, spacing=self.data.grid.spacing, flip_axes=c.flip_axes,
            mr_channels=tuple(channel_suffixes(self.data.mr_channels)),  # file suffixes: G's inputs, F's outputs
            directions={"mr2ct": DirectionSpec("G_mr2ct", mr, ct), "ct2mr": DirectionSpec("G_ct2mr", ct, mr)},
            data_fingerprint=data_fingerprint(self.data.files()),
            training_cases={d: len(self.data.training[d]) for d in DOMAINS},
            provenance={"shape_weight": c.shape_weight, "labels": self.num_labels}))
