"""A paired MR/CT data set ready for training, as the paired family (pix2pix/vox2vox) and the baselines need it.

One pipeline, in the order the data flows: find the cases (any layout: role folders, SynthRAD case folders, a
datalist; :mod:`medsynth.data.layouts`) → split them (``RUN/split.json``; :mod:`medsynth.data.splits`) → read and
check each pair → move it onto one model grid (:func:`medsynth.data.geometry.model_grid`) → body masks (the
data's, else the CT's) → MR normalisation, its landmarks fitted on the training bodies → CT windowed to [-1, 1].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth.data.bodymask import body_mask
from medsynth.data.geometry import model_grid
from medsynth.data.intensity import CTIntensity, MRIntensity, MRScaling
from medsynth.data.layouts import Case, channel_count, channel_roles, discover_paired, read_cases
from medsynth.data.patches import body_anchors
from medsynth.data.profile import mr_features, training_profile
from medsynth.data.splits import SplitPlan, split_datalist
from medsynth.data.volumes import channels_on_grid, fit_mr_intensity, mask_on_grid, normalise_channels, on_grid
from medsynth.io.image import Volume, model_ndim


@dataclass
class PreparedCase:
    """A training or validation case on the model grid, normalised, with its body mask."""

    name: str  # the case id
    mr: np.ndarray  # (C, X, Y, Z) in [-1, 1], one channel per MR contrast
    ct: np.ndarray  # (1, X, Y, Z) in [-1, 1]
    mask: np.ndarray  # (X, Y, Z) bool
    anchors: np.ndarray  # body voxels patches are centred on (data/patches.body_anchors)
    raw_mr: np.ndarray  # (X, Y, Z) first MR contrast as read, on the model grid (the lookup baseline's input)


class PairedData:
    """Training and validation cases of ``data`` on one model grid, normalised (see the module's docstring).

    ``dims``: the model's spatial dimensionality (a 2D model also reads 2D images); ``spacing``/``min_spacing``:
    the model grid (:func:`~medsynth.data.geometry.model_grid` over the training CTs); ``val_cases``: the
    seeded hold-out without folds. Raises :class:`~medsynth.errors.InputError` listing every problem of the
    data set together (missing, duplicated or unreadable cases, MR/CT pairs on different grids).
    """

    def __init__(self, data: Path, split: SplitPlan, val_cases: int = -1, dims: int = 3,
                 scaling: MRScaling = MRScaling.HISTOGRAM, spacing: Sequence[float] | None = None,
                 min_spacing: float = 0.0) -> None:
        self.datalist, self.split = split_datalist(discover_paired(data, ("mr", "ct"), ("mask",)), split, val_cases)
        self.mr_channels = channel_count(self.datalist.training + self.datalist.validation, self.datalist.source)
        self.ndim = ndim = model_ndim(dims)
        training = read_cases(self.datalist.training, self.datalist.source, ("mr", "ct", "mask"), ndim)
        validation = read_cases(self.datalist.validation, self.datalist.source, ("mr", "ct", "mask"), ndim)
        self.grid = model_grid([case["ct"].meta for case in training], spacing, min_spacing)
        self.ct_intensity = CTIntensity()
        moved = [self._on_grid(case) for case in training]
        self.mr_intensity = fit_mr_intensity(MRIntensity(scaling=scaling),
                                             (channel for _, mr, _, _ in moved for channel in mr))
        self.training = [self._prepare(*case) for case in moved]
        self.validation = [self._prepare(*self._on_grid(case)) for case in validation]
        # What the training MR looked like to the network, for translate's input check (data/profile.py)
        self.input_profile = training_profile(mr_features(case.mr[0], self.grid.spacing) for case in self.training)

    def _on_grid(self, case: Case[Volume]) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        """Case id, MR (C, X, Y, Z) and CT (X, Y, Z) on the model grid, and the reference body mask (the data's,
        else the CT's)."""
        ct = on_grid(self.grid, case["ct"])
        mask = mask_on_grid(self.grid, case["mask"].array, case["mask"].meta) if "mask" in case else body_mask(ct)
        return case.id, channels_on_grid(self.grid, case, channel_roles(case)), ct, mask

    def _prepare(self, name: str, mr: np.ndarray, ct: np.ndarray, mask: np.ndarray) -> PreparedCase:
        return PreparedCase(name, normalise_channels(mr, self.mr_intensity), self.ct_intensity.normalise(ct[None]),
                            mask, body_anchors(mask), mr[0])

    def validation_references(self) -> Iterator[tuple[str, list[Volume], Volume, np.ndarray | None]]:
        """The validation cases as read, on their own grids: (id, MR volumes in channel order, CT, mask or None),
        what a translation of them is scored against (services/calibrate.py)."""
        for case in read_cases(self.datalist.validation, self.datalist.source, ("mr", "ct", "mask"), self.ndim):
            mask = case["mask"].array > 0 if "mask" in case else None
            yield case.id, [case[role] for role in channel_roles(case)], case["ct"], mask

    def files(self) -> list[Path]:
        """Every training file (for the model's data fingerprint)."""
        return self.datalist.files()
