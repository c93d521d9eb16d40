"""The no-context baseline of SPEC §5: a lookup table from normalised MR intensity to the median HU.

It sees one voxel at a time, so it cannot tell bone from air (both dark on MR). It can still score a
respectable overall MAE; quality figures stand next to it so that what a translation network adds —
the anatomy around each voxel — shows in bone Dice and bone MAE.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth.data.bodymask import body_mask
from medsynth.data.intensity import MRIntensity
from medsynth.io.cases import list_images
from medsynth.io.image import read_image, write_ct


@dataclass
class IntensityLookup:
    """Median HU per bin of normalised MR intensity in [-1, 1], learnt inside the body."""

    edges: np.ndarray
    median_hu: np.ndarray

    @classmethod
    def fit(cls, pairs: Iterable[tuple[np.ndarray, np.ndarray]], bins: int = 64,
            outside_hu: float = -1000.0) -> IntensityLookup:
        """Learn from (MR, CT-in-HU) pairs on one grid; empty bins take the nearest filled bin's value."""
        edges = np.linspace(-1.0, 1.0, bins + 1)
        values: list[list[np.ndarray]] = [[] for _ in range(bins)]
        for mr, ct in pairs:
            inside = body_mask(mr)
            index = cls._bin(MRIntensity().normalise(mr, inside), edges)
            for b in range(bins):
                values[b].append(ct[inside & (index == b)])
        medians = np.array([np.median(np.concatenate(v)) if sum(x.size for x in v) else np.nan for v in values])
        filled = np.flatnonzero(~np.isnan(medians))
        medians = np.interp(np.arange(bins), filled, medians[filled]) if filled.size else np.full(bins, outside_hu)
        return cls(edges, medians.astype(np.float32))

    @staticmethod
    def _bin(normalised: np.ndarray, edges: np.ndarray) -> np.ndarray:
        return np.clip(np.digitize(normalised, edges) - 1, 0, len(edges) - 2)

    def predict(self, mr: np.ndarray, outside_hu: float = -1000.0) -> np.ndarray:
        """HU for an MR volume: the table inside its body mask, air outside."""
        inside = body_mask(mr)
        hu = self.median_hu[self._bin(MRIntensity().normalise(mr, inside), self.edges)]
        return np.where(inside, hu, outside_hu).astype(np.float32)


def lookup_baseline(train_data: Path, test_mr: Path, out_dir: Path) -> Path:
    """Fit the table on ``train_data/mr`` + ``train_data/ct`` and write CT for every test MR into ``out_dir``."""
    mr_files, ct_files = list_images(Path(train_data) / "mr"), list_images(Path(train_data) / "ct")
    pairs = ((read_image(mr_files[c]).array, read_image(ct_files[c]).array) for c in sorted(mr_files)
             if c in ct_files)
    table = IntensityLookup.fit(pairs)
    for case, path in sorted(list_images(Path(test_mr)).items()):
        volume = read_image(path)
        write_ct(Path(out_dir) / f"{case}.nii.gz", table.predict(volume.array), volume.meta)
    return Path(out_dir)
