"""Several MR contrasts as input channels, named as nnU-Net names them (``mr/<case>_0000``, ``_0001``) or
listed per case in a datalist: discovery, the phantom's T2, training that records the channels, translate
that requires the same set, and channels off one grid named in the error."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.data.layouts import discover_paired
from medsynth.errors import InputError
from medsynth.io.cases import group_channels
from medsynth.modelfile import load_model
from medsynth.phantom.anatomy import TISSUE_NAMES, make_head

TINY = ("--steps", "2", "--val-every", "0", "--device", "cpu")


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line(result) -> str:
    assert result.exit_code == 2 and "Traceback" not in result.output, (result.output, result.exception)
    line = result.stderr.strip()
    assert line.count("\n") == 0, result.stderr
    return line


@pytest.fixture(scope="module")
def t1t2(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("t1t2")
    data = root / "data"
    assert run("phantom", "paired", data, "--cases", "3", "--shape", "24", "28", "24", "--spacing", "6",
               "--t2").exit_code == 0
    config = root / "tiny.yaml"
    config.write_text("train: {batch_size: 1, ckpt_every: 100, preview_every: 100}\n"
                      "model: {patch_size: [16, 16, 16], channels: [8, 16], disc_channels: 8, disc_layers: 2}\n")
    result = run("train", "pix2pix", data, "--out", root / "run", "--config", config, *TINY)
    assert result.exit_code == 0, result.output
    return {"root": root, "data": data, "run": root / "run", "config": config}


def test_phantom_t2_has_bright_fluid_intermediate_fat_and_dark_bone_and_air():
    head = make_head((0, 0), (48, 56, 48), 3.5, t2=True)
    t1_only = make_head((0, 0), (48, 56, 48), 3.5)

    def mean(image: np.ndarray, tissue: str) -> float:
        return float(image[head.tissues == TISSUE_NAMES.index(tissue)].mean())

    t2 = {name: mean(head.t2, name) for name in ("csf", "fat", "white_matter", "cortical_bone", "air_cavity")}
    assert t2["csf"] > t2["fat"] > t2["cortical_bone"] and t2["fat"] > t2["air_cavity"]
    assert t2["csf"] > t2["white_matter"] and mean(head.mr, "white_matter") > mean(head.mr, "csf")  # T1 vs T2
    assert np.array_equal(head.mr, t1_only.mr) and t1_only.t2 is None  # T1 phantoms are unchanged


def test_channels_are_grouped_by_suffix_and_by_datalist_lists(t1t2, tmp_path):
    datalist = discover_paired(t1t2["data"], ("mr", "ct"), ("mask",))
    first = datalist.training[0]
    assert first["mr"].name == "case_000_0000.nii.gz" and first["mr_0001"].name == "case_000_0001.nii.gz"
    document = {"training": [{"mr": [str(first["mr"]), str(first["mr_0001"])], "ct": str(first["ct"])}]}
    (tmp_path / "list.json").write_text(json.dumps(document))
    listed = discover_paired(tmp_path / "list.json", ("mr", "ct")).training[0]
    assert listed["mr"] == first["mr"] and listed["mr_0001"] == first["mr_0001"]
    # A single-contrast data set whose case ids end in four digits is read as it always was.
    plain = {f"scan_{k:04d}": Path(f"scan_{k:04d}.nii.gz") for k in range(3)}
    for folder in ("mr", "ct"):
        (tmp_path / "plain" / folder).mkdir(parents=True)
        for name in plain.values():
            (tmp_path / "plain" / folder / name).write_bytes(b"")
    assert [set(c) for c in discover_paired(tmp_path / "plain", ("mr", "ct")).training] == [{"mr", "ct"}] * 3
    with pytest.raises(InputError, match="case_9_0001"):
        group_channels({"case_9_0000": Path("case_9_0000.nii.gz"), "case_8_0000": Path("a"),
                        "case_8_0001": Path("b")})


def test_model_records_channels_and_translate_requires_the_same_set(t1t2, tmp_path):
    model = load_model(t1t2["run"])
    assert model.metadata["mr_channels"] == ["0000", "0001"]
    assert model.networks["G"].kwargs["in_channels"] == 2
    mr = t1t2["data"] / "mr"
    done = run("translate", t1t2["run"], mr, tmp_path / "sct", "--device", "cpu")
    assert done.exit_code == 0, done.output
    written = sorted(p.name for p in (tmp_path / "sct").glob("*.nii.gz"))
    assert written == ["case_000.nii.gz", "case_001.nii.gz", "case_002.nii.gz"]
    reference = nib.load(mr / "case_000_0000.nii.gz")
    assert np.allclose(nib.load(tmp_path / "sct" / "case_000.nii.gz").affine, reference.affine)
    t1_only = tmp_path / "t1_only"
    t1_only.mkdir()
    (t1_only / "case_000_0000.nii.gz").write_bytes((mr / "case_000_0000.nii.gz").read_bytes())
    line = one_line(run("translate", t1t2["run"], t1_only, tmp_path / "sct2", "--device", "cpu"))
    assert "case_000_0001" in line


def test_channels_off_one_grid_are_named(t1t2, tmp_path):
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("case_000_0000.nii.gz", "case_000_0001.nii.gz"):
        (moved / name).write_bytes((t1t2["data"] / "mr" / name).read_bytes())
    image = nib.load(moved / "case_000_0001.nii.gz")
    shifted = image.affine.copy()
    shifted[0, 3] += 3.0
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), shifted), moved / "case_000_0001.nii.gz")
    result = run("translate", t1t2["run"], moved, tmp_path / "sct", "--device", "cpu")
    assert result.exit_code == 1
    reason = json.loads((tmp_path / "sct" / "translate_report.json").read_text())["cases"][0]["reason"]
    assert "case_000_0001.nii.gz" in reason and "grid" in reason
    data = tmp_path / "data"
    for folder in ("mr", "ct"):
        (data / folder).mkdir(parents=True)
        for path in sorted((t1t2["data"] / folder).glob("case_00[01]*")):
            (data / folder / path.name).write_bytes(path.read_bytes())
    (data / "mr" / "case_000_0001.nii.gz").write_bytes((moved / "case_000_0001.nii.gz").read_bytes())
    line = one_line(run("train", "pix2pix", data, "--out", tmp_path / "run", "--config", t1t2["config"], *TINY))
    assert "case_000_0001.nii.gz" in line


def test_cyclegan_refuses_several_contrasts_rather_than_reading_them_as_cases(t1t2, tmp_path):
    data = tmp_path / "unpaired"
    for folder in ("mr", "ct"):
        (data / folder).mkdir(parents=True)
        for path in sorted((t1t2["data"] / folder).glob("*.nii.gz")):
            (data / folder / path.name).write_bytes(path.read_bytes())
    line = one_line(run("train", "cyclegan", data, "--out", tmp_path / "run", *TINY))
    assert "one MR image per case" in line
