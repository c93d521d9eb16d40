"""Differentiable augmentation (DiffAugment; Zhao et al., NeurIPS 2020) for single-channel CT in [-1, 1].

D sees every image, real or generated, through the same kind of random transform, drawn anew per
image; the transforms are differentiable, so G learns through them. D cannot then memorise the few
real images, and because fakes are transformed alike G is not pushed to produce transformed images.

Only transforms that make sense for a calibrated grey image are offered: brightness and contrast
(no saturation or colour), translation and cutout. Emptied pixels become air (-1, the window's
lower end) rather than 0, which on the CT window would be about 1000 HU, bone. Brightness and
contrast results are clipped to [-1, 1], the range G's tanh can reach.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import Tensor

AIR = -1.0
BRIGHTNESS_SHIFT = 0.25  # ±, in normalised units (about ±500 HU on the default window)
CONTRAST_RANGE = (0.5, 1.5)  # factor about each image's mean, as in DiffAugment
TRANSLATION_RATIO = 0.125  # largest shift, as a fraction of the image size
CUTOUT_RATIO = 0.5  # side of the cut-out square, as a fraction of the image size


class Augmentation(StrEnum):
    """The DiffAugment transforms suited to grey CT."""

    BRIGHTNESS = "brightness"
    CONTRAST = "contrast"
    TRANSLATION = "translation"
    CUTOUT = "cutout"


def _per_image(x: Tensor) -> Tensor:
    """Uniform [0, 1) values, one per image, shaped to broadcast over (B, C, H, W)."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)


def brightness(x: Tensor) -> Tensor:
    """x + b, b ~ U(-0.25, 0.25) per image, clipped to [-1, 1]."""
    return (x + (2.0 * _per_image(x) - 1.0) * BRIGHTNESS_SHIFT).clamp(-1.0, 1.0)


def contrast(x: Tensor) -> Tensor:
    """(x − x̄)·c + x̄, c ~ U(0.5, 1.5) per image, x̄ the image mean; clipped to [-1, 1]."""
    low, high = CONTRAST_RANGE
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * (low + (high - low) * _per_image(x)) + mean).clamp(-1.0, 1.0)


def translation(x: Tensor) -> Tensor:
    """Shift each image by whole pixels, up to 1/8 of its size per axis; uncovered pixels become air."""
    batch, _, height, width = x.shape
    reach_h, reach_w = round(height * TRANSLATION_RATIO), round(width * TRANSLATION_RATIO)
    padded = F.pad(x, (reach_w, reach_w, reach_h, reach_h), value=AIR)
    shift_h = torch.randint(0, 2 * reach_h + 1, (batch, 1, 1), device=x.device)
    shift_w = torch.randint(0, 2 * reach_w + 1, (batch, 1, 1), device=x.device)
    rows = torch.arange(height, device=x.device).view(1, -1, 1) + shift_h
    cols = torch.arange(width, device=x.device).view(1, 1, -1) + shift_w
    picked = padded[torch.arange(batch, device=x.device).view(-1, 1, 1), :, rows, cols]  # (B, H, W, C)
    return picked.permute(0, 3, 1, 2)


def cutout(x: Tensor) -> Tensor:
    """Set a square of half the image size, placed at random wholly inside each image, to air."""
    batch, _, height, width = x.shape
    size_h, size_w = round(height * CUTOUT_RATIO), round(width * CUTOUT_RATIO)
    top = torch.randint(0, height - size_h + 1, (batch, 1, 1), device=x.device)
    left = torch.randint(0, width - size_w + 1, (batch, 1, 1), device=x.device)
    rows = torch.arange(height, device=x.device).view(1, -1, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, -1)
    inside = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)
    return torch.where(inside[:, None], torch.full_like(x, AIR), x)


_TRANSFORMS: dict[Augmentation, Callable[[Tensor], Tensor]] = {
    Augmentation.BRIGHTNESS: brightness,
    Augmentation.CONTRAST: contrast,
    Augmentation.TRANSLATION: translation,
    Augmentation.CUTOUT: cutout,
}


def parse_policy(policy: Sequence[str]) -> tuple[Augmentation, ...]:
    """Check a policy (names of transforms) and return it in a fixed order: intensity, then geometry."""
    try:
        chosen = {Augmentation(name) for name in policy}
    except ValueError:
        valid = ", ".join(a.value for a in Augmentation)
        raise ValueError(f"unknown DiffAugment transform in {list(policy)}; valid: {valid}") from None
    return tuple(a for a in Augmentation if a in chosen)


def diff_augment(x: Tensor, policy: Sequence[str]) -> Tensor:
    """Apply each transform of ``policy`` to a batch (B, C, H, W), with fresh random draws per image."""
    for name in parse_policy(policy):
        x = _TRANSFORMS[name](x)
    return x
