"""A deterministic digital head: CT in HU, T1-like MR, tissue labels and a patient version (SPEC §6).

Every structure is an approximate signed distance function (SDF, millimetres, negative inside) of
ellipsoids, joined by smooth unions and offset into layers of varying thickness (scalp, skull
tables, diploë, CSF, cortex). Tissues are painted over one another in anatomical order with a
partial-volume fraction taken from their SDF, so edges are anti-aliased at any voxel size and the
label of a voxel is its majority tissue. The anatomy is laid out in millimetres for a
160 x 192 x 160 mm field and scaled to fit other fields; all randomness comes from one
``np.random.default_rng`` per subject, so a seed gives the same head, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

LABEL_NAMES: tuple[str, ...] = ("background", "soft_tissue", "bone", "brain", "csf", "air_cavity")
DEFAULT_SHAPE: tuple[int, int, int] = (80, 96, 80)
DEFAULT_SPACING = 2.0
_FIELD_MM = np.array([168.0, 202.0, 168.0])  # the anatomy below fits this field (RAS) with a margin
_AIR_HU = -1000.0
MEDIAN_CORTICAL_HU = 1350.0  # centre of every subject's cortical-density field
_BRAIN_CENTRE = (0.0, -4.0, 14.0)  # centre of the cerebrum in anatomy mm
Seed = int | tuple[int, ...]  # a tuple such as (dataset seed, subject index) names one subject


@dataclass(frozen=True)
class _Tissue:
    name: str
    label: int  # index into LABEL_NAMES
    ct: float  # Hounsfield units
    mr: float  # T1-weighted signal, arbitrary units
    t2: float  # T2-weighted signal: fluid bright, fat intermediate, bone and air dark


_SKIN = _Tissue("skin", 1, 45.0, 420.0, 380.0)
_FAT = _Tissue("fat", 1, -100.0, 950.0, 600.0)
_MUSCLE = _Tissue("muscle", 1, 45.0, 330.0, 250.0)
_VITREOUS = _Tissue("vitreous", 1, 10.0, 120.0, 1000.0)
_BONE = _Tissue("cortical_bone", 2, 1300.0, 40.0, 30.0)  # CT and MR values are replaced by spatial fields
_MARROW = _Tissue("diploe", 2, 450.0, 280.0, 330.0)  # trabecular bone with fatty marrow
_GM = _Tissue("grey_matter", 3, 40.0, 520.0, 520.0)
_WM = _Tissue("white_matter", 3, 25.0, 740.0, 380.0)
_DEEP_GM = _Tissue("deep_grey_matter", 3, 37.0, 590.0, 460.0)
_LESION = _Tissue("lesion", 3, 8.0, 330.0, 820.0)  # T1-dark, T2-bright, CT-hypodense WM lesion
_CSF = _Tissue("csf", 4, 15.0, 180.0, 1050.0)
_AIR = _Tissue("air_cavity", 5, _AIR_HU, 0.0, 0.0)
_TISSUES = (_SKIN, _FAT, _MUSCLE, _VITREOUS, _BONE, _MARROW, _GM, _WM, _DEEP_GM, _LESION, _CSF, _AIR)
TISSUE_NAMES: tuple[str, ...] = ("background", *(t.name for t in _TISSUES))  # finer than LABEL_NAMES
_TISSUE_INDEX = {t.name: i + 1 for i, t in enumerate(_TISSUES)}


@dataclass(frozen=True)
class Disease:
    """What turns a subject into a patient: atrophy of ``severity`` in [0, 1] and WM lesions."""

    severity: float
    lesions: tuple[tuple[float, float, float, float], ...]  # (x, y, z, radius) in anatomy mm


@dataclass(frozen=True)
class HeadVolumes:
    """One rendered head on a RAS grid centred on the head."""

    ct: np.ndarray  # float32 HU
    mr: np.ndarray  # float32, T1-like
    labels: np.ndarray  # uint8, see LABEL_NAMES
    mask: np.ndarray  # uint8 body mask
    tissues: np.ndarray  # uint8, see TISSUE_NAMES
    affine: np.ndarray  # 4x4 voxel -> RAS+ mm
    t2: np.ndarray | None = None  # float32, T2-like, on request (same bias field, its own noise)


@dataclass(frozen=True)
class AttributionCase:
    """The same subject healthy and diseased; the ground-truth effect is patient - control."""

    control: HeadVolumes
    patient: HeadVolumes
    disease: Disease

    @property
    def mr_effect(self) -> np.ndarray:
        """Ground-truth MR effect map, float32: patient - control."""
        return self.patient.mr - self.control.mr

    @property
    def ct_effect(self) -> np.ndarray:
        """Ground-truth CT effect map in HU, float32: patient - control."""
        return self.patient.ct - self.control.ct


def head_affine(shape: tuple[int, ...], spacing: float) -> np.ndarray:
    """RAS+ affine with isotropic ``spacing`` whose world origin is the centre of the grid."""
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -(np.asarray(shape[:3], dtype=float) - 1) / 2 * spacing
    return affine


def make_head(
    seed: Seed,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: float = DEFAULT_SPACING,
    disease: Disease | None = None,
    misregistration_mm: float = 0.0,
    t2: bool = False,
) -> HeadVolumes:
    """Render subject ``seed``, healthy or with ``disease``; with ``t2`` also a T2-like MR.

    ``misregistration_mm`` moves the MR by a random rigid transform (translation of that length and
    a rotation that moves points 80 mm from the centre by about as much) relative to the CT.
    """
    subject = _Subject(_rng(seed, 0), shape, spacing)
    return subject.acquire(subject.render(disease), misregistration_mm, t2)


def oracle_ct(seed: Seed, shape: tuple[int, int, int] = DEFAULT_SHAPE, spacing: float = DEFAULT_SPACING) -> np.ndarray:
    """The best synthetic CT that any model working from the MR could make of healthy head ``seed``.

    It has the exact anatomy and partial volumes, no CT noise, and cortical bone at the population
    median (float32 HU). Each subject's cortical density is a random field, and the T1 MR does not
    show it: bone is dark whatever its density. So no MR→CT translation can recover that field.
    The oracle's error against the phantom CT is therefore the floor for translation figures on
    the phantom. For MAE the median is the optimal constant, and the noise is symmetric.
    """
    subject = _Subject(_rng(seed, 0), shape, spacing)
    subject.cortical_hu = np.float32(MEDIAN_CORTICAL_HU)
    return subject.render(None).ct.astype(np.float32)


def make_attribution_case(
    seed: Seed, shape: tuple[int, int, int] = DEFAULT_SHAPE, spacing: float = DEFAULT_SPACING
) -> AttributionCase:
    """Subject ``seed`` as control and as patient, with identical bias field and noise.

    Sharing the acquisition makes ``patient - control`` exactly zero wherever anatomy is unchanged.
    """
    subject = _Subject(_rng(seed, 0), shape, spacing)
    disease = random_disease(_rng(seed, 1))
    return AttributionCase(
        control=subject.acquire(subject.render(None)),
        patient=subject.acquire(subject.render(disease)),
        disease=disease,
    )


def random_disease(rng: np.random.Generator) -> Disease:
    """Severity in [0.3, 1] and 2-4 periventricular white-matter lesions."""
    severity = float(rng.uniform(0.3, 1.0))
    lesions = []
    for _ in range(int(rng.integers(2, 5))):
        side = rng.choice([-1.0, 1.0])
        offset = (side * rng.uniform(14, 26), rng.uniform(-30, 25), rng.uniform(4, 26))
        radius = float(rng.uniform(2.5, 5.0) * (0.6 + 0.4 * severity))
        lesions.append((*(float(c + o) for c, o in zip(_BRAIN_CENTRE, offset, strict=True)), radius))
    return Disease(severity=severity, lesions=tuple(lesions))


def _rng(seed: Seed, stream: int) -> np.random.Generator:
    """Independent generators for a subject's anatomy (stream 0) and its disease (stream 1)."""
    key = (seed,) if isinstance(seed, int) else tuple(seed)
    return np.random.default_rng((*key, stream))


