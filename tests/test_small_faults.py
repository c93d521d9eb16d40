"""Issue 25, item 8: small faults, each with the right value — an empty volume, pydicom's advice in a CLI line, a
refused single input leaving no folder, a CT given as MR, a dose target's message."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tiny import MODEL, TRAIN, one_error_line, run_cli, tiny_run

from medsynth.errors import InputError
from medsynth.io import read_image
from medsynth.training import train


@pytest.fixture(scope="module")
def model(tmp_path_factory, paired_phantom) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("small")
    data = paired_phantom(root / "data", cases=2, shape=(20, 24, 20), spacing=7.0)
    return tiny_run(data, root / "run"), data


def test_an_empty_volume_is_said_to_hold_no_voxels(tmp_path):
    path = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((48, 48, 0), np.float32), np.eye(4)), str(path))
    with pytest.raises(InputError, match=r"holds no voxels"):
        read_image(path)


def test_a_non_dicom_file_in_a_series_folder_gets_no_programmers_advice(tmp_path, write_dicom_series):
    folder = write_dicom_series(tmp_path / "series", np.full((8, 8, 3), 40.0), np.eye(4))
    (folder / "broken.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(InputError) as caught:
        read_image(folder)
    assert "broken.dcm" in str(caught.value) and "force" not in str(caught.value)


def test_a_refused_single_input_leaves_no_output_folder(model, tmp_path, write_dicom_series):
    run, _ = model
    localizer = write_dicom_series(tmp_path / "localizer", np.full((16, 16, 1), 100.0) + np.arange(16)[:, None, None],
                                   np.eye(4))
    line = one_error_line(run_cli("translate", run, localizer, tmp_path / "out", "--device", "cpu"))
    assert "localizer" in line and not (tmp_path / "out").exists()


def test_a_ct_given_as_mr_is_translated_with_a_warning(model, tmp_path):
    run, data = model
    result = run_cli("translate", run, data / "ct", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "does not look like an MR" in result.output
    cases = json.loads((tmp_path / "out" / "translate_report.json").read_text())["cases"]
    assert all("is it a CT?" in case["warning"] for case in cases)
    mr_result = run_cli("translate", run, data / "mr", tmp_path / "mr_out", "--device", "cpu")
    assert "does not look like an MR" not in mr_result.output


def test_an_empty_dose_target_is_named_as_a_target(tmp_path):
    from medsynth.io import ImageMeta, write_image
    from medsynth.io.grids import read_mask

    meta = ImageMeta.from_affine(np.eye(4), (8, 8, 8))
    reference = read_image(write_image(tmp_path / "ct.nii.gz", np.random.default_rng(0).normal(0, 1, (8, 8, 8)), meta))
    write_image(tmp_path / "target.nii.gz", np.zeros((8, 8, 8)), meta, np.uint8)
    with pytest.raises(InputError, match="give a target that covers the planning target volume"):
        read_mask(tmp_path / "target.nii.gz", reference, "target")


def test_a_volume_with_002_mm_voxels_is_refused_naming_the_file_and_the_voxel_size(model, tmp_path):
    run, data = model
    mr = read_image(data / "mr" / "case_0.nii.gz")
    tiny = tmp_path / "in" / "tiny.nii.gz"
    tiny.parent.mkdir()
    nib.save(nib.Nifti1Image(mr.array, np.diag([0.02, 0.02, 0.02, 1.0])), str(tiny))
    line = one_error_line(run_cli("translate", run, tiny, tmp_path / "out", "--device", "cpu"))
    assert "tiny.nii.gz" in line and "voxel size" in line and "constant" not in line


def test_a_2d_input_stored_as_h_w_1_is_written_as_h_w_1(tmp_path, paired_phantom):
    data = paired_phantom(tmp_path / "data", cases=2, shape=(24, 28, 20), spacing=6.0)
    run = train("pix2pix", data, tmp_path / "run", TRAIN, {**MODEL, "dims": 2, "patch_size": [16, 16]}).run_dir
    mr = read_image(data / "mr" / "case_0.nii.gz")
    for shape in ((24, 28, 1), (24, 28, 1, 1), (24, 28)):
        path = tmp_path / "in" / f"s{len(shape)}.nii.gz"
        path.parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(mr.array[:, :, 10].reshape(shape), mr.meta.affine), str(path))
    result = run_cli("translate", run, tmp_path / "in", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for shape in ((24, 28, 1), (24, 28, 1, 1), (24, 28)):
        assert nib.load(tmp_path / "out" / f"s{len(shape)}.nii.gz").shape == shape


def test_a_three_slice_slab_raises_no_rgb_warning(tmp_path):
    import warnings

    from medsynth.data.bodymask import body_mask

    slab = np.zeros((30, 30, 3), np.float32)
    slab[5:25, 5:25] = 500.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert body_mask(slab, modality="mr")[15, 15, 1]


@pytest.mark.parametrize("kind", ["TranslateOptions", "AttributeOptions"])
def test_both_volume_commands_refuse_zero_windows_per_call(kind):
    """``sw_batch_size`` is checked where translate and attribute share it (attribute took 0 without a word)."""
    import medsynth.services.options as options
    from medsynth.errors import UsageError

    with pytest.raises(UsageError, match=r"--sw-batch-size 0: at least 1 window"):
        getattr(options, kind)(sw_batch_size=0)
