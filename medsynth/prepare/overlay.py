"""The checkerboard PNG ``prepare`` writes per case: MR and CT before and after registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsynth.io.image import ImageMeta

_TILE_MM = 16.0  # checkerboard squares: a few per head, small enough to show a step at every edge


def checkerboard(a: np.ndarray, b: np.ndarray, meta: ImageMeta, tile_mm: float = _TILE_MM) -> np.ndarray:
    """3D checkerboard of two uint8 volumes on one grid: ``a`` in the even squares, ``b`` in the odd."""
    index = np.indices(a.shape)
    squares = sum((index[axis] * meta.spacing[axis] // tile_mm).astype(np.int64) for axis in range(3))
    return np.where(squares % 2 == 0, a, b)


def save_overlay(path: Path, mr: np.ndarray, ct_before: np.ndarray, ct_after: np.ndarray, meta: ImageMeta) -> Path:
    """PNG: MR/CT checkerboards before and after registration (axial, coronal, sagittal mid-slices).

    At a good alignment, edges run straight across the squares; a misregistered CT shows steps.
    """
    from medsynth.viz import auto_window, mid_slices, save_grid, window

    grey_mr = auto_window(mr)
    rows, titles = [], []
    for label, ct in (("before", ct_before), ("after", ct_after)):
        board = checkerboard(grey_mr, window(ct, -400, 1200), meta)
        rows.append(list(mid_slices(board, meta.affine)))
        titles += [f"{label}: axial", "coronal", "sagittal"]
    return save_grid(path, rows, titles, scale=2 if max(mr.shape) < 160 else 1)
