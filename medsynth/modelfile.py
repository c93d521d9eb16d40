"""Self-describing, safe model files (SPEC §4).

One ``.safetensors`` file holds every network's weights (keys ``<network>.<parameter>``) and, in the
format's string metadata, a JSON document with all inference needs: family, constructor names and
arguments, spatial dims, spacing, patch size, intensity normalisation, directions and provenance.
safetensors stores tensors only, so loading a model file can never execute code.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Self

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medsynth import __version__
from medsynth.data.intensity import CTIntensity, Intensity, intensity_from_json
from medsynth.errors import ModelError
from medsynth.io.modelpaths import resolve_model_path
from medsynth.io.outputs import atomic_path
from medsynth.nets.registry import build_network

FORMAT_VERSION = 1
_METADATA_KEY = "medsynth"


@dataclass
class NetworkSpec:
    """How to rebuild one network: a registered constructor name and its JSON arguments."""

    builder: str
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class DirectionSpec:
    """One translation direction of a model: its network and the normalisation of its input and output."""

    network: str
    source: Intensity
    target: Intensity

    def to_json(self) -> dict[str, Any]:
        return {"network": self.network, "source": self.source.to_json(), "target": self.target.to_json()}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> DirectionSpec:
        return cls(document["network"], intensity_from_json(document["source"]),
                   intensity_from_json(document["target"]))


class ModelMetadata:
    """What a family's export writes into the model file and inference reads back, typed: the base of each
    family kind's metadata dataclass (:class:`TranslationMetadata`, :class:`AttributionMetadata`,
    :class:`GenerationMetadata`).

    The JSON keys are the field names (the on-disk format of every model file so far); keys inference does
    not read (training settings, versions, the ONNX export's own) travel in ``provenance``, unchanged.
    """

    provenance: dict[str, Any]  # declared by every subclass, as a dataclass field

    def to_json(self) -> dict[str, Any]:
        """The JSON document (tuples as lists, intensities and directions as their JSON)."""
        document: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "provenance":
                document.update(value)
            elif isinstance(value, tuple):
                document[item.name] = list(value)
            elif isinstance(value, dict) and item.name == "directions":
                document[item.name] = {name: spec.to_json() for name, spec in value.items()}
            else:
                document[item.name] = value.to_json() if hasattr(value, "to_json") else value
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any], source: Path | str | None = None) -> Self:
        """Read a model file's (or exported graph's) document; keys absent from older files take their
        defaults. Raises :class:`ModelError` naming ``source`` when a key inference needs is missing."""
        names = {item.name for item in fields(cls)} - {"provenance"}
        required = {item.name for item in fields(cls)
                    if item.default is MISSING and item.default_factory is MISSING}
        missing = sorted(required - set(document))
        if missing:
            raise ModelError(f"{source}: the model's metadata lacks {', '.join(missing)}; it is no "
                             f"{cls.__name__.removesuffix('Metadata').lower()} model file of medsynth.")
        values = {name: cls._parse(name, document[name]) for name in names if name in document}
        return cls(**values, provenance={k: v for k, v in document.items() if k not in names})

    @staticmethod
    def _parse(name: str, value: Any) -> Any:
        if name == "directions":
            return {direction: DirectionSpec.from_json(spec) for direction, spec in value.items()}
        if name == "intensity":
            return intensity_from_json(value)
        if name in ("patch_size", "flip_axes"):
            return tuple(int(v) for v in value)
        if name == "spacing":
            return tuple(float(v) for v in value)
        if name == "mr_channels":
            return tuple(str(v) for v in value)
        return value


@dataclass(kw_only=True)
class VolumeMetadata(ModelMetadata):
    """What every volumetric family's model holds: its model grid and window."""

    spatial_dims: int
    patch_size: tuple[int, ...]  # voxels; the sliding window of networks that normalise per window
    spacing: tuple[float, ...]  # mm of the model grid
    orientation: str = "RAS"
    flip_axes: tuple[int, ...] = ()  # training flips, used by test-time augmentation
    data_fingerprint: str | None = None
    training_cases: int | dict[str, int] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class TranslationMetadata(VolumeMetadata):
    """A translation model (pix2pix, CycleGAN): its directions, MR channels and window rule."""

    directions: dict[str, DirectionSpec]
    mr_channels: tuple[str, ...] = ("0000",)  # file suffixes of the MR contrasts, in channel order
    mc_dropout: bool = False
    window_divisor: int | None = None  # set for networks free of window statistics (whole-volume windows)
    context_slices: int = 0  # 2.5D: neighbouring slices on either side as input channels (2D models)
    input_profile: dict[str, list[float]] | None = None  # the training MR's features (data/profile.py)
    error_calibration: dict[str, Any] | None = None  # spread -> expected error (metrics/calibration.py)


@dataclass(kw_only=True)
class AttributionMetadata(VolumeMetadata):
    """An attribution model (VA-GAN): its map network and the input's normalisation."""

    map_network: str
    intensity: Intensity
    intensity_region: str = "image"
    map_sign: str = ""


