"""``medsynth prepare RAW OUT``: raw MR/CT pairs whose CT was moved by a known rigid motion (made here with
SimpleITK, on a grid of its own) come out aligned on the MR grid; N4, field of view, masks, crop, report,
skip/overwrite, per-case failures, untouched inputs; and training refuses raw pairs, pointing to prepare."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.io.image import ImageMeta, read_image, write_image
from medsynth.io.itk import from_sitk, to_sitk
from medsynth.phantom.anatomy import TISSUE_NAMES, make_head

SHAPE, SPACING = (56, 64, 56), 3.0
ANGLE_DEG, SHIFT_MM = 5.0, (6.0, 0.0, 0.0)  # about the S axis; 6 mm (ITK LPS x, i.e. towards R)


def true_motion() -> sitk.Euler3DTransform:
    """Maps points of the raw CT's world to the unmoved anatomy: raw CT(p) = CT(T(p))."""
    motion = sitk.Euler3DTransform()
    motion.SetRotation(0.0, 0.0, np.radians(ANGLE_DEG))
    motion.SetTranslation(SHIFT_MM)
    return motion


def write_raw_case(root: Path, name: str, seed: int, shape=SHAPE, spacing=SPACING, t2: bool = False,
                   ct_fraction_z: float = 0.7, motion: bool = True) -> dict:
    """MR on the head's grid; CT moved by the known motion and resampled onto a coarser, smaller grid
    of its own (as a CT export would be), written by SimpleITK; labels drawn on that CT."""
    head = make_head((11, seed), shape, spacing, t2=t2)
    meta = ImageMeta.from_affine(head.affine, shape)
    if t2:
        write_image(root / "mr" / f"{name}_0000.nii.gz", head.mr, meta)
        write_image(root / "mr" / f"{name}_0001.nii.gz", head.t2, meta)
    else:
        write_image(root / "mr" / f"{name}.nii.gz", head.mr, meta)
    grid = sitk.Image([int(shape[0] * 0.8), int(shape[1] * 0.8), int(shape[2] * ct_fraction_z)], sitk.sitkFloat32)
    grid.SetSpacing([spacing * 1.25, spacing * 1.25, spacing * 1.4])
    grid.SetOrigin([-shape[0] * spacing / 2, -shape[1] * spacing / 2, -shape[2] * spacing / 2 + 5.0])
    transform = true_motion() if motion else sitk.Euler3DTransform()
    (root / "ct").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    ct = sitk.Resample(to_sitk(head.ct, meta), grid, transform, sitk.sitkLinear, -1024.0)
    sitk.WriteImage(sitk.Cast(ct, sitk.sitkInt16), str(root / "ct" / f"{name}.nii.gz"))
    labels = sitk.Resample(to_sitk(head.labels, meta), grid, transform, sitk.sitkNearestNeighbor, 0)
    sitk.WriteImage(sitk.Cast(labels, sitk.sitkUInt8), str(root / "labels" / f"{name}.nii.gz"))
    return {"head": head, "meta": meta}


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def report(out: Path) -> dict[str, dict]:
    return {c["case"]: c for c in json.loads((out / "prepare_report.json").read_text())["cases"]}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepare")
    raw, out = root / "raw", root / "out"
    heads = {f"case_{i}": write_raw_case(raw, f"case_{i}", i) for i in range(3)}
    before = snapshot(raw)
    result = run("prepare", raw, out, "--workers", "2")
    assert result.exit_code == 0, (result.output, result.exception)
    return {"raw": raw, "out": out, "heads": heads, "before": before, "output": result.output}


def body_points_lps(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask)
    return (ijk @ affine[:3, :3].T + affine[:3, 3]) * [-1.0, -1.0, 1.0]


