"""``train``: family by name, configuration layers, run folder, engine — the library call behind the CLI."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medsynth.choices import FamilyName
from medsynth.data.splits import SPLIT_FILENAME, SplitPlan
from medsynth.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from medsynth.engine.config import TrainConfig, build_config, read_yaml, to_plain
from medsynth.engine.family import Family, Validation
from medsynth.engine.initialise import initialise_from
from medsynth.engine.logbook import LOG_FILENAME, VALIDATION_DIRNAME, write_validation
from medsynth.engine.runtime import make_runtime, pick_device, process_group_closed_at_exit, process_rank
from medsynth.engine.trainer import TrainResult, run_training, validation_table
from medsynth.errors import UsageError
from medsynth.families.registry import family_classes
from medsynth.io.modelpaths import MODEL_FILENAME
from medsynth.io.outputs import (
    check_not_an_input,
    prepare_output_dir,
    real_path,
    remove_partials,
    write_text_atomically,
)
from medsynth.modelfile import ModelFile, load_model
from medsynth.services.calibrate import CalibrationCase, calibrate_model

CONFIG_FILENAME = "config.yaml"
Config = TypeVar("Config")


def train(family: FamilyName | str, data: Path, run_dir: Path, train_options: dict[str, Any] | None = None,
          model_options: dict[str, Any] | None = None, config_file: Path | None = None,
          resume: bool = False, note: Callable[[str], None] | None = None,
          announce: Callable[[str], None] | None = None, init: Path | None = None) -> TrainResult:
    """Train ``family`` on ``data`` into ``run_dir``.

    Settings are layered: defaults < the run's saved config (on ``resume``) < ``config_file`` < options,
    and validated (type and range) before anything is written. ``resume`` continues from the run's
    last checkpoint; where there is none (a job killed before its first checkpoint, or a new folder)
    it starts afresh and says so through ``note``, so a requeued command never has to change. A
    resumed run may change only :attr:`TrainConfig.resumable` settings; any other difference is a
    :class:`UsageError` naming each setting, raised before the run folder is touched. The train/validation
    split (fold ``fold`` of ``folds``, or a seeded hold-out) is written to ``RUN/split.json``, reused on
    resume, and its one-line summary goes to ``announce`` (rank 0). ``init``: a trained model whose networks
    a fresh run starts from (fine-tuning; :func:`~medsynth.engine.initialise.initialise_from`); a resumed run
    continues from its checkpoint instead.
    """
    run_dir = Path(run_dir)
    note = note or (lambda message: None)
    family, model_options = _vox2vox_is_3d_pix2pix(FamilyName(family), model_options or {})
    family_name = str(family)
    family_cls, config_cls = family_classes(family)
    check_not_an_input(run_dir, [data, config_file, init, Path(init).parent if init else None])
    if config_file is not None and real_path(config_file) == real_path(run_dir / CONFIG_FILENAME):
        raise UsageError(f"{config_file}: is the run's own record of its settings, rewritten by every run; "
                         "copy it elsewhere to edit it (with --resume it is read anyway).")
    checkpoint = run_dir / "checkpoints" / CHECKPOINT_NAME
    if resume and not checkpoint.is_file():
        note(f"{run_dir}: no checkpoint to resume from yet; starting a fresh run.")
        resume = False
    elif not resume and checkpoint.is_file():
        raise UsageError(f"{run_dir}: holds a run already; add --resume to continue it or choose another --out.")
    saved = _saved_settings(run_dir) if resume else {}
    extra = read_yaml(config_file)
    problems: list[str] = []  # every bad setting of both sections is reported at once
    try:
        train_config, changed = _layered(TrainConfig, [family_cls.train_defaults], saved.get("train"),
                                         [extra.get("train"), train_options], "train", TrainConfig.resumable)
    except UsageError as error:
        problems.append(str(error))
        train_config, changed = None, []
    # The family's own sampling seed follows --seed unless a config sets it apart.
    seed_layer = {"seed": train_config.seed} if train_config and "seed" in {f.name for f in fields(config_cls)} \
        else {}
    try:
        model_config, changed_model = _layered(config_cls, [seed_layer], saved.get("model"),
                                               [extra.get("model"), model_options], "model")
    except UsageError as error:
        problems.append(str(error))
    if problems:
        raise UsageError("\n".join(problems))
    if resume:
        _refuse_changes(run_dir, saved, family_name, data, changed + changed_model)
    document = {"family": family_name, "data": str(data), "train": to_plain(train_config),
                "model": to_plain(model_config)}
    plan = SplitPlan(seed=train_config.seed, fold=train_config.fold, folds=train_config.folds,
                     path=run_dir / SPLIT_FILENAME)
    created = not run_dir.exists()
    _prepare_run_dir(run_dir, fresh=not resume)
    runtime = make_runtime(train_config.device, train_config.amp, train_config.cpu_bf16)
    with process_group_closed_at_exit(runtime):
        _seed_everything(train_config.seed + runtime.rank)
        with _nothing_left_on_refusal(run_dir, created, runtime.is_main):
            instance = family_cls(model_config, Path(data), split=replace(plan, write=runtime.is_main))
            if init is not None and not resume:
                document["init"] = {"model": str(init), "fingerprint": initialise_from(instance, Path(init))}
        if runtime.is_main and announce is not None and instance.split is not None:
            announce(instance.split.summary())
        if runtime.is_main:
            write_text_atomically(run_dir / CONFIG_FILENAME, yaml.safe_dump(document, sort_keys=False))
        result = run_training(instance, train_config, run_dir, runtime, resume=resume)
        result.warnings = instance.verdict(result.validation) if result.is_main else []
        if result.is_main and result.model_path is not None:
            _calibrate(instance, result.model_path, str(train_config.device), note, announce or (lambda line: None))
        return result


def _calibrate(family: Family, model_path: Path, device: str, note: Callable[[str], None],
               announce: Callable[[str], None]) -> None:
    """Calibrate the model's spread on the run's paired validation cases (services/calibrate.py), if it has any."""
    cases = [CalibrationCase(*reference) for reference in family.validation_references()]
    if not cases:
        return
    calibration = calibrate_model(model_path, cases, device)
    if calibration is None:
        note(f"{model_path}: no spread to calibrate (no training flips, no dropout): translate --uncertainty "
             "gives no expected-error map.")
    else:
        announce(f"{model_path}: spread ({calibration.spread}) calibrated against the error on {len(cases)} validation "
             f"case(s); translate --tta --uncertainty 4 writes expected-error maps and a predicted MAE.")


@dataclass
class ValidationRun:
    """What :func:`validate` wrote: the validation (means and per-case rows), of the model at ``step``."""

    validation: Validation
    step: int
    folder: Path


def validate(family: FamilyName | str, data: Path, run_dir: Path, device: str = "auto") -> ValidationRun:
    """A validation-only run of a trained model (nnU-Net's ``--val``): the validation training runs, on the
    run's own validation cases (``RUN/split.json``), with ``RUN/model.safetensors``, written to
    ``RUN/validation/`` as training writes it (:func:`~medsynth.engine.logbook.write_validation`); nothing is
    trained and no other file of the run changes.

    The family is rebuilt from ``RUN/config.yaml`` on ``data``, so the model grid, the normalisation and the
    lookup baseline are the ones training had; networks validation uses that the model file does not hold
    (CycleGAN's segmenters) come from the run's checkpoint. Raises :class:`UsageError`, one line, when the run
    is unfinished or not of ``family``, when ``data`` is not the data the model was trained on (its data
    fingerprint), or when the run has no validation cases.
    """
    run_dir = Path(run_dir)
    family, _ = _vox2vox_is_3d_pix2pix(FamilyName(family), {})
    family_cls, config_cls = family_classes(family)
    model_path, config_path = run_dir / MODEL_FILENAME, run_dir / CONFIG_FILENAME
    if not model_path.is_file() or not config_path.is_file():
        raise UsageError(f"{run_dir}: holds no finished run ({MODEL_FILENAME} and {CONFIG_FILENAME}); train it "
                         "first (an interrupted run: --resume).")
    check_not_an_input(run_dir / VALIDATION_DIRNAME, [data])
    saved = read_yaml(config_path)
    if saved.get("family") != str(family):
        raise UsageError(f"{run_dir}: is a {saved.get('family')} run, not {family}.")
    if not (run_dir / SPLIT_FILENAME).is_file():
        raise UsageError(f"{run_dir}: has no {SPLIT_FILENAME}, so its validation cases are unknown.")
    train = saved.get("train", {})
    plan = SplitPlan(seed=train.get("seed", 0), fold=train.get("fold"), folds=train.get("folds"),
                     path=run_dir / SPLIT_FILENAME, write=False)
    instance = family_cls(build_config(config_cls, saved.get("model") or {}, where=f" in {config_path}"),
                          Path(data), split=plan)
    model = load_model(model_path, str(family))
    seen, given = model.metadata.get("data_fingerprint"), instance.export().document().get("data_fingerprint")
    if seen != given:
        raise UsageError(f"{data}: is not the data {model_path} was trained on (data fingerprint {given} vs "
                         f"{seen}); --val validates on the run's own data, for other cases use translate and "
                         "evaluate.")
    _load_networks(instance, model, run_dir / "checkpoints" / CHECKPOINT_NAME)
    torch_device = pick_device(device)
    instance.networks.to(torch_device)
    validation = validation_table(instance, dict(instance.networks.items()), torch_device)
    if not validation.means:
        raise UsageError(f"{run_dir}: its split ({SPLIT_FILENAME}) holds no validation cases; nothing to validate.")
    step = int(model.metadata.get("training_steps", 0))
    folder = write_validation(run_dir, step, validation, f"{MODEL_FILENAME} (train --val)")
    return ValidationRun(validation, step, folder)


def _load_networks(family: Family, model: ModelFile, checkpoint: Path) -> None:
    """The model file's networks into ``family``; the others from the run's last checkpoint, which the
    finished run wrote at the same step as its model file (without one they keep their initial weights)."""
    others = [name for name in family.networks if name not in model.weights]
    saved = load_checkpoint(checkpoint)["networks"] if others and checkpoint.is_file() else {}
    for name, network in family.networks.items():
        weights = model.weights.get(name, saved.get(name))
        if weights is not None:
            network.load_state_dict(weights)


@contextmanager
def _nothing_left_on_refusal(run_dir: Path, created: bool, main: bool) -> Iterator[None]:
    """A family that refuses its data (one id twice, unreadable files...) leaves no trace: the run folder this
    run created goes again, and so does a split file it wrote into an existing folder."""
    split = run_dir / SPLIT_FILENAME
    had_split = split.exists()
    try:
        yield
    except Exception:
        if main and created:
            shutil.rmtree(run_dir, ignore_errors=True)
        elif main and not had_split:
            split.unlink(missing_ok=True)
        raise


def _vox2vox_is_3d_pix2pix(family: FamilyName, model_options: dict[str, Any]) -> tuple[FamilyName, dict[str, Any]]:
    """``vox2vox`` names pix2pix with 3D networks (Cirillo et al. 2020): the same family, ``dims`` fixed to 3."""
    if family is not FamilyName.VOX2VOX:
        return family, model_options
    if model_options.get("dims") not in (None, 3):
        raise UsageError("vox2vox is 3D pix2pix; for slice-wise networks train 'pix2pix --dims 2'.")
    return FamilyName.PIX2PIX, {**model_options, "dims": 3}


def _saved_settings(run_dir: Path) -> dict[str, Any]:
    """The settings a checkpointed run was started with (its ``config.yaml``)."""
    path = run_dir / CONFIG_FILENAME
    if not path.is_file():
        raise UsageError(f"{run_dir}: has a checkpoint but no {CONFIG_FILENAME}, so its settings are unknown; "
                         "start a new run in another folder.")
    return read_yaml(path)


def _layered(cls: type[Config], base: list[dict[str, Any]], saved: dict[str, Any] | None,
             new: list[dict[str, Any] | None], section: str, resumable: frozenset[str] = frozenset()
             ) -> tuple[Config, list[str]]:
    """The config of layers ``base`` < ``saved`` (a resumed run's) < ``new``, and one line per setting whose
    value ``new`` changes from ``saved`` (``resumable`` ones and settings ``saved`` lacks aside).

    Saved settings include derived ones (U-Net strides from the channels), which can contradict a
    changed setting; then the changed settings are found by resolving ``new`` without ``saved``.
    """
    where = f" in {section} settings"
    try:
        config = build_config(cls, *base, saved or {}, *new, where=where)
    except UsageError:
        if not saved:
            raise
        config = None
    if not saved:
        return config, []
    if config is not None:
        resolved, compared = to_plain(config), set(saved)
    else:
        resolved = to_plain(build_config(cls, *base, *new, where=where))  # its own errors come first
        compared = {key for layer in new for key, value in (layer or {}).items() if value is not None}
    lines = [f"{section}.{key}: {saved[key]!r} -> {resolved[key]!r}" for key in sorted(compared)
             if key in saved and key in resolved and key not in resumable and saved[key] != resolved[key]]
    if config is None and not lines:
        build_config(cls, *base, saved, *new, where=where)  # raises the contradiction itself
    return config, lines


def _refuse_changes(run_dir: Path, saved: dict[str, Any], family: str, data: Path, changes: list[str]) -> None:
    """Refuse a resume that changes what defines the run: family, data, networks, losses, normalisation,
    patches... (only :attr:`TrainConfig.resumable` settings may change). Raises :class:`UsageError`, one
    line per differing setting, before anything is written."""
    lines = []
    if saved.get("family") not in (None, family):
        lines.append(f"family: {saved['family']} -> {family}")
    if saved.get("data") is not None and real_path(Path(saved["data"])) != real_path(Path(data)):
        lines.append(f"data: {saved['data']} -> {data}")
    lines += changes
    if lines:
        allowed = ", ".join(sorted(TrainConfig.resumable))
        raise UsageError(f"{run_dir}: --resume cannot change settings that define the run (only {allowed} may "
                         "change); start a new run with another --out, or undo these changes:\n" + "\n".join(lines))


def _prepare_run_dir(run_dir: Path, fresh: bool) -> None:
    """Create the run folder (writable, not an input). A fresh run clears what a killed attempt that never
    reached a checkpoint left behind (log, curves, previews); every run removes killed writes' temporaries."""
    prepare_output_dir(run_dir, [])
    if process_rank()[0] != 0:
        return  # rank 0 alone owns the folder's files
    for folder in (run_dir, run_dir / "checkpoints"):
        remove_partials(folder)
    if fresh and (run_dir / CONFIG_FILENAME).is_file():  # a medsynth run folder, not the user's own files
        (run_dir / LOG_FILENAME).unlink(missing_ok=True)
        (run_dir / SPLIT_FILENAME).unlink(missing_ok=True)  # a fresh run splits anew (its --fold/--seed may differ)
        for stale in ("tensorboard", "previews", VALIDATION_DIRNAME):
            shutil.rmtree(run_dir / stale, ignore_errors=True)


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
