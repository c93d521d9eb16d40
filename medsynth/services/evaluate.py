"""Scoring folders of synthetic CTs against their references, case by case (SPEC §5)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medsynth.choices import Protocol
from medsynth.data.bodymask import PADDING_BELOW_HU, body_mask
from medsynth.errors import InputError, MedsynthError
from medsynth.io import Volume, read_image, resolve_inputs
from medsynth.io.casefolders import role_files, synthrad_cases
from medsynth.io.cases import is_dicom_folder
from medsynth.io.grids import check_same_grid, read_mask
from medsynth.io.outputs import check_not_an_input
from medsynth.metrics.report import CaseFailure, CaseResult, EvaluationReport
from medsynth.metrics.segmentation import CLASSES as SEGMENTED
from medsynth.metrics.segmentation import hu_segmentation_metrics
from medsynth.metrics.synthrad import synthrad2023, synthrad2025
from medsynth.metrics.tissue import tissue_metrics

# Largest difference of any affine entry (mm) at which two images still share one grid.
# A CT in HU shows air below this value; a prediction without any where its reference has air is not CT.
AIR_BELOW_HU = -200.0


_SCORERS = {Protocol.synthrad2023: synthrad2023, Protocol.synthrad2025: synthrad2025}


def metric_names(protocol: Protocol, segmentation: bool = False) -> tuple[str, ...]:
    """Report columns: the protocol's image metrics, then the per-tissue ones (and with ``segmentation`` the
    HU-class Dice and HD95, :mod:`medsynth.metrics.segmentation`)."""
    structural = "ssim" if Protocol(protocol) is Protocol.synthrad2023 else "ms_ssim"
    extra = tuple(f"hu_{kind}_{name}" + ("_mm" if kind == "hd95" else "") for name in SEGMENTED
                  for kind in ("dice", "hd95")) if segmentation else ()
    return ("mae", "psnr", structural, "mae_air", "mae_soft", "mae_bone", "bone_dice", *extra)


def evaluate_folders(pred: Path, ref: Path, mask: Path | None = None,
                     protocol: Protocol = Protocol.synthrad2023,
                     progress: Callable[[str], None] | None = None,
                     outputs: Sequence[Path | None] = (), series: tuple[str, ...] = (),
                     segmentation: bool = False) -> EvaluationReport:
    """Score every prediction in ``pred`` against the reference of the same case id in ``ref``.

    ``pred``/``ref``/``mask`` are each an image, a DICOM series folder or a folder of them; ``ref``
    (and ``pred``) may also be a SynthRAD task folder (``<case>/ct.*``), whose ``<case>/mask.*`` are
    the masks unless ``mask`` is given. Two single images are paired whatever their names. Without
    any mask the body mask of the reference is used (:func:`medsynth.data.bodymask.body_mask`); a
    single mask file serves every case. A case missing on one side, or failing to load or agree in
    grid, is a failure of that case; if no case at all can be scored, :class:`InputError` says why. ``progress`` is told
    each case id before it is scored. Side products beside the predictions (``<case>_std`` maps and
    other ``<case>_*`` images whose case is scored) are left out and listed in ``report.ignored``; a
    prediction that shows no air where its reference does (an MR, normalised values) is scored with
    a warning in ``report.warnings``. ``outputs`` (the files the caller will write the report to) are
    checked first: none may be an input or lie inside an input folder (:class:`UsageError`).
    ``series``: Series Instance UIDs choosing among several series of a DICOM folder. ``segmentation`` adds
    the HU-class Dice and HD95 of SynthRAD2025's segmentation metrics (:mod:`medsynth.metrics.segmentation`).
    """
    protocol = Protocol(protocol)
    for output in outputs:
        if output is not None:
            check_not_an_input(Path(output), [pred, ref, mask])
    pairs, failures, ignored = match_cases(Path(pred), Path(ref))
    masks, mask = body_masks(mask, Path(ref), pairs)
    results, warnings = [], []
    for case, (pred_path, ref_path) in pairs.items():
        if progress is not None:
            progress(case)
        try:
            mask_path = mask_for(case, masks, mask)
            metrics, warning = _score_case(pred_path, ref_path, mask_path, protocol, series, segmentation)
            results.append(CaseResult(case, metrics))
            if warning:
                warnings.append(CaseFailure(case, warning))
        except MedsynthError as error:
            failures.append(CaseFailure(case, str(error)))
    if not results:
        raise InputError(_nothing_scored(failures))
    return EvaluationReport(protocol.value, metric_names(protocol, segmentation), results, sorted(failures), ignored,
                            warnings)


def match_cases(pred: Path, ref: Path) -> tuple[dict[str, tuple[Path, Path]], list[CaseFailure], list[str]]:
    """Pairs (prediction, reference) by case id; a failure for every case found on one side only; and the
    predictions left out as side products (``<case>_<anything>`` of a paired case, e.g. ``_std`` maps)."""
    preds, refs = resolve_inputs(pred, "ct"), resolve_inputs(ref, "ct")
    if _is_single_image(pred) and _is_single_image(ref):
        [(case, ref_path)], [pred_path] = refs.items(), preds.values()
        return {case: (pred_path, ref_path)}, [], []
    common = sorted(preds.keys() & refs.keys())
    ignored = sorted(c for c in preds.keys() - refs.keys() if any(c.startswith(f"{p}_") for p in common))
    preds = {c: p for c, p in preds.items() if c not in ignored}
    if not common:
        raise InputError(f"no case of {pred} ({_some(preds)}) has a reference of the same name in {ref} "
                         f"({_some(refs)}); name each prediction after its reference case.")
    only_pred, only_ref = preds.keys() - refs.keys(), refs.keys() - preds.keys()
    failures = [CaseFailure(c, f"no reference for {preds[c]} in {ref}.") for c in only_pred]
    failures += [CaseFailure(c, f"no prediction in {pred} for {refs[c]}.") for c in only_ref]
    return {c: (preds[c], refs[c]) for c in common}, failures, ignored


def not_ct_warning(prediction: np.ndarray, reference: np.ndarray) -> str | None:
    """A warning when ``prediction`` cannot be a CT in HU: the reference has air (< -200 HU) in more than
    1 % of its voxels, the prediction in fewer than a tenth as many (an MR, or values not in HU)."""
    reference_air = float(np.mean(reference < AIR_BELOW_HU))
    predicted_air = float(np.mean(prediction < AIR_BELOW_HU))
    if reference_air > 0.01 and predicted_air < 0.1 * reference_air:
        return (f"does not look like a CT in HU: {100 * predicted_air:.1f} % of its voxels are air (< "
                f"{AIR_BELOW_HU:g} HU) against {100 * reference_air:.0f} % of the reference's (values "
                f"{float(prediction.min()):g} to {float(prediction.max()):g}); is it an MR or in other units?")
    return None


def _score_case(pred_path: Path, ref_path: Path, mask_path: Path | None, protocol: Protocol,
                series: tuple[str, ...] = (), segmentation: bool = False) -> tuple[dict[str, float], str | None]:
    prediction, reference, mask = load_case(pred_path, ref_path, mask_path, series)
    try:
        scores = _SCORERS[Protocol(protocol)](prediction.array, reference.array, mask)
    except InputError as error:
        raise InputError(f"{ref_path}: {error}") from error
    warning = not_ct_warning(prediction.array, reference.array)
    scores.update(tissue_metrics(prediction.array, reference.array, mask))
    if segmentation:
        spacing = np.linalg.norm(np.asarray(reference.meta.affine)[:3, :3], axis=0)[:reference.array.ndim]
        scores.update(hu_segmentation_metrics(prediction.array, reference.array, mask, spacing))
    return scores, warning


def load_case(pred_path: Path, ref_path: Path, mask_path: Path | None,
              series: tuple[str, ...] = ()) -> tuple[Volume, Volume, np.ndarray]:
    """Prediction, reference and body mask (boolean, reference grid) of one case, checked to share a grid.

    Without ``mask_path`` the reference's body mask is used; ``series`` picks DICOM series as in
    :func:`medsynth.io.read_image`. Raises :class:`InputError` for an unreadable file, NaN/Inf in the
    prediction, or a grid that differs from the reference's.
    """
    reference = read_image(ref_path, series=series)
    # A constant prediction (a collapsed network) is a bad result to score, not an unreadable input.
    prediction = read_image(pred_path, check_values=False, series=series)
    _check_finite(prediction)
    check_same_grid(prediction, reference, "prediction", "resample it onto the reference grid")
    mask = body_mask(reference.array) if mask_path is None else read_mask(mask_path, reference)
    # Below the scanner's range (padding outside the reconstruction circle) nothing was measured: never scored.
    mask = mask & (reference.array >= PADDING_BELOW_HU)
    if not mask.any():
        raise InputError(f"{mask_path or ref_path}: the mask holds no voxel of measured CT (all below "
                         f"{PADDING_BELOW_HU:.0f} HU, the scanner's padding); give a mask that covers the body.")
    return prediction, reference, mask


def _check_finite(volume: Volume) -> None:
    bad = int(np.size(volume.array) - np.count_nonzero(np.isfinite(volume.array)))
    if bad:
        raise InputError(f"{volume.path}: contains {bad} NaN or infinite voxels; fix the prediction.")


def resolve_masks(mask: Path | None, pairs: dict[str, tuple[Path, Path]]) -> dict[str, Path] | None:
    """Mask file per case id from a folder, or one mask file for every case; ``None`` for no masks."""
    if mask is None:
        return None
    masks = resolve_inputs(Path(mask))
    if _is_single_image(Path(mask)):
        # One mask file given directly serves every case; the grid check guards against misuse.
        return dict.fromkeys(pairs, next(iter(masks.values())))
    return masks


def body_masks(mask: Path | None, ref: Path,
               pairs: dict[str, tuple[Path, Path]]) -> tuple[dict[str, Path] | None, Path | None]:
    """Body mask file per case and where they come from: ``mask`` (a folder or one file), else the
    ``<case>/mask.*`` files of a SynthRAD REF tree; ``(None, None)`` when the body is to be computed."""
    if mask is not None:
        return resolve_masks(mask, pairs), mask
    masks = _synthrad_masks(ref)
    return masks, (None if masks is None else ref)


def _synthrad_masks(ref: Path) -> dict[str, Path] | None:
    """The body masks of a SynthRAD REF tree (``<case>/mask.*``), when it is one and has them all."""
    cases = synthrad_cases(ref)
    if cases is None or not any("mask" in roles for roles in cases.values()):
        return None
    return role_files(cases, "mask", ref)


def mask_for(case: str, masks: dict[str, Path] | None, folder: Path | None, option: str = "--mask") -> Path | None:
    """The case's mask file (``None`` without masks); a case without one is an :class:`InputError`."""
    if masks is None:
        return None
    if case not in masks:
        raise InputError(f"no mask for case '{case}' in {folder}; add one or leave out {option}.")
    return masks[case]


def _is_single_image(path: Path) -> bool:
    return path.is_file() or is_dicom_folder(path)


def _some(cases: dict[str, Path], shown: int = 3) -> str:
    names = sorted(cases)
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _nothing_scored(failures: list[CaseFailure]) -> str:
    first = min(failures)
    if len(failures) == 1:
        return first.reason
    return f"none of {len(failures)} cases could be evaluated; {first.case}: {first.reason}"
