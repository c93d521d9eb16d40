"""Adversarial objectives shared by every family.

Notation: ``D(x)`` is the discriminator's (critic's) raw output, real images ``x``, generated ``G(z)``.
"""

from __future__ import annotations

from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GanLoss(StrEnum):
    """Adversarial objective: least squares (Mao et al.), the original BCE, or hinge."""

    LSGAN = "lsgan"
    VANILLA = "vanilla"
    HINGE = "hinge"


def patch_prediction(outputs: list[Tensor] | Tensor) -> Tensor:
    """MONAI's PatchDiscriminator returns its intermediate features too; the prediction is the last."""
    return outputs[-1] if isinstance(outputs, (list, tuple)) else outputs


def discriminator_loss(real: Tensor, fake: Tensor, kind: GanLoss) -> Tensor:
    """Loss of D that scores ``real`` outputs high and ``fake`` outputs low.

    - lsgan:   ½·E[(D(x) − 1)²] + ½·E[D(G(z))²]
    - vanilla: ½·(BCE(D(x), 1) + BCE(D(G(z)), 0)) on logits
    - hinge:   E[relu(1 − D(x))] + E[relu(1 + D(G(z)))]
    The ½ of lsgan/vanilla halves D's step relative to G, as in pix2pix.
    """
    kind = GanLoss(kind)
    real, fake = real.float(), fake.float()
    if kind is GanLoss.LSGAN:
        return 0.5 * (F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake)))
    if kind is GanLoss.VANILLA:
        return 0.5 * (
            F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        )
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def generator_loss(fake: Tensor, kind: GanLoss) -> Tensor:
    """Loss of G that makes D score its output as real.

    - lsgan:   E[(D(G(z)) − 1)²]
    - vanilla: BCE(D(G(z)), 1), the non-saturating form
    - hinge:   −E[D(G(z))]
    """
    kind = GanLoss(kind)
    fake = fake.float()
    if kind is GanLoss.LSGAN:
        return F.mse_loss(fake, torch.ones_like(fake))
    if kind is GanLoss.VANILLA:
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    return -fake.mean()


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP penalty E[(‖∇ₓ̂ C(x̂)‖₂ − 1)²] at x̂ = ε·x + (1 − ε)·G(z), ε ~ U(0, 1) per sample.

    The norm is taken per sample over *all* non-batch axes (channels and space), as in Gulrajani et al.;
    VA-GAN's official code took it over the channel axis only, which penalises a different quantity.
    """
    real, fake = real.detach().float(), fake.detach().float()
    eps = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), device=real.device, generator=generator)
    mixed = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()
