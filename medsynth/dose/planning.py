"""pyRadPlan at the boundary: a plan optimised on the CT, and the same plan recomputed on another CT.

Arrays here are in the patient frame of :mod:`medsynth.dose.protocol` (L, P, S), CT in HU, doses in
Gy for one fraction. pyRadPlan is imported at module level: import this module only after
:func:`medsynth.dose.require_dose_extra`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from pyRadPlan import CT, IonPlan, PhotonPlan, StructureSet, fluence_optimization
from pyRadPlan.core import ProgressReport
from pyRadPlan.cst import create_voi
from pyRadPlan.dose.engines import get_engine
from pyRadPlan.optimization.objectives import MeanDose, SquaredDeviation, SquaredOverdosing
from pyRadPlan.stf import get_generator, validate_stf

from medsynth.dose.protocol import DoseSettings

# Told (stage, beams done, beams in the plan) while beams are being computed.
BeamProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BeamAxis:
    """A beam's central axis: through ``isocentre`` (voxel index, float) along ``direction`` (unit, frame)."""

    gantry_deg: float
    isocentre: np.ndarray
    direction: np.ndarray


@dataclass
class Doses:
    """One plan's dose on one CT: total and per beam on the CT grid, total on the dose grid (Gy)."""

    total: np.ndarray
    beams: list[np.ndarray]
    on_dose_grid: np.ndarray
    dose_grid_spacing: tuple[float, float, float]
    dose_grid_origin: tuple[float, float, float]  # mm from the centre of the CT's first voxel


@dataclass
class TreatmentPlan:
    """A plan optimised on a CT: its beams, fixed beamlet/spot weights, and its dose on that CT."""

    kind: str
    spacing: tuple[float, float, float]
    weights: np.ndarray
    axes: list[BeamAxis]
    reference: Doses
    _pln: object
    _stf: object
    _cst: StructureSet


def make_plan(kind: str, hu: np.ndarray, body: np.ndarray, target: np.ndarray, spacing: tuple[float, float, float],
              settings: DoseSettings, progress: BeamProgress | None = None) -> TreatmentPlan:
    """Optimise a ``kind`` ("photon" or "proton") plan on ``hu`` for ``target`` inside ``body``.

    Photon: coplanar beams at ``settings.photon_gantry_deg`` with IMRT fluence optimisation; proton:
    fields at ``settings.proton_gantry_deg`` with spot-weight (IMPT) optimisation. Objectives: target
    at the prescription (squared deviation, weight 1000), body under half of it (squared overdosing,
    weight 10) and low on average (mean dose, weight 1). The weights are then scaled so that the
    target's median dose on this CT equals the prescription exactly. All arrays (X, Y, Z) in the
    patient frame; ``spacing`` in mm.
    """
    rx = settings.prescription_gy
    ct = _ct(hu, spacing)
    cst = _structures(ct, body, target, spacing)
    cst.vois[0].objectives = [SquaredDeviation(priority=1000.0, d_ref=rx)]
    cst.vois[1].objectives = [SquaredOverdosing(priority=10.0, d_max=0.5 * rx), MeanDose(priority=1.0, d_ref=0.0)]
    angles = np.asarray(settings.photon_gantry_deg if kind == "photon" else settings.proton_gantry_deg, float)
    common = {"num_of_fractions": 1, "prescribed_dose": rx, "machine": "Generic"}
    pln = PhotonPlan(**common) if kind == "photon" else IonPlan(radiation_mode="protons", **common)
    pln.prop_stf = {"gantry_angles": angles, "couch_angles": np.zeros_like(angles), "bixel_width": settings.bixel_mm}
    pln.prop_dose_calc = {"dose_grid": {"resolution": dict.fromkeys("xyz", settings.dose_grid_mm)}}
    pln.prop_opt = {"max_iter": settings.max_iterations, "display": False}
    with _quiet():
        generator = get_generator(pln)
        generator.console_progress = False
        stf = validate_stf(generator.generate(ct, cst))
        dij = _influence(pln, ct, cst, stf, "plan on CT", progress)
        weights = np.asarray(fluence_optimization(ct, cst, stf, dij, pln), dtype=np.float64)
        dose = _doses(dij, weights, ct)
    median = float(np.median(dose.total[target]))
    if not median > 0:
        raise ValueError("the optimised plan gives no dose to the target")
    weights *= rx / median
    with _quiet():
        reference = _doses(dij, weights, ct)
    axes = [_axis(beam, ct) for beam in stf.beams]
    return TreatmentPlan(kind, spacing, weights, axes, reference, pln, stf, cst)


