"""``generate``: CT slices from a FastGAN model, as calibrated 2D NIfTI in HU, a PNG grid and metrics.

Slices come from the generation core (``inference/generation``): slice ``i`` depends only on (seed, i,
truncation), so the same seed writes identical files, and ``--count 20`` starts with the slices of ``--count 10``.
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

from medsynth.data.slices import load_slices
from medsynth.engine.runtime import pick_device
from medsynth.errors import UsageError
from medsynth.families.registry import Capability, families_that
from medsynth.inference.generation import display_slice, slice_meta, synthesise
from medsynth.io.formats import image_name
from medsynth.io.image import CT_RANGE, write_ct
from medsynth.io.outputs import prepare_output_dir, write_text_atomically
from medsynth.metrics.generation import generation_metrics, load_feature_extractor
from medsynth.modelfile import GenerationMetadata, ModelFile, load_model
from medsynth.services.options import GenerateOptions

GRID_COLUMNS = 8
GRID_MAX = 64  # slices shown in the PNG grid
METRICS_FILENAME = "generation_metrics.json"
GRID_FILENAME = "generated_grid.png"
_OUTPUT = re.compile(r"generated_\d+\.(nii\.gz|mha)")


@dataclass
class GenerateResult:
    files: list[Path]
    grid: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    metrics_file: Path | None = None


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


def load_generator(model_path: Path, device: torch.device) -> tuple[ModelFile, GenerationMetadata, nn.Module]:
    """A FastGAN model file, its typed metadata and its EMA generator; other families are refused."""
    model = load_model(model_path, families_that(Capability.GENERATE))
    return model, GenerationMetadata.from_json(model.metadata, model.path), model.build("G", device)


def generate(model_path: Path, out_dir: Path, options: GenerateOptions) -> GenerateResult:
    """Write ``options.count`` slices ``OUT_DIR/generated_NNNN.nii.gz`` (int16 HU), a PNG grid and, with
    ``eval_data``, the generation metrics (JSON)."""
    device = pick_device(options.device)
    model, meta, generator = load_generator(model_path, device)
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir, options.overwrite,
                    [model_path, model.path, model.path.parent, options.eval_data, options.features])
    slices, files = _write_slices(generator, meta, out_dir, options, device)
    grid = _save_grid(out_dir / GRID_FILENAME, slices[:GRID_MAX])
    result = GenerateResult(files=files, grid=grid)
    if options.eval_data is not None:
        result.metrics = evaluate(np.stack(slices), model, meta, options, device)
        result.metrics_file = _write_json(out_dir / METRICS_FILENAME, result.metrics)
    return result


def _write_slices(generator: nn.Module, meta: GenerationMetadata, out_dir: Path, options: GenerateOptions,
                  device: torch.device) -> tuple[list[np.ndarray], list[Path]]:
    """Generate and write every slice; return the slices (int16 HU) that the grid or the evaluation need
    (not all of them otherwise, so that a large --count does not pile up in memory) and the files."""
    geometry = slice_meta(meta.spacing, meta.slice_thickness, meta.resolution)
    digits = max(4, len(str(options.count - 1)))
    kept, files = [], []
    with _progress() as progress:
        task = progress.add_task("generate", total=options.count)
        for index in range(options.count):
            image = synthesise(generator, meta.nz, [index], options.seed, options.truncation, device)[0]
            hu = np.clip(np.rint(meta.intensity.denormalise(image.numpy())), *CT_RANGE).astype(np.int16)
            files.append(write_ct(out_dir / image_name(f"generated_{index:0{digits}d}", options.format), hu, geometry))
            if index < GRID_MAX or options.eval_data is not None:
                kept.append(hu)
            progress.advance(task)
    return kept, files


def evaluate(generated_hu: np.ndarray, model: ModelFile, meta: GenerationMetadata, options: GenerateOptions,
             device: torch.device) -> dict[str, Any]:
    """Generation metrics against the real slices of ``options.eval_data``, read as the model was trained."""
    real = load_slices(options.eval_data, meta.resolution, meta.intensity.window, meta.body_fraction,
                       meta.body_threshold)
    extractor = load_feature_extractor(options.features, device) if options.features else None
    return {"model": str(model.path), "data": str(options.eval_data), "seed": options.seed,
            "truncation": options.truncation,
            **generation_metrics(generated_hu, real, meta.intensity, meta.body_threshold, options.copy_ssim, extractor,
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
