"""Case discovery: case ids, hidden files, paired folders, decathlon datalists and reading whole datasets,
with every problem of a dataset reported together in one error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from medsynth.data.layouts import discover_paired, read_cases, read_datalist
from medsynth.errors import InputError
from medsynth.io import ImageMeta, resolve_inputs, write_ct, write_image
from medsynth.io.cases import case_id, list_images

SHAPE = (10, 12, 8)
AFFINE = np.array([[1.5, 0, 0, -7.0], [0, 1.5, 0, 3.0], [0, 0, 2.0, 11.0], [0, 0, 0, 1]])


def _image(path: Path, affine: np.ndarray = AFFINE, shape: tuple[int, ...] = SHAPE, ct: bool = False) -> Path:
    data = np.random.default_rng(len(str(path))).normal(200.0, 50.0, shape)
    meta = ImageMeta.from_affine(affine, shape)
    return write_ct(path, data, meta) if ct else write_image(path, data, meta)


def _pair(root: Path, case: str) -> None:
    _image(root / "mr" / f"{case}.nii.gz")
    _image(root / "ct" / f"{case}.nii.gz", ct=True)


def _problems(error: pytest.ExceptionInfo) -> list[str]:
    """The listed problems of a dataset error: one line, the problems numbered (1) … (2) … after the colon."""
    message = str(error.value)
    assert "\n" not in message, "dataset errors are one line"
    listed = message.split(" problem(s) in the dataset: ", 1)[1]
    return [item.strip() for item in re.split(r"\(\d+\) ", listed) if item.strip()]


# ------------------------------------------------------------------------------------------- case ids


@pytest.mark.parametrize(("name", "expected"), [
    ("case_001.nii.gz", "case_001"),
    ("case_001.nii", "case_001"),
    ("case_001.mha", "case_001"),
    ("case_001.nrrd", "case_001"),
    ("Case.V2.NII.GZ", "Case.V2"),  # suffix matched without case; dots inside the id kept
    ("patient 7", "patient 7"),  # a DICOM series folder: its own name
])
def test_case_id_strips_exactly_the_image_suffix(name, expected):
    assert case_id(Path("/data") / name) == expected


def test_listing_finds_images_and_dicom_series_and_ignores_everything_else(tmp_path, write_dicom_series):
    _image(tmp_path / "a.nii.gz")
    _image(tmp_path / "b.nii")
    (tmp_path / "c.mha").write_bytes(b"")
    (tmp_path / "d.nrrd").write_bytes(b"")
    write_dicom_series(tmp_path / "e_series", np.zeros((4, 4, 2)), np.eye(4))  # files without a suffix
    write_dicom_series(tmp_path / "f_dcm", np.zeros((4, 4, 2)), np.eye(4), suffix=".dcm")
    # Not cases: hidden files (our own partial writes among them), other files, folders without DICOM.
    _image(tmp_path / ".hidden.nii.gz")
    (tmp_path / ".x.nii.gz.1a2b3c4d.partial.nii.gz").write_bytes(b"half")
    (tmp_path / ".DS_Store").write_bytes(b"")
    (tmp_path / "README.txt").write_text("notes")
    (tmp_path / "labels.csv").write_text("a,1")
    _image(tmp_path / "nested" / "g.nii.gz")
    (tmp_path / "empty_folder").mkdir()

    found = list_images(tmp_path)

    assert sorted(found) == ["a", "b", "c", "d", "e_series", "f_dcm"]
    assert found["a"] == tmp_path / "a.nii.gz" and found["e_series"] == tmp_path / "e_series"
    assert resolve_inputs(tmp_path) == found


def test_input_is_one_file_one_dicom_folder_or_a_folder(tmp_path, write_dicom_series):
    single = _image(tmp_path / "one" / "scan_3.nii.gz")
    assert resolve_inputs(single) == {"scan_3": single}
    series = write_dicom_series(tmp_path / "study" / "ct_head", np.zeros((4, 4, 3)), np.eye(4))
    assert resolve_inputs(series) == {"ct_head": series}
    assert resolve_inputs(tmp_path / "study") == {"ct_head": series}


def test_a_dicom_folder_and_a_file_with_the_same_case_id_are_duplicates(tmp_path, write_dicom_series):
    _image(tmp_path / "p1.nii.gz")
    write_dicom_series(tmp_path / "p1", np.zeros((4, 4, 2)), np.eye(4))
    with pytest.raises(InputError, match="p1"):
        list_images(tmp_path)


# ------------------------------------------------------------------------------------- paired folders


def test_paired_folders_match_cases_and_attach_optional_roles(tmp_path):
    for case in ("c2", "c1", "c3"):
        _pair(tmp_path, case)
    _image(tmp_path / "mask" / "c1.nii.gz")

    datalist = discover_paired(tmp_path, ("mr", "ct"), ("mask",))

    assert [sorted(case) for case in datalist.training] == [["ct", "mask", "mr"], ["ct", "mr"], ["ct", "mr"]]
    assert [case["mr"].name for case in datalist.training] == ["c1.nii.gz", "c2.nii.gz", "c3.nii.gz"]
    assert datalist.training[0]["mask"] == tmp_path / "mask" / "c1.nii.gz"
    assert datalist.validation == []


def test_unmatched_cases_in_both_directions_and_a_bad_optional_folder_are_reported_together(tmp_path):
    for case in ("shared_1", "shared_2"):
        _pair(tmp_path, case)
    _image(tmp_path / "mr" / "only_mr.nii.gz")
    _image(tmp_path / "ct" / "only_ct.nii.gz", ct=True)
    _image(tmp_path / "ct" / "also_only_ct.nii", ct=True)
    (tmp_path / "mask").mkdir()
    (tmp_path / "mask" / "shared_1.nii").write_bytes(b"")
    (tmp_path / "mask" / "shared_1.nii.gz").write_bytes(b"")

    with pytest.raises(InputError) as error:
        discover_paired(tmp_path, ("mr", "ct"), ("mask",))

    problems = _problems(error)
    assert str(tmp_path) in str(error.value).splitlines()[0]
    assert len(problems) == 4, problems
    assert any("only_mr" in p and "ct/" in p for p in problems)
    assert any("only_ct" in p and "mr/" in p for p in problems)
    assert any("also_only_ct" in p and "mr/" in p for p in problems)
    assert any("shared_1" in p and "twice" in p for p in problems)


def test_missing_and_broken_role_folders_are_reported_together(tmp_path):
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct" / "a.nii").write_bytes(b"")
    (tmp_path / "ct" / "a.nii.gz").write_bytes(b"")
    with pytest.raises(InputError) as error:
        discover_paired(tmp_path, ("mr", "ct"))
    problems = _problems(error)
    assert len(problems) == 2, problems
    assert any("mr/" in p and "missing" in p for p in problems)
    assert any("'a'" in p and "twice" in p for p in problems)


def test_an_empty_role_folder_and_a_missing_dataset_are_refused(tmp_path):
    _image(tmp_path / "mr" / "a.nii.gz")
    (tmp_path / "ct").mkdir()
    with pytest.raises(InputError) as error:
        discover_paired(tmp_path, ("mr", "ct"))
    assert any("ct/" in p and "no images" in p for p in _problems(error))
    with pytest.raises(InputError, match="nowhere"):
        discover_paired(tmp_path / "nowhere", ("mr", "ct"))


# ----------------------------------------------------------------------------------- decathlon datalist


def test_a_datalist_resolves_paths_relative_to_its_own_folder(tmp_path):
    data = tmp_path / "data"
    for case in ("a", "b", "v"):
        _pair(data, case)
    _image(data / "mask" / "a.nii.gz")
    listing = tmp_path / "lists" / "dataset.json"
    listing.parent.mkdir()
    listing.write_text(json.dumps({
        "training": [{"mr": "../data/mr/a.nii.gz", "ct": "../data/ct/a.nii.gz", "mask": "../data/mask/a.nii.gz"},
                     {"mr": str(data / "mr" / "b.nii.gz"), "ct": "../data/ct/b.nii.gz", "note": "absolute ok"}],
        "validation": [{"mr": "../data/mr/v.nii.gz", "ct": "../data/ct/v.nii.gz"}],
    }))

    for datalist in (read_datalist(listing, ("mr", "ct"), ("mask",)),
                     discover_paired(listing, ("mr", "ct"), ("mask",))):
        assert datalist.training[0] == {"mr": (data / "mr" / "a.nii.gz").resolve(),
                                        "ct": (data / "ct" / "a.nii.gz").resolve(),
                                        "mask": (data / "mask" / "a.nii.gz").resolve()}
        assert datalist.training[1] == {"mr": (data / "mr" / "b.nii.gz").resolve(),
                                        "ct": (data / "ct" / "b.nii.gz").resolve()}
        assert datalist.validation == [{"mr": (data / "mr" / "v.nii.gz").resolve(),
                                        "ct": (data / "ct" / "v.nii.gz").resolve()}]


def test_a_datalist_reports_missing_files_and_roles_together(tmp_path):
    _pair(tmp_path, "ok")
    listing = tmp_path / "dataset.json"
    listing.write_text(json.dumps({
        "training": [{"mr": "mr/ok.nii.gz", "ct": "ct/ok.nii.gz"},
                     {"mr": "mr/ghost.nii.gz", "ct": "ct/ok.nii.gz"},
                     {"mr": "mr/ok.nii.gz"},
                     "not a case"],
        "validation": [{"ct": "ct/ok.nii.gz", "mask": "mask/none.nii.gz"}],
    }))

    with pytest.raises(InputError) as error:
        read_datalist(listing, ("mr", "ct"), ("mask",))

    assert str(listing) in str(error.value).splitlines()[0]
    problems = _problems(error)
    assert len(problems) == 4, problems
    assert any("training[1]" in p and "ghost.nii.gz" in p for p in problems)
    assert any("training[2]" in p and "ct" in p for p in problems)
    assert any("training[3]" in p for p in problems)
    assert any("validation[0]" in p and "mr" in p for p in problems)


@pytest.mark.parametrize("content", ["{not json", json.dumps({"validation": []}), json.dumps([1, 2])],
                         ids=["not_json", "no_training", "a_list"])
def test_an_unusable_datalist_is_one_error_naming_it(tmp_path, content):
    listing = tmp_path / "dataset.json"
    listing.write_text(content)
    with pytest.raises(InputError) as error:
        read_datalist(listing, ("mr", "ct"))
    assert str(listing) in str(error.value)


@pytest.mark.parametrize("value", [["mr/ok.nii.gz"], None, 7], ids=["list", "null", "number"])
def test_a_datalist_entry_that_is_not_a_path_is_reported_not_a_crash(tmp_path, value):
    """Decathlon lists sometimes hold lists of files per role; only MR takes one (its contrasts), so a
    list (or anything but a path) for the CT must be an InputError, not a TypeError."""
    _pair(tmp_path, "ok")
    listing = tmp_path / "dataset.json"
    listing.write_text(json.dumps({"training": [{"mr": "mr/ok.nii.gz", "ct": value}]}))
    with pytest.raises(InputError) as error:
        read_datalist(listing, ("mr", "ct"))
    assert "training[0]" in str(error.value)


# --------------------------------------------------------------------------------------- reading cases


def test_reading_reports_unreadable_files_and_mismatched_pairs_together(tmp_path):
    _pair(tmp_path, "good")
    _image(tmp_path / "mr" / "shape.nii.gz", shape=(10, 12, 9))
    _image(tmp_path / "ct" / "shape.nii.gz", ct=True)
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.5
    _image(tmp_path / "mr" / "origin.nii.gz", affine=shifted)
    _image(tmp_path / "ct" / "origin.nii.gz", ct=True)
    spacing = AFFINE.copy()
    spacing[2, 2] = 2.5
    _image(tmp_path / "mr" / "spacing.nii.gz", affine=spacing)
    _image(tmp_path / "ct" / "spacing.nii.gz", ct=True)
    _image(tmp_path / "mr" / "broken.nii.gz")
    (tmp_path / "ct" / "broken.nii.gz").write_text("not an image")
    _image(tmp_path / "mr" / "constant.nii.gz")
    write_image(tmp_path / "ct" / "constant.nii.gz", np.zeros(SHAPE), ImageMeta.from_affine(AFFINE, SHAPE))
    _pair(tmp_path, "masked")
    _image(tmp_path / "mask" / "masked.nii.gz", affine=shifted)  # a mask on another grid is a mismatch too

    datalist = discover_paired(tmp_path, ("mr", "ct"), ("mask",))
    assert len(datalist.training) == 7
    with pytest.raises(InputError) as error:
        read_cases(datalist.training, datalist.source, check_grid=("mr", "ct", "mask"))

    problems = _problems(error)
    assert len(problems) == 6, problems
    named = {case: [p for p in problems if f"{case}.nii.gz" in p] for case in
             ("shape", "origin", "spacing", "broken", "constant", "masked")}
    assert all(len(found) == 1 for found in named.values()), named
    assert "shape" in named["shape"][0] and "(10, 12, 9)" in named["shape"][0]
    assert "affine" in named["origin"][0] and "affine" in named["spacing"][0] and "affine" in named["masked"][0]
    assert str(tmp_path / "ct" / "broken.nii.gz") in named["broken"][0]
    assert "constant" in named["constant"][0]


def test_reading_a_clean_dataset_returns_volumes_by_role(tmp_path):
    for case in ("a", "b"):
        _pair(tmp_path, case)
    datalist = discover_paired(tmp_path, ("mr", "ct"))
    loaded = read_cases(datalist.training, datalist.source, check_grid=("mr", "ct"))
    assert [sorted(case) for case in loaded] == [["ct", "mr"], ["ct", "mr"]]
    assert loaded[1]["ct"].path == tmp_path / "ct" / "b.nii.gz"
    np.testing.assert_allclose(loaded[0]["mr"].meta.affine, AFFINE)
    assert loaded[0]["ct"].array.shape == SHAPE
