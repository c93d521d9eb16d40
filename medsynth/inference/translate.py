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
    case_masks,
    is_single_input,
    mask_of,
    parse_shard,
    report_name,
    run_batch,
    select_cases,
)
from medsynth.inference.volume import PreparedVolume, VolumeTranslator, is_ct, read_mask
from medsynth.io.formats import OutputFormat, image_name
from medsynth.io.image import Volume, read_image, write_ct, write_image
from medsynth.io.outputs import prepare_output_dir
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
    mask: Path | None = None  # folder of body masks by case id: the MR region that sets the intensity scale
    format: OutputFormat = OutputFormat.NIFTI  # dicom: a CT series folder per case
    series: tuple[str, ...] = ()  # Series Instance UIDs choosing among several series in a DICOM folder
    patient_id: str | None = None  # DICOM output from NIfTI/MHA input; default: the case id
    patient_name: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise UsageError("--overlap is a fraction in [0, 1).")
        self.format = OutputFormat(self.format)
        if self.format is OutputFormat.DICOM and Direction(self.direction) is not Direction.MR2CT:
            raise UsageError("--format dicom writes synthetic CT series; for ct2mr choose nifti or mha.")
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
        window_divisor=model.metadata.get("window_divisor"),  # absent in models that normalise per window
    )


def translate(model_path: Path, input_path: Path, out_dir: Path, options: TranslateOptions) -> BatchReport:
    """Translate every case of ``input_path`` into ``out_dir/<case>.nii.gz`` (+ ``_std`` maps)."""
    out_dir = Path(out_dir)
    model = load_model(model_path, TRANSLATION_FAMILIES)
    translator = load_translator(model, Direction(options.direction), options)
    # A DICOM sCT comes with a NIfTI std map: a float map is no CT series.
    std_format = OutputFormat.NIFTI if options.format is OutputFormat.DICOM else options.format

    def outputs_of(case: str) -> list[Path]:
        paths = [out_dir / image_name(case, options.format)]
        return paths + ([out_dir / image_name(f"{case}_std", std_format)] if options.uncertainty else [])

    mr2ct = Direction(options.direction) is Direction.MR2CT
    channels = model.metadata.get("mr_channels", ["0000"]) if mr2ct else []
    cases = select_cases(Path(input_path), parse_shard(options.shard), "mr" if mr2ct else "ct", outputs_of, channels)
    masks = case_masks(options.mask)
    files = [f for item in cases.values() for f in (item if isinstance(item, tuple) else (item,))]
    prepare_output_dir(out_dir, [input_path, model.path, model.path.parent, options.mask], files)
    case_of = {item: case for case, item in cases.items()}
    ndim = (2, 3) if translator.dims == 2 else 3  # a 2D model also translates 2D images

    def load(item: Path | tuple[Path, ...]) -> PreparedVolume:
        """One image, or the contrasts of a multi-contrast case in the model's channel order."""
        volumes = [read_image(path, ndim, series=options.series) for path in
                   (item if isinstance(item, tuple) else (item,))]
        mask = None if masks is None else read_mask(mask_of(case_of[item], masks, options.mask), volumes[0])
        return translator.prepare(volumes if isinstance(item, tuple) else volumes[0], mask)

    def process(case: str, prepared: PreparedVolume) -> list[Path]:
        mean, std = translator.run(prepared, options.overlap, options.tta, options.uncertainty)
        targets = outputs_of(case)
        volume = prepared.volume
        if options.format is OutputFormat.DICOM:
            written = [_write_dicom(targets[0], mean, volume, model, case, options)]
        else:
            written = [_write_output(targets[0], mean, volume, is_ct(translator.target))]
        if std is not None:
            written.append(write_image(targets[1], std, volume.meta, np.float32))
            written.append(write_uncertainty_preview(out_dir / f"{case}_std.png", mean, std, volume,
                                                     is_ct(translator.target)))
        return written

    report = run_batch(cases, outputs_of, process, options.overwrite, "translate", load=load,
                       single=is_single_input(input_path, cases))
    report.write_json(out_dir / report_name("translate", options.shard))
    return report


def _write_dicom(folder: Path, hu: np.ndarray, like: Volume, model: ModelFile, case: str,
                 options: TranslateOptions) -> Path:
    from medsynth.io.dicom_write import identity_for, write_ct_series

    run = model.path.parent.name if model.path is not None else "model"
    description = f"SYNTHETIC CT medsynth {model.family} {run}"
    identity = identity_for(like.path, options.series, description, options.patient_id or case,
                            options.patient_name or case)
    return write_ct_series(folder, hu, like.meta, identity)


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