# --- geometry primitives -------------------------------------------------------------------------


def _ellipsoid(p: tuple[np.ndarray, ...], centre, radii) -> np.ndarray:
    """Approximate SDF of an ellipsoid: exact on the surface, first order near it."""
    q = [(pi - c) / r for pi, c, r in zip(p, centre, radii, strict=True)]
    k0 = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
    k1 = np.sqrt((q[0] / radii[0]) ** 2 + (q[1] / radii[1]) ** 2 + (q[2] / radii[2]) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Union of two SDFs with a fillet of about ``k`` mm, so joins look grown rather than glued."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k / 4.0


def _shell(sdf: np.ndarray, inner: np.ndarray | float, outer: np.ndarray | float) -> np.ndarray:
    """SDF of the layer ``inner < sdf < outer``."""
    return np.maximum(sdf - outer, inner - sdf)


def _mirror(p: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Coordinates folded about the midline, so one definition gives a left-right pair."""
    return (np.abs(p[0]), p[1], p[2])


def _rbf_basis(axis: np.ndarray, length: float) -> np.ndarray:
    centres = np.arange(axis[0] - length, axis[-1] + 1.5 * length, length)
    return np.exp(-(((axis[:, None] - centres[None, :]) / length) ** 2)).astype(np.float32)


def _smooth_field(rng: np.random.Generator, axes: tuple[np.ndarray, ...], length: float) -> np.ndarray:
    """Zero-mean, unit-variance random field smooth on ``length`` mm.

    A sum of separable Gaussian bumps on a lattice, contracted one axis at a time: a few BLAS
    calls instead of an FFT or a 3D spline, which keeps a default head well under a second.
    """
    bases = [_rbf_basis(axis, length) for axis in axes]
    coeffs = rng.standard_normal(tuple(b.shape[1] for b in bases)).astype(np.float32)
    field = np.einsum("ia,jb,kc,abc->ijk", *bases, coeffs, optimize=True)
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


class _Canvas:
    """CT, MR and label volumes onto which tissues are painted in order, inner over outer."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.ct = np.full(shape, _AIR_HU, np.float32)
        self.mr = np.zeros(shape, np.float32)
        self.t2 = np.zeros(shape, np.float32)
        self.labels = np.zeros(shape, np.uint8)
        self.tissues = np.zeros(shape, np.uint8)

    def paint(self, fraction: np.ndarray, tissue: _Tissue, ct=None, mr=None, t2=None) -> None:
        for volume, value in ((self.ct, tissue.ct if ct is None else ct), (self.mr, tissue.mr if mr is None else mr),
                              (self.t2, tissue.t2 if t2 is None else t2)):
            volume += fraction * (value - volume)
        majority = fraction > 0.5
        self.labels[majority] = tissue.label
        self.tissues[majority] = _TISSUE_INDEX[tissue.name]


# --- the subject -----------------------------------------------------------------------------------


class _Subject:
    """One head's random anatomy; rendering it with or without disease is deterministic.

    All random draws happen here, in a fixed order, so a control and its patient version share
    anatomy, bias field and noise.
    """

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int, int], spacing: float) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.spacing = float(spacing)
        self.affine = head_affine(self.shape, spacing)
        scale = float(np.min(np.asarray(self.shape) * spacing / _FIELD_MM))
        self.voxel = spacing / scale  # voxel size in anatomy millimetres: the partial-volume width
        axes = tuple(((np.arange(n) - (n - 1) / 2) * self.voxel).astype(np.float32) for n in self.shape)
        grid = np.meshgrid(*axes, indexing="ij", sparse=True)
        stretch = rng.uniform(0.95, 1.04, size=3)
        warp = [amplitude * _smooth_field(rng, axes, 55.0) for amplitude in (2.5, 3.5, 3.0)]
        self.p = tuple((g / s + w).astype(np.float32) for g, s, w in zip(grid, stretch, warp, strict=True))
        self.skull = np.clip(6.0 + 1.2 * _smooth_field(rng, axes, 40.0), 4.0, 9.0)
        scalp_fat = np.clip(3.5 + 1.2 * _smooth_field(rng, axes, 35.0), 1.5, 6.0)
        self.fat = scalp_fat + 6.0 / (1.0 + np.exp((self.p[2] + 50.0) / 8.0))  # fuller face and neck
        self.cortical_hu = np.clip(MEDIAN_CORTICAL_HU + 380 * _smooth_field(rng, axes, 30.0), 800, 1900)
        self.marrow_hu = np.clip(450 + 70 * _smooth_field(rng, axes, 25.0), 300, 600)
        self.folds = _smooth_field(rng, axes, 8.0)
        self.bias = np.exp(0.12 * _smooth_field(rng, axes, 70.0))
        self.ct_sigma = float(rng.uniform(12.0, 18.0))
        self.mr_sigma = float(rng.uniform(10.0, 16.0))
        self.noise = rng.standard_normal((3, *self.shape), dtype=np.float32)
        self.air_cells = rng.uniform(-1, 1, size=(6, 3)) * (7.0, 7.0, 5.0)
        self.misregistration = rng.standard_normal((2, 3))
        self.t2_noise_seed = int(rng.integers(2**62))  # drawn last: T1-only phantoms stay bit-identical

    def inside(self, sdf: np.ndarray) -> np.ndarray:
        """Partial-volume fraction of each voxel inside ``sdf < 0``."""
        return np.clip(0.5 - sdf / self.voxel, 0.0, 1.0)

    def render(self, disease: Disease | None) -> _Canvas:
        canvas = _Canvas(self.shape)
        intracranial = self._intracranial()
        skull_outer = self.skull + 8.0 * np.exp(-(((self.p[2] + 40.0) / 12.0) ** 2)) + self._glabella()
        head, sinuses = self._head(intracranial, skull_outer), self._sinuses()
        self._paint_soft_tissue(canvas, head)
        self._paint_bone(canvas, intracranial, skull_outer, sinuses, head)
        canvas.paint(self.inside(np.maximum(np.minimum(sinuses, self._ear_air()), head)), _AIR)
        self._paint_brain(canvas, intracranial, disease)
        return canvas

    def _intracranial(self) -> np.ndarray:
        p = self.p
        cerebrum = _ellipsoid(p, _BRAIN_CENTRE, (56.0, 70.0, 48.0))
        temporal = _ellipsoid(_mirror(p), (34.0, 6.0, -14.0), (20.0, 34.0, 17.0))
        cerebellum = _ellipsoid(p, (0.0, -44.0, -24.0), (44.0, 26.0, 19.0))
        stem = _ellipsoid(p, (0.0, -16.0, -50.0), (10.0, 11.0, 42.0))
        brain = _smooth_union(_smooth_union(cerebrum, temporal, 10.0), cerebellum, 10.0)
        return _smooth_union(brain, stem, 8.0)

    def _glabella(self) -> np.ndarray:
        """Thicker frontal bone above the nose, where the frontal sinuses sit."""
        x, y, z = self.p
        return 7.0 * np.exp(-(x**2 + (y - 64.0) ** 2 + (z + 2.0) ** 2) / (2 * 13.0**2))

    def _head(self, intracranial: np.ndarray, skull_outer: np.ndarray) -> np.ndarray:
        """The skin surface: the scalp over the vault, smoothly joined to face, skull base and neck."""
        p = self.p
        _, y, z = p
        temporalis = 5.0 * np.exp(-(((y - 8.0) / 28.0) ** 2) - ((z + 4.0) / 20.0) ** 2)
        cranium = intracranial - skull_outer - (2.0 + self.fat + 1.0 + temporalis)
        face = _ellipsoid(p, (0.0, 36.0, -40.0), (52.0, 51.0, 40.0))
        nose = _ellipsoid(p, (0.0, 76.0, -40.0), (9.0, 12.0, 20.0))
        base = _ellipsoid(p, (0.0, -8.0, -42.0), (64.0, 60.0, 26.0))
        neck = _ellipsoid(p, (0.0, -6.0, -92.0), (46.0, 50.0, 44.0))
        lower = _smooth_union(_smooth_union(face, base, 14.0), neck, 16.0)
        return _smooth_union(_smooth_union(cranium, lower, 14.0), nose, 6.0)

    def _paint_soft_tissue(self, canvas: _Canvas, head: np.ndarray) -> None:
        canvas.paint(self.inside(head), _SKIN)
        canvas.paint(self.inside(head + 2.0), _FAT)
        canvas.paint(self.inside(head + 2.0 + self.fat), _MUSCLE)
        eyes = _ellipsoid(_mirror(self.p), (31.0, 58.0, -22.0), (11.5, 11.0, 11.0))
        canvas.paint(self.inside(_ellipsoid(_mirror(self.p), (30.0, 48.0, -22.0), (17.0, 20.0, 15.0))), _FAT)
        canvas.paint(self.inside(eyes), _VITREOUS)

    def _paint_bone(self, canvas: _Canvas, intracranial: np.ndarray, skull_outer: np.ndarray,
                    sinuses: np.ndarray, head: np.ndarray) -> None:
        p = self.p
        mr_cortical = _BONE.mr * (1.0 + 0.3 * self.folds)  # faint texture, still far below soft tissue
        skull = _shell(intracranial, 0.0, skull_outer)
        petrous = _ellipsoid(_mirror(p), (42.0, -12.0, -42.0), (22.0, 15.0, 11.0))
        vertebra = _ellipsoid(p, (0.0, 4.0, -96.0), (13.0, 11.0, 44.0))
        arch = _shell(_ellipsoid(p, (0.0, 28.0, -70.0), (42.0, 46.0, 1e3)), -6.0, 0.0)
        mandible = np.maximum(np.maximum(arch, 14.0 - p[1]), np.abs(p[2] + 72.0) - 9.0)  # front, 18 mm tall
        bone = np.minimum(np.minimum(skull, petrous), np.minimum(vertebra, mandible))
        bone = np.minimum(bone, _shell(sinuses, 0.0, 2.5))  # thin bony walls around every sinus
        bone = np.maximum(bone, head + 2.0)  # always under the skin
        canvas.paint(self.inside(bone), _BONE, ct=self.cortical_hu, mr=mr_cortical,
                     t2=_BONE.t2 / _BONE.mr * mr_cortical)
        # Diploë: the middle of the vault between outer and inner cortical tables (about 30% each).
        diploe = _shell(intracranial, 0.25 * skull_outer, 0.7 * skull_outer)
        core = np.minimum(diploe, np.minimum(petrous + 3.0, vertebra + 3.0))
        marrow_mr = _MARROW.mr + 0.2 * (self.marrow_hu - _MARROW.ct)
        canvas.paint(self.inside(core), _MARROW, ct=self.marrow_hu, mr=marrow_mr)

    def _sinuses(self) -> np.ndarray:
        """Paranasal sinuses, nasal cavity and airway: air that bone walls separate from soft tissue."""
        p = self.p
        frontal = _ellipsoid(_mirror(p), (7.0, 68.0, -2.0), (7.0, 3.5, 7.0))
        maxillary = _ellipsoid(_mirror(p), (20.0, 50.0, -46.0), (11.0, 13.0, 12.0))
        nasal = _ellipsoid(p, (0.0, 58.0, -42.0), (5.5, 24.0, 15.0))
        sphenoid = _ellipsoid(p, (0.0, 24.0, -40.0), (10.0, 9.0, 7.0))
        airway = _ellipsoid(p, (0.0, 24.0, -92.0), (9.0, 6.0, 36.0))
        return np.minimum(np.minimum(frontal, maxillary), np.minimum(np.minimum(nasal, sphenoid), airway))

    def _ear_air(self) -> np.ndarray:
        """External ear canals (air cylinders along x) and mastoid air cells, both in bone."""
        x, y, z = _mirror(self.p)
        canal = np.maximum(np.sqrt((y + 8.0) ** 2 + (z + 40.0) ** 2) - 3.5, 33.0 - x)
        cells = [np.sqrt((x - 50 - dx) ** 2 + (y + 22 - dy) ** 2 + (z + 44 - dz) ** 2) - 2.5
                 for dx, dy, dz in self.air_cells]
        return np.minimum(canal, np.minimum.reduce(cells))

    def _paint_brain(self, canvas: _Canvas, intracranial: np.ndarray, disease: Disease | None) -> None:
        severity = 0.0 if disease is None else disease.severity
        depth = self._cortical_depth(intracranial)
        cerebral = 1.0 / (1.0 + np.exp(-(self.p[2] + 30.0) / 6.0))  # atrophy spares brainstem and cord
        csf = 2.5 + 1.4 * severity * cerebral  # atrophy: the cortex recedes from skull and midline
        # Gyri: sulci follow the zero sheets of a band-limited field; grey matter lines them, so the
        # white matter retreats below each sulcus and reaches up into each gyral crown.
        sulcal = np.clip(1.0 - np.abs(self.folds) / 0.7, 0.0, 1.0)
        wm_depth = 2.5 + 3.5 + 8.0 * sulcal
        canvas.paint(self.inside(intracranial), _CSF)
        canvas.paint(self.inside(csf - depth), _GM)
        sulci = np.maximum(4.0 * (np.abs(self.folds) - 0.2 - 0.1 * severity), depth - csf - 7.0 * sulcal)
        canvas.paint(self.inside(np.maximum(sulci, intracranial)), _CSF)
        canvas.paint(self.inside(wm_depth - depth), _WM)
        self._paint_deep_brain(canvas, severity)
        for x, y, z, radius in () if disease is None else disease.lesions:
            lesion = _ellipsoid(self.p, (x, y, z), (radius, radius, radius))
            canvas.paint(self.inside(lesion) * self.inside(wm_depth + 1.0 - depth), _LESION)

    def _cortical_depth(self, intracranial: np.ndarray) -> np.ndarray:
        """Depth (mm) below the nearest cortical surface: the convexity under the skull or, above
        the corpus callosum, the medial surface facing the interhemispheric fissure."""
        x, y, z = self.p
        cx, cy, cz = _BRAIN_CENTRE
        below_fissure = (cz + 14.0) - z + 0.15 * np.abs(y - cy)
        medial = np.maximum(np.abs(x - cx) + 1.5, 4.0 * below_fissure)  # a 2 mm cleft of CSF
        return np.minimum(-intracranial, medial)

    def _paint_deep_brain(self, canvas: _Canvas, severity: float) -> None:
        """Thalami and basal ganglia, then the lateral ventricles, arched and enlarged by atrophy."""
        x, y, z = _mirror(self.p)
        cx, cy, cz = _BRAIN_CENTRE
        deep = _ellipsoid((x, y, z), (13.0, cy - 6.0, cz - 8.0), (9.0, 20.0, 10.0))
        canvas.paint(self.inside(deep), _DEEP_GM)
        grow = 1.0 + 0.9 * severity
        arched = z - cz + 0.012 * (y - cy) ** 2  # the ventricle body bows down front and back
        splayed = x - 0.004 * (y - cy) ** 2  # and its horns diverge
        length = 32.0 * (1 + 0.1 * severity)
        body = _ellipsoid((splayed, y, arched), (7.0, cy, 4.0), (5.5 * grow, length, 6.0 * grow))
        horn = _ellipsoid((splayed, y, z), (7.5, cy + 22.0, cz - 2.0), (4.5 * grow, 10.0, 7.0 * grow))
        third = _ellipsoid(self.p, (cx, cy - 4.0, cz - 10.0), (1.5 * grow, 12.0, 7.0))
        canvas.paint(self.inside(np.minimum(np.minimum(body, horn), third)), _CSF)

    def acquire(self, canvas: _Canvas, misregistration_mm: float = 0.0, t2: bool = False) -> HeadVolumes:
        """Add CT noise, MR bias field and Rician noise; optionally misregister the MR (both contrasts)."""
        ct = canvas.ct + self.ct_sigma * self.noise[0]
        clean_mr = canvas.mr * self.bias
        if misregistration_mm > 0:
            clean_mr = self._misregister(clean_mr, misregistration_mm)
        mr = np.sqrt((clean_mr + self.mr_sigma * self.noise[1]) ** 2 + (self.mr_sigma * self.noise[2]) ** 2)
        return HeadVolumes(
            ct=ct.astype(np.float32),
            mr=mr.astype(np.float32),
            labels=canvas.labels,
            mask=(canvas.labels > 0).astype(np.uint8),
            tissues=canvas.tissues,
            affine=self.affine,
            t2=self._t2(canvas, misregistration_mm) if t2 else None,
        )

    def _t2(self, canvas: _Canvas, misregistration_mm: float) -> np.ndarray:
        clean = canvas.t2 * self.bias
        if misregistration_mm > 0:
            clean = self._misregister(clean, misregistration_mm)
        noise = np.random.default_rng(self.t2_noise_seed).standard_normal((2, *self.shape), dtype=np.float32)
        return np.sqrt((clean + self.mr_sigma * noise[0]) ** 2 + (self.mr_sigma * noise[1]) ** 2).astype(np.float32)

    def _misregister(self, volume: np.ndarray, distance_mm: float) -> np.ndarray:
        """Resample ``volume`` under a small random rigid motion about the grid centre."""
        shift_dir, axis = self.misregistration
        shift = distance_mm * shift_dir / np.linalg.norm(shift_dir) / self.spacing
        angle = distance_mm / 80.0
        axis = axis / np.linalg.norm(axis)
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
        centre = (np.asarray(self.shape) - 1) / 2
        offset = centre - rotation @ (centre + shift)
        return ndimage.affine_transform(volume, rotation, offset=offset, order=1, mode="nearest")
