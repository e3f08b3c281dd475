"""Import the MTCNN authors' Caffe weights (det1-3.caffemodel) without Caffe or generated protobuf code.

A ``.caffemodel`` is a serialised ``caffe.NetParameter``. We read just what we need from the protobuf wire
format: each layer's name and its blobs (shape + float data), from the current ``layer`` field (100) or the
deprecated V1 ``layers`` field (2) that older models such as these use.

The authors trained in MATLAB, which hands Caffe column-major (transposed) images. To run on ordinary row-major
images we transpose every convolution kernel and reorder the input columns of the first fully connected layer
(whose input was flattened as ``[C, W, H]``). `to_caffe_layout` undoes exactly that, for the import test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .model import ONet, PNet, RNet

_NET_LAYER, _NET_V1_LAYERS = 100, 2
_LAYER_NAME, _LAYER_TYPE, _LAYER_BLOBS = 1, 2, 7
_V1_NAME, _V1_TYPE, _V1_BLOBS = 4, 5, 6
_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH, _BLOB_DATA, _BLOB_SHAPE = 1, 2, 3, 4, 5, 7
_SHAPE_DIM = 1


class CaffeFormatError(ValueError):
    """The file is not a Caffe model we can read."""


@dataclass
class CaffeLayer:
    name: str
    blobs: list[np.ndarray]


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(buffer):
            raise CaffeFormatError("truncated varint")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise CaffeFormatError("varint too long")


def _fields(buffer: bytes):
    """Yield ``(field_number, wire_type, value)``; value is an int for varints, bytes otherwise."""
    position = 0
    while position < len(buffer):
        key, position = _varint(buffer, position)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(buffer, position)
        elif wire_type == 1:
            value, position = buffer[position:position + 8], position + 8
        elif wire_type == 2:
            length, position = _varint(buffer, position)
            value, position = buffer[position:position + length], position + length
        elif wire_type == 5:
            value, position = buffer[position:position + 4], position + 4
        else:
            raise CaffeFormatError(f"unsupported protobuf wire type {wire_type}")
        if position > len(buffer):
            raise CaffeFormatError("truncated field")
        yield field, wire_type, value


def _blob(buffer: bytes) -> np.ndarray:
    legacy_dims = {}
    shape: list[int] = []
    chunks: list[np.ndarray] = []
    for field, wire_type, value in _fields(buffer):
        if field == _BLOB_DATA:
            # packed (one length-delimited run) or, in old writers, one fixed32 per element
            chunks.append(np.frombuffer(value, dtype="<f4"))
        elif field == _BLOB_SHAPE:
            for dim_field, dim_wire, dim_value in _fields(value):
                if dim_field != _SHAPE_DIM:
                    continue
                if dim_wire == 2:  # packed int64 varints
                    position = 0
                    while position < len(dim_value):
                        dim, position = _varint(dim_value, position)
                        shape.append(dim)
                else:
                    shape.append(dim_value)
        elif field in (_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH) and wire_type == 0:
            legacy_dims[field] = value
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if not shape:
        shape = [legacy_dims.get(f, 1) for f in (_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH)]
    if int(np.prod(shape)) != data.size:
        raise CaffeFormatError(f"blob shape {shape} does not match its {data.size} values")
    return data.reshape(shape).astype(np.float32)


def read_caffemodel(path: str | Path) -> list[CaffeLayer]:
    """Layers that carry weights, in file order, each with its blobs as float32 arrays."""
    buffer = Path(path).read_bytes()
    layers = []
    for field, wire_type, value in _fields(buffer):
        if field not in (_NET_LAYER, _NET_V1_LAYERS) or wire_type != 2:
            continue
        name_field, blobs_field = (_LAYER_NAME, _LAYER_BLOBS) if field == _NET_LAYER else (_V1_NAME, _V1_BLOBS)
        name, blobs = "", []
        for layer_field, _, layer_value in _fields(value):
            if layer_field == name_field:
                name = layer_value.decode("utf-8", "replace")
            elif layer_field == blobs_field:
                blobs.append(_blob(layer_value))
        if blobs:
            layers.append(CaffeLayer(name, blobs))
    if not layers:
        raise CaffeFormatError(f"{path}: no layers with weights (is it a .caffemodel?)")
    return layers


def _weighted_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear | nn.PReLU)]


def _first_linear_input_shape(model: nn.Module) -> tuple[int, int, int]:
    """(channels, height, width) of the activation flattened into the first FC layer."""
    return {RNet: (64, 3, 3), ONet: (128, 3, 3)}[type(model)]


def from_caffe_layout(model: nn.Module, caffe_tensors: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """Map blobs (in Caffe layer order) onto ``model``'s parameters, transposing to row-major images."""
    state: dict[str, torch.Tensor] = {}
    names = {id(p): n for n, p in model.named_parameters()}
    seen_linear = False
    blobs = iter(caffe_tensors)
    for module in _weighted_modules(model):
        for parameter in module.parameters(recurse=False):
            try:
                blob = torch.from_numpy(next(blobs).copy())
            except StopIteration:
                raise CaffeFormatError(f"the model has fewer blobs than {type(model).__name__} needs") from None
            if isinstance(module, nn.Conv2d) and parameter.dim() == 4:
                blob = blob.transpose(2, 3)
            elif isinstance(module, nn.Linear) and parameter.dim() == 2 and not seen_linear:
                channels, height, width = _first_linear_input_shape(model)
                blob = blob.reshape(-1, channels, width, height).transpose(2, 3).reshape(blob.shape[0], -1)
            blob = blob.reshape(parameter.shape) if blob.numel() == parameter.numel() else blob
            if blob.shape != parameter.shape:
                raise CaffeFormatError(
                    f"{names[id(parameter)]}: Caffe blob {tuple(blob.shape)} does not fit {tuple(parameter.shape)}")
            state[names[id(parameter)]] = blob.contiguous()
        if isinstance(module, nn.Linear):
            seen_linear = True
    if next(blobs, None) is not None:
        raise CaffeFormatError(f"the model has more blobs than {type(model).__name__} needs")
    return state


