"""``translate``: a folder (or one volume) of MR into synthetic CT, or back, on each input's own grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth.choices import Direction
from medsynth.data.geometry import ModelGrid
from medsynth.data.intensity import intensity_from_json
from medsynth.engine.config import DeviceChoice
from medsynth.engine.runtime import pick_amp_dtype, pick_device
from medsynth.errors import UsageError
from medsynth.inference.batch import (
    BatchReport,
    parse_shard,
    prepare_output_dir,
    report_name,
    run_batch,
    select_cases,
)
from medsynth.inference.volume import PreparedVolume, VolumeTranslator, is_ct
from medsynth.io.image import Volume, read_image, write_ct, write_image
from medsynth.modelfile import ModelFile, load_model

TRANSLATION_FAMILIES = ("pix2pix", "cyclegan")


@dataclass
class TranslateOptions:
    direction: Direction = Direction.MR2CT
    overlap: float = 0.25
    tta: bool = False
    uncertainty: int = 0  # K stochastic passes; writes <case>_std.nii.gz
    shard: str | None = None  # "i/N"
    overwrite: bool = False
    device: DeviceChoice = DeviceChoice.AUTO
    amp: bool = True
    sw_batch_size: int = 4

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise UsageError("--overlap is a fraction in [0, 1).")
        if self.uncertainty == 1 or self.uncertainty < 0:
            raise UsageError("--uncertainty K needs K ≥ 2 passes (or 0 for none).")


def load_translator(model: ModelFile, direction: Direction, options: TranslateOptions) -> VolumeTranslator:
    """Rebuild the network and preprocessing of ``direction`` from a model file."""
    directions = model.metadata.get("directions", {})
    if direction.value not in directions:
        raise UsageError(f"{model.path}: this {model.family} model translates {', '.join(directions)} only; "
                         f"--direction {direction.value} is not available.")
    spec = directions[direction.value]
    if options.uncertainty and not (model.metadata.get("mc_dropout") or options.tta):
        raise UsageError("--uncertainty needs a model trained with dropout (model: dropout: 0.1) or --tta; "
                         "this model is deterministic.")
    device = pick_device(options.device)
    return VolumeTranslator(
        network=model.build(spec["network"], device),
        dims=int(model.metadata["spatial_dims"]),
        patch_size=tuple(model.metadata["patch_size"]),
        grid=ModelGrid(model.metadata["spacing"]),
        source=intensity_from_json(spec["source"]),
        target=intensity_from_json(spec["target"]),
        flip_axes=tuple(model.metadata.get("flip_axes", ())),
        amp_dtype=pick_amp_dtype(device, options.amp),
        sw_batch_size=options.sw_batch_size,
    )


def translate(model_path: Path, input_path: Path, out_dir: Path, options: TranslateOptions) -> BatchReport:
    """Translate every case of ``input_path`` into ``out_dir/<case>.nii.gz`` (+ ``_std`` maps)."""
    out_dir = Path(out_dir)
    model = load_model(model_path, TRANSLATION_FAMILIES)
    translator = load_translator(model, Direction(options.direction), options)
    cases = select_cases(Path(input_path), parse_shard(options.shard))
    prepare_output_dir(out_dir, Path(input_path))

    def outputs_of(case: str) -> list[Path]:
        paths = [out_dir / f"{case}.nii.gz"]
        return paths + ([out_dir / f"{case}_std.nii.gz"] if options.uncertainty else [])

    def process(case: str, prepared: PreparedVolume) -> list[Path]:
        mean, std = translator.run(prepared, options.overlap, options.tta, options.uncertainty)
        targets = outputs_of(case)
        volume = prepared.volume
        written = [_write_output(targets[0], mean, volume, is_ct(translator.target))]
        if std is not None:
            written.append(write_image(targets[1], std, volume.meta, np.float32))
            written.append(write_uncertainty_preview(out_dir / f"{case}_std.png", mean, std, volume,
                                                     is_ct(translator.target)))
        return written

    report = run_batch(cases, outputs_of, process, options.overwrite, "translate",
                       load=lambda path: translator.prepare(read_image(path)))
    report.write_json(out_dir / report_name("translate", options.shard))
    return report


def _write_output(path: Path, values: np.ndarray, like: Volume, as_ct: bool) -> Path:
    if as_ct:
        return write_ct(path, values, like.meta)
    return write_image(path, values, like.meta, np.float32)


def write_uncertainty_preview(path: Path, mean: np.ndarray, std: np.ndarray, like: Volume, as_ct: bool) -> Path:
    """Axial, coronal and sagittal mid-slices of the synthetic image beside its standard-deviation map."""
    from medsynth.viz import auto_window, mid_slices, save_grid, window

    shown = window(mean, -1000, 1500) if as_ct else auto_window(mean)
    image = mid_slices(shown, like.meta.affine)
    spread = mid_slices(window(std, 0, max(float(np.percentile(std, 99.5)), 1.0)), like.meta.affine)
    unit = "HU" if as_ct else "a.u."
    titles = ["synthetic axial", "coronal", "sagittal", f"std ({unit}) axial", "coronal", "sagittal"]
    return save_grid(path, [list(image), list(spread)], titles)
