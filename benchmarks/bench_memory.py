"""Peak resident memory of translating one CT-sized volume (default 512×512×300) on the CPU.

    python benchmarks/bench_memory.py [--shape 512 512 300] [--channels 8 16 32 64] [--sw-batch-size 1]

Writes one MR-like int16 volume on a 1 mm grid and a pix2pix model file on the same 1 mm grid (random
weights: memory does not depend on training), so the model grid is as large as the input. Runs
``medsynth translate`` in a child process and prints its peak resident set (``ru_maxrss`` of the
child), the seconds, and the peak of reading the input alone, for scale. The network's own activations
grow with ``--channels`` and ``--sw-batch-size`` but not with the volume; the volume-sized buffers
(input, model-grid copy, blended output, inverse) are what this benchmark is about.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from _common import print_header

from medsynth.data.intensity import CTIntensity, MRIntensity
from medsynth.modelfile import NetworkSpec, save_model
from medsynth.nets.registry import build_network


def write_model(path: Path, channels: list[int], patch: int) -> Path:
    kwargs = {"spatial_dims": 3, "channels": channels, "strides": [2] * (len(channels) - 1), "num_res_units": 2,
              "head_channels": channels[0], "tanh_output": True}
    metadata = {"spatial_dims": 3, "patch_size": [patch] * 3, "spacing": [1.0] * 3, "flip_axes": [0],
                "mc_dropout": False,
                "directions": {"mr2ct": {"network": "G", "source": MRIntensity().to_json(),
                                         "target": CTIntensity().to_json()}}}
    network = build_network("medsynth.UNetGenerator", kwargs)
    return save_model(path, "pix2pix", {"G": (NetworkSpec("medsynth.UNetGenerator", kwargs), network)}, metadata)


def write_input(path: Path, shape: tuple[int, int, int]) -> Path:
    """An ellipsoidal 'body' with a bright shell and noise: a realistic foreground for the body mask."""
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    radius = sum(((g - s / 2) / (0.42 * s)) ** 2 for g, s in zip(grids, shape, strict=True))
    rng = np.random.default_rng(0)
    volume = np.where(radius < 1.0, 600, 20).astype(np.int16)
    volume[(radius > 0.85) & (radius < 1.0)] = 1100
    volume += rng.integers(0, 40, shape, dtype=np.int16)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    return path


def child_peak_mb(command: list[str]) -> tuple[float, float]:
    """Run ``command`` to completion; its own peak resident MiB (``wait4``'s rusage) and seconds."""
    started = time.perf_counter()
    # stderr to a file, not a pipe: a child writing more than a pipe holds would block while we wait for it
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            stderr.seek(0)
            sys.exit(f"failed: {' '.join(command)}\n{stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300], metavar=("X", "Y", "Z"),
                        help="input size in voxels of 1 mm (also the model grid); 64 64 48 is a quick check")
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64], help="U-Net widths per level")
    parser.add_argument("--patch", type=int, default=64, help="sliding-window edge in voxels")
    parser.add_argument("--sw-batch-size", type=int, default=1, help="windows per network call")
    parser.add_argument("--read-only", action="store_true", help=argparse.SUPPRESS)  # the child's reference run
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read_only:
        from medsynth.io.image import read_image

        read_image(args.input)
        return
    print_header(f"translate one {'x'.join(map(str, args.shape))} volume, U-Net {args.channels}, "
                 f"{args.patch}³ windows, sw-batch-size {args.sw_batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "model").mkdir()  # the model's folder is an input: outputs go beside it, not inside
        model = write_model(root / "model" / "model.safetensors", args.channels, args.patch)
        (root / "in").mkdir()
        source = write_input(root / "in" / "ct_sized.nii.gz", tuple(args.shape))
        reading, _ = child_peak_mb([sys.executable, __file__, "--read-only", "--input", str(source)])
        peak, seconds = child_peak_mb([sys.executable, "-m", "medsynth", "translate", str(model), str(source.parent),
                                       str(root / "out"), "--device", "cpu", "--sw-batch-size",
                                       str(args.sw_batch_size)])
        written = nib.load(root / "out" / "ct_sized.nii.gz")
        assert written.shape == tuple(args.shape) and written.get_data_dtype() == np.int16
    result = {"shape": args.shape, "voxels": int(np.prod(args.shape)), "peak_rss_mib": round(peak),
              "read_only_peak_rss_mib": round(reading), "seconds": round(seconds, 1),
              "under_2_gb": peak < 2048}
    print(f"peak resident memory: {peak:.0f} MiB ({'under' if peak < 2048 else 'OVER'} 2 GiB) in {seconds:.0f} s; "
          f"reading the input alone: {reading:.0f} MiB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
