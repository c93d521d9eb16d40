"""Random patches: parameters drawn apart from their deterministic application.

``draw_patch`` decides *where* (and which flips) from a seeded generator; ``cut_patch`` applies that
decision to any number of aligned arrays, so a paired MR, CT and mask get identical crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_MAX_ANCHORS = 200_000


@dataclass(frozen=True)
class PatchDraw:
    """A patch's start corner (may lie outside the volume: padding fills) and the axes it flips."""

    start: tuple[int, ...]
    flips: tuple[int, ...]


def body_anchors(mask: np.ndarray) -> np.ndarray:
    """Flat indices of body voxels to centre patches on, thinned evenly to bound memory."""
    flat = np.flatnonzero(mask.ravel())
    step = max(1, flat.size // _MAX_ANCHORS)
    return flat[::step].astype(np.int64)


def draw_patch(rng: np.random.Generator, shape: Sequence[int], patch: Sequence[int], anchors: np.ndarray,
               body_fraction: float, flip_axes: Sequence[int] = ()) -> PatchDraw:
    """Centre the patch on a random body voxel with probability ``body_fraction``, else anywhere.

    ``patch`` may have fewer axes than ``shape`` (2D patches from a 3D volume); missing trailing
    axes get extent 1, i.e. a slice.
    """
    full = tuple(patch) + (1,) * (len(shape) - len(patch))
    if anchors.size and rng.random() < body_fraction:
        centre = np.unravel_index(int(anchors[rng.integers(anchors.size)]), tuple(shape))
    else:
        centre = tuple(int(rng.integers(s)) for s in shape)
    start = tuple(int(c) - p // 2 for c, p in zip(centre, full, strict=True))
    flips = tuple(int(a) for a in flip_axes if rng.random() < 0.5)
    return PatchDraw(start=start, flips=flips)


def cut_patch(volume: np.ndarray, draw: PatchDraw, patch: Sequence[int], pad_value: float) -> np.ndarray:
    """The patch of ``volume`` (C, *spatial) at ``draw``, padded with ``pad_value`` outside the volume.

    For a 2D patch from a 3D volume the singleton slice axis is dropped: (C, *patch).
    """
    spatial = volume.shape[1:]
    full = tuple(patch) + (1,) * (len(spatial) - len(patch))
    out = np.full((volume.shape[0], *full), pad_value, dtype=volume.dtype)
    src, dst = [], []
    for start, size, extent in zip(draw.start, full, spatial, strict=True):
        lo, hi = max(start, 0), min(start + size, extent)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - start, lo - start + max(hi - lo, 0)))
    out[(slice(None), *dst)] = volume[(slice(None), *src)]
    for axis in draw.flips:
        out = np.flip(out, axis=axis + 1)
    if len(patch) < len(spatial):
        out = out.reshape(volume.shape[0], *patch)
    return np.ascontiguousarray(out)


def cut_slab(volume: np.ndarray, draw: PatchDraw, patch: Sequence[int], pad_value: float,
             context_slices: int) -> np.ndarray:
    """:func:`cut_patch` for the MR of a 2D or 2.5D model: a 2D patch of a (C, X, Y, Z) ``volume`` at
    ``draw`` with its ``context_slices`` k neighbouring slices on either side as channels, (C·(2k+1),
    *patch), contrast-major like :func:`medsynth.inference.volume.slice_context`; k = 0 or a 3D patch is
    :func:`cut_patch` itself. Slices beyond the volume's ends repeat the end slice (the network never sees
    a slab half made of padding); in-plane, ``pad_value`` fills as in :func:`cut_patch`.
    """
    if context_slices == 0 or len(patch) == volume.ndim - 1:
        return cut_patch(volume, draw, patch, pad_value)
    depth, centre = volume.shape[-1], draw.start[-1]
    slabs = [cut_patch(volume, PatchDraw((*draw.start[:-1], min(max(centre + offset, 0), depth - 1)), draw.flips),
                       patch, pad_value)
             for offset in range(-context_slices, context_slices + 1)]
    return np.ascontiguousarray(np.stack(slabs, axis=1).reshape(-1, *patch))
