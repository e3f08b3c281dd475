"""ONNX export of FarSee-Net (dynamic batch, fixed height and width) and a parity check with ONNX Runtime.

The graph takes normalised images ``images [N, 3, H, W]`` (float32, the model's ``mean``/``std``, which are also
stored in the ONNX metadata with the class names) and returns ``logits [N, K, H, W]``. H and W are fixed at export
time: the sub-sampling, the padding to a multiple of 32 and the crop of the valid logits depend on them.

Exporter and opset: torch's ``torch.export``-based exporter (``dynamo=True``, the default since torch 2.9), whose
lowest opset is 18 (ONNX Runtime >= 1.14, TensorRT >= 8.6). Opset 17 is not reachable: the older TorchScript
exporter (``dynamo=False``) hands ``FarSeeNet.forward`` the input size as traced tensors, which its sub-sampling
arithmetic (``round``) rejects, and onnx's version converter has no Pad adapter from 18 down to 17. The exporter
needs ``onnxscript``; ``pip install keenvision[onnx]`` installs it with ``onnx`` and ``onnxruntime``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..core.io import write_atomic

OPSET = 18
ONNX_EXTRA_HINT = "ONNX export needs the onnx extra: pip install 'keenvision[onnx]' (onnx, onnxscript, onnxruntime)"


def onnx_export_available() -> bool:
    """Whether the exporter's dependencies (``onnx``, ``onnxscript``) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript"))


def onnx_runtime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def export_onnx(model: torch.nn.Module, out: str | Path, size: tuple[int, int] = (360, 480),
                opset: int = OPSET) -> Path:
    """Write ``model`` (on the CPU, fp32, eval mode) as ONNX to ``out`` for inputs of ``size`` (height, width) and
    any batch size, with class names, mean/std and the input size in its metadata; returns the path. The file is
    written atomically. Raises ImportError when ``onnx``/``onnxscript`` are missing."""
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {height}x{width}")
    if opset < 18:
        raise ValueError(f"opset {opset} is below 18, the lowest the torch.export-based exporter writes")
    if not onnx_export_available():
        raise ImportError(ONNX_EXTRA_HINT)
    import onnx

    out = Path(out)
    model = copy.deepcopy(model).float().cpu().eval()  # the caller's model keeps its device and dtype
    example = torch.zeros(1, 3, height, width)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with tempfile.TemporaryDirectory() as folder:
        temporary = Path(folder) / "model.onnx"
        torch.onnx.export(model, (example,), str(temporary), dynamo=True, opset_version=opset,
                          input_names=["images"], output_names=["logits"],
                          dynamic_shapes={"images": {0: batch}}, verbose=False)
        proto = onnx.load(str(temporary))  # loads any external weight files too: the result is one file
    write_atomic(out, _with_metadata(proto, model, size).SerializeToString())
    return out


def _with_metadata(proto, model: torch.nn.Module, size: tuple[int, int]):
    """``proto`` (an ``onnx.ModelProto``) with class names, normalisation and the input size in its
    ``metadata_props``."""
    properties = {"class_names": list(getattr(model, "class_names", ())),
                  "mean": list(getattr(model, "mean", ())), "std": list(getattr(model, "std", ())),
                  "input_size_hw": list(size), "ignore_index": getattr(model, "ignore_index", None),
                  "architecture": getattr(model, "config", None)}
    for key, value in properties.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    return proto


def onnx_parity(model: torch.nn.Module, path: str | Path, images: torch.Tensor) -> float:
    """Largest absolute difference between the logits of ONNX Runtime (CPU) running ``path`` and of ``model`` on
    ``images [N, 3, H, W]`` (normalised, float32). Needs ``onnxruntime``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = session.run(["logits"], {"images": images.float().cpu().numpy()})[0]
    with torch.inference_mode():
        reference = copy.deepcopy(model).float().cpu().eval()(images.float().cpu()).numpy()
    if ours.shape != reference.shape:
        raise ValueError(f"ONNX output {ours.shape} differs in shape from torch's {reference.shape}")
    return float(np.abs(ours - reference).max())
