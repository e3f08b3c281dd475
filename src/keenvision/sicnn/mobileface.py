"""MobileFace_Identification_V2 (becauseofAI/MobileFace, MIT) as a SICNN CNN-R, imported from MXNet without MXNet.

The network, read off its ``-symbol.json``:

    faces [B, 3, 112, 96] in [-1, 1] (SICNN's x / 127.5 - 1) -> scale to MobileFace's (x - 127.5) / 128
      -> fit to 112x112 (``fit``: pad 8 columns each side, or resize)
    conv 3x3/2 (32, bias) BN ReLU6                                              [B, 32, 56, 56]
    4 stages of 3 inverted residual blocks (1x1 expand x3 of the input channels, BN, ReLU6, dw 3x3, BN, ReLU6,
    1x1 project, BN; the first of each stage strides 2 and has no shortcut) to 32, 32, 64, 128 channels
                                                                                [B, 128, 4, 4]
    flatten -> FC 2048 -> 256 (no bias) -> BN                                    [B, 256]

`read_mxnet_params` reads MXNet's NDArray-list ``.params`` format; `import_mobileface` pairs the graph's
Convolution / BatchNorm / FullyConnected nodes, in order, with this module's layers and checks every attribute and
tensor shape, so a file of another network is refused with a line naming the first tensor that does not fit.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import WeightsError

NDARRAY_LIST_MAGIC = 0x112
NDARRAY_V2_MAGIC = 0xF993FAC9
NDARRAY_V1_MAGIC = 0xF993FAC8
MXNET_DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64}
BN_EPS = 1e-3  # MXNet's BatchNorm default (the graph sets none)
INPUT_SCALE = 127.5 / 128  # SICNN's [-1, 1] faces -> MobileFace's (x - 127.5) / 128
FITS = ("pad", "resize")


def read_mxnet_params(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an MXNet ``.params`` file (``mx.nd.save`` of a dict), by name with the ``arg:``/``aux:``
    prefix removed. WeightsError (one line) for a foreign, truncated or sparse file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise WeightsError(f"{path}: cannot read ({error.strerror})") from None
    offset = 0

    def take(fmt: str):
        nonlocal offset
        size = struct.calcsize(fmt)
        if offset + size > len(data):
            raise WeightsError(f"{path} is truncated (ends at byte {len(data)} inside an MXNet record)")
        values = struct.unpack_from(fmt, data, offset)
        offset += size
        return values

    magic, _reserved, count = take("<QQQ")
    if magic != NDARRAY_LIST_MAGIC:
        raise WeightsError(f"{path} is not an MXNet .params file (magic {magic:#x}, expected {NDARRAY_LIST_MAGIC:#x})")
    arrays = []
    for index in range(count):
        (array_magic,) = take("<I")
        if array_magic == NDARRAY_V2_MAGIC:
            (storage,) = take("<i")
            if storage != 0:
                raise WeightsError(f"{path}: array {index} is sparse (storage type {storage}); only dense is read")
        elif array_magic != NDARRAY_V1_MAGIC:
            raise WeightsError(f"{path}: array {index} has an unknown NDArray magic {array_magic:#x}")
        (ndim,) = take("<I")
        shape = take(f"<{ndim}q") if ndim else ()
        take("<ii")  # context: device type, device id
        (type_flag,) = take("<i")
        if type_flag not in MXNET_DTYPES:
            raise WeightsError(f"{path}: array {index} has an unknown dtype flag {type_flag}")
        dtype = np.dtype(MXNET_DTYPES[type_flag])
        size = int(np.prod(shape)) * dtype.itemsize
        if offset + size > len(data):
            raise WeightsError(f"{path} is truncated (array {index} of {count} needs {size} bytes)")
        arrays.append(np.frombuffer(data, dtype, int(np.prod(shape)), offset).reshape(shape).copy())
        offset += size
    (names_count,) = take("<Q")
    if names_count != count:
        raise WeightsError(f"{path}: {count} arrays but {names_count} names")
    names = []
    for _ in range(names_count):
        (length,) = take("<Q")
        if offset + length > len(data):
            raise WeightsError(f"{path} is truncated (in the array names)")
        names.append(data[offset:offset + length].decode("utf-8", "replace"))
        offset += length
    return {name.split(":", 1)[-1]: array for name, array in zip(names, arrays)}


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
            relu6: bool = True, bias: bool = False) -> nn.Sequential:
    """Conv ("same" padding) -> BatchNorm (eps 1e-3) -> ReLU6 (absent on the linear projection)."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias),
              nn.BatchNorm2d(out_channels, eps=BN_EPS)]
    if relu6:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise 3x3 (stride) -> 1x1 linear projection; the input is added when the shapes agree.

    ``[B, in_channels, H, W] -> [B, out_channels, ceil(H / stride), ceil(W / stride)]``
    """

    def __init__(self, in_channels: int, out_channels: int, expanded: int, stride: int):
        super().__init__()
        self.shortcut = stride == 1 and in_channels == out_channels
        self.block = nn.Sequential(conv_bn(in_channels, expanded), conv_bn(expanded, expanded, 3, stride, expanded),
                                   conv_bn(expanded, out_channels, relu6=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.shortcut else self.block(x)


class MobileFaceNet(nn.Module):
    """MobileFace_Identification_V2 on SICNN's 96x112 faces.

    ``embed(faces [B, 3, 112, 96] in [-1, 1]) -> [B, 256]`` (the BN-normalised FC embedding; compare by cosine).
    ``stages``: (output channels, expansion of the input channels, blocks) per stage.
    ``fit``: how the 96-wide face becomes the 112x112 input: ``pad`` (8 grey columns each side: the 112x112 face
    template is the 96x112 one with wider margins) or ``resize``.
    """

    def __init__(self, stem_channels: int = 32, stages: Sequence[Sequence[int]] = ((32, 3, 3), (32, 3, 3),
                 (64, 3, 3), (128, 3, 3)), embedding_dim: int = 256, input_size: int = 112, fit: str = "pad"):
        super().__init__()
        if fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
        self.config = {"kind": "mobileface", "stem_channels": stem_channels,
                       "stages": [list(map(int, stage)) for stage in stages], "embedding_dim": embedding_dim,
                       "input_size": input_size, "fit": fit}
        self.fit, self.input_size = fit, input_size
        layers: list[nn.Module] = [conv_bn(3, stem_channels, 3, 2, bias=True)]
        channels, size = stem_channels, (input_size + 1) // 2
        for out_channels, expansion, blocks in stages:
            for index in range(blocks):
                stride = 2 if index == 0 else 1
                layers.append(InvertedResidual(channels, out_channels, channels * expansion, stride))
                channels, size = out_channels, (size + 1) // 2 if stride == 2 else size
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels * size * size, embedding_dim, bias=False)
        self.bn = nn.BatchNorm1d(embedding_dim, eps=BN_EPS)

    @property
    def embedding_dim(self) -> int:
        return self.config["embedding_dim"]

    def fit_input(self, faces: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> ``[B, 3, S, S]`` in MobileFace's scale (S = input_size)."""
        faces = faces * INPUT_SCALE
        height, width = faces.shape[-2:]
        if (height, width) == (self.input_size, self.input_size):
            return faces
        if self.fit == "pad" and height == self.input_size and width < self.input_size:
            left = (self.input_size - width) // 2
            return F.pad(faces, (left, self.input_size - width - left))  # 0 = mid grey in this scale
        return F.interpolate(faces, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)

    def embed(self, faces: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(self.features(self.fit_input(faces)).flatten(1)))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.embed(faces)


