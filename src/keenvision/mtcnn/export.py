"""ONNX export of the three MTCNN networks (facenet-pytorch's issue #213 asks for it), and a check with ONNX Runtime.

``pnet.onnx`` takes ``images [N, 3, H, W]`` with dynamic batch, height and width (one pyramid level per call, H, W
>= 12); ``rnet.onnx`` ``crops [N, 3, 24, 24]`` and ``onet.onnx`` ``crops [N, 3, 48, 48]`` with a dynamic batch. Inputs
are row-major RGB scaled as ``(x - 127.5) / 128`` (the authors' column-major kernels were transposed when their
Caffe files were converted, so no input transpose is needed); the outputs are the raw logits and offsets the
detector post-processes. The metadata (JSON ``metadata_props``) says so, with the output names.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from ..core.io import write_atomic
from ..core.onnx import OPSET, export_to_onnx_bytes

# example inputs for tracing: a batch of 2 and odd P-Net sides, or the exporter would specialise the graph to them
INPUTS = {"pnet": ("images", (2, 3, 61, 77)), "rnet": ("crops", (2, 3, 24, 24)), "onet": ("crops", (2, 3, 48, 48))}


def _output_names(network: torch.nn.Module, example: torch.Tensor) -> list[str]:
    with torch.inference_mode():
        count = len(network(example))
    return ["face_logits", "box_offsets", "landmark_offsets"][:count]


def export_mtcnn_onnx(detector, out_dir: str | Path, opset: int = OPSET) -> dict[str, Path]:
    """Write ``pnet.onnx``, ``rnet.onnx`` and ``onet.onnx`` of ``detector`` (a `keenvision.mtcnn.MTCNN`) into
    ``out_dir`` (created if needed); returns ``{stage: path}``. All three are exported in memory first and each file
    is written atomically, so an interrupted or failed export leaves no half-written file. ImportError (with the
    install hint) without the onnx extra; OSError when ``out_dir`` is not a writable folder."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out_dir):  # an unwritable folder fails here, before the export's work
        pass
    exported = {}
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    for stage, (input_name, shape) in INPUTS.items():
        network = getattr(detector, stage)
        example = torch.zeros(shape)
        axes = {0: batch}
        if stage == "pnet":
            axes |= {2: torch.export.Dim("height", min=12, max=1 << 14), 3: torch.export.Dim("width", min=12,
                                                                                             max=1 << 14)}
        outputs = _output_names(network, example)
        metadata = {"network": stage, "input": input_name,
                    "input_shape": ["N", 3, "H", "W"] if stage == "pnet" else ["N", *shape[1:]], "outputs": outputs,
                    "normalisation": "(rgb - 127.5) / 128, row-major [N, 3, H, W]",
                    "source": "keenvision.mtcnn (the MTCNN authors' weights unless trained otherwise)"}
        exported[stage] = export_to_onnx_bytes(network, example, input_name, outputs, axes, metadata, opset)
    paths = {}
    for stage, data in exported.items():
        paths[stage] = out_dir / f"{stage}.onnx"
        write_atomic(paths[stage], data)
    return paths


def onnx_parity(detector, paths: dict[str, Path], seed: int = 0) -> dict[str, float]:
    """Largest absolute difference per network between ONNX Runtime (CPU) and torch on random inputs: P-Net on
    two sizes (a batch of 2 at 61x77, one 150x213 image), R-Net and O-Net on batches of 5. Needs onnxruntime."""
    import onnxruntime

    generator = torch.Generator().manual_seed(seed)
    cases = {"pnet": [(2, 3, 61, 77), (1, 3, 150, 213)], "rnet": [(5, 3, 24, 24)], "onet": [(5, 3, 48, 48)]}
    worst = {}
    for stage, shapes in cases.items():
        session = onnxruntime.InferenceSession(str(paths[stage]), providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        network = getattr(detector, stage).float().cpu().eval()
        difference = 0.0
        for shape in shapes:
            inputs = torch.rand(shape, generator=generator) * 2 - 1
            ours = session.run(None, {input_name: inputs.numpy()})
            with torch.inference_mode():
                reference = network(inputs)
            for onnx_output, torch_output in zip(ours, reference):
                if onnx_output.shape != tuple(torch_output.shape):
                    raise ValueError(f"{stage}: ONNX output {onnx_output.shape} vs torch {tuple(torch_output.shape)}")
                difference = max(difference, float(np.abs(onnx_output - torch_output.numpy()).max()))
        worst[stage] = difference
    return worst