def recompute(plan: TreatmentPlan, hu: np.ndarray, progress: BeamProgress | None = None) -> Doses:
    """The plan's dose on another CT of the same grid: same beams, same weights, nothing re-optimised.

    It goes through the same steps as the plan's own dose (dose influence matrix, then the fixed
    weights), so the CT itself gives back exactly the reference dose.
    """
    ct = _ct(hu, plan.spacing)
    cst = StructureSet(vois=[create_voi(name=v.name, voi_type=v.voi_type, mask=v.mask, ct_image=ct)
                             for v in plan._cst.vois], ct_image=ct)
    with _quiet():
        dij = _influence(plan._pln, ct, cst, plan._stf, "recompute on sCT", progress)
        return _doses(dij, plan.weights, ct)


def _influence(pln, ct: CT, cst: StructureSet, stf, stage: str, progress: BeamProgress | None):
    engine = get_engine(pln)
    engine.console_progress = False
    if progress is not None:
        def observe(report) -> None:
            if isinstance(report, ProgressReport) and report.top is not None and report.top.name == "Beam":
                progress(stage, report.top.current, report.top.total or 0)
        engine.add_report_observer(observe)
    return engine.calc_dose_influence(ct, cst, stf)


def _doses(dij, weights: np.ndarray, ct: CT) -> Doses:
    on_ct = dij.compute_result_ct_grid(weights)
    on_grid = dij.compute_result_dose_grid(weights)["physical_dose"]
    origin = np.asarray(on_grid.GetOrigin()) - np.asarray(ct.cube_hu.GetOrigin())
    return Doses(total=_array(on_ct["physical_dose"]), beams=[_array(b) for b in on_ct["physical_dose_beam"]],
                 on_dose_grid=_array(on_grid), dose_grid_spacing=_triple(on_grid.GetSpacing()),
                 dose_grid_origin=_triple(origin))


def _axis(beam, ct: CT) -> BeamAxis:
    # The isocentre is in world mm; the source point is relative to it, so the beam travels along its negative.
    origin, spacing = np.asarray(ct.cube_hu.GetOrigin()), np.asarray(ct.cube_hu.GetSpacing())
    source = np.asarray(beam.source_point, dtype=np.float64)
    return BeamAxis(float(beam.gantry_angle), (np.asarray(beam.iso_center, dtype=np.float64) - origin) / spacing,
                    -source / np.linalg.norm(source))


def _triple(values) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return (x, y, z)


def _ct(hu: np.ndarray, spacing: tuple[float, float, float]) -> CT:
    return CT(cube_hu=_image(hu.astype(np.float32), spacing))


def _structures(ct: CT, body: np.ndarray, target: np.ndarray, spacing: tuple[float, float, float]) -> StructureSet:
    vois = [create_voi(name="target", voi_type="TARGET", mask=_image(target.astype(np.uint8), spacing), ct_image=ct),
            create_voi(name="body", voi_type="EXTERNAL", mask=_image(body.astype(np.uint8), spacing), ct_image=ct)]
    return StructureSet(vois=vois, ct_image=ct)


def _image(array: np.ndarray, spacing: tuple[float, float, float]) -> sitk.Image:
    # SimpleITK's array view is (z, y, x); ours is (x, y, z).
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    return image


def _array(image: sitk.Image) -> np.ndarray:
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0)).astype(np.float64)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # pyRadPlan warns that no GPU is present and its ray tracer divides by zero on axis-parallel
    # rays (handled there); neither is news to a user of medsynth.
    # Its loggers also say which default engine, solver and grid it took, which we chose on purpose.
    library = logging.getLogger("pyRadPlan")
    level = library.level
    library.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield
    finally:
        library.setLevel(level)
