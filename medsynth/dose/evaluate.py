"""``evaluate --dose``: per case, plan on the CT, recompute on the synthetic CT, compare the doses (SPEC §8).

The protocol (docs/evaluation.md): a target from ``--target`` or the default sphere of
:func:`medsynth.dose.protocol.default_target`; the body from the mask; a photon IMRT and/or a
proton IMPT plan optimised on the real CT for a 2 Gy fraction; the same beams and weights
recomputed on the synthetic CT; gamma, dose differences, DVH points and proton range shifts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medsynth.dose import require_dose_extra
from medsynth.dose.protocol import DoseSettings, Modality, PatientFrame, default_target
from medsynth.errors import InputError
from medsynth.io import resolve_inputs
from medsynth.io.grids import check_same_grid, read_mask
from medsynth.io.image import Volume, read_image
from medsynth.io.outputs import check_not_an_input
from medsynth.metrics.calibration import auroc
from medsynth.metrics.report import CaseFailure, CaseResult, EvaluationReport
from medsynth.services.evaluate import body_masks, load_case, mask_for, match_cases, resolve_masks

if TYPE_CHECKING:  # pyRadPlan is imported only once the extra is known to be there
    from medsynth.dose.planning import Doses, TreatmentPlan

# Told (stage, beams done, beams total) while a plan's beams are computed; see planning.BeamProgress.
BeamProgress = Callable[[str, int, int], None]

# Per plan kind: column name -> (heading, decimals). Differences are sCT minus CT, in % of the prescription.
_COMMON_LABELS = {
    "gamma_2_2": ("γ 2%/2mm (%)", 1),
    "gamma_1_1": ("γ 1%/1mm (%)", 1),
    "mad_body": ("|ΔD| body (%)", 2),
    "mad_high": ("|ΔD| >90% (%)", 2),
    "d98": ("ΔD98 (%)", 2),
    "d50": ("ΔD50 (%)", 2),
    "d2": ("ΔD2 (%)", 2),
    "dmean": ("ΔDmean body (%)", 2),
}


@dataclass
class CaseDoses:
    """What a case's figure shows for one plan kind: doses on the CT grid, gamma 2%/2 mm, in the frame."""

    kind: str
    ct_dose: np.ndarray
    sct_dose: np.ndarray
    gamma: np.ndarray  # on the CT grid (nearest dose-grid point), NaN where not scored
    pass_rate: float


#: With expected-error maps (translate --tta --uncertainty of a calibrated model): how they meet the gamma failures
_OVERLAP_LABELS = {
    "gamma_fail_flagged": ("γ-fail flagged (%)", 1),
    "gamma_fail_auroc": ("γ-fail AUROC", 3),
}
EXPECTED_ERROR_HU = 100.0  # "flagged": expected error above this (translate's --error-threshold default)


def dose_metric_names(modality: Modality, settings: DoseSettings, expected_error: bool = False) -> tuple[str, ...]:
    """Report columns, per plan kind: gamma pass rates, dose differences, for protons the range shift per field,
    and with ``expected_error`` maps how they overlap the gamma 2%/2 mm failures."""
    names: list[str] = []
    for kind in Modality(modality).kinds():
        names += [f"{kind}_{n}" for n in _COMMON_LABELS]
        names += [f"{kind}_{n}" for n in _OVERLAP_LABELS] if expected_error else []
        if kind == "proton":
            names += [f"proton_range_{i + 1}" for i in range(len(settings.proton_gantry_deg))]
    return tuple(names)


def dose_labels(settings: DoseSettings) -> dict[str, tuple[str, int]]:
    """Column headings of :func:`dose_metric_names`."""
    labels = {f"{kind}_{n}": label for kind in ("photon", "proton")
              for n, label in {**_COMMON_LABELS, **_OVERLAP_LABELS}.items()}
    for i, angle in enumerate(settings.proton_gantry_deg):
        labels[f"proton_range_{i + 1}"] = (f"Δrange {angle:g}° (mm)", 2)
    return labels


