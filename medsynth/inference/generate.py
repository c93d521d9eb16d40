"""``generate``: CT slices from a FastGAN model, as calibrated 2D NIfTI in HU, a PNG grid and metrics.

Slice ``i`` depends only on (seed, i, truncation): its latent vector comes from a generator seeded with
both, and the generator's noise injection draws from a torch RNG seeded the same way, one slice at a
time. So the same seed writes identical files, and ``--count 20`` starts with the slices of ``--count 10``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from medsynth.data.intensity import CTIntensity, intensity_from_json
from medsynth.data.slices import load_slices
from medsynth.engine.config import DeviceChoice
from medsynth.engine.runtime import pick_device
from medsynth.errors import UsageError
from medsynth.io.formats import OutputFormat, image_name
from medsynth.io.image import CT_RANGE, ImageMeta, write_ct
from medsynth.io.outputs import prepare_output_dir, write_text_atomically
from medsynth.metrics.generation import generation_metrics, load_feature_extractor
from medsynth.modelfile import ModelFile, load_model

DISPLAY_WINDOW_HU = (-1000.0, 1500.0)
GRID_COLUMNS = 8
GRID_MAX = 64  # slices shown in the PNG grid
METRICS_FILENAME = "generation_metrics.json"
GRID_FILENAME = "generated_grid.png"
_OUTPUT = re.compile(r"generated_\d+\.(nii\.gz|mha)")


@dataclass
class GenerateOptions:
    count: int
    seed: int = 0
    truncation: float | None = None  # |z_i| ≤ T, entries beyond it redrawn; None: plain N(0, I)
    device: DeviceChoice = DeviceChoice.AUTO
    overwrite: bool = False
    eval_data: Path | None = None  # real slices to compare with (the training data for memorisation)
    features: Path | None = None  # TorchScript feature extractor for FID/KID
    copy_ssim: float = 0.95  # nearest-neighbour SSIM from which a generated slice counts as a copy
    format: OutputFormat = OutputFormat.NIFTI  # nifti or mha

    def __post_init__(self) -> None:
        self.format = OutputFormat(self.format)
        if self.format is OutputFormat.DICOM:
            raise UsageError("--format dicom: generated slices belong to no patient or study; choose nifti or mha.")
        if self.seed < 0:
            raise UsageError(f"--seed {self.seed}: seeds are non-negative integers.")
        if self.count < 1:
            raise UsageError(f"--count {self.count}: generate at least 1 slice.")
        if self.truncation is not None and self.truncation <= 0:
            raise UsageError(f"--truncation {self.truncation}: give a positive bound T (|z| ≤ T), or leave it out.")
        if self.features is not None and self.eval_data is None:
            raise UsageError("--features is used by --eval; add --eval DATA with the real slices to compare with.")
        if not 0.0 < self.copy_ssim <= 1.0:
            raise UsageError(f"--copy-ssim {self.copy_ssim}: an SSIM threshold in (0, 1].")


@dataclass
class GenerateResult:
    files: list[Path]
    grid: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    metrics_file: Path | None = None


def truncated_normal(rng: np.random.Generator, size: int, truncation: float | None) -> np.ndarray:
    """N(0, 1) samples; with ``truncation`` T every entry beyond |T| is redrawn until none is."""
    z = rng.standard_normal(size)
    while truncation is not None and np.any(outside := np.abs(z) > truncation):
        z[outside] = rng.standard_normal(int(outside.sum()))
    return z


def latent(seed: int, index: int, nz: int, truncation: float | None) -> np.ndarray:
    """The latent vector of slice ``index`` for ``seed``."""
    return truncated_normal(np.random.default_rng([seed, index]), nz, truncation)


@torch.no_grad()
def synthesise(generator: nn.Module, nz: int, indices: Iterable[int], seed: int, truncation: float | None,
               device: torch.device) -> torch.Tensor:
    """Slices (N, R, R) in [-1, 1] on the CPU, one network pass each, in evaluation mode.

    The global torch RNG is left as it was (training calls this for previews and must stay resumable).
    """
    was_training = generator.training
    generator.eval()
    images = []
    for index in indices:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(np.random.default_rng([seed, index, 1]).integers(2**62)))
            z = torch.from_numpy(latent(seed, index, nz, truncation)).float()[None].to(device)
            images.append(generator(z)[0, 0].float().cpu())
    generator.train(was_training)
    return torch.stack(images)


def display_slice(hu: np.ndarray) -> np.ndarray:
    """A RAS slice (x, y) as a uint8 image in the radiological convention (left on the right, anterior up)."""
    from medsynth.viz import mid_slices, window

    return window(mid_slices(np.asarray(hu)[:, :, None]).axial, *DISPLAY_WINDOW_HU)


def slice_meta(spacing: tuple[float, float], thickness: float, resolution: int) -> ImageMeta:
    """Geometry of a generated slice: RAS, the training pixel spacing, centred on the origin."""
    affine = np.diag([float(spacing[0]), float(spacing[1]), float(thickness), 1.0])
    affine[:2, 3] = -(resolution - 1) / 2 * np.asarray(spacing, dtype=float)
    return ImageMeta.from_affine(affine, (resolution, resolution))


def prepare_out_dir(out_dir: Path, overwrite: bool, inputs: Iterable[Path | None] = ()) -> None:
    """Create OUT_DIR; refuse one that is or lies in an input (whatever ``overwrite`` says), and one that
    holds generated slices unless ``overwrite`` (then remove them)."""
    prepare_output_dir(out_dir, inputs)
    existing = sorted(p for p in out_dir.glob("generated_*") if _OUTPUT.fullmatch(p.name)) \
        if out_dir.is_dir() else []
    if existing and not overwrite:
        raise UsageError(f"{out_dir}: holds {len(existing)} generated slices already; add --overwrite to replace "
                         "them or choose another folder.")
    try:
        for path in existing:  # stale slices of a larger --count would mix with the new set
            path.unlink()
    except OSError as error:
        raise UsageError(f"{out_dir}: cannot replace earlier slices ({error.strerror}); choose another folder.") \
            from error


def load_generator(model_path: Path, device: torch.device) -> tuple[ModelFile, nn.Module, CTIntensity]:
    """The EMA generator of a FastGAN model file and its HU window; other families are refused."""
    model = load_model(model_path, "fastgan")
    intensity = intensity_from_json(model.metadata["intensity"])
    return model, model.build("G", device), intensity


def generate(model_path: Path, out_dir: Path, options: GenerateOptions) -> GenerateResult:
    """Write ``options.count`` slices ``OUT_DIR/generated_NNNN.nii.gz`` (int16 HU), a PNG grid and, with
    ``eval_data``, the generation metrics (JSON)."""
    device = pick_device(options.device)
    model, generator, intensity = load_generator(model_path, device)
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir, options.overwrite,
                    [model_path, model.path, model.path.parent, options.eval_data, options.features])
    slices, files = _write_slices(generator, model.metadata, intensity, out_dir, options, device)
    grid = _save_grid(out_dir / GRID_FILENAME, slices[:GRID_MAX])
    result = GenerateResult(files=files, grid=grid)
    if options.eval_data is not None:
        result.metrics = evaluate(np.stack(slices), model, intensity, options, device)
        result.metrics_file = _write_json(out_dir / METRICS_FILENAME, result.metrics)
    return result


def _write_slices(generator: nn.Module, meta: dict[str, Any], intensity: CTIntensity, out_dir: Path,
                  options: GenerateOptions, device: torch.device) -> tuple[list[np.ndarray], list[Path]]:
    """Generate and write every slice; return the slices (int16 HU) that the grid or the evaluation need
    (not all of them otherwise, so that a large --count does not pile up in memory) and the files."""
    geometry = slice_meta(meta["spacing"], meta.get("slice_thickness", 1.0), meta["resolution"])
    digits = max(4, len(str(options.count - 1)))
    kept, files = [], []
    with _progress() as progress:
        task = progress.add_task("generate", total=options.count)
        for index in range(options.count):
            image = synthesise(generator, meta["nz"], [index], options.seed, options.truncation, device)[0]
            hu = np.clip(np.rint(intensity.denormalise(image.numpy())), *CT_RANGE).astype(np.int16)
            files.append(write_ct(out_dir / image_name(f"generated_{index:0{digits}d}", options.format), hu, geometry))
            if index < GRID_MAX or options.eval_data is not None:
                kept.append(hu)
            progress.advance(task)
    return kept, files


def evaluate(generated_hu: np.ndarray, model: ModelFile, intensity: CTIntensity, options: GenerateOptions,
             device: torch.device) -> dict[str, Any]:
    """Generation metrics against the real slices of ``options.eval_data``, read as the model was trained."""
    meta = model.metadata
    real = load_slices(options.eval_data, meta["resolution"], intensity.window, meta["body_fraction"],
                       meta["body_threshold"])
    extractor = load_feature_extractor(options.features, device) if options.features else None
    return {"model": str(model.path), "data": str(options.eval_data), "seed": options.seed,
            "truncation": options.truncation,
            **generation_metrics(generated_hu, real, intensity, meta["body_threshold"], options.copy_ssim, extractor,
                               device)}


def _save_grid(path: Path, slices: list[np.ndarray]) -> Path:
    from medsynth.viz import save_grid

    panels = [display_slice(s) for s in slices]
    return save_grid(path, [panels[i:i + GRID_COLUMNS] for i in range(0, len(panels), GRID_COLUMNS)])


def _strict(value: Any) -> Any:
    """``value`` with every undefined number (NaN, ±inf), at any depth, as None: strict JSON's null."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _write_json(path: Path, document: dict[str, Any]) -> Path:
    """Strict JSON (an undefined metric becomes null), written atomically."""
    return write_text_atomically(path, json.dumps(_strict(document), indent=2, allow_nan=False) + "\n")


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), transient=True)
