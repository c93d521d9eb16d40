"""FastGAN's networks (Liu et al., "Towards faster and stabilized GAN training for high-fidelity few-shot
image synthesis", ICLR 2021), single-channel for CT.

Generator G: z ∈ R^nz → 4×4 → 8×8 → … → resolution² through up-blocks (nearest upsampling, 3×3 conv,
batch norm, GLU, noise injection), with skip-layer excitation (SLE) gating the 128², 256² and 512²
features channel-wise by the 8², 16² and 32² features; a 3×3 conv and tanh give the image.

Discriminator D: strided residual down-blocks to 8×8, a 5×5 map of real/fake logits, and two small
decoders that D uses on real images only (self-supervision): one reconstructs the whole image at 128²
from the 8² features, the other one random quarter of the image from that quarter of the 16² features.

All convolutions are spectrally normalised, as in the official code.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

#: image sizes the networks are built for; 64 is for tests and CPU trials (no SLE lands that low)
RESOLUTIONS = (64, 128, 256, 512, 1024)
#: (low, high): the low-resolution features of G that gate the high-resolution ones
SLE_PAIRS = ((8, 128), (16, 256), (32, 512))
#: G's channels per feature size, as multiples of ngf (the official code's table)
_G_WIDTH = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
#: up-blocks with two convolutions; the others have one, which halves the cost at the odd sizes
_DOUBLE_UP = (8, 32, 128, 512)
#: the largest reconstruction D's decoders make, and the feature size they start from
DECODER_SIZE = 128
_DECODER_START = 8


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Module:
    return spectral_norm(nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False))


def _sizes(low: int, high: int) -> list[int]:
    """Feature sizes low, 2·low, …, high."""
    return [2**k for k in range(int(math.log2(low)), int(math.log2(high)) + 1)]


def check_resolution(resolution: int) -> int:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"FastGAN resolution {resolution} is not one of {', '.join(map(str, RESOLUTIONS))}")
    return resolution


class NoiseInjection(nn.Module):
    """Adds w·n with n ~ N(0, 1) per pixel (shared by the channels) and a learnt w, zero at start."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        return x + self.weight * noise


def _up_stage(in_channels: int, out_channels: int, noise: bool) -> list[nn.Module]:
    """3×3 conv to twice the channels, [noise], batch norm, GLU (which halves them again)."""
    return [_conv(in_channels, 2 * out_channels, 3, padding=1), *([NoiseInjection()] if noise else []),
            nn.BatchNorm2d(2 * out_channels), nn.GLU(dim=1)]


class UpBlock(nn.Sequential):
    """Nearest-neighbour ×2 upsampling and one (or, ``double``, two) conv–[noise]–BN–GLU stages."""

    def __init__(self, in_channels: int, out_channels: int, double: bool = False, noise: bool = True) -> None:
        stages = _up_stage(in_channels, out_channels, noise)
        if double:
            stages += _up_stage(out_channels, out_channels, noise)
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), *stages)


class SkipLayerExcitation(nn.Module):
    """SLE: y = x_high · σ(conv1×1(swish(conv4×4(pool₄(x_low))))).

    The low-resolution map, pooled to 4×4 and squeezed to one value per channel, gates the channels
    of the high-resolution map: a cheap long skip connection that also lets coarse content steer style.
    """

    def __init__(self, low_channels: int, high_channels: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(4), _conv(low_channels, high_channels, 4), nn.SiLU(),
                                  _conv(high_channels, high_channels, 1), nn.Sigmoid())

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        return high * self.gate(low)


