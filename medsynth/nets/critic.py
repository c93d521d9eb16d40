"""Image-level scorers: VA-GAN's Wasserstein critic and a control-vs-patient classifier (2D or 3D).

Both are stacks of 3×3(×3) convolutions with LeakyReLU, halved in resolution by average pooling
between levels, ending in global average pooling, so they accept any image whose sides span at
least 2^(levels − 1) voxels (pooling rounds odd sizes down).
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.layers import Conv, Norm, Pool
from torch import Tensor, nn


def conv_trunk(spatial_dims: int, in_channels: int, channels: Sequence[int], norm: str | None = None,
               negative_slope: float = 0.2) -> nn.Sequential:
    """Levels of two 3×3 convolutions (one on the first level), average-pooled by 2 between levels.

    ``norm`` names a MONAI normalisation (``"batch"``, ``"instance"``) put after every convolution,
    or None for none at all.
    """
    conv, pool = Conv[Conv.CONV, spatial_dims], Pool[Pool.AVG, spatial_dims]
    layers: list[nn.Module] = []
    previous = in_channels
    for level, width in enumerate(channels):
        if level:
            layers.append(pool(kernel_size=2))
        for _ in range(1 if level == 0 else 2):
            layers.append(conv(previous, width, kernel_size=3, padding=1))
            if norm is not None:
                layers.append(Norm[norm, spatial_dims](width))
            layers.append(nn.LeakyReLU(negative_slope))
            previous = width
    return nn.Sequential(*layers)


class Critic(nn.Module):
    """VA-GAN's critic C (Baumgartner et al., 2018): a WGAN critic scoring how "healthy" an image looks.

    No batch or layer normalisation anywhere (the paper's choice): the gradient penalty constrains
    the gradient of C for each input separately, which a normalisation coupling the samples of a
    batch would break. A 1×1 convolution gives a score per location; global average pooling turns
    them into one unbounded score per image, shape (B,).
    """

    def __init__(self, spatial_dims: int, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 128, 256),
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        self.trunk = conv_trunk(spatial_dims, in_channels, channels, norm=None, negative_slope=negative_slope)
        self.score = Conv[Conv.CONV, spatial_dims](channels[-1], 1, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.trunk(x)).flatten(1).mean(1)


class Classifier(nn.Module):
    """Control-vs-patient classifier: the same trunk (normalised by default) and a linear head.

    Returns the logit of "patient", shape (B,); the gradient-saliency baseline of VA-GAN reads its
    input gradient.
    """

    def __init__(self, spatial_dims: int, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 128),
                 norm: str | None = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        self.trunk = conv_trunk(spatial_dims, in_channels, channels, norm=norm)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels[-1], 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.trunk(x)))[:, 0]
