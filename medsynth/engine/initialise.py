"""Fine-tuning: a new run's networks start from a trained model's weights (nnU-Net's ``-pretrained_weights``,
MONAI bundles' ``initialize``), checked to fit before anything is trained.

The model file holds the networks inference needs (pix2pix: G); the others (a discriminator) start fresh. The
networks must be built alike (same builder and arguments: channels, dims, MR contrasts × 2.5D slices) and the
model's intensity rules must match the run's (MR scaling, CT window): weights learnt on other inputs would not
fit. Histogram landmarks and percentiles are the new data's own, as every normalisation is per training set.
"""

from __future__ import annotations

from pathlib import Path

from medsynth.engine.family import Family
from medsynth.errors import UsageError
from medsynth.modelfile import load_model, model_fingerprint

_MUST_MATCH = ("spatial_dims", "context_slices", "mr_channels")


def initialise_from(family: Family, model_path: Path) -> str:
    """Load the weights of ``model_path``'s networks into ``family``'s networks of the same names; returns
    the model's fingerprint (recorded in the new model file). Raises :class:`UsageError`, one line, when the
    model is of another family or its networks or normalisation do not fit."""
    model = load_model(model_path, family.name)
    own = family.export().document()
    lines = [f"{key}: {model.metadata.get(key)!r} vs {own.get(key)!r}" for key in _MUST_MATCH
             if key in own and model.metadata.get(key) != own.get(key)]
    lines += _intensity_differences(model.metadata.get("directions", {}), own.get("directions", {}))
    shared = [name for name in model.networks if name in family.networks]
    for name in shared:
        theirs, ours = model.networks[name], family.specs[name]
        if theirs.builder != ours.builder or theirs.kwargs != ours.kwargs:
            differing = sorted(k for k in set(theirs.kwargs) | set(ours.kwargs)
                               if theirs.kwargs.get(k) != ours.kwargs.get(k))
            lines.append(f"network {name}: " + ", ".join(f"{k} {theirs.kwargs.get(k)!r} vs {ours.kwargs.get(k)!r}"
                                                         for k in differing))
    if lines or not shared:
        why = "; ".join(lines) if lines else "no network in common"
        raise UsageError(f"{model.path}: cannot initialise this run from it (the model's vs this run's: {why}); "
                         "use the model's own settings for the networks and the normalisation.")
    for name in shared:
        family.networks[name].load_state_dict(model.weights[name])
    return model_fingerprint(model.path)


def _intensity_differences(theirs: dict, ours: dict) -> list[str]:
    """The intensity rules (modality, MR scaling, CT window) of each shared direction that differ."""
    lines = []
    for direction in set(theirs) & set(ours):
        for side in ("source", "target"):
            a, b = theirs[direction].get(side, {}), ours[direction].get(side, {})
            for key in ("modality", "scaling", "window"):
                if a.get(key) != b.get(key):
                    lines.append(f"{direction} {side} {key}: {a.get(key)!r} vs {b.get(key)!r}")
    return lines