def to_caffe_layout(model: nn.Module, state: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """Inverse of `from_caffe_layout`: our tensors back in Caffe's shapes and order."""
    names = {id(p): n for n, p in model.named_parameters()}
    out, seen_linear = [], False
    for module in _weighted_modules(model):
        for parameter in module.parameters(recurse=False):
            tensor = state[names[id(parameter)]]
            if isinstance(module, nn.Conv2d) and tensor.dim() == 4:
                tensor = tensor.transpose(2, 3)
            elif isinstance(module, nn.Linear) and tensor.dim() == 2 and not seen_linear:
                channels, height, width = _first_linear_input_shape(model)
                tensor = tensor.reshape(-1, channels, height, width).transpose(2, 3).reshape(tensor.shape[0], -1)
            out.append(tensor.contiguous().numpy())
        if isinstance(module, nn.Linear):
            seen_linear = True
    return out


CAFFE_FILES = {"pnet": "det1.caffemodel", "rnet": "det2.caffemodel", "onet": "det3.caffemodel"}


def convert_mtcnn_caffe(directory: str | Path) -> dict[str, torch.Tensor]:
    """Read det1-3.caffemodel from ``directory``; return one state dict with ``pnet.``/``rnet.``/``onet.``
    prefixes, ready for `keenvision.core.weights.save_weights`."""
    directory = Path(directory)
    state = {}
    for stage, network in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        path = directory / CAFFE_FILES[stage]
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (expected the authors' det1-3.caffemodel files)")
        blobs = [blob for layer in read_caffemodel(path) for blob in layer.blobs]
        # det2.caffemodel also holds a landmark layer (conv5-3) that det2.prototxt leaves out: keep it.
        with_landmarks = len(blobs) == len(list(network(landmarks=True).parameters()))
        model = network(landmarks=with_landmarks or network is ONet)
        for name, tensor in from_caffe_layout(model, blobs).items():
            state[f"{stage}.{name}"] = tensor
    return state

