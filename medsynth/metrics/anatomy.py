"""Simple anatomical statistics of axial CT slices: is there a body outline, two lungs and a spine?

A histogram distance cannot tell a chest from a blob with the right mix of HU values. These
statistics look at shape, with thresholds a reader of chest CT would use, on slices (X, Y) in HU
in RAS order (axis 0 left-right, axis 1 posterior→anterior, as ``medsynth generate`` writes them):

- **body**: the largest region above -500 HU, holes filled (``slice_body_mask``). ``body_area`` is
  its share of the slice; ``body_solidity`` its area over the area of its convex hull (1 for a
  convex outline, lower for ragged or fragmented blobs). ``body_outline``: the body covers at least
  5 % of the slice, has solidity ≥ 0.9, holds at least 90 % of all pixels above -500 HU (one body,
  not scattered fragments) and touches at most 10 % of the slice's border (not a slice-filling blob).
- **lungs**: ``lung_area`` is the share of the body below -500 HU (aerated lung is about -850 HU).
  Lung regions: the connected parts of that mask after one erosion (which opens the thin junction
  where the lungs touch), each at least 2 % of the body (the trachea and bowel gas are smaller);
  ``lung_components`` is their number. ``two_lungs``: at least two lung regions, the two largest
  with their centres on opposite sides of the body's centre left-right.
- **bone**: pixels inside the body above 200 HU (the SPEC's bone threshold). ``bone_area`` is their
  share of the body. ``spine``: a bone region (its holes filled) of 0.3–15 % of the body, centred
  within 15 % of the body's width of its left-right centre and in its posterior half: a vertebra.
- ``anatomy_complete``: ``body_outline`` and ``two_lungs`` and ``spine``.

Sets of slices are compared statistic by statistic: mean and standard deviation of each, and the
1-Wasserstein distance between the generated and real values (for the yes/no statistics this is
the difference in prevalence).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.stats import wasserstein_distance
from skimage.measure import regionprops

from medsynth.data.slices import BODY_THRESHOLD_HU, slice_body_mask

LUNG_HU = -500.0  # below: aerated lung; above: soft tissue (a common lung-segmentation threshold)
BONE_HU = 200.0  # SPEC §5: bone is > 200 HU
MIN_BODY_AREA = 0.05  # of the slice
MIN_BODY_SOLIDITY = 0.9
MIN_BODY_SHARE = 0.9  # of everything above the body threshold
MIN_LUNG = 0.02  # of the body, per lung region (after erosion)
LUNG_EROSION = 1  # binary erosions (3×3 cross) before counting lung regions
MIN_SPINE, MAX_SPINE = 0.003, 0.15  # of the body: a vertebra (with the rib heads it may touch), not a slab
MAX_EDGE = 0.1  # share of the slice border the body may touch (arms reach it; a slice-filling blob covers it)
SPINE_MIDLINE = 0.15  # of the body's width, either side of its centre


@dataclass(frozen=True)
class SliceAnatomy:
    """The statistics of one slice (areas are fractions: of the slice for the body, else of the body)."""

    body_area: float
    body_solidity: float
    lung_area: float
    lung_components: int
    bone_area: float
    body_outline: bool
    two_lungs: bool
    spine: bool

    @property
    def anatomy_complete(self) -> bool:
        return self.body_outline and self.two_lungs and self.spine

    def row(self) -> dict[str, float]:
        """Every statistic of ``STATISTICS`` as a number (yes/no as 1/0)."""
        return {**{k: float(v) for k, v in asdict(self).items()}, "anatomy_complete": float(self.anatomy_complete)}


#: every statistic in reports, in this order (the yes/no ones count as 0/1)
STATISTICS = ("body_area", "body_solidity", "body_outline", "lung_area", "lung_components", "two_lungs",
              "bone_area", "spine", "anatomy_complete")


def _regions(mask: np.ndarray, fill: bool = False) -> list:
    """Connected regions of a mask (regionprops), with ``fill`` each one's own holes filled.

    Filling region by region, not the whole mask: a vertebra's cortex encloses marrow below the bone
    threshold, but ribs, spine and sternum together may also enclose the whole chest.
    """
    labels, _ = ndi.label(mask)
    if fill:
        for index, box in enumerate(ndi.find_objects(labels), start=1):
            part = labels[box]
            part[ndi.binary_fill_holes(part == index) & (part == 0)] = index
    return regionprops(labels)


def slice_anatomy(hu: np.ndarray, threshold: float = BODY_THRESHOLD_HU) -> SliceAnatomy:
    """The anatomical statistics of one axial slice (X, Y) in HU, RAS in-plane order.

    Raises ValueError for an array that is not 2D. A slice without body scores zero everywhere.
    """
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 2:
        raise ValueError(f"a slice is 2D (X, Y), not shape {hu.shape}")
    body = slice_body_mask(hu, threshold)
    body_pixels = int(body.sum())
    if body_pixels == 0:
        return SliceAnatomy(0.0, 0.0, 0.0, 0, 0.0, False, False, False)
    (outline,) = regionprops(body.astype(np.uint8))
    body_area = body_pixels / body.size
    share = body_pixels / int((hu > threshold).sum())
    edge = float(np.concatenate([body[0], body[-1], body[:, 0], body[:, -1]]).mean())
    body_outline = (body_area >= MIN_BODY_AREA and outline.solidity >= MIN_BODY_SOLIDITY
                    and share >= MIN_BODY_SHARE and edge <= MAX_EDGE)
    aerated = body & (hu < LUNG_HU)
    lungs = _lung_regions(aerated, body_pixels)
    centre_x = outline.centroid[0]
    two_lungs = len(lungs) >= 2 and (lungs[0].centroid[0] - centre_x) * (lungs[1].centroid[0] - centre_x) < 0
    bone = body & (hu > BONE_HU)
    return SliceAnatomy(body_area=body_area, body_solidity=float(outline.solidity),
                        lung_area=float(aerated.sum()) / body_pixels, lung_components=len(lungs),
                        bone_area=float(bone.sum()) / body_pixels, body_outline=bool(body_outline),
                        two_lungs=bool(two_lungs), spine=_has_spine(bone, body, centre_x))


def _lung_regions(aerated: np.ndarray, body_pixels: int) -> list:
    """Aerated regions large enough to be a lung, largest first, after opening the lungs' junctions.

    At 128² the two lungs touch across a junction line a pixel or two wide; one erosion (3×3 cross)
    separates them, and shrinks the airways below the size threshold.
    """
    regions = _regions(ndi.binary_erosion(aerated, iterations=LUNG_EROSION))
    return sorted((r for r in regions if r.area >= MIN_LUNG * body_pixels), key=lambda r: r.area, reverse=True)


def _has_spine(bone: np.ndarray, body: np.ndarray, centre_x: float) -> bool:
    """Whether a vertebra-sized bone region sits on the body's midline, in its posterior half."""
    xs, ys = np.nonzero(body.any(axis=1))[0], np.nonzero(body.any(axis=0))[0]
    width, posterior_half = xs[-1] - xs[0] + 1, (ys[0] + ys[-1] + 1) / 2  # posterior: low y in RAS
    body_pixels = int(body.sum())
    return any(MIN_SPINE * body_pixels <= r.area <= MAX_SPINE * body_pixels
               and abs(r.centroid[0] - centre_x) <= SPINE_MIDLINE * width and r.centroid[1] < posterior_half
               for r in _regions(bone, fill=True))


def anatomy_values(slices_hu: Iterable[np.ndarray], threshold: float = BODY_THRESHOLD_HU) -> dict[str, np.ndarray]:
    """Each statistic (``STATISTICS``) over a set of slices, as float arrays (yes/no as 0/1)."""
    rows = [slice_anatomy(hu, threshold).row() for hu in slices_hu]
    return {name: np.array([row[name] for row in rows], dtype=np.float64) for name in STATISTICS}


def compare_anatomy(generated: dict[str, np.ndarray], real: dict[str, np.ndarray],
                    names: Sequence[str] = STATISTICS) -> dict[str, dict[str, float]]:
    """Per statistic: generated and real mean and standard deviation, and W₁ between the two samples."""
    report = {}
    for name in names:
        g, r = generated[name], real[name]
        report[name] = {"generated": _mean(g), "generated_sd": _sd(g), "real": _mean(r), "real_sd": _sd(r),
                        "w1": float(wasserstein_distance(g, r)) if len(g) and len(r) else float("nan")}
    return report


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _sd(values: np.ndarray) -> float:
    return float(np.std(values)) if len(values) else float("nan")