def test_known_rigid_motion_is_recovered_within_a_millimetre(prepared):
    motion = true_motion()
    for case, row in report(prepared["out"]).items():
        found = sitk.AffineTransform(3)
        found.SetMatrix(row["transform"]["matrix"])
        found.SetCenter(row["transform"]["center"])
        found.SetTranslation(row["transform"]["translation"])
        head = prepared["heads"][case]["head"]
        points = body_points_lps(head.mask > 0, head.affine)[::9]
        # found maps MR points into the raw CT; the motion maps those back onto the anatomy: identity if right.
        residual = np.array([np.linalg.norm(np.subtract(motion.TransformPoint(found.TransformPoint(p)), p))
                             for p in points.tolist()])
        assert residual.mean() < 1.0 and residual.max() < 1.5, (case, residual.mean(), residual.max())
        # The report says what it found: the 5° rotation (1° moves the skin ~1.4 mm; the residual above is
        # the real criterion) and the motion's size at the body centre.
        assert abs(row["rotation_deg"] - ANGLE_DEG) < 1.0
        assert row["distance_mm"] > 4.0
        assert row["nmi_after"] > row["nmi_before"] and row["ct_coverage"] > 0.6
    assert "rotation" in prepared["output"] and "case_2" in prepared["output"] and "100 %" in prepared["output"]


def test_prepared_ct_matches_the_unmoved_ct_in_hu(prepared):
    """Against the CT before it was moved: the prepared CT is close; the raw CT put on the MR grid as it
    stands (scanner coordinates, no registration) is not."""
    for case, made in prepared["heads"].items():
        head, meta = made["head"], made["meta"]
        ct = read_image(prepared["out"] / "ct" / f"{case}.nii.gz").array
        mask = read_image(prepared["out"] / "mask" / f"{case}.nii.gz", check_values=False).array > 0
        raw = sitk.ReadImage(str(prepared["raw"] / "ct" / f"{case}.nii.gz"), sitk.sitkFloat32)
        unaligned = from_sitk(sitk.Resample(raw, to_sitk(head.ct, meta), sitk.Euler3DTransform(), sitk.sitkLinear,
                                            -1024.0))
        inside = mask & (head.mask > 0) & (unaligned > -1024)
        after, before = np.abs(ct - head.ct)[inside].mean(), np.abs(unaligned - head.ct)[inside].mean()
        assert after < 0.5 * before, (case, after, before)


def test_outputs_lie_on_the_mr_grid_with_the_right_types(prepared):
    out, raw = prepared["out"], prepared["raw"]
    for case in prepared["heads"]:
        mr = nib.load(raw / "mr" / f"{case}.nii.gz")
        for folder, dtype in (("mr", np.float32), ("ct", np.int16), ("mask", np.uint8), ("labels", np.uint8)):
            image = nib.load(out / folder / f"{case}.nii.gz")
            assert image.shape == mr.shape and np.allclose(image.affine, mr.affine, atol=1e-5)
            assert image.get_data_dtype() == dtype
        labels = np.asarray(nib.load(out / "labels" / f"{case}.nii.gz").dataobj)
        truth = prepared["heads"][case]["head"].labels
        assert np.mean(labels[truth > 0] == truth[truth > 0]) > 0.85  # labels moved with their CT
        assert (out / "overlays" / f"{case}.png").stat().st_size > 1000
    assert snapshot(raw) == prepared["before"]  # inputs never modified


def test_outside_the_ct_field_of_view_is_air_and_out_of_the_mask(tmp_path):
    """A CT covering only part of the head, already aligned (--register none, --no-n4): where the CT has no
    data the output is exactly -1024 and outside the mask, and the coverage says how much is missing."""
    raw = tmp_path / "raw"
    write_raw_case(raw, "short", 0, shape=(32, 36, 32), spacing=5.0, ct_fraction_z=0.45, motion=False)
    result = run("prepare", raw, tmp_path / "out", "--register", "none", "--no-n4")
    assert result.exit_code == 0, result.output
    ct = read_image(tmp_path / "out" / "ct" / "short.nii.gz").array
    mask = read_image(tmp_path / "out" / "mask" / "short.nii.gz", check_values=False).array > 0
    world_z = read_image(raw / "mr" / "short.nii.gz").meta.affine[2, 2] * np.arange(32) - 15.5 * 5.0
    raw_ct = sitk.ReadImage(str(raw / "ct" / "short.nii.gz"))
    top = raw_ct.GetOrigin()[2] + (raw_ct.GetSize()[2] - 0.5) * raw_ct.GetSpacing()[2]
    outside = world_z > top + 1e-6
    assert outside.any() and (ct[:, :, outside] == -1024).all() and not mask[:, :, outside].any()
    row = report(tmp_path / "out")["short"]
    assert row["ct_coverage"] < 0.8 and row["registration"] == "none" and row["distance_mm"] == 0
    mr_out = read_image(tmp_path / "out" / "mr" / "short.nii.gz").array
    assert np.array_equal(mr_out, read_image(raw / "mr" / "short.nii.gz").array)  # --no-n4: MR as it was


