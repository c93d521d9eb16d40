"""No command writes over or into any of its inputs, whatever path leads there (``..``, relative paths,
symbolic links, a file named as its own output, a folder inside an input, the model's run folder), with
or without ``--overwrite``; and the one atomic writer leaves nothing half-written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.data.intensity import CTIntensity, MRIntensity
from medsynth.errors import InputError, UsageError
from medsynth.io.image import ImageMeta, write_image
from medsynth.io.outputs import (
    atomic_path,
    check_not_an_input,
    remove_partials,
    remove_partials_of,
    write_text_atomically,
)
from medsynth.modelfile import NetworkSpec, save_model
from medsynth.nets.generators import UNetGenerator
from medsynth.phantom.anatomy import make_head
from medsynth.phantom.kinds import write_phantom

SHAPE = (16, 16, 16)
META = ImageMeta.from_affine(np.diag([6.0, 6.0, 6.0, 1.0]), SHAPE)
runner = CliRunner()


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A study folder: MR inputs, CT references, masks, a model run folder; and a cwd inside it."""
    for name, seed in (("a", 1), ("b", 2)):
        head = make_head(seed, SHAPE, 14.0)
        write_image(tmp_path / "mr" / f"{name}.nii.gz", head.mr, META)
        write_image(tmp_path / "ct" / f"{name}.nii.gz", head.ct, META)
        write_image(tmp_path / "mask" / f"{name}.nii.gz", np.ones(SHAPE, np.uint8), META, np.uint8)
    kwargs = {"spatial_dims": 3, "channels": [4, 8], "strides": [2]}
    directions = {"mr2ct": {"network": "G", "source": MRIntensity().to_json(), "target": CTIntensity().to_json()}}
    (tmp_path / "run").mkdir()
    save_model(tmp_path / "run" / "model.safetensors", "pix2pix",
               {"G": (NetworkSpec("medsynth.UNetGenerator", kwargs), UNetGenerator(**kwargs))},
               {"spatial_dims": 3, "patch_size": [8, 8, 8], "spacing": [6.0] * 3, "flip_axes": [0],
                "directions": directions, "mc_dropout": False})
    (tmp_path / "link_to_mr").symlink_to(tmp_path / "mr", target_is_directory=True)
    return tmp_path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(args: list[str], study: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the command from inside ``study`` (relative paths work), with and without --overwrite: both exit
    2 with one line, and nothing under ``study`` changes."""
    monkeypatch.chdir(study)
    before = snapshot(study)
    lines = []
    for extra in ([], ["--overwrite"] if args[0] in ("translate", "attribute") else []):
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        lines.append(result.stderr.strip())
        assert lines[-1].count("\n") == 0, lines[-1]
    assert snapshot(study) == before
    return lines[0]


@pytest.mark.parametrize(("out", "why"), [
    ("mr", "is an input"),                       # the input folder itself, relative
    ("ct/../mr", "is an input"),                 # through ..
    ("link_to_mr", "is an input"),               # a symbolic link to it
    ("mr/sub", "inside the input folder"),       # inside it
    ("link_to_mr/sub/deeper", "inside the input folder"),
    ("run", "is an input"),                      # the model's run folder
    ("run/sct", "inside the input folder"),
    ("mask", "is an input"),                     # the --mask folder
])
def test_translate_never_writes_into_an_input(study, monkeypatch, out, why):
    line = refused(["translate", "run", "mr", out, "--mask", "mask", "--device", "cpu"], study, monkeypatch)
    assert line.startswith(f"error: {out}:") and why in line


@pytest.mark.parametrize("out", ["mr", "./mr/", f"..{os.sep}{{name}}/mr"])
def test_translate_of_one_file_refuses_its_own_folder(study, monkeypatch, out):
    out = out.format(name=study.name)
    line = refused(["translate", "run", "mr/a.nii.gz", out, "--device", "cpu"], study, monkeypatch)
    assert "mr/a.nii.gz" in line and "replace" in line


def test_translate_refuses_an_output_folder_named_like_the_input_file(study, monkeypatch):
    line = refused(["translate", "run", "mr/a.nii.gz", "mr/a.nii.gz", "--device", "cpu"], study, monkeypatch)
    assert "is an input" in line


@pytest.mark.parametrize(("option", "path"), [
    ("--csv", "ct/a.nii.gz"),       # a reference file
    ("--json", "mr/a.nii.gz"),      # a prediction file
    ("--csv", "ct/metrics.csv"),    # a new file inside the reference folder
    ("--json", "mask"),             # the mask folder
])
def test_evaluate_never_writes_its_report_over_or_into_an_input(study, monkeypatch, option, path):
    line = refused(["evaluate", "mr", "ct", "--mask", "mask", option, path], study, monkeypatch)
    assert path in line and "input" in line


@pytest.mark.parametrize(("out", "config_in_run"), [("data", False), ("data/mr", False), ("run", True)])
def test_train_never_writes_into_its_data_or_over_its_config(tmp_path, monkeypatch, out, config_in_run):
    write_phantom("paired", tmp_path / "data", cases=2, shape=(16, 16, 16), spacing=8.0, seed=0)
    config = tmp_path / "run" / "config.yaml" if config_in_run else tmp_path / "c.yaml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(yaml.safe_dump({"model": {"channels": [4, 8]}}))
    line = refused(["train", "pix2pix", "data", "--out", out, "--config", str(config.relative_to(tmp_path)),
                    "--steps", "1", "--device", "cpu"], tmp_path, monkeypatch)
    assert line.startswith("error:") and ("input" in line or "own record" in line)


def test_a_sibling_folder_with_a_shared_prefix_is_not_inside(tmp_path):
    (tmp_path / "mr").mkdir()
    check_not_an_input(tmp_path / "mr_sct", [tmp_path / "mr"])  # "mr_sct" starts with "mr" but is not in it
    with pytest.raises(UsageError, match="inside"):
        check_not_an_input(tmp_path / "mr" / "sct", [tmp_path / "mr"])


# -- the one atomic writer ---------------------------------------------------------------------------
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text_atomically(tmp_path / "report.json", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as partial:
        partial.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_an_unwritable_place_is_an_input_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot be written"):
        write_text_atomically(tmp_path / "file" / "report.json", "{}")


def test_every_writer_uses_the_atomic_writer(tmp_path, monkeypatch):
    """Images, PNGs, checkpoints, model files and reports all go through atomic_path (temporary + rename)."""
    import medsynth.io.outputs as outputs
    from medsynth.engine.checkpoint import save_checkpoint
    from medsynth.viz import save_grid

    seen: list[str] = []
    real = os.replace

    def spy(source, destination):
        assert ".partial" in Path(source).name and Path(source).parent == Path(destination).parent
        seen.append(Path(destination).name)
        return real(source, destination)

    monkeypatch.setattr(outputs.os, "replace", spy)
    write_image(tmp_path / "i.nii.gz", np.zeros(SHAPE, np.float32), META)
    save_grid(tmp_path / "g.png", [[np.zeros((4, 4), np.uint8)]])
    save_checkpoint(tmp_path / "c.pt", {"step": torch.tensor(1)})
    save_model(tmp_path / "m.safetensors", "pix2pix", {}, {})
    write_text_atomically(tmp_path / "r.json", "{}")
    assert seen == ["i.nii.gz", "g.png", "c.pt", "m.safetensors", "r.json"]


def test_leftovers_of_a_killed_writer_are_removed(tmp_path):
    (tmp_path / ".last.pt.1234abcd.partial").write_bytes(b"x")
    (tmp_path / ".a.nii.gz.1234abcd.partial.nii.gz").write_bytes(b"x")
    (tmp_path / "keep.txt").write_text("mine")
    assert len(remove_partials(tmp_path)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_a_folder_is_replaced_only_once_the_new_one_is_complete(tmp_path):
    series = tmp_path / "case"
    with atomic_path(series, folder=True) as partial:
        (partial / "CT0001.dcm").write_text("first")
    with pytest.raises(RuntimeError), atomic_path(series, folder=True) as partial:
        (partial / "CT0001.dcm").write_text("second, half")
        raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["case"] and (series / "CT0001.dcm").read_text() == "first"
    with atomic_path(series, folder=True) as partial:
        (partial / "CT0002.dcm").write_text("second")
    assert [p.name for p in series.iterdir()] == ["CT0002.dcm"] and len(list(tmp_path.iterdir())) == 1
    (tmp_path / ".other.1234abcd.partial").mkdir()
    assert len(remove_partials(tmp_path)) == 1 and [p.name for p in tmp_path.iterdir()] == ["case"]


def test_leftovers_of_named_outputs_only_are_removed(tmp_path):
    (tmp_path / ".a[1].nii.gz.1234abcd.partial.nii.gz").write_bytes(b"x")
    (tmp_path / ".b.nii.gz.1234abcd.partial.nii.gz").write_bytes(b"x")  # another writer's, in progress
    (tmp_path / ".a[1].nii.gz.old").write_bytes(b"x")  # not a temporary of atomic_path
    removed = remove_partials_of([tmp_path / "a[1].nii.gz", tmp_path / "missing" / "c.nii.gz"])
    assert [p.name for p in removed] == [".a[1].nii.gz.1234abcd.partial.nii.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a[1].nii.gz.old", ".b.nii.gz.1234abcd.partial.nii.gz"]
