"""The digital head phantom: determinism, tissue values, contrast, the patient effect, the four
data-set layouts on disk with their geometry, and the ``medsynth phantom`` command."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

import medsynth.cli.phantom  # noqa: F401  (registers the command)
from medsynth.cli.app import app
from medsynth.errors import UsageError
from medsynth.phantom import LABEL_NAMES, head_affine, make_attribution_case, make_head, oracle_ct, write_phantom
from medsynth.phantom.anatomy import MEDIAN_CORTICAL_HU, TISSUE_NAMES
from medsynth.phantom.kinds import head_slices, slice_affine

SMALL = (32, 38, 32)  # at 5 mm the whole 160 x 190 x 160 mm head, in a few milliseconds
SMALL_SPACING = 5.0
FINE = (64, 76, 64)  # at 2.5 mm: thick enough tissues that their eroded cores are pure


def _load(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    image = nib.load(str(path))
    return np.asarray(image.dataobj), image


@pytest.fixture(scope="module")
def fine_head():
    return make_head(7, FINE, 2.5)


@pytest.fixture(scope="module")
def attribution():
    return make_attribution_case(11, FINE, 2.5)


def _core(head, tissue: str) -> np.ndarray:
    """Voxels of ``tissue`` whose neighbours are the same tissue: free of partial-volume mixing."""
    core = ndimage.binary_erosion(head.tissues == TISSUE_NAMES.index(tissue))
    assert core.sum() >= 20, f"too few pure {tissue} voxels to measure"
    return core


# --- the head model ------------------------------------------------------------------------------


def test_same_seed_same_head_and_other_seed_other_head():
    first, again, other = (make_head(seed, SMALL, SMALL_SPACING) for seed in (3, 3, 4))
    for name in ("ct", "mr", "labels", "mask", "tissues"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
    assert first.ct.dtype == first.mr.dtype == np.float32
    assert first.labels.dtype == first.mask.dtype == np.uint8
    assert not np.array_equal(first.labels, other.labels)


def test_default_geometry_is_centred_ras_with_every_label_present():
    head = make_head(0)
    assert head.ct.shape == (80, 96, 80)
    np.testing.assert_allclose(head.affine[:3, :3], 2.0 * np.eye(3))
    centre = head.affine @ np.array([39.5, 47.5, 39.5, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)
    assert set(np.unique(head.labels)) == set(range(len(LABEL_NAMES)))
    edges = np.concatenate([head.mask[0].ravel(), head.mask[-1].ravel(), head.mask[:, -1].ravel()])
    assert edges.sum() == 0, "the head touches the left, right or anterior edge of the field"


@pytest.mark.parametrize(
    ("tissue", "low", "high"),
    [
        ("background", -1010, -990),
        ("air_cavity", -1010, -950),
        ("fat", -120, -80),
        ("muscle", 30, 60),
        ("csf", 5, 30),
        ("white_matter", 15, 35),
        ("grey_matter", 30, 50),
        ("diploe", 300, 600),
        ("cortical_bone", 800, 1900),
    ],
)
def test_pure_tissue_hounsfield_units(fine_head, tissue, low, high):
    mean = float(fine_head.ct[_core(fine_head, tissue)].mean())
    assert low <= mean <= high, f"{tissue}: mean {mean:.0f} HU"


def test_hounsfield_units_per_label(fine_head):
    ct, labels = fine_head.ct, fine_head.labels
    bone = ct[labels == LABEL_NAMES.index("bone")]
    assert np.mean(bone > 200) > 0.95 and np.median(bone) > 600
    assert ct[labels == LABEL_NAMES.index("air_cavity")].mean() < -500
    assert 0 < ct[labels == LABEL_NAMES.index("brain")].mean() < 60
    assert ct[labels == 0].mean() < -950
    noise = ct[_core(fine_head, "white_matter")].std()
    assert 8 < noise < 25, f"CT noise sd {noise:.1f} HU"


def test_mr_is_t1_like_with_bone_and_air_both_dark(fine_head):
    tissues = ("fat", "white_matter", "grey_matter", "csf", "muscle", "cortical_bone", "air_cavity")
    mean = {name: float(fine_head.mr[_core(fine_head, name)].mean()) for name in tissues}
    assert mean["fat"] > mean["white_matter"] > mean["grey_matter"] > mean["csf"]
    for dark in ("cortical_bone", "air_cavity"):
        assert mean[dark] < 0.25 * mean["muscle"], mean
    assert fine_head.mr.min() >= 0  # Rician magnitudes


def test_misregistration_moves_only_the_mr():
    still = make_head(2, SMALL, SMALL_SPACING)
    moved = make_head(2, SMALL, SMALL_SPACING, misregistration_mm=4.0)
    assert np.array_equal(still.ct, moved.ct) and np.array_equal(still.labels, moved.labels)
    assert np.abs(moved.mr - still.mr).mean() > 5.0


def test_oracle_ct_is_the_noise_free_head_with_median_cortical_bone(fine_head):
    oracle = oracle_ct(7, FINE, 2.5)
    assert oracle.shape == fine_head.ct.shape and oracle.dtype == np.float32
    cortical = _core(fine_head, "cortical_bone")
    assert np.median(oracle[cortical]) == pytest.approx(MEDIAN_CORTICAL_HU)  # others touch the diploë
    assert np.std(fine_head.ct[cortical]) > 150  # the density field the MR cannot show
    soft = _core(fine_head, "white_matter")
    error = fine_head.ct[soft] - oracle[soft]
    assert abs(error.mean()) < 3 and 10 < error.std() < 20  # only the CT noise is left
    body = fine_head.mask > 0
    floor = np.abs(oracle - fine_head.ct)[body].mean()
    assert 30 < floor < 60, floor  # what docs/pix2pix.md quotes as the phantom's MAE floor


def test_scales_to_a_small_field():
    head = make_head(1, (32, 32, 32), 2.0)  # a 64 mm field: the head is shrunk to fit
    assert head.ct.shape == (32, 32, 32)
    assert {1, 2, 3} <= set(np.unique(head.labels))


# --- the patient version -----------------------------------------------------------------------------


def test_effect_is_patient_minus_control_inside_the_brain_only(attribution):
    effect = attribution.mr_effect
    np.testing.assert_array_equal(effect, attribution.patient.mr - attribution.control.mr)
    intracranial = np.isin(attribution.control.labels, [LABEL_NAMES.index("brain"), LABEL_NAMES.index("csf")])
    near_brain = ndimage.binary_dilation(intracranial, iterations=2)
    assert np.count_nonzero(effect[~near_brain]) == 0
    assert np.count_nonzero(effect) > 500
    np.testing.assert_array_equal(attribution.patient.ct[~near_brain], attribution.control.ct[~near_brain])


def test_patient_has_larger_ventricles_darker_on_t1(attribution):
    csf = TISSUE_NAMES.index("csf")
    grown = (attribution.patient.tissues == csf) & (attribution.control.tissues != csf)
    deep = ndimage.binary_erosion(np.isin(attribution.control.labels, [3, 4]), iterations=6)
    ventricle_growth = grown & deep
    assert ventricle_growth.sum() > 20
    assert attribution.mr_effect[ventricle_growth].mean() < -100
    assert np.all(attribution.ct_effect[ventricle_growth] < 0)  # CSF 15 HU replaces brain tissue
    assert 0.3 <= attribution.disease.severity <= 1.0 and len(attribution.disease.lesions) >= 2


def test_patient_lesions_are_t1_dark_and_hypodense():
    case = make_attribution_case(4, FINE, 2.5)
    lesion = case.patient.tissues == TISSUE_NAMES.index("lesion")
    assert lesion.sum() > 5
    assert case.mr_effect[lesion].mean() < -150
    assert case.ct_effect[lesion].mean() < -5


def test_severity_varies_between_subjects():
    cases = [make_attribution_case(seed, SMALL, SMALL_SPACING) for seed in range(4)]
    assert len({round(case.disease.severity, 3) for case in cases}) == 4


# --- the data sets on disk -------------------------------------------------------------------------


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _write(kind: str, out: Path, **kwargs):
    arguments = {"cases": 2, "shape": SMALL, "spacing": SMALL_SPACING, "seed": 5, **kwargs}
    return write_phantom(kind, out, **arguments)


def test_paired_layout_dtypes_and_geometry(tmp_path):
    summary = _write("paired", tmp_path / "paired")
    assert summary.files == 8 and summary.folders == ("ct", "labels", "mask", "mr")
    for folder in summary.folders:
        assert _files(tmp_path / "paired" / folder) == ["case_000.nii.gz", "case_001.nii.gz"]
    ct, image = _load(tmp_path / "paired" / "ct" / "case_001.nii.gz")
    np.testing.assert_allclose(image.affine, head_affine(SMALL, SMALL_SPACING))
    assert image.header.get_data_dtype() == np.int16 and int(image.header["sform_code"]) == 1
    head = make_head((5, 1), SMALL, SMALL_SPACING)
    np.testing.assert_array_equal(ct, np.clip(np.rint(head.ct), -1024, 3071))
    mr, _ = _load(tmp_path / "paired" / "mr" / "case_001.nii.gz")
    np.testing.assert_array_equal(mr, head.mr)
    labels, image = _load(tmp_path / "paired" / "labels" / "case_001.nii.gz")
    assert image.header.get_data_dtype() == np.uint8 and np.array_equal(labels, head.labels)


def test_same_seed_writes_identical_files(tmp_path):
    _write("paired", tmp_path / "a", cases=1)
    _write("paired", tmp_path / "b", cases=1)
    for folder in ("mr", "ct", "mask", "labels"):
        first, _ = _load(tmp_path / "a" / folder / "case_000.nii.gz")
        second, _ = _load(tmp_path / "b" / folder / "case_000.nii.gz")
        assert first.tobytes() == second.tobytes(), folder


def test_unpaired_mr_and_ct_come_from_different_subjects(tmp_path):
    out = tmp_path / "unpaired"
    summary = _write("unpaired", out)
    assert summary.folders == ("ct", "ct_labels", "mr", "mr_labels") and summary.files == 8
    assert _files(out / "mr") == _files(out / "mr_labels") == ["case_000.nii.gz", "case_001.nii.gz"]
    assert _files(out / "ct") == _files(out / "ct_labels") == ["case_002.nii.gz", "case_003.nii.gz"]
    mr_labels = [_load(out / "mr_labels" / name)[0] for name in _files(out / "mr_labels")]
    ct_labels = [_load(out / "ct_labels" / name)[0] for name in _files(out / "ct_labels")]
    assert all(not np.array_equal(m, c) for m in mr_labels for c in ct_labels)
    ct, image = _load(out / "ct" / "case_002.nii.gz")
    assert image.header.get_data_dtype() == np.int16 and ct.min() >= -1024


def test_attribution_layout_and_effect_maps(tmp_path):
    out = tmp_path / "attribution"
    summary = _write("attribution", out)
    assert summary.folders == ("control", "effect", "patient") and summary.files == 6
    assert _files(out / "control") == ["case_000.nii.gz", "case_001.nii.gz"]
    assert _files(out / "patient") == _files(out / "effect") == ["case_002.nii.gz", "case_003.nii.gz"]
    patient, image = _load(out / "patient" / "case_003.nii.gz")
    effect, _ = _load(out / "effect" / "case_003.nii.gz")
    np.testing.assert_allclose(image.affine, head_affine(SMALL, SMALL_SPACING))
    control = make_attribution_case((5, 3), SMALL, SMALL_SPACING).control.mr
    np.testing.assert_array_equal(effect, patient - control)
    assert effect.dtype == np.float32 and np.count_nonzero(effect) > 0


def test_slices_are_2d_axial_ct_with_their_position(tmp_path):
    out = tmp_path / "slices"
    summary = _write("slices", out, cases=1)
    names = _files(out)
    head = make_head((5, 0), SMALL, SMALL_SPACING)
    kept = head_slices(head.mask)
    assert summary.files == len(names) == len(kept) > 5
    assert names[0] == f"case_000_z{kept[0]:03d}.nii.gz"
    data, image = _load(out / names[0])
    assert data.shape == SMALL[:2] and image.header.get_data_dtype() == np.int16
    np.testing.assert_array_equal(data, np.clip(np.rint(head.ct[:, :, kept[0]]), -1024, 3071))
    world = image.affine @ np.array([0, 0, 0, 1.0])
    np.testing.assert_allclose(world, head.affine @ np.array([0, 0, kept[0], 1.0]))
    assert all(head.mask[:, :, z].mean() >= 0.1 for z in kept)


def test_slice_affine_folds_in_the_slice_index():
    affine = head_affine((10, 10, 10), 2.0)
    np.testing.assert_allclose(slice_affine(affine, 4)[:3, 3], affine[:3, 3] + [0, 0, 8.0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cases": 0}, "--cases"),
        ({"shape": (8, 32, 32)}, "--shape"),
        ({"shape": (32, 32)}, "--shape"),
        ({"spacing": 0.0}, "--spacing"),
        ({"spacing": float("nan")}, "--spacing"),
        ({"kind": "stereo"}, "unknown phantom kind"),
    ],
)
def test_nonsense_parameters_are_refused(tmp_path, kwargs, message):
    arguments = {"kind": "paired", "out": tmp_path / "out", "cases": 1, "shape": SMALL, **kwargs}
    with pytest.raises(UsageError, match=message):
        write_phantom(**arguments)
    assert not (tmp_path / "out").exists()


def test_a_non_empty_output_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="--overwrite"):
        _write("paired", out, cases=1)
    _write("paired", out, cases=1, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "ct" / "case_000.nii.gz").exists()


def test_progress_reports_every_subject(tmp_path):
    calls = []
    _write("attribution", tmp_path / "a", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


# --- the command ----------------------------------------------------------------------------------


def _run(*args: object):
    return CliRunner().invoke(app, ["phantom", *(str(a) for a in args)])


def test_cli_writes_a_data_set(tmp_path):
    out = tmp_path / "data"
    result = _run("paired", out, "--cases", 1, "--shape", 32, 38, 32, "--spacing", 5, "--seed", 2)
    assert result.exit_code == 0, result.output
    assert "paired phantom" in result.stdout and "1 subjects" in result.stdout
    ct, image = _load(out / "ct" / "case_000.nii.gz")
    assert ct.shape == (32, 38, 32)
    np.testing.assert_allclose(image.affine, head_affine((32, 38, 32), 5.0))


@pytest.mark.parametrize(
    "args",
    [
        ("paired", "{out}", "--cases", 0),
        ("slices", "{out}", "--shape", 8, 8, 8),
    ],
)
def test_cli_bad_parameters_exit_2_with_one_line(tmp_path, args):
    result = _run(*(str(a).format(out=tmp_path / "data") for a in args))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output


def test_cli_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.nii.gz").write_bytes(b"")
    result = _run("unpaired", tmp_path / "data", "--cases", 1, "--shape", 16, 16, 16)
    assert result.exit_code == 2 and "--overwrite" in result.stderr
