"""``medsynth translate MODEL INPUT OUT_DIR`` end to end with a tiny trained pix2pix: outputs on each input's
own grid whatever the format, batches that survive bad files, skip/overwrite, sharding, TTA and
uncertainty maps, untouched inputs, and one-line errors with exit code 2."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.phantom.anatomy import make_head
from medsynth.training import train

TRAIN = {"steps": 2, "batch_size": 1, "val_every": 0, "ckpt_every": 100, "preview_every": 100, "device": "cpu"}
# disc_layers 2: a 3-layer PatchGAN needs patches of at least 32 voxels.
MODEL = {"patch_size": [16, 16, 16], "channels": [8, 16], "disc_channels": 8, "disc_layers": 2}
INPUT_SHAPE = (14, 16, 12)  # inputs small enough for one or a few 16³ windows at the model's 6 mm


def _train(root: Path, paired_phantom, **model: object) -> Path:
    data = paired_phantom(root / "data", cases=3, shape=(24, 28, 24), spacing=6.0)
    train("pix2pix", data, root / "run", TRAIN, {**MODEL, **model})
    return root / "run"


@pytest.fixture(scope="module")
def model(tmp_path_factory, paired_phantom) -> Path:
    return _train(tmp_path_factory.mktemp("pix2pix"), paired_phantom)


@pytest.fixture(scope="module")
def dropout_model(tmp_path_factory, paired_phantom) -> Path:
    return _train(tmp_path_factory.mktemp("pix2pix_dropout"), paired_phantom, dropout=0.2)


def _mr(seed: int) -> np.ndarray:
    return make_head(seed, INPUT_SHAPE, 7.0).mr


def _mr_folder(folder: Path, write_volume, cases: dict[str, int]) -> Path:
    for name, seed in cases.items():
        write_volume(folder / f"{name}.nii.gz", _mr(seed), np.diag([7.0, 7.0, 7.0, 1.0]), qform_code=1, sform_code=1)
    return folder


def _run(*args: object):
    return CliRunner().invoke(app, ["translate", *(str(a) for a in args), "--device", "cpu"])


def _ok(result, code: int = 0) -> None:
    assert result.exit_code == code, (result.output, result.exception)
    assert "Traceback" not in result.output


def _one_error_line(result) -> str:
    """Exit 2 through the CLI's error path: one line on stderr, no traceback, no stray exception."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert line and line.count("\n") == 0, result.stderr
    return line


def _report(out: Path, name: str = "translate_report.json") -> dict[str, dict]:
    document = json.loads((out / name).read_text())
    return {case["case"]: case for case in document["cases"]}


def _snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (hidden ones included) with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
            for p in sorted(folder.rglob("*"))}


def _assert_on_grid(output: Path, affine: np.ndarray, shape: tuple[int, ...], codes: tuple[int, int] | None) -> None:
    image = nib.load(output)
    assert image.shape == shape
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)
    assert nib.aff2axcodes(image.affine) == nib.aff2axcodes(affine)
    header_codes = (int(image.header["qform_code"]), int(image.header["sform_code"]))
    if codes is None:
        assert min(header_codes) > 0  # ITK and DICOM inputs: scanner coordinates, honoured by every reader
    else:
        assert header_codes == codes


# --------------------------------------------------------------------------------------- geometry


