"""Image-to-image generators built on MONAI's U-Net."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from monai.networks.blocks import Convolution
from monai.networks.nets import UNet
from torch import Tensor, nn


class GeneratorNorm(StrEnum):
    """Feature normalisation in a generator's U-Net.

    ``batch`` normalises with statistics gathered over training batches and, at inference, with their
    running averages: a voxel's output then does not depend on which sliding window it falls in.
    ``instance`` normalises each window by its own statistics (pix2pix's choice for whole images), so
    neighbouring windows disagree on a volume and leave seams; models trained before the ``norm`` option
    have it.
    """

    BATCH = "batch"
    INSTANCE = "instance"


def head_width(head_channels: int | None, channels: Sequence[int], num_res_units: int) -> int:
    """Feature channels before a generator's 1×1 output convolution (0: none).

    None chooses ``channels[0]`` when the U-Net has residual units (see :class:`UNetGenerator`) and
    no head without them, where MONAI's last layer is already a plain convolution.
    """
    if head_channels is None:
        return channels[0] if num_res_units > 0 else 0
    return head_channels


class UNetGenerator(nn.Module):
    """MONAI ``UNet`` (2D or 3D via ``spatial_dims``) with an optional tanh output.

    pix2pix's generator maps images normalised to [-1, 1] onto the same range, hence tanh; a VA-GAN
    map generator predicts an unbounded additive map and uses ``tanh_output=False``. ``dropout`` > 0
    keeps dropout layers that MC-dropout inference switches on to estimate uncertainty.

    With residual units (``num_res_units`` > 0), MONAI's top up-convolution normalises its output
    before the last residual conv. With one output channel that output is held at zero mean and unit
    variance per image, which held the level back and made translation learn several times slower in
    our tests. ``head_channels`` > 0 avoids it: the U-Net then ends in that many feature channels
    (normalised as usual), and a plain 1×1 convolution makes the output from them (see :func:`head_width`).
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
        head_channels: int = 0,
        padding_mode: str = "zeros",
        tissue_classes: int = 0,
    ) -> None:
        super().__init__()
        if tissue_classes and not head_channels:
            raise ValueError("a tissue head reads the generator's last features: it needs head_channels > 0.")
        self.unet = UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=head_channels or out_channels,
            channels=tuple(channels),
            strides=tuple(strides),
            num_res_units=num_res_units,
            norm=norm,
            dropout=dropout,
        )
        self.head = (Convolution(spatial_dims, head_channels, out_channels, kernel_size=1, conv_only=True)
                     if head_channels else nn.Identity())
        self.activation = nn.Tanh() if tanh_output else nn.Identity()
        # Anatomy-aware training: K tissue logits from the same features as the image (a second 1×1 conv)
        self.tissue = (Convolution(spatial_dims, head_channels, tissue_classes, kernel_size=1, conv_only=True)
                       if tissue_classes else None)
        for module in self.modules():
            # MONAI's UNet has no padding option; every (non-transposed) convolution pads the same way
            if isinstance(module, (nn.Conv2d, nn.Conv3d)) and module.padding_mode != padding_mode:
                module.padding_mode = padding_mode

    def forward(self, x: Tensor, tissue: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """(B, C_in, *S) -> the image (B, C_out, *S); with ``tissue`` also the tissue logits (B, K, *S), which
        only training asks for (inference and ONNX export see the image alone)."""
        features = self.unet(x)
        image = self.activation(self.head(features))
        if not tissue:
            return image
        if self.tissue is None:
            raise ValueError("this generator has no tissue head (tissue_classes 0).")
        return image, self.tissue(features)
