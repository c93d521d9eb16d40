"""PNG previews with Pillow and numpy: windowing, radiological mid-slices, overlays and grids.

Slices follow the radiological display convention: axial and coronal views show the patient's
left on the image right, axial views have anterior up, coronal and sagittal views have superior
up, and sagittal views face left (anterior on the image left).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medsynth.io.outputs import atomic_path

# Label colours (RGB) for label 0, 1, 2, ...; labels beyond the table reuse it cyclically from 1.
_PALETTE = np.array(
    [
        (0, 0, 0),
        (230, 160, 120),  # soft tissue
        (245, 245, 220),  # bone
        (220, 90, 90),  # brain
        (80, 150, 255),  # CSF
        (90, 220, 120),  # air cavity
        (200, 120, 230),
        (250, 210, 60),
        (60, 200, 200),
    ],
    dtype=np.uint8,
)
_TITLE_HEIGHT = 16
_GAP = 4


class Slices(NamedTuple):
    """The three orthogonal planes through one point, ready to display."""

    axial: np.ndarray
    coronal: np.ndarray
    sagittal: np.ndarray


def window(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``[low, high]`` linearly to 0..255 (uint8), clipping outside values."""
    if high <= low:
        raise ValueError(f"window needs high > low, got [{low}, {high}]")
    scaled = (np.asarray(array, dtype=np.float32) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def auto_window(array: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Window ``array`` between two of its percentiles; a constant array becomes black."""
    low, high = np.percentile(np.asarray(array, dtype=np.float32), percentiles)
    return window(array, low, high) if high > low else np.zeros(np.shape(array), np.uint8)


def mid_slices(
    volume: np.ndarray, affine: np.ndarray | None = None, centre: tuple[int, int, int] | None = None
) -> Slices:
    """Axial, coronal and sagittal slices through ``centre`` (default: the middle voxel).

    ``volume`` is indexed (x, y, z) in RAS order unless ``affine`` is given, in which case it is
    first reoriented to RAS and each slice is stretched to square pixels. Extra trailing axes
    (such as RGB) are carried along.
    """
    volume = np.asarray(volume)
    if volume.ndim == 2:
        volume = volume[..., None]  # a 2D image is one slice: its coronal and sagittal views are lines
    aspect = (1.0, 1.0, 1.0)
    if affine is not None:
        volume, aspect = _to_ras(volume, np.asarray(affine, dtype=float))
    i, j, k = (s // 2 for s in volume.shape[:3]) if centre is None else centre
    # Reversing x puts the patient's left on the image right; reversing y or z puts anterior or
    # superior first, i.e. at the top (axial, coronal) or on the left (sagittal).
    axial = np.swapaxes(volume[::-1, ::-1, k], 0, 1)
    coronal = np.swapaxes(volume[::-1, j, ::-1], 0, 1)
    sagittal = np.swapaxes(volume[i, ::-1, ::-1], 0, 1)
    return Slices(
        axial=_square_pixels(axial, aspect[1], aspect[0]),
        coronal=_square_pixels(coronal, aspect[2], aspect[0]),
        sagittal=_square_pixels(sagittal, aspect[2], aspect[1]),
    )


def _to_ras(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    import nibabel.orientations as orientations

    ornt = orientations.io_orientation(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    ras_spacing = [0.0, 0.0, 0.0]
    for source_axis, (target_axis, _) in enumerate(ornt):
        ras_spacing[int(target_axis)] = float(spacing[source_axis])
    return orientations.apply_orientation(volume, ornt), tuple(ras_spacing)


def _square_pixels(image: np.ndarray, row_mm: float, col_mm: float) -> np.ndarray:
    """Nearest-neighbour stretch so that rows and columns have the same size in mm."""
    if np.isclose(row_mm, col_mm):
        return image
    pixel = min(row_mm, col_mm)
    rows = np.minimum((np.arange(round(image.shape[0] * row_mm / pixel)) * pixel / row_mm).astype(int),
                      image.shape[0] - 1)
    cols = np.minimum((np.arange(round(image.shape[1] * col_mm / pixel)) * pixel / col_mm).astype(int),
                      image.shape[1] - 1)
    return image[rows][:, cols]


def label_colors(labels: np.ndarray) -> np.ndarray:
    """RGB (uint8, trailing axis 3) colours of an integer label map; label 0 is black."""
    labels = np.asarray(labels).astype(np.int64)
    if labels.min(initial=0) < 0:
        raise ValueError("label maps hold non-negative integers")
    index = np.where(labels < len(_PALETTE), labels, 1 + (labels - 1) % (len(_PALETTE) - 1))
    return _PALETTE[index]


def overlay_signed_map(
    image: np.ndarray, signed_map: np.ndarray, limit: float | None = None, opacity: float = 0.8
) -> np.ndarray:
    """Grey ``image`` with ``signed_map`` on top: blue where negative, red where positive.

    The colour's opacity grows with ``|map| / limit`` (default limit: the 99th percentile of
    ``|map|``), so values near zero leave the image visible unchanged.
    """
    grey = image if image.dtype == np.uint8 else auto_window(image)
    if grey.shape != signed_map.shape:
        raise ValueError(f"image {grey.shape} and map {signed_map.shape} differ in shape")
    magnitude = np.abs(np.asarray(signed_map, dtype=np.float32))
    if limit is None:
        limit = float(np.percentile(magnitude, 99)) if magnitude.any() else 1.0
    alpha = opacity * np.clip(magnitude / max(limit, 1e-12), 0.0, 1.0)[..., None]
    colour = np.where((signed_map < 0)[..., None], np.float32([40, 110, 255]), np.float32([255, 50, 30]))
    rgb = np.repeat(grey[..., None].astype(np.float32), 3, axis=-1)
    return np.rint(rgb + alpha * (colour - rgb)).astype(np.uint8)


def save_grid(
    path: str | Path, rows: list[list[np.ndarray]], titles: list[str] | None = None, scale: int = 1
) -> Path:
    """Tile panels row by row into one PNG, written atomically (temporary name, then rename).

    Panels are 2D grayscale or (H, W, 3) RGB; uint8 panels are used as they are, any other dtype
    is windowed between its 0.5 and 99.5 percentiles. ``titles`` holds one string per panel in
    row-major order (empty strings for none) and is drawn above each panel. ``scale`` enlarges
    every panel by pixel repetition, which keeps small volumes legible without inventing detail.
    """
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    panels = [[_as_rgb(panel).repeat(scale, axis=0).repeat(scale, axis=1) for panel in row] for row in rows]
    flat = [panel for row in panels for panel in row]
    if not flat:
        raise ValueError("save_grid needs at least one panel")
    if titles is not None and len(titles) != len(flat):
        raise ValueError(f"{len(titles)} titles given for {len(flat)} panels")
    cell_h = max(p.shape[0] for p in flat) + (_TITLE_HEIGHT if titles else 0)
    cell_w = max(p.shape[1] for p in flat)
    n_cols = max(len(row) for row in panels)
    canvas = Image.new("RGB", (n_cols * (cell_w + _GAP) + _GAP, len(panels) * (cell_h + _GAP) + _GAP))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default(size=12)
    names = iter(titles or [])
    for r, row in enumerate(panels):
        for c, panel in enumerate(row):
            left, top = _GAP + c * (cell_w + _GAP), _GAP + r * (cell_h + _GAP)
            if titles:
                draw.text((left + 2, top + 1), next(names), fill=(255, 255, 255), font=font)
                top += _TITLE_HEIGHT
            canvas.paste(Image.fromarray(panel, "RGB"), (left + (cell_w - panel.shape[1]) // 2, top))
    return _atomic_png(canvas, Path(path))


def _as_rgb(panel: np.ndarray) -> np.ndarray:
    panel = np.asarray(panel)
    if panel.ndim == 3 and panel.shape[-1] == 3:
        return panel if panel.dtype == np.uint8 else auto_window(panel)
    if panel.ndim != 2:
        raise ValueError(f"a panel is 2D or (H, W, 3), got shape {panel.shape}")
    grey = panel if panel.dtype == np.uint8 else auto_window(panel)
    return np.repeat(grey[..., None], 3, axis=-1)


def _atomic_png(image: Image.Image, path: Path) -> Path:
    with atomic_path(path) as partial:
        image.save(partial, format="PNG")
    return path


def overlay_labels(grey: np.ndarray, labels: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """RGB panel: label colours blended over a uint8 grey image wherever the label is not background."""
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    alpha = opacity * (np.asarray(labels) > 0)[..., None]
    return np.rint(rgb + alpha * (label_colors(labels).astype(np.float32) - rgb)).astype(np.uint8)