def _graph_layers(symbol: dict) -> list[dict]:
    """The graph's Convolution, BatchNorm and FullyConnected nodes in order, with the names of their tensors."""
    nodes = symbol["nodes"]
    layers = []
    for node in nodes:
        if node["op"] not in ("Convolution", "BatchNorm", "FullyConnected"):
            continue
        attrs = node.get("attrs", node.get("attr", node.get("param", {}))) or {}
        inputs = [nodes[entry[0]]["name"] for entry in node["inputs"][1:]]
        layers.append({"op": node["op"], "name": node["name"], "attrs": attrs, "tensors": inputs})
    return layers


def _tuple_attr(value: str | None, default: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value.strip("()").split(",") if v.strip()) if value else (default,)


def import_mobileface(params: str | Path, symbol: str | Path | None = None, fit: str = "pad") -> MobileFaceNet:
    """`MobileFaceNet` with the weights of an MXNet ``-0000.params`` and its ``-symbol.json`` (default: the file
    beside ``params`` named ``<prefix>-symbol.json``), in eval mode.

    Each graph layer is paired in order with the module's Conv2d / BatchNorm / Linear and must agree in kind,
    kernel, stride, groups and every tensor's shape; WeightsError (one line) names the first that does not."""
    params = Path(params)
    if symbol is None:
        symbol = params.with_name(params.name.rsplit("-", 1)[0] + "-symbol.json")
    try:
        graph = json.loads(Path(symbol).read_text())
        layers = _graph_layers(graph)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise WeightsError(f"{symbol} is not a readable MXNet symbol file ({type(error).__name__})") from None
    arrays = read_mxnet_params(params)
    model = MobileFaceNet(fit=fit)
    modules = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d | nn.BatchNorm1d | nn.Linear)]
    if len(layers) != len(modules):
        raise WeightsError(f"{symbol} has {len(layers)} conv/BN/FC layers, MobileFace_Identification_V2 has "
                           f"{len(modules)}: not this network")
    kinds = {nn.Conv2d: "Convolution", nn.BatchNorm2d: "BatchNorm", nn.BatchNorm1d: "BatchNorm",
             nn.Linear: "FullyConnected"}
    state = {}
    names = {module: name for name, module in model.named_modules()}
    for layer, module in zip(layers, modules):
        where = f"{layer['name']} ({names[module]})"
        if layer["op"] != kinds[type(module)]:
            raise WeightsError(f"{symbol}: layer {layer['name']} is {layer['op']}, the network expects "
                               f"{kinds[type(module)]} at {names[module]}")
        if isinstance(module, nn.Conv2d):
            attrs = layer["attrs"]
            found = (int(attrs.get("num_filter", -1)), _tuple_attr(attrs.get("kernel"), 1)[0],
                     _tuple_attr(attrs.get("stride"), 1)[0], int(attrs.get("num_group", 1)))
            expected = (module.out_channels, module.kernel_size[0], module.stride[0], module.groups)
            if found != expected:
                raise WeightsError(f"{symbol}: {where} has filters/kernel/stride/groups {found}, expected {expected}")
            targets = ["weight"] + (["bias"] if module.bias is not None else [])
        elif isinstance(module, nn.Linear):
            targets = ["weight"]
        else:
            targets = ["weight", "bias", "running_mean", "running_var"]
        if len(layer["tensors"]) != len(targets):
            raise WeightsError(f"{symbol}: {where} has {len(layer['tensors'])} tensors, expected {len(targets)}")
        for tensor_name, target in zip(layer["tensors"], targets):
            if tensor_name not in arrays:
                raise WeightsError(f"{params} has no tensor {tensor_name} (needed by {layer['name']})")
            value = torch.from_numpy(arrays[tensor_name]).float()
            expected = tuple(getattr(module, target).shape)
            if tuple(value.shape) != expected:
                raise WeightsError(f"{params}: tensor {tensor_name} is {tuple(value.shape)}, the graph needs "
                                   f"{expected} at {names[module]}.{target}")
            state[f"{names[module]}.{target}"] = value
    missing = [k for k in model.state_dict() if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(f"{params}: no tensor for {missing[0]}")
    model.load_state_dict(state, strict=False)
    return model.eval()

