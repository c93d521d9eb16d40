"""The dose protocol's parts that need no dose extra: default target, patient frame, report join, CLI errors."""

from __future__ import annotations

import csv
import importlib.util
import math

import numpy as np
import pytest
from typer.testing import CliRunner

import medsynth.cli.evaluate  # noqa: F401  (registers the command)
from medsynth.cli.app import app
from medsynth.dose.protocol import TARGET_RADIUS_MM, PatientFrame, default_target
from medsynth.errors import InputError
from medsynth.io import ImageMeta, write_ct
from medsynth.metrics.report import CaseFailure, CaseResult, EvaluationReport


def _ellipsoid(shape=(48, 52, 44), radii=(0.8, 0.9, 0.7), centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) < 1.0


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.5, 2.5, 3.0)])
def test_default_target_is_a_sphere_at_the_deepest_point(spacing):
    from scipy import ndimage

    body = _ellipsoid(centre=(0.15, -0.1, 0.05))
    depth = ndimage.distance_transform_edt(np.pad(body, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    radius = min(TARGET_RADIUS_MM, depth.max() / 2)
    target = default_target(body, spacing)
    assert target.any() and not (target & ~body).any()
    coords = np.argwhere(target) * np.asarray(spacing)
    centre = coords.mean(axis=0)
    reach = np.linalg.norm(coords - centre, axis=1).max()
    assert radius - max(spacing) <= reach <= radius + 1e-6
    # Its centre is the body's deepest point: as far from the surface as any body voxel.
    index = tuple(np.rint(centre / np.asarray(spacing)).astype(int))
    assert depth[index] >= depth.max() - max(spacing)
    np.testing.assert_array_equal(default_target(body.copy(), spacing), target)  # deterministic


def test_default_target_shrinks_in_a_thin_body_and_refuses_a_sliver():
    slab = np.zeros((40, 40, 40), bool)
    slab[:, :, 14:26] = True  # 12 voxels of 2 mm: about 12 mm deep at most
    target = default_target(slab, (2.0, 2.0, 2.0))
    extent = np.ptp(np.argwhere(target)[:, 2]) * 2.0
    assert 0 < extent <= 12.0 + 1e-6
    sliver = np.zeros((40, 40, 40), bool)
    sliver[:, :, 20:22] = True
    with pytest.raises(InputError, match="--target"):
        default_target(sliver, (2.0, 2.0, 2.0))


@pytest.mark.parametrize("codes", ["RAS", "LPS", "ASL", "PIR"])
def test_patient_frame_orders_axes_left_posterior_superior_and_back(codes):
    import nibabel.orientations as orientations

    volume = np.random.default_rng(0).normal(size=(5, 6, 7))
    # An affine whose voxel axes run along ``codes`` with spacings 1, 2, 3 mm.
    ornt = orientations.axcodes2ornt(codes)
    affine = np.eye(4)
    affine[:3, :3] = 0
    for axis, (world, sign) in enumerate(ornt):
        affine[int(world), axis] = sign * (axis + 1.0)
    frame = PatientFrame.of(affine)
    forward = frame.forward(volume)
    np.testing.assert_array_equal(frame.backward(forward), volume)
    # In the frame, index steps go left, posterior, superior: RAS directions (-x, -y, +z).
    to_frame_affine = affine @ orientations.inv_ornt_aff(frame.to_frame, volume.shape)
    assert np.allclose(np.sign(np.diag(to_frame_affine[:3, :3])), [-1, -1, 1])
    assert np.allclose(np.abs(np.diag(to_frame_affine[:3, :3])), frame.spacing)


def test_joined_report_keeps_partial_rows_and_failures(tmp_path):
    image = EvaluationReport("synthrad2023", ("mae",), [CaseResult("a", {"mae": 10.0}), CaseResult("b", {"mae": 20.0})])
    dose = EvaluationReport("dose (photon)", ("photon_gamma_2_2",), [CaseResult("a", {"photon_gamma_2_2": 99.5})],
                            [CaseFailure("b", "no target for b")], labels={"photon_gamma_2_2": ("γ 2%/2mm (%)", 1)})
    joined = image.join(dose)
    assert joined.metric_names == ("mae", "photon_gamma_2_2")
    assert joined.summary()["photon_gamma_2_2"].n == 1 and joined.summary()["mae"].n == 2
    rows = {row["case"]: row for row in csv.DictReader(joined.to_csv(tmp_path / "m.csv").open())}
    assert rows["b"]["mae"] == "20.0" and math.isnan(float(rows["b"]["photon_gamma_2_2"]))
    assert rows["b"]["error"] == "no target for b" and rows["a"]["error"] == ""
    assert "1 failed" in joined.table().title


def _pair(tmp_path):
    hu = np.where(_ellipsoid((20, 20, 20)), 40.0, -1000.0)
    meta = ImageMeta.from_affine(np.diag([2.0, 2.0, 2.0, 1.0]), hu.shape)
    for folder in ("pred", "ref"):
        write_ct(tmp_path / folder / "c.nii.gz", hu, meta)
    return str(tmp_path / "pred"), str(tmp_path / "ref")


def test_missing_dose_extra_is_one_line_naming_the_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyRadPlan" else real(name, *a))
    result = CliRunner().invoke(app, ["evaluate", *_pair(tmp_path), "--dose"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pyRadPlan" in lines[0]
    assert lines[0].endswith('pip install "medsynth[dose]" && pip install --no-deps pyradplan==0.5.0')


def test_dose_options_without_dose_are_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", *_pair(tmp_path), "--target", str(tmp_path)])
    assert result.exit_code == 2 and "--dose" in result.stderr
