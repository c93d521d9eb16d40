"""Before/after check of a refactoring: tiny runs of every volumetric family, and their outputs, bit for bit.

``run OUT`` trains, with fixed seeds on the phantom, a 3D pix2pix (vox2vox), a 2.5D two-contrast pix2pix,
a 2D CycleGAN with labels and a 2D VA-GAN (a few steps each, validating, so the validation path runs too),
then translates (mr2ct with TTA, ct2mr) and attributes phantom cases, and trains the saliency baseline, all
on one CPU thread (sums in another order round differently). ``compare A B`` asserts that the
two output folders hold identical model tensors (every network of model and best files), identical
model metadata (less version and commit), identical validation metrics and losses in the logs, and
the saliency baseline's NCC and loss,
byte-identical translated/attributed images (``np.array_equal`` on the arrays, geometry included) and
preview PNGs (the validation path's whole-volume predictions).

    python benchmarks/bit_identity.py run /tmp/ref        # on the old code
    python benchmarks/bit_identity.py run /tmp/new        # on the new code
    python benchmarks/bit_identity.py compare /tmp/ref /tmp/new

``infer REF OUT`` runs only the inference, with REF's (older) model files, into OUT/results: the new code
reads old model files; ``compare REF OUT`` then compares those outputs (OUT holds no runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from safetensors.torch import load_file

QUIET = {"device": "cpu", "batch_size": 2, "preview_every": 10_000, "ckpt_every": 10_000, "log_every": 1,
         "amp": False}
RUNS = {
    "vox2vox": ("pix2pix", "paired", {"steps": 3, "val_every": 3},
                {"dims": 3, "patch_size": [16, 16, 16], "channels": [8, 16, 32], "disc_channels": 8,
                 "disc_layers": 2, "num_res_units": 1, "val_cases": 1, "augment": 0.5}),
    "pix2pix25d": ("pix2pix", "paired_t2", {"steps": 3, "val_every": 3},
                   {"dims": 2, "context_slices": 1, "patch_size": [16, 16], "channels": [8, 16, 32],
                    "disc_channels": 8, "disc_layers": 2, "val_cases": 1, "norm": "instance"}),
    "cyclegan": ("cyclegan", "unpaired", {"steps": 3, "val_every": 3},
                 {"dims": 2, "patch_size": [16, 16], "channels": [8, 16, 32], "strides": [1, 2],
                  "seg_channels": [8, 16, 32], "num_res_units": 0, "disc_channels": 8, "disc_layers": 2,
                  "val_cases": 1, "seg_pretrain_steps": 1, "pool_size": 2}),
    "vagan": ("vagan", "attribution", {"steps": 3, "val_every": 3, "batch_size": 4},
              {"dims": 2, "channels": [8, 16, 32], "critic_channels": [8, 16, 32], "critic_steps": 2,
               "critic_steps_boost": 3, "boost_first": 1, "boost_every": 0, "val_cases": 1}),
}


def make_data(out: Path) -> dict[str, Path]:
    from medsynth.phantom.kinds import write_phantom

    shape, spacing = (24, 28, 24), 6.0
    data = {"paired": out / "data" / "paired", "paired_t2": out / "data" / "paired_t2",
            "unpaired": out / "data" / "unpaired", "attribution": out / "data" / "attribution"}
    write_phantom("paired", data["paired"], cases=4, shape=shape, spacing=spacing, seed=1)
    write_phantom("paired", data["paired_t2"], cases=4, shape=shape, spacing=spacing, seed=2, t2=True)
    write_phantom("unpaired", data["unpaired"], cases=4, shape=shape, spacing=spacing, seed=3)
    write_phantom("attribution", data["attribution"], cases=4, shape=shape, spacing=spacing, seed=4)
    return data


def run(out: Path) -> None:
    from medsynth.training import train

    torch.set_num_threads(1)

    data = make_data(out)
    for name, (family, dataset, train_options, model_options) in RUNS.items():
        torch.manual_seed(0)
        train(family, data[dataset], out / "runs" / name, {**QUIET, **train_options}, model_options)
    infer(out, out / "results")


def infer(out: Path, results: Path) -> None:
    """Translate and attribute the phantom cases of ``out/data`` with the models of ``out/runs``; train the
    saliency baseline (which has no model file) on the attribution data."""
    from vagan_vs_saliency import train_saliency_baseline  # benchmarks/: the baseline lives with its comparison

    from medsynth.choices import Direction
    from medsynth.data.splits import SplitPlan
    from medsynth.services.attribute import AttributeOptions, attribute
    from medsynth.services.translate import TranslateOptions, translate

    data = {name: out / "data" / name for name in ("paired", "paired_t2", "unpaired", "attribution")}
    translate(out / "runs" / "vox2vox", data["paired"] / "mr", results / "vox2vox",
              TranslateOptions(device="cpu", tta=True, amp=False))
    translate(out / "runs" / "pix2pix25d", data["paired_t2"] / "mr", results / "pix2pix25d",
              TranslateOptions(device="cpu", amp=False))
    translate(out / "runs" / "cyclegan", data["unpaired"] / "mr", results / "cyclegan_mr2ct",
              TranslateOptions(device="cpu", amp=False))
    translate(out / "runs" / "cyclegan", data["unpaired"] / "ct", results / "cyclegan_ct2mr",
              TranslateOptions(direction=Direction.CT2MR, device="cpu", amp=False))
    attribute(out / "runs" / "vagan", data["attribution"] / "patient", results / "vagan",
              AttributeOptions(device="cpu", amp=False, effect=data["attribution"] / "effect"))
    saliency = train_saliency_baseline(data["attribution"], steps=3, batch_size=4, channels=(8, 16, 32), val_cases=1,
                                       split=SplitPlan(seed=0, write=False))
    (results / "saliency").mkdir(parents=True, exist_ok=True)
    (results / "saliency" / "saliency.json").write_text(json.dumps({"ncc": saliency.ncc, "loss": saliency.loss}))
    print(f"wrote {results}")


# Keys a translation model file may gain, each with the value inference assumed when it was absent (the
# typed metadata writes every field; a CycleGAN file of before wrote neither).
ADDED_DEFAULTS = {"window_divisor": None, "context_slices": 0, "error_calibration": None}
#: keys newer code adds with new content: the spread calibration fitted after training (services/calibrate.py)
ADDED_CONTENT = ("error_calibration",)


def _model_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in (root / "runs").rglob("*.safetensors") if "checkpoints" not in p.parts)


def _metadata(path: Path) -> dict:
    with open(path, "rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    document = json.loads(header["__metadata__"]["medsynth"])
    for volatile in ("medsynth_version", "git_commit"):
        document.pop(volatile, None)
    return document


def _log(path: Path) -> list[dict]:
    """Losses and validation metrics of each log entry (times left out)."""
    keep = ("step", "losses", "metrics", "validation")
    return [{k: v for k, v in json.loads(line).items() if k in keep} for line in path.read_text().splitlines()]


def compare(a: Path, b: Path) -> int:
    failures, checked = [], 0
    models = _model_files(a) if (b / "runs").is_dir() else []
    if models != (_model_files(b) if (b / "runs").is_dir() else []):
        failures.append(f"model files differ: {models} vs {_model_files(b)}")
    for rel in models:
        ta, tb = load_file(str(a / rel)), load_file(str(b / rel))
        if ta.keys() != tb.keys():
            failures.append(f"{rel}: tensor names differ")
        for key in ta.keys() & tb.keys():
            checked += 1
            if not torch.equal(ta[key], tb[key]):
                failures.append(f"{rel}: tensor {key} differs")
        old, new = _metadata(a / rel), _metadata(b / rel)
        added = {k: new[k] for k in new.keys() - old.keys() if k in ADDED_DEFAULTS and new[k] == ADDED_DEFAULTS[k]}
        if added:
            print(f"note: {rel} gained {added}, the values inference assumed for their absence")
        content = [k for k in new.keys() - old.keys() - added.keys() if k in ADDED_CONTENT]
        if content:
            print(f"note: {rel} gained {', '.join(content)} (new content, not compared)")
            added.update({k: new[k] for k in content})
        if old != {k: v for k, v in new.items() if k not in added}:
            failures.append(f"{rel}: metadata differs")
    for log in sorted((a / "runs").rglob("log.jsonl")) if models else []:
        rel = log.relative_to(a)
        if _log(log) != _log(b / rel):
            failures.append(f"{rel}: losses or validation metrics differ")
    images = sorted(p.relative_to(a) for p in (a / "results").rglob("*.nii.gz"))
    if not images or images != sorted(p.relative_to(b) for p in (b / "results").rglob("*.nii.gz")):
        failures.append("the translated/attributed images differ in their names")
    for rel in images:
        ia, ib = nib.load(a / rel), nib.load(b / rel)
        checked += 1
        if not (np.array_equal(np.asanyarray(ia.dataobj), np.asanyarray(ib.dataobj))
                and np.array_equal(ia.affine, ib.affine) and ia.get_data_dtype() == ib.get_data_dtype()):
            failures.append(f"{rel}: image differs")
    for preview in sorted((a / "runs").rglob("previews/*.png")) if models else []:
        rel = preview.relative_to(a)
        checked += 1
        if not (b / rel).is_file() or preview.read_bytes() != (b / rel).read_bytes():
            failures.append(f"{rel}: preview differs")
    for report in sorted((a / "results").rglob("*.json")):
        rel = report.relative_to(a)
        keys = ("ncc", "loss")
        found_a, found_b = ({k: json.loads(r.read_text()).get(k) for k in keys} for r in (report, b / rel))
        if found_a != found_b:
            failures.append(f"{rel}: NCC or loss differs")
    for line in failures:
        print("DIFFERS:", line)
    print(f"{len(models)} model files, {checked} tensors, images and previews compared: "
          + ("identical" if not failures else f"{len(failures)} differences"))
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        run(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "infer":
        torch.set_num_threads(1)
        infer(Path(sys.argv[2]), Path(sys.argv[3]) / "results")
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
