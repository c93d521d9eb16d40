"""Translate time and peak memory for one 160×192×160 volume: medsynth's batch path vs a plain script.

    python benchmarks/bench_translate.py [--spacing 1.0] [--cases 3] [--shape 160 192 160] [--overlaps 0.25 0.5]

Both paths use the same default vox2vox generator (random weights: speed does not depend on them).
The plain reference reads with nibabel, normalises, calls MONAI ``sliding_window_inference`` directly
and writes with nibabel; the medsynth path is ``medsynth.services.translate.translate`` on a folder,
with geometry handling, prefetching and atomic writes, with torch (``medsynth-bf16``: ``--cpu-bf16``) or
(``onnxruntime`` rows) the model exported to ONNX. Time per case is the wall time of a folder of
``--cases`` cases less that of a folder of one, over ``--cases`` − 1: loading, warm-up and the one-off
costs cancel, the overlap of one case's reading with the previous one's network counts.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from _common import peak_rss_mb, print_header, run_isolated
from monai.inferers import sliding_window_inference

from medsynth.data.bodymask import body_mask
from medsynth.data.intensity import CTIntensity, MRIntensity
from medsynth.families.pix2pix import Pix2PixConfig
from medsynth.modelfile import NetworkSpec, save_model
from medsynth.nets.registry import build_network
from medsynth.services.translate import TranslateOptions, translate

SHAPE = (160, 192, 160)  # default input size; --shape 64 64 64 is a quick check that the script runs


def write_model(path: Path, spacing: float) -> Path:
    config = Pix2PixConfig()
    kwargs = {"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "channels": list(config.channels),
              "strides": [2] * (len(config.channels) - 1), "num_res_units": config.num_res_units,
              "dropout": 0.0, "tanh_output": True}
    generator = build_network("medsynth.UNetGenerator", kwargs)
    metadata = {"spatial_dims": 3, "patch_size": list(config.patch_size), "spacing": [spacing] * 3,
                "flip_axes": [0], "mc_dropout": False,
                "directions": {"mr2ct": {"network": "G", "source": MRIntensity().to_json(),
                                         "target": CTIntensity().to_json()}}}
    return save_model(path, "pix2pix", {"G": (NetworkSpec("medsynth.UNetGenerator", kwargs), generator)}, metadata)


def write_inputs(folder: Path, cases: int, shape: tuple[int, ...] = SHAPE) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    head = (np.sum(grid**2 / np.array([0.8, 0.9, 0.8])[:, None, None, None] ** 2, axis=0) < 1).astype(np.float32)
    for i in range(cases):
        volume = head * 600 + rng.normal(0, 20, shape).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), folder / f"case_{i:03d}.nii.gz")


def medsynth_path(model: Path, inputs: Path, out: Path, overlap: float, tta: bool, engine: str = "torch",
                  cpu_bf16: bool = False) -> None:
    translate(model, inputs, out, TranslateOptions(overlap=overlap, tta=tta, device="cpu", engine=engine,
                                                   cpu_bf16=cpu_bf16))


def plain_path(model: Path, inputs: Path, out: Path, overlap: float) -> None:
    from medsynth.modelfile import load_model

    network = load_model(model).build("G")
    out.mkdir(parents=True, exist_ok=True)
    for file in sorted(inputs.glob("*.nii.gz")):
        image = nib.load(file)
        array = np.asarray(image.dataobj, dtype=np.float32)
        x = MRIntensity().normalise(array, body_mask(array))
        with torch.no_grad():
            y = sliding_window_inference(torch.from_numpy(x)[None, None], (64, 64, 64), 4, network,
                                         overlap=overlap, mode="gaussian")
        hu = CTIntensity().denormalise(y[0, 0].numpy())
        nib.save(nib.Nifti1Image(np.rint(hu).astype(np.int16), image.affine), out / file.name)


def folder_seconds(run, inputs: Path, out: Path) -> float:
    started = time.perf_counter()
    run(inputs, out)
    return time.perf_counter() - started


def one(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # The model in a folder of its own: translate refuses to write inside a model's (run) folder.
        model = write_model(root / "model" / "model.safetensors", args.spacing)
        write_inputs(root / "all", args.cases, tuple(args.shape))
        (root / "first").mkdir()
        (root / "first" / "case_000.nii.gz").symlink_to(root / "all" / "case_000.nii.gz")
        if args.path == "plain":
            def run(inputs, out):
                plain_path(model, inputs, out, args.overlap)
        else:
            engine = "onnxruntime" if args.path == "onnxruntime" else "torch"

            def run(inputs, out):
                medsynth_path(model, inputs, out, args.overlap, args.tta, engine, args.path == "medsynth-bf16")
        one_case = folder_seconds(run, root / "first", root / "out1")
        seconds = (folder_seconds(run, root / "all", root / "out") - one_case) / (args.cases - 1)
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spacing", type=float, default=1.0, help="model spacing in mm (input is 1 mm)")
    parser.add_argument("--cases", type=int, default=3, help="at least 2")
    parser.add_argument("--shape", type=int, nargs=3, default=list(SHAPE), metavar=("X", "Y", "Z"),
                        help="input size in voxels (1 mm)")
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", default="medsynth", help=argparse.SUPPRESS)
    parser.add_argument("--overlap", type=float, default=0.25, help=argparse.SUPPRESS)
    parser.add_argument("--tta", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args)
    print_header(f"translate one {tuple(args.shape)} volume, model spacing {args.spacing} mm, default vox2vox, "
                 "64³ windows")
    print(f"# threads: {torch.get_num_threads()}; s/case: (wall of {args.cases} cases - wall of 1) / {args.cases - 1}")
    print("path           overlap  tta   s/case  peak MiB")
    common = ["--one", "--spacing", str(args.spacing), "--cases", str(args.cases), "--shape", *map(str, args.shape)]
    for overlap in args.overlaps:
        for path, tta in (("plain", False), ("medsynth", False), ("medsynth-bf16", False), ("onnxruntime", False),
                          ("medsynth", True)):
            extra = ["--path", path, "--overlap", str(overlap)] + (["--tta"] if tta else [])
            figures = run_isolated(__file__, common + extra)
            print(f"{path:14s} {overlap:7.2f}  {'yes' if tta else 'no ':3s} {figures['seconds']:8.2f} "
                  f"{figures['peak_mb']:9.0f}")


if __name__ == "__main__":
    main()
