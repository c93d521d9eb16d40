"""``export``: a model's inference network as an ONNX graph that carries the model file's metadata.

What is exported, by family: pix2pix the generator G; CycleGAN the generator of ``direction``
(``G_mr2ct`` or ``G_ct2mr``); VA-GAN the map generator M; FastGAN the generator G (latent in, slice out).
Image networks take (B, C, *spatial) with every axis but the channels dynamic; FastGAN's
generator takes (B, nz). The graph's ``metadata_props['medsynth']`` holds the model file's JSON with
``onnx`` added (network, direction, opset), so ``translate`` can run it without the model file.
"""

from __future__ import annotations

from pathlib import Path

from medsynth.errors import UsageError
from medsynth.inference.engines import model_to_onnx
from medsynth.io.modelpaths import MODEL_FILENAME
from medsynth.io.outputs import atomic_path, check_not_an_input
from medsynth.modelfile import load_model


def export_onnx(model_path: Path, out_path: Path, direction: str = "mr2ct", overwrite: bool = False) -> Path:
    """Write the ONNX graph of the model at ``model_path`` to ``out_path`` (atomically).

    Errors: a missing or damaged model, a direction the model lacks, an existing ``out_path``
    without ``overwrite``, or onnx not installed — each a :class:`~medsynth.errors.MedsynthError`.
    """
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise UsageError(f"{out_path}: name the exported file *.onnx.")
    if out_path.exists() and not overwrite:
        raise UsageError(f"{out_path}: exists; add --overwrite to replace it.")
    model = load_model(model_path)
    # The run folder is an input as a whole (checkpoints, split, logs): nothing is written into it.
    run_folder = model.path.parent if model.path.name == MODEL_FILENAME else None
    check_not_an_input(out_path, [model.path, run_folder])
    graph = model_to_onnx(model, direction)
    with atomic_path(out_path) as partial:
        partial.write_bytes(graph)
    return out_path