@dataclass(kw_only=True)
class GenerationMetadata(ModelMetadata):
    """A slice generator (FastGAN): its latent size, the slices it makes and how its training slices were read."""

    spatial_dims: int = 2
    resolution: int  # pixels along each side of a generated slice
    nz: int  # latent dimension: the generator takes (B, nz)
    intensity: CTIntensity  # the CT window the generator's [-1, 1] maps to
    spacing: tuple[float, ...]  # mm of a generated slice's pixels, in plane
    slice_thickness: float = 1.0  # mm written into each generated slice's geometry
    orientation: str = "RAS"
    body_fraction: float  # training slices needed this share of body (data/slices.load_slices)
    body_threshold: float  # HU above which a pixel is body
    data_fingerprint: str | None = None
    training_slices: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelFile:
    """A loaded model: metadata plus the weights of each network, by name."""

    family: str
    networks: dict[str, NetworkSpec]
    metadata: dict[str, Any]
    weights: dict[str, dict[str, torch.Tensor]] = field(repr=False, default_factory=dict)
    path: Path | None = None

    def build(self, name: str, device: torch.device | str = "cpu") -> nn.Module:
        """Construct network ``name``, load its weights and put it in evaluation mode on ``device``."""
        if name not in self.networks:
            raise ModelError(f"{self.path}: holds no network '{name}' (it has {', '.join(self.networks)}).")
        spec = self.networks[name]
        network = build_network(spec.builder, spec.kwargs)
        try:
            network.load_state_dict(self.weights[name])
        except RuntimeError as error:
            raise ModelError(f"{self.path}: weights of '{name}' do not fit its network; the file is damaged.") \
                from error
        return network.to(device).eval()


def save_model(path: Path, family: str, networks: dict[str, tuple[NetworkSpec, nn.Module]],
               metadata: dict[str, Any]) -> Path:
    """Write a model file atomically. ``networks`` maps a name to its spec and trained module."""
    tensors: dict[str, torch.Tensor] = {}
    for name, (_, module) in networks.items():
        for key, value in _plain_state(module).items():
            tensors[f"{name}.{key}"] = value.detach().to("cpu").contiguous()
    document = {
        "format_version": FORMAT_VERSION,
        "family": family,
        "medsynth_version": __version__,
        "git_commit": _git_commit(),
        "networks": {name: {"builder": spec.builder, "kwargs": spec.kwargs} for name, (spec, _) in networks.items()},
        **metadata,
    }
    path = Path(path)
    with atomic_path(path) as partial:
        save_file(tensors, str(partial), metadata={_METADATA_KEY: json.dumps(document)})
    return path


def update_metadata(path: Path, changes: dict[str, Any]) -> Path:
    """Rewrite a model file (atomically) with ``changes`` merged into its metadata; the weights stay as they are."""
    document = _read_metadata(path)
    tensors = load_file(str(path))
    document.update(changes)
    with atomic_path(Path(path)) as partial:
        save_file(tensors, str(partial), metadata={_METADATA_KEY: json.dumps(document)})
    return Path(path)


def _plain_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without wrapper prefixes (DDP's ``module.``, AveragedModel's ``module.``)."""
    inner = getattr(module, "module", module)
    return dict(inner.state_dict())


def load_model(path: Path, family: str | tuple[str, ...] | None = None) -> ModelFile:
    """Read a model file, check family and format, and return it (weights on the CPU)."""
    path = resolve_model_path(path)
    document = _read_metadata(path)
    expected = (family,) if isinstance(family, str) else family
    if expected and document.get("family") not in expected:
        raise ModelError(f"{path}: is a '{document.get('family')}' model; this command needs "
                         f"{' or '.join(repr(f) for f in expected)}.")
    if document.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path}: model format {document.get('format_version')} is not supported by "
                         f"medsynth {__version__} (format {FORMAT_VERSION}).")
    try:
        flat = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ModelError(f"{path}: cannot read the weights ({error}); the file is damaged.") from error
    specs = {name: NetworkSpec(**spec) for name, spec in document.pop("networks").items()}
    weights: dict[str, dict[str, torch.Tensor]] = {name: {} for name in specs}
    for key, value in flat.items():
        name, _, parameter = key.partition(".")
        weights.setdefault(name, {})[parameter] = value
    return ModelFile(family=document.pop("family"), networks=specs, metadata=document, weights=weights, path=path)


def _read_metadata(path: Path) -> dict[str, Any]:
    """The JSON document in the safetensors header, read without loading the tensors."""
    try:
        with open(path, "rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            if not 0 < header_size < 100_000_000:
                raise ValueError("bad header size")
            header = json.loads(handle.read(header_size))
        return json.loads(header["__metadata__"][_METADATA_KEY])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelError(f"{path}: is not a medsynth model file (no readable metadata).") from error


def model_fingerprint(path: Path) -> str:
    """16 hex digits of the SHA-256 of a model file (weights and metadata): which model made an output."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def ensemble_fingerprint(fingerprints: list[str]) -> str:
    """One model's fingerprint, or for several (an ensemble) 16 hex digits of the hash of theirs, sorted."""
    if len(fingerprints) == 1:
        return fingerprints[0]
    return hashlib.sha256(",".join(sorted(fingerprints)).encode()).hexdigest()[:16]


def data_fingerprint(files: list[Path]) -> str:
    """A short hash of the training file list (each file's folder and name, and size), to tell which data a
    model saw; the folder counts because SynthRAD names every case's files alike (``<case>/mr.nii.gz``)."""
    digest = hashlib.sha256()
    for file in sorted(Path(f) for f in files):
        size = file.stat().st_size if file.is_file() else sum(f.stat().st_size for f in file.glob("*"))
        digest.update(f"{file.parent.name}/{file.name}:{size};".encode())
    return digest.hexdigest()[:16]


def _git_commit() -> str | None:
    """The commit of the medsynth checkout, when installed from one."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None