def test_crop_margin_keeps_world_positions(tmp_path):
    raw = tmp_path / "raw"
    write_raw_case(raw, "c", 0, shape=(40, 44, 40), spacing=4.0, motion=False, ct_fraction_z=0.4)
    assert run("prepare", raw, tmp_path / "full", "--register", "none", "--no-n4").exit_code == 0
    assert run("prepare", raw, tmp_path / "crop", "--register", "none", "--no-n4", "--crop-margin", "8").exit_code == 0
    full, crop = (nib.load(tmp_path / f / "mr" / "c.nii.gz") for f in ("full", "crop"))
    mask = np.asarray(nib.load(tmp_path / "crop" / "mask" / "c.nii.gz").dataobj) > 0
    assert crop.shape != full.shape
    start = np.rint(np.linalg.solve(full.affine, crop.affine @ [0, 0, 0, 1])[:3]).astype(int)
    window = tuple(slice(s, s + n) for s, n in zip(start, crop.shape, strict=True))
    assert np.array_equal(np.asarray(crop.dataobj), np.asarray(full.dataobj)[window])
    assert np.allclose(crop.affine[:3, :3], full.affine[:3, :3])
    where = np.argwhere(mask)  # the body box grows by 8 mm = 2 voxels, unless the grid ends first
    assert ((where.min(0) == 2) | (start == 0)).all()
    assert ((np.array(crop.shape) - 1 - where.max(0) == 2) | (start + crop.shape == full.shape)).all()