def evaluate_dose(pred: Path, ref: Path, mask: Path | None = None, target: Path | None = None,
                  modality: Modality = Modality.both, settings: DoseSettings | None = None,
                  figures: Path | None = None, progress: Callable[[str, int, int], None] | None = None,
                  beam_progress: BeamProgress | None = None, series: tuple[str, ...] = ()) -> EvaluationReport:
    """Dose metrics of every synthetic CT in ``pred`` against the CT of the same case in ``ref``.

    Cases are matched, body masks found and DICOM ``series`` picked as by
    :func:`medsynth.services.evaluate.evaluate_folders`; ``mask`` gives the body (default: SynthRAD
    ``<case>/mask.*`` files, else the reference's body mask), ``target`` the target masks (a folder or one file;
    default: the sphere of :func:`medsynth.dose.protocol.default_target`). With ``figures``, a PNG
    per case (``<case>_dose.png``) is written there (a :class:`medsynth.errors.UsageError` if that is
    an input or inside one). ``progress`` is told (case, cases done, cases)
    before each case, ``beam_progress`` (stage, beams done, beams) as beams are computed. A case
    that cannot be planned or compared is a failure of that case; the others go on. Raises
    :class:`medsynth.errors.UsageError` if the ``dose`` extra is missing and
    :class:`InputError` if no case could be evaluated.
    """
    require_dose_extra()
    settings = settings or DoseSettings()
    modality = Modality(modality)
    if figures is not None:
        check_not_an_input(Path(figures), [pred, ref, mask, target])
    pairs, failures, _ = match_cases(Path(pred), Path(ref))  # side products (``<case>_std``) are not CTs
    (masks, mask), targets = body_masks(mask, Path(ref), pairs), resolve_masks(target, pairs)
    error_maps = expected_error_maps(Path(pred), pairs)
    results = []
    for done, (case, (pred_path, ref_path)) in enumerate(pairs.items()):
        if progress is not None:
            progress(case, done, len(pairs))
        try:
            prediction, reference, body = load_case(pred_path, ref_path, mask_for(case, masks, mask), series)
            target_path = mask_for(case, targets, target, "--target")
            target_mask = None if target_path is None else read_mask(target_path, reference, "target")
            expected = None if case not in error_maps else _expected_error(error_maps[case], reference)
            metrics, shown = evaluate_case_dose(prediction.array, reference.array, reference.meta.affine, body,
                                                target_mask, modality, settings, beam_progress, expected)
            if figures is not None:
                from medsynth.dose.figure import write_case_figure

                frame = PatientFrame.of(reference.meta.affine)
                write_case_figure(Path(figures) / f"{case}_dose.png", frame.forward(reference.array),
                                  frame.spacing, shown, settings.prescription_gy)
            results.append(CaseResult(case, metrics))
        except Exception as error:  # any case's failure (pyRadPlan's too) must not stop the rest
            failures.append(CaseFailure(case, _reason(error, ref_path)))
    if not results:
        first = min(failures)
        raise InputError(first.reason if len(failures) == 1 else
                         f"none of {len(failures)} cases could be evaluated by dose; {first.case}: {first.reason}")
    return EvaluationReport(f"dose ({modality.value})", dose_metric_names(modality, settings, bool(error_maps)),
                            results, sorted(failures), labels=dose_labels(settings))


def evaluate_case_dose(sct: np.ndarray, ct: np.ndarray, affine: np.ndarray, body: np.ndarray,
                       target: np.ndarray | None, modality: Modality, settings: DoseSettings,
                       beam_progress: BeamProgress | None = None, expected: np.ndarray | None = None
                       ) -> tuple[dict[str, float], list[CaseDoses]]:
    """Dose metrics of one case: ``sct``, ``ct`` (HU), ``body``/``target`` (boolean) and the optional
    ``expected`` error map (HU, from ``translate --tta --uncertainty`` with a calibrated model) share one grid
    (X, Y, Z).

    ``affine`` (RAS+, mm) places the grid in the patient so the beams come from the stated
    directions. Returns the metrics (names of :func:`dose_metric_names`) and what the figure shows.
    """
    from medsynth.dose.planning import make_plan, recompute

    frame = PatientFrame.of(affine)
    ct_f, sct_f, body_f = frame.forward(ct), frame.forward(sct), frame.forward(body)
    target_f = default_target(body_f, frame.spacing) if target is None else frame.forward(target) & body_f
    if not target_f.any():
        raise InputError("the target lies outside the body; give a target inside the body mask.")
    metrics: dict[str, float] = {}
    shown = []
    for kind in Modality(modality).kinds():
        progress = None if beam_progress is None else (lambda s, d, t, k=kind: beam_progress(f"{k}: {s}", d, t))
        plan = make_plan(kind, ct_f, body_f, target_f, frame.spacing, settings, progress)
        kind_metrics, doses = compare_doses(plan, recompute(plan, sct_f, progress), body_f, target_f, settings)
        metrics.update(kind_metrics)
        if expected is not None:
            metrics.update({f"{kind}_{name}": value for name, value in
                            gamma_overlap(doses.gamma, frame.forward(expected), body_f).items()})
        shown.append(doses)
    return metrics, shown


