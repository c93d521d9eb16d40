"""Image-to-image generators built on MONAI's U-Net."""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import UNet
from torch import Tensor, nn


class UNetGenerator(nn.Module):
    """MONAI ``UNet`` (2D or 3D via ``spatial_dims``) with an optional tanh output.

    pix2pix's generator maps images normalised to [-1, 1] onto the same range, hence tanh; a VA-GAN
    map generator predicts an unbounded additive map and uses ``tanh_output=False``. ``dropout`` > 0
    keeps dropout layers that MC-dropout inference switches on to estimate uncertainty.

    ``num_res_units`` defaults to 0: with residual units MONAI normalises the top up-convolution's
    one-channel output (zero mean, unit variance per image) before the last residual conv, which holds
    the output's level back and made translation learn several times slower in our tests.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 256),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 0,
        norm: str = "instance",
        dropout: float = 0.0,
        tanh_output: bool = True,
    ) -> None:
        super().__init__()
        self.unet = UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=tuple(channels),
            strides=tuple(strides),
            num_res_units=num_res_units,
            norm=norm,
            dropout=dropout,
        )
        self.activation = nn.Tanh() if tanh_output else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.unet(x))
