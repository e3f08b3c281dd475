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
from pathlib import Path

import numpy as np
import torch

from ..core.io import write_atomic
from ..core.onnx import ONNX_EXTRA_HINT, OPSET, export_to_onnx_bytes, onnx_export_available, onnx_runtime_available

__all__ = ["ONNX_EXTRA_HINT", "OPSET", "export_onnx", "onnx_export_available", "onnx_parity",
           "onnx_runtime_available"]


def export_onnx(model: torch.nn.Module, out: str | Path, size: tuple[int, int] = (360, 480),
                opset: int = OPSET) -> Path:
    """Write ``model`` (on the CPU, fp32, eval mode) as ONNX to ``out`` for inputs of ``size`` (height, width) and
    any batch size, with class names, mean/std and the input size in its metadata; returns the path. The file is
    written atomically. Raises ImportError when ``onnx``/``onnxscript`` are missing."""
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {height}x{width}")
    metadata = {"class_names": list(getattr(model, "class_names", ())),
                "mean": list(getattr(model, "mean", ())), "std": list(getattr(model, "std", ())),
                "input_size_hw": list(size), "ignore_index": getattr(model, "ignore_index", None),
                "architecture": getattr(model, "config", None)}
    batch = torch.export.Dim("batch", min=1, max=4096)
    data = export_to_onnx_bytes(model, torch.zeros(1, 3, height, width), "images", ["logits"], {0: batch}, metadata,
                                opset)
    write_atomic(out, data)
    return Path(out)


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
