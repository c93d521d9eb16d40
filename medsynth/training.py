"""``train``: family by name, configuration layers, run folder, engine — the library call behind the CLI."""

from __future__ import annotations

import importlib
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from medsynth.choices import FamilyName
from medsynth.engine.config import TrainConfig, build_config, read_yaml, to_plain
from medsynth.engine.runtime import make_runtime, process_group_closed_at_exit
from medsynth.engine.trainer import TrainResult, run_training
from medsynth.errors import UsageError
from medsynth.families.base import Family

CONFIG_FILENAME = "config.yaml"


# family -> (module, family class, config class); imported only when used
_FAMILIES: dict[FamilyName, tuple[str, str, str]] = {
    FamilyName.PIX2PIX: ("medsynth.families.pix2pix", "Pix2Pix", "Pix2PixConfig"),
    FamilyName.VOX2VOX: ("medsynth.families.pix2pix", "Pix2Pix", "Pix2PixConfig"),
    FamilyName.CYCLEGAN: ("medsynth.families.cyclegan", "CycleGAN", "CycleGANConfig"),
    FamilyName.VAGAN: ("medsynth.families.vagan", "VAGAN", "VAGANConfig"),
    FamilyName.FASTGAN: ("medsynth.families.fastgan", "FastGAN", "FastGANConfig"),
}


def family_classes(name: FamilyName | str) -> tuple[type[Family], type]:
    """The family class and its config dataclass."""
    module_name, family_cls, config_cls = _FAMILIES[FamilyName(name)]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise UsageError(f"the '{name}' family is not available in this medsynth build.") from error
    return getattr(module, family_cls), getattr(module, config_cls)


def train(family: FamilyName | str, data: Path, run_dir: Path, train_options: dict[str, Any] | None = None,
          model_options: dict[str, Any] | None = None, config_file: Path | None = None,
          resume: bool = False) -> TrainResult:
    """Train ``family`` on ``data`` into ``run_dir``.

    Settings are layered: defaults < the run's saved config (on ``resume``) < ``config_file`` < options.
    """
    run_dir = Path(run_dir)
    family, model_options = _vox2vox_is_3d_pix2pix(FamilyName(family), model_options or {})
    family_cls, config_cls = family_classes(family)
    saved = read_yaml(run_dir / CONFIG_FILENAME) if resume and (run_dir / CONFIG_FILENAME).is_file() else {}
    if resume and not saved:
        raise UsageError(f"{run_dir}: no earlier run to resume here (no {CONFIG_FILENAME}); drop --resume.")
    if not resume and (run_dir / "checkpoints").is_dir():
        raise UsageError(f"{run_dir}: holds a run already; add --resume to continue it or choose another --out.")
    extra = read_yaml(config_file)
    train_config = build_config(TrainConfig, family_cls.train_defaults, saved.get("train", {}),
                                extra.get("train", {}), train_options or {}, where=" in train settings")
    # The family's own sampling seed follows --seed unless a config sets it apart.
    seed_layer = {"seed": train_config.seed} if "seed" in {f.name for f in fields(config_cls)} else {}
    model_config = build_config(config_cls, seed_layer, saved.get("model", {}), extra.get("model", {}),
                                model_options or {}, where=f" in {family} model settings")
    _prepare_run_dir(run_dir)
    runtime = make_runtime(train_config.device, train_config.amp)
    with process_group_closed_at_exit(runtime):
        _seed_everything(train_config.seed + runtime.rank)
        instance = family_cls(model_config, Path(data))
        if runtime.is_main:
            document = {"family": str(FamilyName(family)), "data": str(data),
                        "train": to_plain(train_config), "model": to_plain(model_config)}
            (run_dir / CONFIG_FILENAME).write_text(yaml.safe_dump(document, sort_keys=False))
        return run_training(instance, train_config, run_dir, runtime, resume=resume)


def _vox2vox_is_3d_pix2pix(family: FamilyName, model_options: dict[str, Any]) -> tuple[FamilyName, dict[str, Any]]:
    """``vox2vox`` names pix2pix with 3D networks (Cirillo et al. 2020): the same family, ``dims`` fixed to 3."""
    if family is not FamilyName.VOX2VOX:
        return family, model_options
    if model_options.get("dims") not in (None, 3):
        raise UsageError("vox2vox is 3D pix2pix; for slice-wise networks train 'pix2pix --dims 2'.")
    return FamilyName.PIX2PIX, {**model_options, "dims": 3}


def _prepare_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"  # one per process: torchrun ranks probe at once
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"{run_dir}: cannot write the run folder here ({error.strerror}).") from error


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