def test_outputs_keep_each_inputs_grid_in_every_format(tmp_path, model, oblique_affine, write_volume,
                                                       write_dicom_series):
    inputs = tmp_path / "inputs"
    expected: dict[str, tuple[np.ndarray, tuple[int, ...], tuple[int, int] | None]] = {}
    oblique_lps = oblique_affine((5.0, 6.5, 8.0), lps=True)
    write_volume(inputs / "oblique_lps.nii.gz", _mr(1), oblique_lps, qform_code=1, sform_code=2)
    expected["oblique_lps"] = (oblique_lps, INPUT_SHAPE, (1, 2))
    lps = oblique_affine((6.0, 5.5, 7.5), angles=(0.0, 0.0, 0.0), origin=(12.0, -30.0, 4.0), lps=True)
    write_volume(inputs / "qform_only.nii", _mr(2).transpose(1, 0, 2), lps, qform_code=1, sform_code=0)
    expected["qform_only"] = (lps, (16, 14, 12), (1, 0))
    oblique = oblique_affine((6.5, 5.0, 7.0), angles=(-12.0, 8.0, 20.0))
    write_volume(inputs / "itk.mha", _mr(3), oblique, qform_code=1, sform_code=1)
    expected["itk"] = (oblique, INPUT_SHAPE, None)
    write_volume(inputs / "nrrd_case.nrrd", _mr(4), oblique_lps)
    expected["nrrd_case"] = (oblique_lps, INPUT_SHAPE, None)
    dicom = oblique_affine((6.0, 6.5, 7.0), angles=(0.0, 0.0, 12.0), lps=True)
    write_dicom_series(inputs / "series", np.clip(_mr(5), 0, None), dicom, slope=1.0, intercept=0.0)
    expected["series"] = (dicom, INPUT_SHAPE, None)
    for name, (_, shape, codes) in expected.items():  # NIfTI inputs: compare with what nibabel reads back
        if codes is not None:
            image = nib.load(next(inputs.glob(f"{name}.nii*")))
            assert image.shape == shape
            expected[name] = (image.affine, shape, codes)
    before = _snapshot(inputs)

    result = _run(model, inputs, tmp_path / "out")

    _ok(result)
    # Nothing on stderr but the input check: these small crops are rightly unlike the training heads
    assert all("unlike the model's training MR" in line for line in result.stderr.strip().splitlines()), \
        result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"{name}.nii.gz" for name in expected] + ["translate_report.json"])
    for name, (affine, shape, codes) in expected.items():
        output = tmp_path / "out" / f"{name}.nii.gz"
        _assert_on_grid(output, affine, shape, codes)
        image = nib.load(output)
        assert image.get_data_dtype() == np.int16
        values = np.asarray(image.dataobj)
        assert values.min() >= -1024 and values.max() <= 3071
    report = json.loads((tmp_path / "out" / "translate_report.json").read_text())
    assert (report["written"], report["skipped"], report["failed"]) == (len(expected), 0, 0)
    assert _snapshot(inputs) == before


