"""The closed set of network constructors a model file may name.

A model file stores a constructor *name* and JSON keyword arguments, never code: loading looks the
name up in this fixed table, so an untrusted file can only build networks this package defines.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from medsynth.errors import ModelError

# name in model files -> "module:attribute", imported on first use
_BUILDERS: dict[str, str] = {
    "medsynth.UNetGenerator": "medsynth.nets.generators:UNetGenerator",
    "monai.UNet": "monai.networks.nets:UNet",
    "monai.PatchDiscriminator": "monai.networks.nets:PatchDiscriminator",
    "medsynth.Critic": "medsynth.nets.critic:Critic",
    "medsynth.Classifier": "medsynth.nets.critic:Classifier",
    "medsynth.FastGANGenerator": "medsynth.nets.fastgan:FastGANGenerator",
    "medsynth.FastGANDiscriminator": "medsynth.nets.fastgan:FastGANDiscriminator",
}


def build_network(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Construct the network ``name`` with JSON keyword arguments."""
    if name not in _BUILDERS:
        raise ModelError(f"the model file names an unknown network '{name}'; it needs a newer medsynth.")
    module_name, _, attribute = _BUILDERS[name].partition(":")
    builder = getattr(importlib.import_module(module_name), attribute)
    try:
        return builder(**kwargs)
    except TypeError as error:
        raise ModelError(f"the model file's arguments for '{name}' do not fit this medsynth ({error}).") from error
