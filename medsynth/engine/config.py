"""Engine settings and the YAML layering of defaults < config file < command-line options.

Every setting is validated by type and range with pydantic before a run writes anything: a config
dataclass's annotations (``Annotated[int, Field(ge=1)]`` for ranges) are its schema, and every bad
setting gets one line of the error.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from medsynth.choices import DeviceChoice, parse_device
from medsynth.errors import UsageError


@dataclass
class TrainConfig:
    """What the engine needs; the network and loss settings belong to each family's own config."""

    steps: Annotated[int, Field(ge=1)] = 2000
    batch_size: Annotated[int, Field(ge=1)] = 2
    device: str = DeviceChoice.AUTO  # auto, cpu, cuda, cuda:N or mps (choices.parse_device)
    amp: bool = True
    seed: Annotated[int, Field(ge=0)] = 0
    val_every: Annotated[int, Field(ge=0)] = 500  # 0: never
    ckpt_every: Annotated[int, Field(ge=1)] = 500
    log_every: Annotated[int, Field(ge=1)] = 10
    preview_every: Annotated[int, Field(ge=1)] = 500
    ema_decay: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.999
    # fraction of the steps after which the learning rate falls linearly to 0
    decay_start: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    workers: Annotated[int, Field(ge=-1)] = -1  # data-loading processes; -1 chooses (0 on the CPU, 2 with CUDA)
    channels_last: bool = False  # channels-last memory format (faster convolutions: oneDNN on CPUs, tensor cores)
    cpu_bf16: bool = False  # bf16 autocast on the CPU (AVX-512 BF16/AMX); amp decides on CUDA
    fold: int | None = None  # with folds: train fold k of a seeded k-fold split (RUN/split.json)
    folds: int | None = None

    #: settings a resumed run may change (how long, how often, where); every other one defines the run
    resumable: ClassVar[frozenset[str]] = frozenset({
        "steps", "device", "amp", "val_every", "ckpt_every", "log_every", "preview_every", "decay_start",
        "workers", "channels_last", "cpu_bf16"})

    def __post_init__(self) -> None:
        try:
            self.device = parse_device(self.device)
        except ValueError as error:
            raise UsageError(f"device: {error}.") from error
        if self.steps < 1 or self.batch_size < 1:
            raise UsageError("steps and batch size must be at least 1.")
        if not 0.0 <= self.decay_start <= 1.0:
            raise UsageError("decay_start is a fraction of the steps, between 0 and 1.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UsageError("ema_decay must lie in [0, 1).")


Config = TypeVar("Config")


def read_yaml(path: Path | None) -> dict[str, Any]:
    """A config file as a mapping with optional ``train:`` and ``model:`` sections (each a mapping)."""
    if path is None:
        return {}
    try:
        content = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        reason = str(error).replace("\n", " ")
        raise UsageError(f"{path}: cannot read the config file ({reason}).") from error
    if not isinstance(content, dict) or set(content) - {"train", "model", "family", "data"}:
        raise UsageError(f"{path}: a config file holds the sections 'train:' and 'model:'.")
    for section in ("train", "model"):
        if not isinstance(content.get(section) or {}, dict):
            raise UsageError(f"{path}: '{section}:' must hold settings as 'name: value' lines, not "
                             f"{content[section]!r}.")
    return content


def build_config(cls: type[Config], *layers: dict[str, Any], where: str = "") -> Config:
    """Instantiate the dataclass ``cls`` from layered mappings (later layers win; ``None`` means unset).

    Values are validated and converted (lists to tuples, strings to enums, ``"1e-4"`` to a float) by
    pydantic from the dataclass's annotations. Raises :class:`UsageError` with one line per unknown
    or invalid setting, then the dataclass's own cross-setting checks.
    """
    valid = {f.name for f in fields(cls)}
    merged: dict[str, Any] = {}
    problems: list[str] = []
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None:
                continue
            if key not in valid:
                problems.append(f"unknown setting '{key}'{where}; valid: {', '.join(sorted(valid))}.")
            merged[key] = value
    tuples = _tuple_fields(cls)
    # A single value where a tuple is expected (``patch_size: 64``) means that value alone.
    known = {k: ([v] if k in tuples and isinstance(v, (int, float, str)) else v)
             for k, v in merged.items() if k in valid}
    try:
        config = _adapter(cls).validate_python(known)
    except ValidationError as error:
        problems += [_problem(item, where) for item in error.errors()]
        config = None
    if problems:
        raise UsageError("\n".join(problems))
    return config


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


@functools.cache
def _tuple_fields(cls: type) -> frozenset[str]:
    """Names of the fields annotated as a tuple (or an optional one)."""
    def is_tuple(hint: Any) -> bool:
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            return any(is_tuple(arg) for arg in typing.get_args(hint))
        return typing.get_origin(hint) is tuple

    return frozenset(name for name, hint in typing.get_type_hints(cls).items() if is_tuple(hint))


def _problem(item: dict[str, Any], where: str) -> str:
    """One line for one pydantic error: the setting, the value given and what is wrong with it."""
    name = ".".join(str(part) for part in item["loc"]) or "settings"
    given = item.get("input")
    shown = "" if isinstance(given, dict) or type(given).__name__ == "ArgsKwargs" else f" = {given!r}"
    return f"setting '{name}'{where}{shown}: {item['msg']}."


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
