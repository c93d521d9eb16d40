"""The no-context baseline of SPEC §5: a lookup table from normalised MR intensity to the median HU.

It sees one voxel at a time, so it cannot tell bone from air (both dark on MR). It can still score a
respectable overall MAE; quality figures stand next to it so that what a translation network adds —
the anatomy around each voxel — shows in bone Dice and bone MAE.

To be a fair opponent it is fitted and scored exactly where the model is: on the voxels inside the
reference body mask (the data's ``mask/`` files, else the CT's body mask), with the MR scaled by its
1st/99th percentiles inside that mask. A mask derived from the MR would drop dark structures (skull,
air cavities) and hand the table air there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth.data.bodymask import body_mask
from medsynth.io.cases import list_images
from medsynth.io.image import read_image, write_ct

AIR_HU = -1000.0


@dataclass
class IntensityLookup:
    """Median HU per bin of MR intensity scaled by its 1st/99th percentiles in the body to [0, 1]."""

    edges: np.ndarray
    median_hu: np.ndarray
    percentiles: tuple[float, float] = (1.0, 99.0)

    @classmethod
    def fit(cls, cases: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], bins: int = 200,
            percentiles: tuple[float, float] = (1.0, 99.0)) -> IntensityLookup:
        """Learn from (MR, CT in HU, body mask) triples, each on one grid, using the voxels in the mask.

        Empty bins take the value interpolated from their filled neighbours.
        """
        edges = np.linspace(0.0, 1.0, bins + 1)
        index_parts, hu_parts = [], []
        for mr, ct, mask in cases:
            mask = np.asarray(mask, bool)
            index_parts.append(_bin(scale_mr(mr, mask, percentiles)[mask], edges))
            hu_parts.append(np.asarray(ct, np.float32)[mask])
        index, hu = np.concatenate(index_parts), np.concatenate(hu_parts)
        medians = np.full(bins, np.nan)
        order = np.argsort(index, kind="stable")
        groups = np.split(hu[order], np.flatnonzero(np.diff(index[order])) + 1)
        for group, b in zip(groups, np.unique(index[order]), strict=True):
            medians[b] = np.median(group)
        filled = np.flatnonzero(~np.isnan(medians))
        medians = np.interp(np.arange(bins), filled, medians[filled]) if filled.size else np.full(bins, AIR_HU)
        return cls(edges, medians.astype(np.float32), tuple(percentiles))

    def predict(self, mr: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """HU (float32, the MR's shape): the table inside ``mask`` (default: the MR's own body mask), air outside.

        The MR is scaled by its percentiles inside the same mask, as in :meth:`fit`.
        """
        mask = body_mask(mr, modality="mr") if mask is None else np.asarray(mask, bool)
        hu = self.median_hu[_bin(scale_mr(mr, mask, self.percentiles), self.edges)]
        return np.where(mask, hu, AIR_HU).astype(np.float32)


def scale_mr(mr: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """MR mapped linearly so that its ``percentiles`` inside ``mask`` go to 0 and 1 (not clipped)."""
    values = np.asarray(mr, np.float64)[mask] if mask.any() else np.asarray(mr, np.float64).ravel()
    low, high = np.percentile(values, percentiles)
    return ((np.asarray(mr, np.float64) - low) / max(high - low, 1e-12)).astype(np.float32)


def _bin(scaled: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.clip(np.digitize(scaled, edges) - 1, 0, len(edges) - 2)


def reference_mask(folder: Path, case: str, ct: np.ndarray) -> np.ndarray:
    """The case's body mask from ``folder/mask/`` when the data has one, else the CT's body mask."""
    masks = list_images(Path(folder) / "mask") if (Path(folder) / "mask").is_dir() else {}
    return read_image(masks[case]).array > 0.5 if case in masks else body_mask(ct)


def lookup_baseline(train_data: Path, test_mr: Path, out_dir: Path, test_mask: Path | None = None) -> Path:
    """Fit the table on ``train_data`` (``mr/``, ``ct/``, optional ``mask/``) and write CT for every test MR.

    ``test_mask`` is the folder of masks the outputs will be scored in (by case id); without it each
    test MR's own body mask is used. Outside the mask the CT is air.
    """
    mr_files, ct_files = list_images(Path(train_data) / "mr"), list_images(Path(train_data) / "ct")

    def training() -> Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for case in sorted(set(mr_files) & set(ct_files)):
            ct = read_image(ct_files[case]).array
            yield read_image(mr_files[case]).array, ct, reference_mask(Path(train_data), case, ct)

    table = IntensityLookup.fit(training())
    masks = list_images(Path(test_mask)) if test_mask is not None else {}
    for case, path in sorted(list_images(Path(test_mr)).items()):
        volume = read_image(path)
        mask = read_image(masks[case]).array > 0.5 if case in masks else None
        write_ct(Path(out_dir) / f"{case}.nii.gz", table.predict(volume.array, mask), volume.meta)
    return Path(out_dir)
