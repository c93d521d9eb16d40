"""The no-context lookup baseline: exact on a one-to-one intensity map, blind to bone versus air."""

from __future__ import annotations

import numpy as np

from medsynth.baselines import IntensityLookup
from medsynth.metrics.tissue import tissue_mae
from medsynth.phantom.anatomy import LABEL_NAMES, make_head


def _head(seed: int):
    return make_head(seed, (32, 38, 32), 5.0)


def test_lookup_recovers_a_monotone_intensity_map() -> None:
    rng = np.random.default_rng(0)
    mr = np.zeros((24, 24, 24), np.float32)
    mr[4:20, 4:20, 4:20] = rng.uniform(100, 900, (16, 16, 16))
    ct = np.where(mr > 0, mr - 500.0, -1000.0).astype(np.float32)
    table = IntensityLookup.fit([(mr, ct)], bins=200)
    predicted = table.predict(mr)
    inner = np.zeros_like(mr, bool)
    inner[6:18, 6:18, 6:18] = True
    assert np.median(np.abs(predicted - ct)[inner]) < 15.0


def test_lookup_is_right_on_brain_and_wrong_on_bone() -> None:
    """Brain contrast is unique on MR; bone is dark like air, so one value serves both and bone MAE is large."""
    table = IntensityLookup.fit([(h.mr, h.ct) for h in map(_head, (1, 2, 3))])
    head = _head(4)
    predicted = table.predict(head.mr)
    brain = head.labels == LABEL_NAMES.index("brain")
    errors = tissue_mae(predicted, head.ct, head.mask.astype(bool))
    assert abs(np.median(predicted[brain]) - np.median(head.ct[brain])) < 30
    assert errors["mae_bone"] > 300