def test_an_lps_copy_of_an_input_gives_the_same_synthetic_ct_in_world_space(tmp_path, model, write_volume):
    """The same voxels stored RAS and LPS (x and y reversed, origin at the other corner): both land on one
    model grid, so the outputs must agree voxel for voxel once the LPS one is flipped back."""
    mr = _mr(6)
    ras = np.diag([7.0, 7.0, 7.0, 1.0])
    ras[:3, 3] = (-45.0, -52.0, -40.0)
    lps = ras @ np.array([[-1, 0, 0, INPUT_SHAPE[0] - 1], [0, -1, 0, INPUT_SHAPE[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]])
    write_volume(tmp_path / "in" / "ras.nii.gz", mr, ras)
    write_volume(tmp_path / "in" / "lps.nii.gz", mr[::-1, ::-1], lps)
    assert nib.aff2axcodes(lps) == ("L", "P", "S")

    _ok(_run(model, tmp_path / "in", tmp_path / "out"))

    out_ras, out_lps = (nib.load(tmp_path / "out" / f"{name}.nii.gz") for name in ("ras", "lps"))
    np.testing.assert_allclose(out_lps.affine, lps, atol=1e-4)
    np.testing.assert_allclose(out_ras.affine, ras, atol=1e-4)
    values = np.asarray(out_ras.dataobj)
    assert values.std() > 0  # a real image, not a constant that would match trivially
    np.testing.assert_array_equal(np.asarray(out_lps.dataobj)[::-1, ::-1], values)


# ------------------------------------------------------------------------------ batches and re-runs


def test_a_bad_file_fails_alone_and_reruns_skip_or_overwrite_without_touching_inputs(tmp_path, model,
                                                                                   write_volume):
    inputs = _mr_folder(tmp_path / "inputs", write_volume, {"good_a": 1, "good_b": 2})
    write_volume(inputs / "four_d.nii.gz", np.stack([_mr(3)] * 2, axis=-1), np.eye(4))
    truncated = inputs / "truncated.nii.gz"
    write_volume(truncated, _mr(4), np.eye(4))
    truncated.write_bytes(truncated.read_bytes()[:200])
    (inputs / ".hidden_notes").write_text("not a case")
    before = _snapshot(inputs)
    out = tmp_path / "out"

    first = _run(model, inputs, out)
    _ok(first, code=1)
    report = _report(out)
    assert {case: r["status"] for case, r in report.items()} == {
        "four_d": "failed", "good_a": "written", "good_b": "written", "truncated": "failed"}
    assert "four_d.nii.gz" in report["four_d"]["reason"] and "4D" in report["four_d"]["reason"]
    assert "truncated.nii.gz" in report["truncated"]["reason"]
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["good_a.nii.gz", "good_b.nii.gz"]
    written = {name: (out / name).stat().st_mtime_ns for name in ("good_a.nii.gz", "good_b.nii.gz")}
    content = {name: np.asarray(nib.load(out / name).dataobj) for name in written}

    again = _run(model, inputs, out)
    _ok(again, code=1)
    assert {case: r["status"] for case, r in _report(out).items()} == {
        "four_d": "failed", "good_a": "skipped", "good_b": "skipped", "truncated": "failed"}
    assert "skipped" in again.stdout
    assert {name: (out / name).stat().st_mtime_ns for name in written} == written

    redo = _run(model, inputs, out, "--overwrite")
    _ok(redo, code=1)
    assert {case: r["status"] for case, r in _report(out).items()} == {
        "four_d": "failed", "good_a": "written", "good_b": "written", "truncated": "failed"}
    assert all((out / name).stat().st_mtime_ns != mtime for name, mtime in written.items())
    for name, values in content.items():  # same model, same input: the same synthetic CT
        np.testing.assert_array_equal(np.asarray(nib.load(out / name).dataobj), values)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no partial files left
    assert _snapshot(inputs) == before


def test_two_shards_write_exactly_what_one_run_writes(tmp_path, model, write_volume):
    inputs = _mr_folder(tmp_path / "inputs", write_volume, {"c1": 1, "c2": 2, "c3": 3})
    single, sharded = tmp_path / "single", tmp_path / "sharded"

    _ok(_run(model, inputs, single))
    _ok(_run(model, inputs, sharded, "--shard", "0/2"))
    _ok(_run(model, inputs, sharded, "--shard", "1/2"))

    names = sorted(p.name for p in single.glob("*.nii.gz"))
    assert names == ["c1.nii.gz", "c2.nii.gz", "c3.nii.gz"]
    assert sorted(p.name for p in sharded.glob("*.nii.gz")) == names
    for name in names:
        a, b = nib.load(single / name), nib.load(sharded / name)
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_array_equal(a.affine, b.affine)
    first, second = (_report(sharded, f"translate_report_{i}of2.json") for i in range(2))
    assert not set(first) & set(second) and sorted({*first, *second}) == ["c1", "c2", "c3"]
    assert all(r["status"] == "written" for r in (*first.values(), *second.values()))


# ---------------------------------------------------------------------------- TTA and uncertainty


def _std_map_on_grid(out: Path, case: str, affine: np.ndarray) -> np.ndarray:
    std = nib.load(out / f"{case}_std.nii.gz")
    assert std.get_data_dtype() == np.float32
    _assert_on_grid(out / f"{case}_std.nii.gz", affine, INPUT_SHAPE, (1, 2))
    values = np.asarray(std.dataobj)
    assert np.isfinite(values).all() and values.min() >= 0.0
    return values


def test_tta_and_flip_uncertainty_write_a_std_map_on_the_input_grid(tmp_path, model, oblique_affine, write_volume):
    affine = oblique_affine((5.0, 6.5, 8.0), lps=True)
    source = write_volume(tmp_path / "in" / "head.nii.gz", _mr(1), affine, qform_code=1, sform_code=2)
    affine = nib.load(source).affine

    _ok(_run(model, source, tmp_path / "tta", "--tta"))
    assert sorted(p.name for p in (tmp_path / "tta").glob("*.nii.gz")) == ["head.nii.gz"]
    _assert_on_grid(tmp_path / "tta" / "head.nii.gz", affine, INPUT_SHAPE, (1, 2))

    _ok(_run(model, source, tmp_path / "std", "--tta", "--uncertainty", "2"))
    assert sorted(p.name for p in (tmp_path / "std").glob("*.nii.gz")) == ["head.nii.gz", "head_std.nii.gz"]
    _assert_on_grid(tmp_path / "std" / "head.nii.gz", affine, INPUT_SHAPE, (1, 2))
    assert _std_map_on_grid(tmp_path / "std", "head", affine).max() > 0.0  # the flips disagree somewhere


def test_mc_dropout_uncertainty_writes_a_std_map_on_the_input_grid(tmp_path, dropout_model, oblique_affine,
                                                                    write_volume):
    affine = oblique_affine((5.0, 6.5, 8.0), lps=True)
    source = write_volume(tmp_path / "in" / "head.nii.gz", _mr(1), affine, qform_code=1, sform_code=2)

    _ok(_run(dropout_model, source, tmp_path / "out", "--uncertainty", "2"))

    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["head.nii.gz", "head_std.nii.gz"]
    assert _std_map_on_grid(tmp_path / "out", "head", nib.load(source).affine).max() > 0.0


# ------------------------------------------------------------------------------------------ errors


def test_out_dir_equal_to_the_input_folder_is_refused(tmp_path, model, write_volume):
    inputs = _mr_folder(tmp_path / "inputs", write_volume, {"a": 1})
    before = _snapshot(inputs)
    for out in (inputs, inputs / ".." / "inputs"):
        assert "is an input" in _one_error_line(_run(model, inputs, out))
    assert "replace" in _one_error_line(_run(model, inputs / "a.nii.gz", inputs))  # one file, its own folder
    assert _snapshot(inputs) == before


def test_an_unwritable_out_dir_is_refused(tmp_path, model, write_volume):
    inputs = _mr_folder(tmp_path / "inputs", write_volume, {"a": 1})
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out in (blocker / "out", blocker):
        assert str(out) in _one_error_line(_run(model, inputs, out))
    assert blocker.read_text() == "x"


def _fake_model(path: Path, **metadata: object) -> Path:
    document = {"format_version": 1, "family": "pix2pix", "networks": {}, **metadata}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"G.weight": torch.zeros(1)}, str(path), metadata={"medsynth": json.dumps(document)})
    return path


