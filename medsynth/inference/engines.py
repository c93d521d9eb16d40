"""Inference engines: a network as PyTorch runs it, or its ONNX graph under onnxruntime.

The translation pipeline (model grid, sliding windows, blending, TTA, inverse) only ever calls a
network on a (B, C, *spatial) tensor, so an ONNX graph wrapped as a module runs through the same code.
onnx and onnxruntime are the optional extra ``medsynth[onnx]``; they are imported only when used.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from medsynth.choices import Engine
from medsynth.errors import ModelError, UsageError
from medsynth.modelfile import (
    AttributionMetadata,
    ModelFile,
    TranslationMetadata,
    VolumeMetadata,
    model_fingerprint,
)

__all__ = ["Engine", "OnnxNetwork", "model_to_onnx", "network_to_onnx", "read_onnx_metadata"]

OPSET = 17
ONNX_METADATA_KEY = "medsynth"
INPUT_NAME, OUTPUT_NAME = "input", "output"


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise UsageError(f"{module} is not installed; install the ONNX extra: pip install 'medsynth[onnx]'.") \
            from None


def network_to_onnx(network: nn.Module, example: Tensor, spatial: bool, metadata: dict[str, Any]) -> bytes:
    """The ONNX graph (opset 17) of ``network`` in evaluation mode, checked by ``onnx.checker``.

    ``example``: an input of the right channels, e.g. (1, C, *patch) or (1, nz). The batch axis is
    always dynamic and, with ``spatial``, so is every axis after the channels, so the graph takes
    any window size the U-Net's strides allow. ``metadata`` goes into the graph's ``metadata_props``
    as one JSON string under the key ``medsynth``.
    """
    onnx = _require("onnx")
    axes = {0: "batch", **({axis: f"spatial{axis - 2}" for axis in range(2, example.ndim)} if spatial else {})}
    buffer = io.BytesIO()
    network = _baked(network)
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter announces itself and notes that instance norm always uses the
        # statistics of its input, which is what these networks do in evaluation mode too.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(network, (example,), buffer, opset_version=OPSET, dynamo=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes})
        except (RuntimeError, torch.onnx.errors.OnnxExporterError) as error:
            raise ModelError(f"this network cannot be exported to ONNX opset {OPSET}: {error}") from error
    proto = onnx.load_from_string(buffer.getvalue())
    proto.doc_string = "medsynth inference network; the model file's metadata is in metadata_props['medsynth']"
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(metadata)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def _baked(network: nn.Module) -> nn.Module:
    """An evaluation-mode copy with weight parametrisations (FastGAN's spectral norm) folded into plain
    weights: in evaluation mode they are constants, and ONNX has no operator for their power iteration."""
    network = copy.deepcopy(network).eval()
    for module in network.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return network


def read_onnx_metadata(path: Path) -> dict[str, Any]:
    """The medsynth metadata of an exported graph (see :func:`network_to_onnx`)."""
    onnx = _require("onnx")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError and others from protobuf
        raise ModelError(f"{path}: is not a readable ONNX file ({error}).") from error
    props = {p.key: p.value for p in proto.metadata_props}
    if ONNX_METADATA_KEY not in props:
        raise ModelError(f"{path}: an ONNX file without medsynth metadata; export it with 'medsynth export'.")
    return json.loads(props[ONNX_METADATA_KEY])


def model_document(model: ModelFile) -> dict[str, Any]:
    """A model file's metadata with its family and network specs: what an exported graph carries."""
    return {**model.metadata, "family": model.family,
            "networks": {n: {"builder": s.builder, "kwargs": s.kwargs} for n, s in model.networks.items()}}


def exported_network(model: ModelFile, direction: str = "mr2ct") -> tuple[str, dict[str, Any]]:
    """The name of the inference network of ``model`` and the metadata an exported graph carries."""
    metadata = model_document(model)
    if "directions" in model.metadata:
        directions = TranslationMetadata.from_json(model.metadata, model.path).directions
        if direction not in directions:
            raise UsageError(f"{model.path}: this {model.family} model translates {', '.join(directions)} only; "
                             f"--direction {direction} is not available.")
        name = directions[direction].network
        # The graph is one direction: translate must not offer the other, and dropout is gone in the graph.
        metadata.update(directions={direction: metadata["directions"][direction]}, mc_dropout=False)
    elif "map_network" in model.metadata:
        name, direction = AttributionMetadata.from_json(model.metadata, model.path).map_network, ""
    elif "G" in model.networks:
        name, direction = "G", ""
    else:
        raise ModelError(f"{model.path}: no inference network to export in this {model.family} model.")
    # The source's fingerprint: a run and its own export are one model (an ensemble counts it once).
    source = model_fingerprint(model.path) if model.path is not None and Path(model.path).is_file() else None
    metadata["onnx"] = {"network": name, "direction": direction, "opset": OPSET, "source_fingerprint": source}
    return name, metadata


def member_fingerprint(path: Path, document: dict[str, Any]) -> str:
    """The fingerprint of the model a file holds: a model file's own, or the one an exported graph was made
    from (graphs exported before it was recorded: the graph file's own)."""
    source = document.get("onnx", {}).get("source_fingerprint") if Path(path).suffix == ".onnx" else None
    return source or model_fingerprint(path)


def model_to_onnx(model: ModelFile, direction: str = "mr2ct") -> bytes:
    """The checked ONNX graph of ``model``'s inference network (see the module's docstring)."""
    name, metadata = exported_network(model, direction)
    network = model.build(name, "cpu")
    kwargs = model.networks[name].kwargs
    if "nz" in kwargs:  # FastGAN: a latent vector in, a slice out
        return network_to_onnx(network, torch.randn(1, int(kwargs["nz"])), spatial=False, metadata=metadata)
    patch_size = VolumeMetadata.from_json(model.metadata, model.path).patch_size
    example = torch.zeros(1, int(kwargs.get("in_channels", 1)), *patch_size)
    return network_to_onnx(network, example, spatial=True, metadata=metadata)


class OnnxNetwork(nn.Module):
    """An onnxruntime session that behaves as a module: (B, C, *spatial) float tensor in, tensor out.

    Inputs are computed on the CPU provider unless CUDA's is available and asked for; outputs come
    back on the input's device. It holds no parameters, so its device is reported by :attr:`device`.
    """

    def __init__(self, graph: bytes | Path, threads: int = 0, providers: Sequence[str] = ("CPUExecutionProvider",)
                 ) -> None:
        super().__init__()
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        available = set(ort.get_available_providers())
        chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        source = str(graph) if isinstance(graph, Path) else graph
        self.session = ort.InferenceSession(source, sess_options=options, providers=chosen)
        self.device = torch.device("cpu")

    def forward(self, x: Tensor) -> Tensor:
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        (output,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})
        return torch.from_numpy(output).to(x.device)


def onnx_providers(device: torch.device) -> tuple[str, ...]:
    """onnxruntime providers for a torch device choice: CUDA first on a GPU, the CPU always."""
    return ("CUDAExecutionProvider", "CPUExecutionProvider") if device.type == "cuda" else ("CPUExecutionProvider",)
