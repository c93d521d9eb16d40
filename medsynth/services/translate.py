"""``translate``: a folder (or one volume) of MR into synthetic CT, or back, on each input's own grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medsynth.choices import Direction, OutputFormat
from medsynth.data.bodymask import body_mask_any
from medsynth.data.geometry import ModelGrid
from medsynth.data.profile import InputCheck, check_input, mr_features
from medsynth.engine.runtime import pick_amp_dtype, pick_device, precision_name, process_rank
from medsynth.errors import ModelError, UsageError
from medsynth.families.registry import Capability, families_that
from medsynth.inference.engines import (
    Engine,
    OnnxNetwork,
    member_fingerprint,
    model_document,
    model_to_onnx,
    onnx_providers,
    read_onnx_metadata,
)
from medsynth.inference.predictor import inference_layout, network_device
from medsynth.inference.volume import Member, PreparedVolume, VolumeTranslator, is_ct
from medsynth.io.contract import Origin
from medsynth.io.formats import image_name, map_format
from medsynth.io.grids import read_mask
from medsynth.io.image import Volume, model_ndim, read_image, write_ct, write_image
from medsynth.io.modelpaths import resolve_model_paths
from medsynth.io.outputs import no_empty_folder_on_refusal, prepare_output_dir
from medsynth.metrics.calibration import ErrorCalibration
from medsynth.modelfile import TranslationMetadata, ensemble_fingerprint, load_model
from medsynth.services.batch import (
    BatchReport,
    CaseStatus,
    Provenance,
    case_masks,
    is_single_input,
    made_by,
    mask_of,
    output_stamp,
    parse_shard,
    report_name,
    run_batch,
    select_cases,
)
from medsynth.services.options import TranslateOptions

TRANSLATION_FAMILIES = families_that(Capability.TRANSLATE)


def _load_member(path: Path, direction: Direction, options: TranslateOptions, device: torch.device
                 ) -> tuple[dict[str, Any], TranslationMetadata, Member]:
    """One model (file or exported graph) as its metadata document, typed and raw, and an ensemble member."""
    if path.suffix == ".onnx":
        document = read_onnx_metadata(path)
        if document.get("family") not in TRANSLATION_FAMILIES:
            raise ModelError(f"{path}: exports a '{document.get('family')}' network; translate needs "
                             f"{' or '.join(TRANSLATION_FAMILIES)}.")
        metadata = _check_direction(document, path, direction)
        network: nn.Module = OnnxNetwork(path, providers=onnx_providers(device))
    else:
        model = load_model(path, TRANSLATION_FAMILIES)
        document = model_document(model)
        metadata = _check_direction(document, path, direction)
        network = (OnnxNetwork(model_to_onnx(model, direction.value), providers=onnx_providers(device))
                   if options.engine is Engine.ONNXRUNTIME else
                   inference_layout(model.build(metadata.directions[direction.value].network, device)))
    member = Member(network, metadata.patch_size, metadata.flip_axes, metadata.directions[direction.value].source)
    return document, metadata, member


def _check_direction(document: dict[str, Any], path: Path, direction: Direction) -> TranslationMetadata:
    metadata = TranslationMetadata.from_json(document, path)
    if direction.value not in metadata.directions:
        raise UsageError(f"{path}: this {document['family']} model translates {', '.join(metadata.directions)} "
                         f"only; --direction {direction.value} is not available.")
    return metadata


def _agreement(document: dict[str, Any], metadata: TranslationMetadata, direction: Direction) -> dict[str, Any]:
    """What every member of an ensemble must share: grid, normalisation and channels."""
    spec = document["directions"][direction.value]
    kwargs = document["networks"][spec["network"]]["kwargs"]
    return {"grid": (metadata.spatial_dims, [round(s, 6) for s in metadata.spacing], metadata.orientation),
            # The kind of input normalisation must agree; its learnt parameters (e.g. histogram landmarks of
            # each fold's training cases) may differ: every member normalises the input its own way.
            "normalisation": (spec["source"].get("modality"), spec["source"].get("scaling"), spec["target"]),
            "channels": (kwargs.get("in_channels", 1), kwargs.get("out_channels", 1), list(metadata.mr_channels)),
            "windows": (metadata.window_divisor, metadata.context_slices)}


def load_translator(model_path: Path, direction: Direction, options: TranslateOptions) -> VolumeTranslator:
    """The networks and preprocessing of ``direction`` from one model or an ensemble (a folder of runs
    or exported graphs); members that disagree in grid, normalisation or channels are refused."""
    paths = resolve_model_paths(model_path)
    if options.engine is Engine.TORCH and any(p.suffix == ".onnx" for p in paths):
        raise UsageError(f"{model_path}: exported ONNX graphs run with --engine onnxruntime.")
    device = pick_device(options.device)
    loaded = [(path, *_load_member(path, direction, options, device)) for path in paths]
    fingerprints = _distinct_members(paths, [document for _, document, _, _ in loaded])
    first_path, first_document, first, _ = loaded[0]
    for path, document, metadata, _ in loaded[1:]:
        expected, found = _agreement(first_document, first, direction), _agreement(document, metadata, direction)
        for key in expected:
            if expected[key] != found[key]:
                raise UsageError(f"{path}: disagrees with {first_path} in {key} ({found[key]} vs {expected[key]}); "
                                 "the models of an ensemble must share grid, normalisation, channels and window rule.")
    stochastic = any(metadata.mc_dropout for _, _, metadata, _ in loaded)
    if options.uncertainty and not (stochastic or options.tta or len(loaded) > 1):
        raise UsageError("--uncertainty needs a model trained with dropout (model: dropout: 0.1), --tta or several "
                         "models; this model is deterministic"
                         + (" (an exported graph has no dropout)." if options.engine is Engine.ONNXRUNTIME else "."))
    spec = first.directions[direction.value]
    return VolumeTranslator(
        members=[member for *_, member in loaded],
        dims=first.spatial_dims,
        grid=ModelGrid(first.spacing),
        source=spec.source,
        target=spec.target,
        amp_dtype=pick_amp_dtype(device, options.amp, options.cpu_bf16) if options.engine is Engine.TORCH else None,
        sw_batch_size=options.sw_batch_size,
        label=_label(first_document["family"], paths),
        fingerprint=ensemble_fingerprint(fingerprints),
        input_profile=first.input_profile,
        window_divisor=first.window_divisor,  # None in models that normalise per window
        mr_channels=first.mr_channels,
        context_slices=first.context_slices,
        mc_dropout=stochastic,
        # An ensemble's spread holds the members' disagreement too: a member's calibration does not apply.
        calibration=ErrorCalibration.from_json(first.error_calibration)
        if first.error_calibration and len(loaded) == 1 else None,
    )


def _distinct_members(paths: list[Path], documents: list[dict[str, Any]]) -> list[str]:
    """The members' model fingerprints; one model twice (a run beside its own exported graph, a copy) is a
    :class:`UsageError` naming both, since an ensemble would silently weigh it double."""
    seen: dict[str, Path] = {}
    for path, document in zip(paths, documents, strict=True):
        fingerprint = member_fingerprint(path, document)
        if fingerprint in seen:
            raise UsageError(f"{path}: is the same model as {seen[fingerprint]} (model {fingerprint}; a run and its "
                             "own export are one model); an ensemble counts each model once: move one of them out.")
        seen[fingerprint] = path
    return list(seen)


def _label(family: str, paths: list[Path]) -> str:
    """The family and run (folder) name, as a DICOM Series Description names the model."""
    first = paths[0]
    run = first.stem if first.suffix == ".onnx" else first.parent.name
    folder = first.parent if first.suffix == ".onnx" else first.parent.parent
    return f"{family} {run}" if len(paths) == 1 else f"{family} ensemble of {len(paths)} ({folder.name})"


def translate(model_path: Path, input_path: Path, out_dir: Path, options: TranslateOptions) -> BatchReport:
    """Translate every case of ``input_path`` into ``out_dir/<case>.nii.gz`` (+ ``_std`` maps).

    ``model_path``: a run folder, a model file, an exported ``.onnx`` (with ``--engine onnxruntime``)
    or a folder of them, whose outputs are averaged (an ensemble). CT→MR with a model of several MR
    contrasts writes one file per contrast, ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ... (and
    ``<case>_std_0000.nii.gz``, ...), named as its inputs would be.
    """
    out_dir = Path(out_dir)
    model_paths = resolve_model_paths(Path(model_path))
    translator = load_translator(Path(model_path), options.direction, options)
    # A DICOM sCT comes with a NIfTI std map: a float map is no CT series.
    std_format = map_format(options.format)

    mr2ct = options.direction is Direction.MR2CT
    written_channels = [""] if mr2ct or len(translator.mr_channels) == 1 else [f"_{c}" for c in translator.mr_channels]

    calibration = translator.calibration
    kind = translator.spread_kind(options.tta, options.uncertainty)
    calibrated = mr2ct and calibration is not None and kind == calibration.spread

    def outputs_of(case: str) -> list[Path]:
        paths = [out_dir / image_name(case + channel, options.format) for channel in written_channels]
        return paths + ([out_dir / image_name(f"{case}_std{channel}", std_format) for channel in written_channels]
                        if options.uncertainty else []) + \
            ([out_dir / image_name(f"{case}_error", std_format)] if calibrated else [])

    channels = list(translator.mr_channels) if mr2ct else []
    ranks = process_rank()
    cases = select_cases(Path(input_path), parse_shard(options.shard), ranks, "mr" if mr2ct else "ct", outputs_of,
                         channels)
    masks = case_masks(options.mask)
    files = [f for item in cases.values() for f in (item if isinstance(item, tuple) else (item,))]
    run_folders = [p.parent for p in model_paths if p.suffix != ".onnx"]  # an exported graph is one file
    ensemble = [Path(model_path)] if Path(model_path).is_dir() else []
    if options.format == OutputFormat.DICOM and not options.patient_position and \
            any(not (f.is_dir() or f.suffix.lower() == ".dcm") for f in files):
        raise UsageError(f"{input_path}: a DICOM sCT needs a Patient Position (a planning system places the CT by "
                         "it), which NIfTI/MHA inputs do not record; give --patient-position (e.g. HFS, head first "
                         "supine).")
    created = not out_dir.exists()
    prepare_output_dir(out_dir, [input_path, *ensemble, *model_paths, *run_folders, options.mask], files)
    case_of = {item: case for case, item in cases.items()}
    ndim = model_ndim(translator.dims)

    warnings: dict[str, str] = {}
    checks: dict[str, InputCheck] = {}

    def load(item: Path | tuple[Path, ...]) -> PreparedVolume:
        """One image, or the contrasts of a multi-contrast case in the model's channel order, with its input
        checks (in the prefetch thread, beside the network's work on the case before)."""
        case = case_of[item]
        volumes = [read_image(path, ndim, series=options.series) for path in
                   (item if isinstance(item, tuple) else (item,))]
        if mr2ct and (warning := not_mr_warning(volumes[0].array)):
            warnings[case] = warning
        mask = None if masks is None else read_mask(mask_of(case, masks, options.mask), volumes[0])
        prepared = translator.prepare(volumes if isinstance(item, tuple) else volumes[0], mask)
        if mr2ct and translator.input_profile:
            features = mr_features(prepared.image[0, 0].numpy(), translator.grid.spacing)
            if (check := check_input(features, translator.input_profile)) is not None:
                checks[case] = check
        return prepared

    def process(case: str, prepared: PreparedVolume) -> list[Path]:
        mean, std = translator.run(prepared, options.overlap, options.tta, options.uncertainty)
        targets, count = outputs_of(case), len(written_channels)
        means, stds = (mean[None], None if std is None else std[None]) if count == 1 else (mean, std)
        volume = prepared.volume
        expected = calibration.expected_error(stds[0]) if calibrated and stds is not None else None
        if expected is not None:
            qa[case] = expected_error_qa(calibration, expected, body_mask_any(means[0]), options.error_threshold)
        lines = [f"input check: {checks[case].summary()}" if case in checks else "",
                 f"expected error: {qa[case].summary()}" if case in qa else ""]
        origin = _origin(volume, case, options, stamp,
                         "QA " + "; ".join(line for line in lines if line) if any(lines) else "")
        written = [_write_output(t, m, volume, is_ct(translator.target), stamp, options.format, origin)
                   for t, m in zip(targets[:count], means, strict=True)]
        if stds is not None:
            written += [write_image(t, s, volume.meta, np.float32, stamp)
                        for t, s in zip(targets[count:2 * count], stds, strict=True)]
            written.append(write_uncertainty_preview(out_dir / f"{case}_std.png", means[0], stds[0], volume,
                                                     is_ct(translator.target)))
            if expected is not None:
                written.append(write_image(targets[-1], expected, volume.meta, np.float32, stamp))
        return written

    qa: dict[str, ErrorQA] = {}
    stamp = output_stamp(translator.fingerprint, translator.label)
    with no_empty_folder_on_refusal(out_dir, created):
        report = run_batch(cases, outputs_of, process, options.overwrite, "translate", load=load,
                           single=is_single_input(input_path, cases), workers=options.workers,
                           provenance=Provenance(translator.fingerprint, made_by),
                           # an onnxruntime session keeps the threads it was made with: it cannot follow a share
                           device=network_device(translator.members[0].network)
                           if options.engine is Engine.TORCH else None,
                           precision=precision_name(translator.amp_dtype) if options.engine is Engine.TORCH
                           else "float32 (onnxruntime)")
    for result in report.results:
        result.warning = warnings.get(result.case, "")
        if result.case in checks:
            result.input_check = checks[result.case].summary()
            if checks[result.case].unusual and not result.warning:
                result.warning = f"the input is unlike the model's training MR: {result.input_check}"
        if result.case in qa:
            result.expected_error = qa[result.case].summary()
            result.predicted_mae_hu = qa[result.case].interval
        elif mr2ct and options.uncertainty and result.status is CaseStatus.WRITTEN:
            result.expected_error = f"no expected error: {_not_calibrated(translator, kind)}"
    report.write_json(out_dir / report_name("translate", options.shard, ranks))
    return report


def _not_calibrated(translator: VolumeTranslator, kind: str | None) -> str:
    """Why a spread map is not turned into expected error (one clause)."""
    if len(translator.members) > 1:
        return "an ensemble's spread (the members' disagreement) has no calibration"
    if translator.calibration is None:
        return "the model file holds no calibration (trained without paired validation cases, or by an older medsynth)"
    return (f"the model was calibrated for {translator.calibration.spread} spread, this run measures {kind}; "
            "run with " + ("--tta and " if "tta" in translator.calibration.spread else "") + "--uncertainty")


@dataclass(frozen=True)
class ErrorQA:
    """A case's expected error: predicted MAE (HU) with its interval, and the share of the body above a threshold."""

    interval: tuple[float, float, float]  # (predicted, low, high) MAE in HU
    share_above: float
    threshold_hu: float

    def summary(self) -> str:
        mae, low, high = self.interval
        return (f"predicted MAE {mae:.0f} HU ({low:.0f}-{high:.0f}), {100 * self.share_above:.0f} % of the body "
                f"expected above {self.threshold_hu:g} HU")


def expected_error_qa(calibration: ErrorCalibration, expected: np.ndarray, body: np.ndarray,
                      threshold_hu: float) -> ErrorQA:
    """The QA figures of one case's expected-error map (HU) in its body mask."""
    share = float((expected[body] > threshold_hu).mean()) if body.any() else 0.0
    return ErrorQA(calibration.predicted_mae(expected, body), share, threshold_hu)


def not_mr_warning(image: np.ndarray) -> str | None:
    """A warning when an input given as MR looks like a CT in HU: MR magnitudes are never far below zero,
    a CT has air at about -1000 HU in a good share of its voxels."""
    air = float(np.mean(image < -900.0))
    if float(image.min()) < -500.0 and air > 0.05:
        return (f"does not look like an MR: {100 * air:.0f} % of its voxels lie below -900 (values "
                f"{float(image.min()):g} to {float(image.max()):g}), as air does on a CT in HU; is it a CT?")
    return None


def _origin(like: Volume, case: str, options: TranslateOptions, stamp: str, qa: str = "") -> Origin:
    """What a case's output is made from and whom it belongs to, for the formats that hold it (DICOM)."""
    return Origin(like.path, options.series, f"SYNTHETIC CT {stamp}", options.patient_id or "",
                  options.patient_name or "", options.patient_position, options.series_number, qa, case)


def _write_output(path: Path, values: np.ndarray, like: Volume, as_ct: bool, stamp: str, fmt: str,
                  origin: Origin) -> Path:
    if as_ct:
        return write_ct(path, values, like.meta, stamp, fmt, origin)
    return write_image(path, values, like.meta, np.float32, stamp, fmt, origin)


def write_uncertainty_preview(path: Path, mean: np.ndarray, std: np.ndarray, like: Volume, as_ct: bool) -> Path:
    """Axial, coronal and sagittal mid-slices of the synthetic image beside its standard-deviation map."""
    from medsynth.viz import auto_window, mid_slices, save_grid, window

    shown = window(mean, -1000, 1500) if as_ct else auto_window(mean)
    image = mid_slices(shown, like.meta.affine)
    spread = mid_slices(window(std, 0, max(float(np.percentile(std, 99.5)), 1.0)), like.meta.affine)
    unit = "HU" if as_ct else "a.u."
    titles = ["synthetic axial", "coronal", "sagittal", f"std ({unit}) axial", "coronal", "sagittal"]
    return save_grid(path, [list(image), list(spread)], titles)