class FastGANGenerator(nn.Module):
    """FastGAN's G: latent vector (B, nz) → image (B, out_channels, resolution, resolution) in [-1, 1]."""

    def __init__(self, resolution: int = 256, nz: int = 256, ngf: int = 64, out_channels: int = 1) -> None:
        super().__init__()
        self.resolution = check_resolution(resolution)
        width = {size: max(1, int(m * ngf)) for size, m in _G_WIDTH.items()}
        self.initial = nn.Sequential(spectral_norm(nn.ConvTranspose2d(nz, 2 * width[4], 4, bias=False)),
                                     nn.BatchNorm2d(2 * width[4]), nn.GLU(dim=1))
        self.ups = nn.ModuleDict({str(s): UpBlock(width[s // 2], width[s], s in _DOUBLE_UP)
                                  for s in _sizes(8, resolution)})
        self.sle = nn.ModuleDict({str(high): SkipLayerExcitation(width[low], width[high])
                                  for low, high in SLE_PAIRS if high <= resolution})
        self.sources = {high: low for low, high in SLE_PAIRS if high <= resolution}
        self.to_image = nn.Sequential(_conv(width[resolution], out_channels, 3, padding=1), nn.Tanh())

    def forward(self, z: Tensor) -> Tensor:
        x = self.initial(z.view(z.shape[0], -1, 1, 1))
        kept: dict[int, Tensor] = {}
        for key, block in self.ups.items():
            size = int(key)
            x = block(x)
            if size in self.sources:
                x = self.sle[key](kept.pop(self.sources[size]), x)
            if size in self.sources.values():
                kept[size] = x
        return self.to_image(x)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class DownBlock(nn.Module):
    """Residual halving: ½·[conv3×3(conv4×4/2(x)) + conv1×1(avgpool2(x))], each with BN and LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(_conv(in_channels, out_channels, 4, 2, 1), nn.BatchNorm2d(out_channels), _act(),
                                  _conv(out_channels, out_channels, 3, 1, 1), nn.BatchNorm2d(out_channels), _act())
        self.direct = nn.Sequential(nn.AvgPool2d(2), _conv(in_channels, out_channels, 1),
                                    nn.BatchNorm2d(out_channels), _act())

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * (self.main(x) + self.direct(x))


class Decoder(nn.Sequential):
    """D's small decoder: from 8² features up to ``size``² (up-blocks without noise), 3×3 conv, tanh."""

    def __init__(self, in_channels: int, out_channels: int, size: int, width: int) -> None:
        channels = [in_channels] + [max(1, width * 32 // s) for s in _sizes(2 * _DECODER_START, size)]
        ups = [UpBlock(c_in, c_out, noise=False) for c_in, c_out in itertools.pairwise(channels)]
        super().__init__(nn.AdaptiveAvgPool2d(_DECODER_START), *ups,
                         _conv(channels[-1], out_channels, 3, padding=1), nn.Tanh())


class FastGANDiscriminator(nn.Module):
    """FastGAN's D with its two self-supervision decoders.

    ``forward(x)`` gives the real/fake logits (B, 1, 5, 5). ``forward(x, part=q)``, used on real images,
    also returns the decoders' reconstructions of the whole image and of its quarter ``q`` (0 top-left,
    1 top-right, 2 bottom-left, 3 bottom-right in array order), each ``decoder_size``² =
    min(resolution, 128)².
    """

    def __init__(self, resolution: int = 256, ndf: int = 64, in_channels: int = 1) -> None:
        super().__init__()
        self.resolution = check_resolution(resolution)
        self.decoder_size = min(resolution, DECODER_SIZE)
        width = {s: max(1, ndf * 64 // s) for s in _sizes(8, resolution)}
        self.stem = self._stem(in_channels, width)
        top = min(resolution, 256)
        self.downs = nn.ModuleList(DownBlock(width[s], width[s // 2]) for s in reversed(_sizes(16, top)))
        self.logits = nn.Sequential(_conv(width[8], width[8], 1), nn.BatchNorm2d(width[8]), _act(),
                                    _conv(width[8], 1, 4))
        self.decoder_whole = Decoder(width[8], in_channels, self.decoder_size, ndf)
        self.decoder_part = Decoder(width[16], in_channels, self.decoder_size, ndf)

    def _stem(self, in_channels: int, width: dict[int, int]) -> nn.Sequential:
        """To 256² (or the resolution, if smaller): strided 4×4 convs above 256², one 3×3 conv otherwise."""
        if self.resolution <= 256:
            return nn.Sequential(_conv(in_channels, width[self.resolution], 3, 1, 1), _act())
        layers: list[nn.Module] = []
        channels = in_channels
        for size in reversed(_sizes(512, self.resolution)):
            layers += [_conv(channels, width[size // 2], 4, 2, 1)] + ([nn.BatchNorm2d(width[size // 2])]
                                                                      if layers else []) + [_act()]
            channels = width[size // 2]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor, part: int | None = None) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        features = self.stem(x)
        for block in self.downs:
            if features.shape[-1] == 16:
                at_16 = features
            features = block(features)
        logits = self.logits(features)
        if part is None:
            return logits
        return logits, self.decoder_whole(features), self.decoder_part(quarter(at_16, part))


def quarter(x: Tensor, part: int) -> Tensor:
    """Quarter ``part`` of the last two axes: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
    if part not in range(4):
        raise ValueError(f"part is 0..3, not {part}")
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    row, col = divmod(part, 2)
    return x[..., row * h:(row + 1) * h, col * w:(col + 1) * w]
