"""GPU benchmark suite: medsynth training and translation beside plain PyTorch + MONAI references.

    python benchmarks/gpu_suite.py [--out benchmarks/results] [--budget-min 7.5]
    python benchmarks/gpu_suite.py --smoke --out /tmp/suite     # tiny sizes on the CPU, seconds

Measures, on one GPU (about 8 minutes; later items are skipped, and said so, past ``--budget-min``):
1. vox2vox (pix2pix 3D, default networks) training steps/s at 96³ and 128³ patches, batch 2, in fp32,
   bf16 autocast, bf16 + channels_last_3d and torch.compile; each beside a plain loop on the same
   networks (MONAI U-Net generator and PatchDiscriminator, Adam, LSGAN + 100·L1) fed from GPU tensors;
2. translation of a 160×192×160 MR and of a 512×512×200 CT-sized grid with medsynth ``translate``
   (s/case, peak GPU memory) beside a plain script (nibabel + MONAI ``sliding_window_inference``);
3. FastGAN 256² training steps/s (batch 8).
Writes ``gpu_suite.json`` and ``gpu_suite.md`` (a Markdown table) in ``--out``. Network weights are
random: speed and memory do not depend on them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from _common import machine
from monai.inferers import sliding_window_inference

from medsynth.data.intensity import CTIntensity, MRIntensity
from medsynth.data.splits import SplitPlan
from medsynth.engine.config import TrainConfig
from medsynth.engine.context import StepContext
from medsynth.engine.family import Family
from medsynth.engine.runtime import Runtime
from medsynth.engine.trainer import Trainer
from medsynth.families.fastgan import FastGAN, FastGANConfig
from medsynth.families.pix2pix import Pix2Pix, Pix2PixConfig
from medsynth.modelfile import save_model
from medsynth.phantom.kinds import write_phantom
from medsynth.services.translate import TranslateOptions, translate

VARIANTS = ("fp32", "bf16", "bf16+channels_last_3d", "torch.compile")
FULL = {"patches": (96, 128), "steps": 10, "warmup": 3, "batch": 2, "phantom": (96, 112, 96),
        "grids": {"MR 160×192×160": (160, 192, 160), "CT 512×512×200": (512, 512, 200)}, "fastgan": 256,
        "model": {}}
SMOKE = {"patches": (16,), "steps": 2, "warmup": 1, "batch": 1, "phantom": (24, 28, 24),
         "grids": {"MR 20×24×20": (20, 24, 20)}, "fastgan": 64,
         "model": {"channels": (4, 8), "disc_channels": 4, "disc_layers": 2}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _variant(name: str, device: torch.device) -> tuple[torch.dtype | None, bool, bool]:
    """(autocast dtype, channels_last_3d, compile) of a variant."""
    bf16 = torch.bfloat16 if name != "fp32" else None
    return bf16, name == "bf16+channels_last_3d" and device.type == "cuda", name == "torch.compile"


def _steps_per_second(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps / (time.perf_counter() - started)


def medsynth_training(data: Path, patch: int, variant: str, device: torch.device, cfg: dict, run: Path) -> float:
    """Steps/s of the engine's pix2pix step (family train_step through StepContext, as ``train`` runs it)."""
    amp, channels_last, compiled = _variant(variant, device)
    config = Pix2PixConfig(patch_size=(patch,), **cfg["model"])
    family = Pix2Pix(config, data, split=SplitPlan(write=False))
    train_config = TrainConfig(steps=10**6, batch_size=cfg["batch"], channels_last=channels_last, workers=0)
    trainer = Trainer(family, train_config, run, Runtime(device, amp))
    if compiled:
        trainer.trained = {name: torch.compile(net) for name, net in trainer.trained.items()}
    batches = trainer._batches()
    context = StepContext(trainer.runtime, family.networks, trainer.trained, trainer.optimizers, trainer.scalers,
                          lambda: next(batches))
    family.networks.train()
    return _steps_per_second(lambda: family.train_step(next(batches), context), device, cfg["warmup"], cfg["steps"])


def _pix2pix_networks(config: Pix2PixConfig) -> Pix2Pix:
    """pix2pix's networks exactly as the family builds them, without data (a bare family instance)."""
    bare = Pix2Pix.__new__(Pix2Pix)
    Family.__init__(bare)
    bare.config = config
    bare.data = SimpleNamespace(mr_channels=1, ct_intensity=CTIntensity())  # one MR contrast, the CT window
    bare._build_networks()
    return bare


