"""A file format registered from outside ``io/`` is read and written by every command that takes images.

The toy format stores the voxels in a ``.npz`` with its geometry and stamp as a JSON string beside them; it is
registered for this module only (the fixture takes it out again), so no other test sees it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny import run_cli, tiny_run

from medsynth.io import ImageMeta, Volume, read_image, write_image
from medsynth.io.contract import ImageFormat, Origin
from medsynth.io.formats import FORMATS, output_formats, register_format, unregister_format
from medsynth.io.image import read_stamp
from medsynth.io.outputs import atomic_path
from medsynth.phantom.kinds import write_phantom
from medsynth.training import train


class Npz(ImageFormat):
    """Voxels as ``values``, the affine and the stamp as the JSON string ``meta``."""

    name, title, hint = "npz", "NumPy", ".npz"
    suffixes = written = (".npz",)

    def read(self, path: Path, series: tuple[str, ...] = ()) -> Volume:
        with np.load(path) as data:
            meta, values = json.loads(str(data["meta"])), data["values"].astype(np.float32)
        return Volume(values, ImageMeta.from_affine(np.asarray(meta["affine"]), values.shape, str(path)), path)

    def write(self, path: Path, values: np.ndarray, meta: ImageMeta, dtype: np.dtype | type,
              stamp: str | None = None, origin: Origin | None = None) -> Path:
        with atomic_path(path, ".npz") as partial, open(partial, "wb") as handle:
            np.savez(handle, values=values.astype(dtype), meta=json.dumps({"affine": meta.affine.tolist(),
                                                                            "stamp": stamp}))
        return path

    def read_stamp(self, path: Path) -> str | None:
        with np.load(path) as data:
            return json.loads(str(data["meta"]))["stamp"]


@pytest.fixture(scope="module")
def npz():
    before = list(FORMATS)
    fmt = register_format(Npz())
    yield fmt
    unregister_format(fmt)
    assert before == FORMATS and "npz" not in output_formats(True)


def as_npz(folder: Path) -> Path:
    """Every NIfTI under ``folder`` rewritten as ``.npz`` through the registry (the NIfTI removed)."""
    for path in sorted(folder.rglob("*.nii.gz")):
        volume = read_image(path, (2, 3), check_values=False)
        write_image(path.with_name(path.name.replace(".nii.gz", ".npz")), volume.array, volume.meta)
        path.unlink()
    return folder


@pytest.fixture(scope="module")
def paired(npz, tmp_path_factory, paired_phantom) -> tuple[Path, Path]:
    """Paired npz MR/CT heads and a 2-step pix2pix trained on them."""
    data = as_npz(paired_phantom(tmp_path_factory.mktemp("npz") / "data"))
    return data, tiny_run(data, data.parent / "run")


def test_translate_and_evaluate_read_and_write_the_registered_format(paired, tmp_path):
    data, run = paired
    result = run_cli("translate", run, data / "mr", tmp_path / "sct", "--format", "npz", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for case in ("case_0", "case_1", "case_2"):
        sct, mr = read_image(tmp_path / "sct" / f"{case}.npz"), read_image(data / "mr" / f"{case}.npz")
        assert sct.array.shape == mr.array.shape and np.allclose(sct.meta.affine, mr.meta.affine)
        assert "medsynth model" in read_stamp(tmp_path / "sct" / f"{case}.npz")
    again = run_cli("translate", run, data / "mr", tmp_path / "sct", "--format", "npz", "--device", "cpu")
    assert again.exit_code == 0 and "skipped" in again.output, again.output  # the stamp names this model
    scores = tmp_path / "scores.json"
    result = run_cli("evaluate", tmp_path / "sct", data / "ct", "--json", scores)
    assert result.exit_code == 0, result.output
    assert len(json.loads(scores.read_text())["cases"]) == 3


def test_prepare_reads_the_registered_format(paired, tmp_path):
    data, _ = paired
    result = run_cli("prepare", data, tmp_path / "prepared", "--register", "none", "--no-n4")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "prepared" / "ct").glob("case_*.nii.gz"))) == 3


def test_attribute_reads_and_writes_the_registered_format(npz, tmp_path):
    from test_vagan import MODEL, TRAIN, _write_toy

    toy = as_npz(_write_toy(tmp_path / "toy"))
    train("vagan", toy, tmp_path / "run", {**TRAIN, "steps": 2}, MODEL)
    result = run_cli("attribute", tmp_path / "run", toy / "patient", tmp_path / "maps", "--format", "npz",
                     "--device", "cpu")
    assert result.exit_code == 0, result.output
    maps = sorted((tmp_path / "maps").glob("*_map.npz"))
    assert len(maps) == 6 and read_image(maps[0], check_values=False).array.shape == (16, 16, 6)


def test_generate_writes_the_registered_format(npz, tmp_path):
    from test_fastgan import TINY, TINY_TRAIN

    slices = as_npz(write_phantom("slices", tmp_path / "slices", cases=3, shape=(32, 40, 32), spacing=5.0, seed=0).out)
    train("fastgan", slices, tmp_path / "run", {**TINY_TRAIN, "steps": 2}, TINY)
    result = run_cli("generate", tmp_path / "run", tmp_path / "out", "--count", 2, "--format", "npz",
                     "--device", "cpu")
    assert result.exit_code == 0, result.output
    generated = sorted((tmp_path / "out").glob("generated_*.npz"))
    assert len(generated) == 2 and read_image(generated[0], 2).array.shape == (64, 64)

