"""Where MODEL points: a run folder, its model file, an exported graph, or a folder of them (an ensemble).

Paths only — no torch — so that the command line refuses a folder without a model before torch loads.
"""

from __future__ import annotations

from pathlib import Path

from medsynth.errors import ModelError

MODEL_FILENAME = "model.safetensors"


def resolve_model_path(path: Path) -> Path:
    """MODEL is a run directory or the model file inside it."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILENAME
    if not path.is_file():
        raise ModelError(f"{path}: no model file here; pass a run folder from 'medsynth train' or its "
                         f"{MODEL_FILENAME}.")
    return path


def resolve_model_paths(path: Path) -> list[Path]:
    """MODEL as one or several models: a model file (``.safetensors`` or exported ``.onnx``), a run
    folder, or a folder of run folders or ``.onnx`` files (an ensemble, e.g. the folds of one
    experiment), sorted by name."""
    path = Path(path)
    if path.is_file() or (path / MODEL_FILENAME).is_file():
        return [resolve_model_path(path)]
    if path.is_dir():
        members = sorted(p / MODEL_FILENAME for p in path.iterdir() if (p / MODEL_FILENAME).is_file())
        members += sorted(p for p in path.glob("*.onnx") if p.is_file())
        if members:
            return members
    raise ModelError(f"{path}: no model here; pass a run folder from 'medsynth train', its {MODEL_FILENAME}, "
                     "an exported .onnx, or a folder of runs (an ensemble).")