def reference_training(patch: int, variant: str, device: torch.device, cfg: dict) -> float:
    """Steps/s of a plain pix2pix loop on the same networks, batches already on the device."""
    amp, channels_last, compiled = _variant(variant, device)
    bare = _pix2pix_networks(Pix2PixConfig(patch_size=(patch,), **cfg["model"]))
    g, d = (bare.networks[n].to(device) for n in ("G", "D"))
    memory = torch.channels_last_3d if channels_last else torch.contiguous_format
    g, d = g.to(memory_format=memory), d.to(memory_format=memory)
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    gc, dc = (torch.compile(g), torch.compile(d)) if compiled else (g, d)
    shape = (cfg["batch"], 1, patch, patch, patch)
    mr = torch.rand(shape, device=device).mul(2).sub(1).contiguous(memory_format=memory)
    ct = torch.rand(shape, device=device).mul(2).sub(1).contiguous(memory_format=memory)
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext

    def last(prediction):
        return prediction[-1] if isinstance(prediction, (list, tuple)) else prediction

    def step() -> None:
        with autocast():
            fake = gc(mr)
            real_score, fake_score = last(dc(torch.cat([mr, ct], 1))), last(dc(torch.cat([mr, fake.detach()], 1)))
            loss_d = 0.5 * (F.mse_loss(real_score.float(), torch.ones_like(real_score.float()))
                            + F.mse_loss(fake_score.float(), torch.zeros_like(fake_score.float())))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        with autocast():
            score = last(dc(torch.cat([mr, fake], 1))).float()
            loss_g = F.mse_loss(score, torch.ones_like(score)) + 100.0 * F.l1_loss(fake.float(), ct)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

    return _steps_per_second(step, device, cfg["warmup"], cfg["steps"])


def _model_file(path: Path, cfg: dict) -> tuple[Path, torch.nn.Module, tuple[int, ...]]:
    """A pix2pix model file with the default generator and the first training patch as its window, on a
    1 mm grid (the inputs' grid)."""
    config = Pix2PixConfig(patch_size=(cfg["patches"][0],), **cfg["model"])
    bare = _pix2pix_networks(config)
    network = bare.networks["G"]
    metadata = {"spatial_dims": 3, "patch_size": list(config.patch_size), "spacing": [1.0] * 3, "flip_axes": [0],
                "mc_dropout": False, "directions": {"mr2ct": {"network": "G", "source": MRIntensity().to_json(),
                                                              "target": CTIntensity().to_json()}}}
    save_model(path, "pix2pix", {"G": (bare.specs["G"], network)}, metadata)
    return path, network, tuple(config.patch_size)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def translation(root: Path, label: str, shape: tuple[int, ...], device: torch.device, cfg: dict) -> list[dict]:
    """medsynth translate and a plain sliding-window script on the same volume and network (2nd of 2 cases)."""
    (root / "model").mkdir(parents=True)  # the model's folder is an input: outputs go beside it, not inside
    model, network, patch = _model_file(root / "model" / "model.safetensors", cfg)
    inputs = root / "in"
    inputs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for case in ("a", "b"):
        nib.save(nib.Nifti1Image(rng.gamma(2.0, 100.0, shape).astype(np.float32), np.eye(4)), inputs / f"{case}.nii.gz")
    options = TranslateOptions(device="cuda" if device.type == "cuda" else "cpu", overwrite=True)
    translate(model, inputs / "a.nii.gz", root / "out", options)  # warm-up (cuDNN autotuning)
    _peak_reset(device)
    started = time.perf_counter()
    translate(model, inputs / "b.nii.gz", root / "out", options)
    rows = [{"item": f"translate {label}", "path": "medsynth translate", "s_per_case": time.perf_counter() - started,
             "peak_gpu_gib": _peak_gib(device)}]
    network = network.to(device).eval()
    amp = torch.bfloat16 if device.type == "cuda" else None

    def plain(path: Path) -> None:
        image = nib.load(path)
        array = image.get_fdata(dtype=np.float32)
        low, high = np.percentile(array, (0.5, 99.5))
        x = torch.from_numpy(np.clip(2 * (array - low) / (high - low) - 1, -1, 1).astype(np.float32))[None, None]
        x = x.to(device)
        with torch.no_grad(), (torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()):
            y = sliding_window_inference(x, patch, 4, network, overlap=0.25, mode="gaussian")
        hu = CTIntensity().denormalise(y[0, 0].float().cpu().numpy())
        nib.save(nib.Nifti1Image(np.clip(np.rint(hu), -1024, 3071).astype(np.int16), image.affine),
                 root / "plain.nii.gz")

    plain(inputs / "a.nii.gz")
    _peak_reset(device)
    started = time.perf_counter()
    plain(inputs / "b.nii.gz")
    rows.append({"item": f"translate {label}", "path": "plain sliding_window_inference script",
                 "s_per_case": time.perf_counter() - started, "peak_gpu_gib": _peak_gib(device)})
    return rows + amp_differences(network, nib.load(inputs / "b.nii.gz").get_fdata(dtype=np.float32), patch,
                                  device, label)


