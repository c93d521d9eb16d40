"""Random patches: parameters drawn apart from their deterministic application.

:class:`PatchSampler` is the one sampler of the volumetric families: the generator of training sample
``index`` is seeded by ``(seed, index)`` alone, so a sample is the same whichever process, step or resumed
run draws it. It picks a case, then decides *where* (and which flips): centred on the body
(:func:`draw_patch`) or the whole image (:func:`draw_whole`); ``cut_patch``/``cut_slab`` apply that decision
to any number of aligned arrays, so a paired MR, CT and mask get identical crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

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
    *patch), contrast-major like :func:`medsynth.inference.predictor.slice_context`; k = 0 or a 3D patch is
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


def draw_whole(rng: np.random.Generator, shape: Sequence[int], patch: Sequence[int], slices: np.ndarray,
               flip_axes: Sequence[int] = ()) -> PatchDraw:
    """The whole image in the patch: centred (padding fills) along each axis where the patch is at least as
    large as the image, a random crop along the others; a 2D patch of a 3D image is one of ``slices``."""
    start = [-((size - extent) // 2) if size >= extent else int(rng.integers(extent - size + 1))
             for extent, size in zip(shape, patch, strict=False)]
    if len(patch) < len(shape):
        start.append(int(rng.choice(slices)))
    flips = tuple(int(a) for a in flip_axes if rng.random() < 0.5)
    return PatchDraw(tuple(start), flips)


class BodyCase(Protocol):
    """A case patches are centred on: its body mask (X, Y, Z) and the body voxels (:func:`body_anchors`)."""

    mask: np.ndarray
    anchors: np.ndarray


class WholeCase(Protocol):
    """A case drawn whole: its (C, X, Y, Z) image and the axial slices a 2D patch may take."""

    image: np.ndarray
    slices: np.ndarray


Body = TypeVar("Body", bound=BodyCase)
Whole = TypeVar("Whole", bound=WholeCase)


@dataclass(frozen=True)
class PatchSampler:
    """Training patches of ``patch_size`` drawn by sample index (module docstring): ``body_fraction`` of
    the body-centred patches centre inside the body, and each of ``flip_axes`` mirrors with probability ½."""

    patch_size: tuple[int, ...]
    seed: int = 0
    body_fraction: float = 1.0
    flip_axes: tuple[int, ...] = ()

    def rng(self, index: int) -> np.random.Generator:
        """The generator of training sample ``index``: every random choice of that sample comes from it."""
        return np.random.default_rng([self.seed, index])

    def body(self, rng: np.random.Generator, cases: Sequence[Body]) -> tuple[Body, PatchDraw]:
        """A random case and a patch centred on its body (:func:`draw_patch`)."""
        case = cases[int(rng.integers(len(cases)))]
        return case, draw_patch(rng, case.mask.shape, self.patch_size, case.anchors, self.body_fraction,
                                self.flip_axes)

    def whole(self, rng: np.random.Generator, cases: Sequence[Whole]) -> tuple[Whole, PatchDraw]:
        """A random case and a patch holding its whole image (:func:`draw_whole`)."""
        case = cases[int(rng.integers(len(cases)))]
        return case, draw_whole(rng, case.image.shape[1:], self.patch_size, case.slices, self.flip_axes)

    def cut(self, volume: np.ndarray, draw: PatchDraw, pad_value: float = -1.0, context_slices: int = 0
            ) -> np.ndarray:
        """The patch of a (C, *spatial) ``volume`` at ``draw`` (:func:`cut_slab`; with ``context_slices``
        k the 2.5D slab, (C·(2k+1), *patch)); ``pad_value`` (default: the normalised background) fills
        outside the volume."""
        return cut_slab(volume, draw, self.patch_size, pad_value, context_slices)
