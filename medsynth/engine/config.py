"""Engine settings and the YAML layering of defaults < config file < command-line options."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medsynth.choices import DeviceChoice
from medsynth.errors import UsageError


@dataclass
class TrainConfig:
    """What the engine needs; the network and loss settings belong to each family's own config."""

    steps: int = 2000
    batch_size: int = 2
    device: DeviceChoice = DeviceChoice.AUTO
    amp: bool = True
    seed: int = 0
    val_every: int = 500
    ckpt_every: int = 500
    log_every: int = 10
    preview_every: int = 500
    ema_decay: float = 0.999
    decay_start: float = 0.5  # fraction of the steps after which the learning rate falls linearly to 0
    workers: int = -1  # data-loading processes; -1 chooses (0 on the CPU, 2 with CUDA)
    channels_last: bool = False  # channels-last memory format on CUDA (faster convolutions with AMP on tensor cores)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise UsageError("steps and batch size must be at least 1.")
        if not 0.0 <= self.decay_start <= 1.0:
            raise UsageError("decay_start is a fraction of the steps, between 0 and 1.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UsageError("ema_decay must lie in [0, 1).")


Config = TypeVar("Config")


def read_yaml(path: Path | None) -> dict[str, Any]:
    """A config file as a mapping with optional ``train:`` and ``model:`` sections."""
    if path is None:
        return {}
    try:
        content = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise UsageError(f"{path}: cannot read the config file ({error}).") from error
    if not isinstance(content, dict) or set(content) - {"train", "model", "family", "data"}:
        raise UsageError(f"{path}: a config file holds the sections 'train:' and 'model:'.")
    return content


def build_config(cls: type[Config], *layers: dict[str, Any], where: str = "") -> Config:
    """Instantiate the dataclass ``cls`` from layered mappings (later layers win; ``None`` means unset)."""
    valid = {f.name: f for f in fields(cls)}
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None:
                continue
            if key not in valid:
                raise UsageError(f"unknown setting '{key}'{where}; valid: {', '.join(sorted(valid))}.")
            merged[key] = value
    hints = typing.get_type_hints(cls)
    try:
        return cls(**{key: _coerce(value, hints[key]) for key, value in merged.items()})
    except (TypeError, ValueError) as error:
        raise UsageError(f"invalid setting{where}: {error}") from error


def _coerce(value: Any, hint: Any) -> Any:
    """Convert YAML/CLI values (lists, strings) to the annotated field type (tuples, enums)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        return _coerce(value, hint)
    if origin is tuple:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        return tuple(_coerce(v, args[0]) for v in items)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(value)
    if hint is float and isinstance(value, int):
        return float(value)
    return value


def to_plain(config: Any) -> dict[str, Any]:
    """A dataclass as YAML-friendly plain data (enums as strings, tuples as lists)."""
    def plain(value: Any) -> Any:
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    return {key: plain(value) for key, value in dataclasses.asdict(config).items()}
