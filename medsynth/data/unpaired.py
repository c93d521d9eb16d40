"""A two-domain (unpaired MR set + CT set) data set ready for training, as CycleGAN needs it.

One pipeline, in the order the data flows: find each domain's cases and label maps (role folders, SynthRAD case
folders, a datalist; :func:`medsynth.data.layouts.discover_domains`) → read them → count the labels of the
shape-consistency segmenters → one model grid over both domains (:func:`medsynth.data.geometry.model_grid`) →
split (``RUN/split.json``: labelled cases of each domain may be held out), or validate on a paired ``val_data``
folder → each image on the grid → MR normalisation, its landmarks fitted on the training MR bodies → each image
normalised (MR on its body, CT windowed), with its body mask and label map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth.data.bodymask import body_mask
from medsynth.data.geometry import model_grid
from medsynth.data.intensity import CTIntensity, MRIntensity, MRScaling
from medsynth.data.layouts import (
    Case,
    Datalist,
    channel_count,
    channel_roles,
    count_labels,
    discover_domains,
    discover_paired,
    read_cases,
)
from medsynth.data.patches import body_anchors
from medsynth.data.splits import Split, SplitPlan
from medsynth.data.volumes import (
    channels_on_grid,
    fit_mr_intensity,
    labels_on_grid,
    mask_on_grid,
    normalise_channels,
)
from medsynth.errors import UsageError
from medsynth.io.image import Volume, model_ndim

DOMAINS = ("mr", "ct")


@dataclass
class DomainCase:
    """One image on the model grid, normalised to [-1, 1], with its body mask and optional labels."""

    image: np.ndarray  # (C, X, Y, Z) float32: C MR contrasts, or 1 for CT
    mask: np.ndarray  # (X, Y, Z) bool
    labels: np.ndarray | None  # (1, X, Y, Z) uint8
    anchors: np.ndarray  # body voxels patches are centred on (data/patches.body_anchors)


class UnpairedData:
    """Training and validation images of the MR and CT domains of ``data`` on one model grid, normalised (see
    the module's docstring); ``training[domain]`` and ``validation[domain]`` are lists of :class:`DomainCase`.

    ``dims``: the model's spatial dimensionality (a 2D model also reads 2D images); ``spacing``: the model grid,
    by default the median over every image of both domains. ``require_labels``: both domains must have label
    maps (else :class:`~medsynth.errors.UsageError`); without it a domain lacking them leaves ``num_labels`` 0.
    ``val_data``: a paired folder (``mr/``, ``ct/``, optional ``mask/``, ``labels/``) whose i-th MR and CT
    are one subject, validated on instead of held-out cases; ``val_cases``: labelled cases held out per
    domain without it (-1: 10 %, at least 1 from 4). Raises :class:`~medsynth.errors.InputError` listing
    every problem of the data together (unreadable files, label maps without an image or not integers).
    """

    def __init__(self, data: Path, split: SplitPlan, dims: int = 3, spacing: Sequence[float] | None = None,
                 scaling: MRScaling = MRScaling.PERCENTILE, val_data: Path | str | None = None, val_cases: int = -1,
                 require_labels: bool = False) -> None:
        data = Path(data)
        cases = discover_domains(data, DOMAINS)
        self.mr_channels = channel_count(cases["mr"], data)
        self._files = [path for domain in cases.values() for case in domain for path in case.values()]
        self.ndim = model_ndim(dims)
        volumes = {d: read_cases(cases[d], data, (d, f"{d}_labels"), self.ndim) for d in DOMAINS}
        self.num_labels = _label_count(volumes, require_labels)
        self.grid = model_grid([case[d].meta for d in DOMAINS for case in volumes[d]], spacing)  # MR: 1st contrast
        self.ct_intensity = CTIntensity()
        paired = _paired_folder(val_data, split) if val_data else None
        self.split = self._split(cases, split, paired, val_cases)
        held = {d: [paired is None and f"{d}/{case.id}" in self.split.val for case in cases[d]] for d in DOMAINS}
        images = {d: [self._image(case, d) for case in volumes[d]] for d in DOMAINS}
        # HISTOGRAM scaling: landmarks fitted on the training MRs' bodies, as for the paired families
        self.mr_intensity = fit_mr_intensity(MRIntensity(scaling=scaling), (
            channel for image, out in zip(images["mr"], held["mr"], strict=True) if not out for channel in image))
        prepared = {d: [self._prepare(image, d, case.get(f"{d}_labels"))
                        for image, case in zip(images.pop(d), volumes[d], strict=True)] for d in DOMAINS}
        if paired is not None:
            self.training, self.validation = prepared, self._paired_validation(paired, val_data)
        else:
            self.training = {d: [c for c, out in zip(prepared[d], held[d], strict=True) if not out] for d in DOMAINS}
            self.validation = {d: [c for c, out in zip(prepared[d], held[d], strict=True) if out] for d in DOMAINS}

    def _image(self, case: Mapping[str, Volume], domain: str) -> np.ndarray:
        """The image of ``domain`` in ``case`` (all its MR contrasts) on the model grid, (C, X, Y, Z)."""
        return channels_on_grid(self.grid, case, channel_roles(case, domain) if domain == "mr" else [domain])

    def _prepare(self, image: np.ndarray, domain: str, labels: Volume | None = None,
                 mask: Volume | None = None) -> DomainCase:
        """An image of ``domain`` on the model grid (:meth:`_image`), normalised; its body (for patch anchors)
        is ``mask``'s, else the first contrast's."""
        normalised = normalise_channels(image, self.mr_intensity if domain == "mr" else self.ct_intensity)
        body = body_mask(image[0], modality=domain) if mask is None else mask_on_grid(self.grid, mask.array, mask.meta)
        label_grid = None if labels is None else labels_on_grid(self.grid, labels)
        return DomainCase(normalised, body, label_grid, body_anchors(body))

    def _split(self, cases: dict[str, list[Case]], plan: SplitPlan, paired: Datalist | None, val_cases: int
               ) -> Split:
        """Labelled cases of each domain may be held out (``mr/<id>``, ``ct/<id>`` in the split file);
        with ``val_data`` the validation cases are that folder's, named ``val_data/<id>``."""
        labelled = {d: [c.id for c in cases[d] if f"{d}_labels" in c] if self.num_labels else [] for d in DOMAINS}
        others = [f"{d}/{c.id}" for d in DOMAINS for c in cases[d] if c.id not in labelled[d]]
        if paired is not None:
            named = [f"val_data/{c.id}" for c in paired.training]
            return plan.split_groups({}, 0, named, others + [f"{d}/{c}" for d in DOMAINS for c in labelled[d]])
        return plan.split_groups(labelled, val_cases, always_train=others,
                                 note="no labelled cases held out: no validation, no best model")

    def _paired_validation(self, paired: Datalist, val_data: Path | str) -> dict[str, list[DomainCase]]:
        """The i-th MR and CT of the paired ``val_data`` (one subject), its ``labels`` for both, its ``mask``
        (if any) as the body."""
        found = channel_count(paired.training, paired.source)
        if found != self.mr_channels:
            raise UsageError(f"{val_data}: val_data has {found} MR channels per case, the training data "
                             f"{self.mr_channels}; give the same contrasts.")
        cases = read_cases(paired.training, paired.source, (*DOMAINS, "mask", "labels"), self.ndim)
        return {d: [self._prepare(self._image(case, d), d, case.get("labels"), case.get("mask")) for case in cases]
                for d in DOMAINS}

    def files(self) -> list[Path]:
        """Every training file of both domains, held-out cases included (for the model's data fingerprint)."""
        return self._files


def _paired_folder(val_data: Path | str, plan: SplitPlan) -> Datalist:
    """The cases of the paired ``val_data`` folder, which fixes the validation cases (so no folds)."""
    if plan.folds:
        raise UsageError("--folds splits the training data; with val_data the validation cases are fixed.")
    return discover_paired(Path(val_data), DOMAINS, ("mask", "labels"))


def _label_count(volumes: Mapping[str, Sequence[Case[Volume]]], required: bool) -> int:
    """K of the label maps, or 0 when a domain has none (the segmenters cannot be trained)."""
    maps = {d: [case[f"{d}_labels"] for case in volumes[d] if f"{d}_labels" in case] for d in DOMAINS}
    if not all(maps.values()) and required:
        raise UsageError("shape consistency needs label maps of both domains (mr_labels/ and ct_labels/); "
                         "add them, or set shape_weight: 0 and seg_pretrain_steps: 0.")
    return count_labels(maps["mr"] + maps["ct"]) if all(maps.values()) else 0