def test_failures_are_reported_the_rest_done_and_existing_cases_skipped(tmp_path):
    raw = tmp_path / "raw"
    write_raw_case(raw, "good", 0, shape=(32, 36, 32), spacing=5.0)
    write_raw_case(raw, "bad", 1, shape=(32, 36, 32), spacing=5.0)
    (raw / "ct" / "bad.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = run("prepare", raw, out, "--no-n4")
    assert result.exit_code == 1 and "Traceback" not in result.output
    rows = report(out)
    assert rows["good"]["status"] == "prepared" and rows["bad"]["status"] == "failed"
    assert "bad.nii.gz" in rows["bad"]["reason"]
    assert not (out / "ct" / "bad.nii.gz").exists()
    stamp = (out / "ct" / "good.nii.gz").stat().st_mtime_ns
    again = run("prepare", raw, out, "--no-n4")
    assert again.exit_code == 1 and report(out)["good"]["status"] == "skipped"
    assert report(out)["good"]["rotation_deg"] is not None  # the earlier findings are kept in the report
    assert (out / "ct" / "good.nii.gz").stat().st_mtime_ns == stamp
    assert run("prepare", raw, out, "--no-n4", "--overwrite").exit_code == 1
    assert (out / "ct" / "good.nii.gz").stat().st_mtime_ns != stamp


def test_refuses_to_write_into_its_input(tmp_path):
    raw = tmp_path / "raw"
    write_raw_case(raw, "c", 0, shape=(24, 28, 24), spacing=6.0)
    result = run("prepare", raw, raw)
    assert result.exit_code == 2 and "input" in result.stderr


def test_synthrad_per_case_folders_and_other_registrations(tmp_path):
    """SynthRAD's layout (RAW/<case>/mr.nii.gz, ct.mha), with affine and with deformable registration."""
    flat = tmp_path / "flat"
    write_raw_case(flat, "1HNA001", 0, shape=(40, 44, 40), spacing=4.0)
    raw = tmp_path / "synthrad"
    (raw / "1HNA001").mkdir(parents=True)
    (raw / "overview").mkdir()  # SynthRAD ships overview images beside the cases
    (raw / "1HNA001" / "mr.nii.gz").write_bytes((flat / "mr" / "1HNA001.nii.gz").read_bytes())
    sitk.WriteImage(sitk.ReadImage(str(flat / "ct" / "1HNA001.nii.gz")), str(raw / "1HNA001" / "ct.mha"))
    for kind in ("affine", "deformable"):
        result = run("prepare", raw, tmp_path / kind, "--register", kind)
        assert result.exit_code == 0, result.output
        row = report(tmp_path / kind)["1HNA001"]
        assert row["registration"] == kind and abs(row["rotation_deg"] - ANGLE_DEG) < 1.0
        assert row["nmi_after"] > row["nmi_before"]


def test_n4_lowers_white_matter_variation_under_a_strong_bias_field():
    from medsynth.data.bodymask import body_mask
    from medsynth.prepare.steps import n4_correct

    head = make_head((11, 5), SHAPE, SPACING)
    axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    biased = head.mr * np.exp(0.5 * axes[0] + 0.35 * axes[2]).astype(np.float32)  # x1.9 across the head
    meta = ImageMeta.from_affine(head.affine, SHAPE)
    corrected, field = n4_correct(to_sitk(biased, meta), to_sitk(body_mask(biased).astype(np.uint8), meta))
    white = head.tissues == TISSUE_NAMES.index("white_matter")

    def variation(image: np.ndarray) -> float:
        return float(image[white].std() / image[white].mean())

    assert variation(from_sitk(corrected)) < 0.5 * variation(biased)
    assert from_sitk(corrected).shape == SHAPE and from_sitk(field).shape == SHAPE  # full resolution


def test_multi_contrast_raw_cases_are_resampled_onto_the_first(tmp_path):
    raw = tmp_path / "raw"
    write_raw_case(raw, "mc", 0, shape=(32, 36, 32), spacing=5.0, t2=True, motion=False)
    t2 = sitk.ReadImage(str(raw / "mr" / "mc_0001.nii.gz"))
    sitk.WriteImage(sitk.Resample(t2, [20, 24, 20], sitk.Transform(), sitk.sitkLinear, t2.GetOrigin(),
                                  [8.0, 7.5, 8.0], t2.GetDirection()), str(raw / "mr" / "mc_0001.nii.gz"))
    result = run("prepare", raw, tmp_path / "out", "--register", "none", "--no-n4")
    assert result.exit_code == 0, result.output
    first, second = (nib.load(tmp_path / "out" / "mr" / f"mc_{k:04d}.nii.gz") for k in range(2))
    assert first.shape == second.shape == (32, 36, 32)
    assert np.allclose(first.affine, second.affine)


def test_raw_pairs_are_refused_by_train_then_prepare_train_translate_evaluate_runs(prepared, tmp_path):
    raw, out = prepared["raw"], prepared["out"]
    refused = run("train", "pix2pix", raw, "--out", tmp_path / "raw_run", "--steps", "1", "--device", "cpu")
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    line = refused.stderr.strip()
    assert line.count("\n") == 0 and "medsynth prepare" in line, refused.stderr
    config = tmp_path / "tiny.yaml"
    config.write_text("train: {batch_size: 1, ckpt_every: 100, preview_every: 100}\n"
                      "model: {patch_size: [16, 16, 16], channels: [8, 16], disc_channels: 8, disc_layers: 2}\n")
    trained = run("train", "pix2pix", out, "--out", tmp_path / "run", "--config", config, "--steps", "2",
                  "--val-every", "0", "--device", "cpu")
    assert trained.exit_code == 0, trained.output
    translated = run("translate", tmp_path / "run", out / "mr", tmp_path / "sct", "--device", "cpu")
    assert translated.exit_code == 0, translated.output
    scored = run("evaluate", tmp_path / "sct", out / "ct", "--mask", out / "mask", "--json", tmp_path / "m.json")
    assert scored.exit_code == 0, scored.output
    assert len(json.loads((tmp_path / "m.json").read_text())["cases"]) == 3


def test_a_ct_exported_400_mm_away_is_found_from_the_body_centres(tmp_path):
    """The first start (scanner coordinates) sees no overlap at all and ITK throws; the centroid start still
    registers the pair. A CT that overlaps from neither start is one line, never ITK's message."""
    raw = tmp_path / "raw"
    write_raw_case(raw, "far", 0, motion=False)
    ct = sitk.ReadImage(str(raw / "ct" / "far.nii.gz"))
    ct.SetOrigin([o + d for o, d in zip(ct.GetOrigin(), (0.0, 0.0, 400.0), strict=True)])
    sitk.WriteImage(ct, str(raw / "ct" / "far.nii.gz"))
    result = run("prepare", raw, tmp_path / "out", "--no-n4")
    assert result.exit_code == 0, result.output
    row = report(tmp_path / "out")["far"]
    assert row["status"] == "prepared" and abs(row["distance_mm"] - 400.0) < 5.0, row
