"""The one family registry: a family's name → its classes (imported only when used, so ``--help`` stays fast)
and what its models can do. ``medsynth train`` builds families from it; ``translate``, ``attribute`` and
``generate`` accept the model files of the families that can do their job. A new family is one entry here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import StrEnum

from medsynth.choices import FamilyName
from medsynth.errors import UsageError


class Capability(StrEnum):
    """What a family's model file is used for after training."""

    TRANSLATE = "translate"  # MR ↔ CT volumes (translate)
    ATTRIBUTE = "attribute"  # abnormality maps (attribute)
    GENERATE = "generate"  # new CT slices (generate)


@dataclass(frozen=True)
class FamilyEntry:
    """Where a family's class and config dataclass live, and what its models can do."""

    module: str
    family_class: str
    config_class: str
    capability: Capability


FAMILIES: dict[FamilyName, FamilyEntry] = {
    FamilyName.PIX2PIX: FamilyEntry("medsynth.families.pix2pix", "Pix2Pix", "Pix2PixConfig", Capability.TRANSLATE),
    FamilyName.CYCLEGAN: FamilyEntry("medsynth.families.cyclegan", "CycleGAN", "CycleGANConfig",
                                     Capability.TRANSLATE),
    FamilyName.VAGAN: FamilyEntry("medsynth.families.vagan", "VAGAN", "VAGANConfig", Capability.ATTRIBUTE),
    FamilyName.FASTGAN: FamilyEntry("medsynth.families.fastgan", "FastGAN", "FastGANConfig", Capability.GENERATE),
}
ALIASES = {FamilyName.VOX2VOX: FamilyName.PIX2PIX}  # vox2vox is pix2pix with 3D networks (training sets dims)


def families_that(capability: Capability) -> tuple[str, ...]:
    """The names of the families whose models can do ``capability`` (as model files record them)."""
    return tuple(str(name) for name, entry in FAMILIES.items() if entry.capability is capability)


def family_classes(name: FamilyName | str) -> tuple[type, type]:
    """The family class and its config dataclass of ``name`` (an alias resolved)."""
    family = FamilyName(name)
    entry = FAMILIES[ALIASES.get(family, family)]
    try:
        module = importlib.import_module(entry.module)
    except ModuleNotFoundError as error:
        raise UsageError(f"the '{name}' family is not available in this medsynth build.") from error
    return getattr(module, entry.family_class), getattr(module, entry.config_class)
