"""ONNX export shared by the systems: torch's ``torch.export``-based exporter (opset >= 18), one self-contained file
per network with JSON metadata, written atomically; ``pip install 'keenvision[onnx]'`` brings onnx, onnxscript and
onnxruntime."""

from __future__ import annotations

import copy
import importlib.util
import json
import tempfile
from pathlib import Path

import torch

OPSET = 18
ONNX_EXTRA_HINT = "ONNX export needs the onnx extra: pip install 'keenvision[onnx]' (onnx, onnxscript, onnxruntime)"


def onnx_export_available() -> bool:
    """Whether the exporter's dependencies (``onnx``, ``onnxscript``) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript"))


def onnx_runtime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def export_to_onnx_bytes(module: torch.nn.Module, example: torch.Tensor, input_name: str, output_names: list[str],
                         dynamic_axes: dict[int, torch.export.Dim], metadata: dict, opset: int = OPSET) -> bytes:
    """The ONNX file (as bytes, weights inside) of ``module`` (a CPU fp32 copy in eval mode) for inputs like
    ``example`` with ``dynamic_axes`` ({axis: Dim}), ``metadata`` stored as JSON ``metadata_props``. ImportError
    with the install hint when the exporter's packages are missing."""
    if opset < 18:
        raise ValueError(f"opset {opset} is below 18, the lowest the torch.export-based exporter writes")
    if not onnx_export_available():
        raise ImportError(ONNX_EXTRA_HINT)
    import onnx

    module = copy.deepcopy(module).float().cpu().eval()  # the caller's module keeps its device and dtype
    with tempfile.TemporaryDirectory() as folder:
        temporary = Path(folder) / "model.onnx"
        torch.onnx.export(module, (example,), str(temporary), dynamo=True, opset_version=opset,
                          input_names=[input_name], output_names=output_names,
                          dynamic_shapes=(dynamic_axes,), verbose=False)  # by position: forward()s name it freely
        proto = onnx.load(str(temporary))  # loads any external weight files too: the result is one file
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    return proto.SerializeToString()