def gamma_overlap(gamma: np.ndarray, expected: np.ndarray, body: np.ndarray,
                  threshold_hu: float = EXPECTED_ERROR_HU) -> dict[str, float]:
    """How an expected-error map (HU) meets the gamma 2%/2 mm failures (γ > 1) among the scored body voxels:
    the percentage of failing voxels it flags (expected error above ``threshold_hu``) and its AUROC for them
    (0.5: no better than chance). NaN where no voxel fails."""
    scored = body & ~np.isnan(gamma)
    failing = gamma[scored] > 1.0
    flagged = float(100.0 * np.mean(expected[scored][failing] > threshold_hu)) if failing.any() else float("nan")
    return {"gamma_fail_flagged": flagged, "gamma_fail_auroc": auroc(expected[scored], failing)}


def expected_error_maps(pred: Path, pairs: dict[str, tuple[Path, Path]]) -> dict[str, Path]:
    """The expected-error maps (``<case>_error``, translate's side product) beside the predictions, by case."""
    found = resolve_inputs(pred, "ct") if pred.is_dir() else {}
    return {case: found[f"{case}_error"] for case in pairs if f"{case}_error" in found}


def _expected_error(path: Path, like: Volume) -> np.ndarray:
    """An expected-error map (HU) on the grid of ``like``; :class:`InputError` naming it on another grid."""
    expected = read_image(path, ndim=like.array.ndim, check_values=False)
    check_same_grid(expected, like, "expected-error map", "translate writes it on the sCT's grid")
    return expected.array.astype(np.float32)


def compare_doses(plan: TreatmentPlan, doses: Doses, body: np.ndarray, target: np.ndarray,
                  settings: DoseSettings) -> tuple[dict[str, float], CaseDoses]:
    """The metrics of ``doses`` (the plan recomputed on the sCT) against the plan's own dose on the CT.

    ``body``/``target`` are boolean in the patient frame on the CT grid. Names as in :func:`dose_metric_names`.
    """
    from medsynth.dose.metrics import GAMMA_CRITERIA, dose_differences, gamma_index, pass_rate, range_shifts

    kind, reference = plan.kind, plan.reference
    gammas = [gamma_index(reference.on_dose_grid, doses.on_dose_grid, reference.dose_grid_spacing, dd, dta,
                          settings.gamma_cutoff_percent, settings.gamma_interp_fraction)
              for dd, dta in GAMMA_CRITERIA]
    metrics = {f"{kind}_gamma_2_2": pass_rate(gammas[0]), f"{kind}_gamma_1_1": pass_rate(gammas[1])}
    differences = dose_differences(reference.total, doses.total, body, target, settings.prescription_gy)
    metrics.update({f"{kind}_{name}": value for name, value in differences.items()})
    if kind == "proton":
        shifts = range_shifts(reference.beams, doses.beams, plan.axes, plan.spacing)
        metrics.update({f"proton_range_{i + 1}": shift for i, shift in enumerate(shifts)})
    gamma = _on_ct_grid(gammas[0], reference.dose_grid_spacing, reference.dose_grid_origin, body.shape, plan.spacing)
    return metrics, CaseDoses(kind, reference.total, doses.total, gamma, metrics[f"{kind}_gamma_2_2"])


def _on_ct_grid(values: np.ndarray, spacing: tuple[float, ...], origin: tuple[float, ...],
                shape: tuple[int, ...], ct_spacing: tuple[float, ...]) -> np.ndarray:
    """Nearest dose-grid value at each CT voxel (both grids in mm from the CT's first voxel)."""
    index = [np.clip(np.rint((np.arange(n) * cs - o) / s).astype(int), 0, m - 1)
             for n, cs, o, s, m in zip(shape, ct_spacing, origin, spacing, values.shape, strict=True)]
    return values[np.ix_(*index)]


def _reason(error: Exception, ref_path: Path) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, InputError):
        return text
    return f"{ref_path}: dose evaluation failed ({type(error).__name__}: {text})"
