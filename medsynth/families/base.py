"""Settings checks the families share; the family contract itself is :mod:`medsynth.engine.family`."""

from __future__ import annotations

from medsynth.errors import UsageError


def spatial_patch(dims: int, patch_size: tuple[int, ...]) -> tuple[int, ...]:
    """Validate ``--dims`` and expand a single patch size to every spatial axis."""
    if dims not in (2, 3):
        raise UsageError("--dims must be 2 or 3.")
    patch = tuple(patch_size) * dims if len(patch_size) == 1 else tuple(patch_size)
    if len(patch) != dims:
        raise UsageError(f"patch size {patch} needs {dims} values for --dims {dims}.")
    return patch


def unet_strides(strides: tuple[int, ...] | None, channels: tuple[int, ...], first: int = 2) -> tuple[int, ...]:
    """A U-Net's strides, one per level after the first: ``strides`` checked against ``channels``, or
    by default ``first`` and then 2 at every level."""
    if strides is None:
        return (first,) + (2,) * (len(channels) - 2)
    if len(strides) != len(channels) - 1:
        raise UsageError(f"strides {strides} needs one value fewer than channels {channels}.")
    return tuple(strides)
