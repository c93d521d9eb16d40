"""Several MR contrasts as input channels, named as nnU-Net names them (``mr/<case>_0000``, ``_0001``) or
listed per case in a datalist: discovery, the phantom's T2, training that records the channels, translate
that requires the same set, and channels off one grid named in the error."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.data.layouts import discover_domains, discover_paired
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


def _trained_t1t2(root: Path, kind: str, family: str, model: str) -> dict[str, Path]:
    """A T1 + T2 phantom of ``kind`` (paired/unpaired) in ``root/data`` and a ``family`` model trained a few
    steps on it with the tiny ``model`` settings (YAML flow mapping)."""
    data = root / "data"
    assert run("phantom", kind, data, "--cases", "3", "--shape", "24", "28", "24", "--spacing", "6",
               "--t2").exit_code == 0
    config = root / "tiny.yaml"
    config.write_text(f"train: {{batch_size: 1, ckpt_every: 100, preview_every: 100}}\nmodel: {model}\n")
    result = run("train", family, data, "--out", root / "run", "--config", config, *TINY)
    assert result.exit_code == 0, result.output
    return {"root": root, "data": data, "run": root / "run", "config": config}


@pytest.fixture(scope="module")
def t1t2(tmp_path_factory) -> dict[str, Path]:
    return _trained_t1t2(tmp_path_factory.mktemp("t1t2"), "paired", "pix2pix",
                         "{patch_size: [16, 16, 16], channels: [8, 16], disc_channels: 8, disc_layers: 2}")


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


# -- CycleGAN: C MR channels on the MR side ----------------------------------------------------------------
@pytest.fixture(scope="module")
def unpaired_t1t2(tmp_path_factory) -> dict[str, Path]:
    return _trained_t1t2(tmp_path_factory.mktemp("unpaired_t1t2"), "unpaired", "cyclegan",
                         "{patch_size: [16, 16, 16], channels: [8, 16], seg_channels: [8, 16], "
                         "disc_channels: 8, disc_layers: 2}")


def test_cyclegan_groups_contrasts_in_folders_and_datalists_and_keeps_plain_ids(unpaired_t1t2, tmp_path):
    cases = discover_domains(unpaired_t1t2["data"], ("mr", "ct"))
    assert [sorted(case) for case in cases["mr"]] == [["mr", "mr_0001", "mr_labels"]] * 3
    assert cases["mr"][0]["mr_0001"].name == "case_000_0001.nii.gz"
    assert cases["mr"][0]["mr_labels"].name == "case_000.nii.gz" and len(cases["ct"]) == 3
    first = cases["mr"][0]
    document = {"training": [{"mr": [str(first["mr"]), str(first["mr_0001"])]},
                             {"ct": str(cases["ct"][0]["ct"])}]}
    (tmp_path / "list.json").write_text(json.dumps(document))
    listed = discover_domains(tmp_path / "list.json", ("mr", "ct"))
    assert listed["mr"] == [{"mr": first["mr"], "mr_0001": first["mr_0001"]}] and len(listed["ct"]) == 1
    # Single-contrast images whose ids end in four digits stay one image each.
    for folder, names in (("mr", ("scan_0000", "scan_0001", "scan_0002")), ("ct", ("ct_a", "ct_b"))):
        (tmp_path / "plain" / folder).mkdir(parents=True)
        for name in names:
            (tmp_path / "plain" / folder / f"{name}.nii.gz").write_bytes(b"")
    assert [set(c) for c in discover_domains(tmp_path / "plain", ("mr", "ct"))["mr"]] == [{"mr"}] * 3


def test_cyclegan_model_records_channels_and_sizes_every_mr_network(unpaired_t1t2):
    model = load_model(unpaired_t1t2["run"])
    assert model.metadata["mr_channels"] == ["0000", "0001"]
    kwargs = {name: spec.kwargs for name, spec in model.networks.items()}
    assert (kwargs["G_mr2ct"]["in_channels"], kwargs["G_mr2ct"]["out_channels"]) == (2, 1)
    assert (kwargs["G_ct2mr"]["in_channels"], kwargs["G_ct2mr"]["out_channels"]) == (1, 2)
    # The discriminator and segmenter of the MR side (in the checkpoint only) take both contrasts.
    state = torch.load(unpaired_t1t2["run"] / "checkpoints" / "last.pt", weights_only=False)["networks"]
    inputs = {name: next(iter(weights.values())).shape[1] for name, weights in state.items()}  # first conv's
    assert inputs == {"G_mr2ct": 2, "G_ct2mr": 1, "D_mr": 2, "D_ct": 1, "S_mr": 2, "S_ct": 1}


def test_cyclegan_translates_both_ways_on_the_input_grid(unpaired_t1t2, tmp_path):
    data = unpaired_t1t2["data"]
    done = run("translate", unpaired_t1t2["run"], data / "mr", tmp_path / "sct", "--device", "cpu")
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in (tmp_path / "sct").glob("*.nii.gz")) == [f"case_00{k}.nii.gz" for k in range(3)]
    reference = nib.load(data / "mr" / "case_001_0000.nii.gz")
    sct = nib.load(tmp_path / "sct" / "case_001.nii.gz")
    assert sct.get_data_dtype() == np.int16 and sct.shape == reference.shape
    assert np.allclose(sct.affine, reference.affine)
    back = run("translate", unpaired_t1t2["run"], data / "ct", tmp_path / "smr", "--direction", "ct2mr",
               "--device", "cpu")
    assert back.exit_code == 0, back.output
    assert sorted(p.name for p in (tmp_path / "smr").glob("case_003*")) == ["case_003_0000.nii.gz",
                                                                             "case_003_0001.nii.gz"]
    ct = nib.load(data / "ct" / "case_003.nii.gz")
    t1, t2 = (nib.load(tmp_path / "smr" / f"case_003_{c}.nii.gz") for c in ("0000", "0001"))
    assert t1.shape == t2.shape == ct.shape and np.allclose(t2.affine, ct.affine)
    assert not np.array_equal(t1.get_fdata(), t2.get_fdata())  # two output channels, not one written twice


def test_cyclegan_translate_without_a_channel_is_refused_naming_it(unpaired_t1t2, tmp_path):
    t1_only = tmp_path / "t1_only"
    t1_only.mkdir()
    source = unpaired_t1t2["data"] / "mr" / "case_002_0000.nii.gz"
    (t1_only / source.name).write_bytes(source.read_bytes())
    line = one_line(run("translate", unpaired_t1t2["run"], t1_only, tmp_path / "sct", "--device", "cpu"))
    assert "case_002_0001" in line
    assert not (tmp_path / "sct").exists() or not any((tmp_path / "sct").glob("*.nii.gz"))


def test_cyclegan_training_case_without_a_channel_is_named(unpaired_t1t2, tmp_path):
    data = tmp_path / "data"
    for folder in ("mr", "ct"):
        (data / folder).mkdir(parents=True)
        for path in sorted((unpaired_t1t2["data"] / folder).glob("*.nii.gz")):
            (data / folder / path.name).write_bytes(path.read_bytes())
    (data / "mr" / "case_001_0001.nii.gz").unlink()
    config = unpaired_t1t2["config"]
    line = one_line(run("train", "cyclegan", data, "--out", tmp_path / "run", "--config", config, *TINY))
    assert "case_001_0001" in line
