"""The one family registry: every family the CLI offers has one entry (or is an alias), and each entry's
classes are where it says, with the family's own name."""

from __future__ import annotations

from medsynth.choices import FamilyName
from medsynth.engine.family import Family
from medsynth.families.registry import ALIASES, FAMILIES, Capability, families_that, family_classes


def test_every_offered_family_is_registered_once():
    assert set(FamilyName) == set(FAMILIES) | set(ALIASES) and not set(FAMILIES) & set(ALIASES)


def test_each_entry_names_its_family_and_config_classes():
    for name in FAMILIES:
        family, config = family_classes(name)
        assert issubclass(family, Family) and family.name == name and callable(config)


def test_families_are_found_by_what_their_models_do():
    assert set(families_that(Capability.TRANSLATE)) == {"pix2pix", "cyclegan"}
    assert families_that(Capability.ATTRIBUTE) == ("vagan",) and families_that(Capability.GENERATE) == ("fastgan",)