def amp_differences(network: torch.nn.Module, array: np.ndarray, patch: tuple[int, ...], device: torch.device,
                    label: str) -> list[dict]:
    """How far bf16 and fp16 autocast move the sCT against fp32, in HU (max and mean |difference|): whether
    AMP may stay the default for inference."""
    low, high = np.percentile(array, (0.5, 99.5))
    x = torch.from_numpy(np.clip(2 * (array - low) / (high - low) - 1, -1, 1).astype(np.float32))[None, None]
    x = x.to(device)

    def sct(dtype: torch.dtype | None) -> np.ndarray:
        with torch.no_grad(), (torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()):
            y = sliding_window_inference(x, patch, 4, network, overlap=0.25, mode="gaussian")
        return CTIntensity().denormalise(y[0, 0].float().cpu().numpy())

    reference, rows = sct(None), []
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        try:
            difference = np.abs(sct(dtype) - reference)
            note = f"HU difference from fp32: max {difference.max():.1f}, mean {difference.mean():.2f}"
        except RuntimeError as error:  # an autocast dtype this device does not run
            note = f"unsupported here ({str(error).splitlines()[0][:60]})"
        rows.append({"item": f"translate {label}: AMP against fp32", "path": "plain network", "variant": name,
                     "note": note})
    return rows


def fastgan_training(root: Path, device: torch.device, cfg: dict) -> float:
    data = root / "slices"
    write_phantom("slices", data, cases=2, shape=(40, 40, 16), spacing=5.0, seed=0)
    config = FastGANConfig(resolution=cfg["fastgan"], **({"ngf": 8, "ndf": 8, "nz": 32} if cfg is SMOKE else {}))
    family = FastGAN(config, data, split=SplitPlan(write=False))
    amp = torch.bfloat16 if device.type == "cuda" else None
    trainer = Trainer(family, TrainConfig(steps=10**6, batch_size=8 if cfg is FULL else 2, workers=0), root / "fg",
                      Runtime(device, amp))
    batches = trainer._batches()
    context = StepContext(trainer.runtime, family.networks, trainer.trained, trainer.optimizers, trainer.scalers,
                          lambda: next(batches))
    family.networks.train()
    return _steps_per_second(lambda: family.train_step(next(batches), context), device, cfg["warmup"], cfg["steps"])


def markdown(rows: list[dict], header: str) -> str:
    lines = [f"<!-- {header} -->", "| item | path | variant | steps/s | s/case | peak GPU GiB | note |",
             "|---|---|---|---|---|---|---|"]
    def cell(row: dict, key: str) -> str:
        return "" if row.get(key) is None else f"{row[key]:.2f}"

    for r in rows:
        lines.append(f"| {r['item']} | {r.get('path', '')} | {r.get('variant', '')} | {cell(r, 'steps_per_s')} | "
                     f"{cell(r, 's_per_case')} | {cell(r, 'peak_gpu_gib')} | {r.get('note', '')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (seconds), for the test suite")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--budget-min", type=float, default=7.5, help="skip what would start after this")
    args = parser.parse_args()
    cfg = SMOKE if args.smoke else FULL
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    header = f"{'smoke' if args.smoke else 'full'} run on {machine()}"
    if device.type == "cuda":
        header += f", {torch.cuda.get_device_name(device)}"
    started, rows = time.perf_counter(), []

    def budget_left() -> bool:
        return (time.perf_counter() - started) / 60 < args.budget_min

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "paired"
        write_phantom("paired", data, cases=2, shape=cfg["phantom"], spacing=2.0, seed=0)
        for patch in cfg["patches"]:
            for variant in VARIANTS:
                item = f"vox2vox train {patch}³ batch {cfg['batch']}"
                if args.smoke and variant == "torch.compile":
                    rows.append({"item": item, "variant": variant, "note": "skipped in --smoke (compiling is slow)"})
                    continue
                measures = {
                    "medsynth engine": lambda p=patch, v=variant: medsynth_training(data, p, v, device, cfg,
                                                                                    root / "run"),
                    "plain PyTorch + MONAI loop": lambda p=patch, v=variant: reference_training(p, v, device, cfg),
                }
                for path, measure in measures.items():
                    if not budget_left():
                        rows.append({"item": item, "path": path, "variant": variant, "note": "skipped: time budget"})
                        continue
                    _peak_reset(device)
                    rows.append({"item": item, "path": path, "variant": variant, "steps_per_s": measure(),
                                 "peak_gpu_gib": _peak_gib(device)})
        for label, shape in cfg["grids"].items():
            if budget_left():
                rows += translation(root / label.split()[0], label, shape, device, cfg)
            else:
                rows.append({"item": f"translate {label}", "note": "skipped: time budget"})
        item = f"FastGAN train {cfg['fastgan']}²"
        rows.append({"item": item, "path": "medsynth engine", "variant": "bf16" if device.type == "cuda" else "fp32",
                     "steps_per_s": fastgan_training(root, device, cfg)} if budget_left()
                    else {"item": item, "note": "skipped: time budget"})
    args.out.mkdir(parents=True, exist_ok=True)
    document = {"header": header, "device": str(device), "minutes": (time.perf_counter() - started) / 60,
                "rows": rows}
    (args.out / "gpu_suite.json").write_text(json.dumps(document, indent=2))
    (args.out / "gpu_suite.md").write_text(markdown(rows, header))
    print(markdown(rows, header))
    print(f"{document['minutes']:.1f} min -> {args.out / 'gpu_suite.json'}, {args.out / 'gpu_suite.md'}")


if __name__ == "__main__":
    main()