def _unusable_model(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "no_such_run"
    if kind == "run_without_model":
        (tmp_path / "empty_run").mkdir()
        return tmp_path / "empty_run"
    if kind == "text_file":
        (tmp_path / "model.safetensors").write_text("weights? no")
        return tmp_path / "model.safetensors"
    if kind == "other_family":
        return _fake_model(tmp_path / "run" / "model.safetensors", family="vagan")
    return _fake_model(tmp_path / "run" / "model.safetensors", format_version=99)


@pytest.mark.parametrize("kind", ["missing", "run_without_model", "text_file", "other_family", "future_format"])
def test_an_unusable_model_is_one_error_line(tmp_path, write_volume, kind):
    inputs = _mr_folder(tmp_path / "inputs", write_volume, {"a": 1})
    model_path = _unusable_model(tmp_path, kind)
    line = _one_error_line(_run(model_path, inputs, tmp_path / "out"))
    assert line.startswith("error:") and str(model_path) in line


@pytest.mark.parametrize(("options", "needle"), [
    (["--direction", "ct2mr"], "ct2mr"),
    (["--uncertainty", "2"], "dropout"),
    (["--uncertainty", "1"], "uncertainty"),
    (["--shard", "2/2"], "shard"),
    (["--shard", "half"], "shard"),
    (["--overlap", "1.0"], "overlap"),
])
def test_impossible_options_are_one_error_line(tmp_path, model, write_volume, options, needle):
    inputs = _mr_folder(tmp_path / "inputs", write_volume, {"a": 1})
    assert needle in _one_error_line(_run(model, inputs, tmp_path / "out", *options))
    assert not list(tmp_path.glob("out/*.nii.gz"))


def test_missing_or_empty_input_is_one_error_line(tmp_path, model):
    assert "nowhere" in _one_error_line(_run(model, tmp_path / "nowhere", tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    assert "empty" in _one_error_line(_run(model, tmp_path / "empty", tmp_path / "out"))
