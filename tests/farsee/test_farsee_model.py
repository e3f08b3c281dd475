"""FarSee-Net model: CF-ASPP on arbitrary features, sub-sampled full-resolution output for odd sizes and several
backbones, the sub-pixel head against the bilinear ablation, loading errors. Tiny widths keep it fast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from keenvision.farsee import CFASPP, FarSeeNet, build_farsee, load_farsee
from keenvision.farsee.model import (
    FASPP,
    BilinearUpsample,
    LogitSuperResolution,
    SubPixelUpsample,
    upsample_valid_region,
)


@pytest.mark.parametrize("head", ["sr", "bilinear"])
def test_cfaspp_on_arbitrary_feature_maps(head):
    torch.manual_seed(0)
    decoder = CFASPP(high_channels=24, low_channels=40, num_classes=5, width=16, head=head).eval()
    for low_size, high_size in [((8, 12), (4, 6)), ((9, 13), (5, 7))]:  # even and odd (stride-2 rounds up)
        low, high = torch.randn(2, 40, *low_size), torch.randn(2, 24, *high_size)
        logits = decoder(low, high)
        assert logits.shape == (2, 5, 4 * low_size[0], 4 * low_size[1])
        assert torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="half the size"):
        decoder(torch.randn(1, 40, 8, 12), torch.randn(1, 24, 8, 12))


def test_faspp_branches_and_dilations():
    faspp = FASPP(in_channels=8, branch_channels=4, dilations=(6, 12, 18))
    assert faspp.out_channels == 16 and len(faspp.branches) == 4
    depthwise = [branch[1][0] for branch in faspp.branches[1:]]
    assert [conv.dilation for conv in depthwise] == [(6, 6), (12, 12), (18, 18)]
    assert all(conv.groups == 4 for conv in depthwise)  # factorised: the dilated 3x3 is depthwise
    assert faspp(torch.randn(1, 8, 7, 9)).shape == (1, 16, 7, 9)


@pytest.mark.parametrize("size", [(360, 480), (97, 131), (33, 17), (64, 64)])
def test_full_resolution_output_for_odd_sizes(size):
    torch.manual_seed(0)
    model = FarSeeNet(num_classes=11, width=16, input_scale=0.5).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, *size))
    assert logits.shape == (1, 11, *size)
    assert torch.isfinite(logits).all()


def test_no_sub_sampling_and_batch():
    model = FarSeeNet(num_classes=3, width=16, input_scale=1.0).eval()
    assert model.sub_sampled_size(45, 61) == (45, 61)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 45, 61)).shape == (2, 3, 45, 61)


@pytest.mark.parametrize("backbone", ["resnet18d", "mobilenetv3_large_100", "efficientnet_b0"])
def test_lighter_backbones(backbone):
    model = build_farsee(num_classes=4, backbone=backbone, width=16).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 70, 90)).shape == (1, 4, 70, 90)
    assert model.config["backbone"] == backbone


def test_padding_inside_forward_is_exact():
    """At scale 1 a 50x70 image is padded to 64x96 inside forward: its logits equal those of the image we pad
    ourselves, cropped (the valid-region resize maps the logits back onto exactly the input pixels)."""
    torch.manual_seed(0)
    model = FarSeeNet(num_classes=3, width=16, input_scale=1.0).eval()
    image = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        logits = model(image)
        padded = model(F.pad(image, (0, 26, 0, 14)))[..., :50, :70]
    assert torch.allclose(logits, padded, atol=1e-4)


def test_valid_region_resize_geometry():
    torch.manual_seed(0)
    logits = torch.arange(12.0).view(1, 1, 1, 12).expand(1, 1, 6, 12).contiguous()  # value = logit column index
    # the valid part covers 9.5 of the 12 logit columns; output column x -> logit coordinate (x+0.5)*9.5/38 - 0.5
    resized = upsample_valid_region(logits, (6.0, 9.5), (24, 38))
    columns = torch.arange(38.0)
    expected = ((columns + 0.5) * 9.5 / 38 - 0.5).clamp(0, 11)
    assert torch.allclose(resized[0, 0, 10], expected, atol=1e-5)
    # when the valid region is the whole map it is plain bilinear interpolation
    whole = torch.randn(2, 3, 6, 8)
    assert torch.allclose(upsample_valid_region(whole, (6, 8), (23, 31)),
                          F.interpolate(whole, size=(23, 31), mode="bilinear", align_corners=False))
    assert torch.allclose(upsample_valid_region(whole, (6.0 - 1e-9, 8.0), (23, 31)),
                          F.interpolate(whole, size=(23, 31), mode="bilinear", align_corners=False), atol=1e-5)


def test_sub_pixel_upsampling_learns_what_bilinear_cannot():
    constant = torch.ones(1, 3, 4, 4)
    sub_pixel, bilinear = SubPixelUpsample(3, 2, factor=2, bias=False), BilinearUpsample(3, 2, factor=2, bias=False)
    # ICNR initialisation: at first the sub-pixel conv is nearest upsampling (each 2x2 block constant)
    start = sub_pixel(torch.randn(1, 3, 4, 4))
    assert torch.allclose(start, start[..., ::2, ::2].repeat_interleave(2, -2).repeat_interleave(2, -1))
    # with its own filter per sub-pixel it can put a pattern inside a block from a constant input; bilinear cannot
    torch.nn.init.normal_(sub_pixel.project.weight)
    patterned = sub_pixel(constant)
    assert patterned.shape == bilinear(constant).shape == (1, 2, 8, 8)
    assert patterned[0, 0].std() > 0.1
    assert bilinear(constant)[0, 0].std() < 1e-6


def _fit(module: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor, steps: int) -> list[float]:
    """MSE losses of ``steps`` Adam steps (lr 0.01) fitting ``module(inputs)`` to ``target``."""
    optimiser = torch.optim.Adam(module.parameters(), lr=0.01)
    losses = []
    for _ in range(steps):
        loss = F.mse_loss(module(inputs), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("bias", [True, False])
def test_3x3_sub_pixel_upsampling_starts_as_the_bilinear_ablation(bias):
    """kernel_size=3: under one seed the sub-pixel conv is the bilinear head's function at initialisation (borders
    included), and a few steps toward a target with detail inside each block move it where bilinear cannot go."""
    torch.manual_seed(0)
    sub_pixel = SubPixelUpsample(6, 3, factor=4, bias=bias, kernel_size=3)
    torch.manual_seed(0)
    bilinear = BilinearUpsample(6, 3, factor=4, bias=bias)
    features = torch.randn(2, 6, 5, 7)
    assert torch.allclose(sub_pixel(features), bilinear(features), atol=1e-5)
    losses = _fit(sub_pixel, features, torch.randn(2, 3, 20, 28), steps=40)
    assert losses[-1] < 0.5 * losses[0]
    model = FarSeeNet(num_classes=5, width=16, classifier_kernel=3)
    assert model.decoder.classifier_upsample.project.kernel_size == (3, 3)
    assert build_farsee(**model.config).decoder.classifier_upsample.project.kernel_size == (3, 3)
    with pytest.raises(ValueError, match="kernel_size must be 1 or 3"):
        SubPixelUpsample(6, 3, factor=2, bias=True, kernel_size=5)


def test_sr_and_bilinear_heads_differ_only_in_the_upsampling():
    torch.manual_seed(0)
    sr = FarSeeNet(num_classes=11, head="sr", width=32).eval()
    torch.manual_seed(0)
    bilinear = FarSeeNet(num_classes=11, head="bilinear", width=32).eval()
    assert isinstance(sr.decoder.high_upsample, SubPixelUpsample)
    assert isinstance(bilinear.decoder.classifier_upsample, BilinearUpsample)
    # same modules elsewhere; the projections are r^2 times wider (x4 for the x2 stage, x16 for the x4 stage)
    high_in, width, classes = 4 * 32, 32, 11
    expected_gap = high_in * 2 * width * (4 - 1) + (2 * width * classes + classes) * (16 - 1)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(sr) - count(bilinear) == expected_gap
    image = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        assert sr(image).shape == bilinear(image).shape == (1, 11, 96, 128)
        assert not torch.allclose(sr(image), bilinear(image))


@pytest.mark.parametrize("factor", [2, 3, 8])
def test_logit_super_resolution_starts_as_bilinear_and_can_leave_it(factor):
    torch.manual_seed(0)
    upsample = LogitSuperResolution(num_classes=4, factor=factor)
    logits = torch.randn(2, 4, 7, 9)
    bilinear = F.interpolate(logits, scale_factor=factor, mode="bilinear", align_corners=False)
    assert torch.allclose(upsample(logits), bilinear, atol=1e-5)  # borders included (replicate = the clamp)
    # a few gradient steps toward a sharper target move it off bilinear and lower the loss
    losses = _fit(upsample, logits, F.interpolate(logits, scale_factor=factor, mode="nearest"), steps=30)
    assert losses[-1] < 0.25 * losses[0]


@pytest.mark.parametrize("size", [(96, 128), (97, 131)])
def test_full_resolution_head(size):
    """full_resolution: the sr head's logits come out at the input's size (x8 from 1/4 of the half-size input) and
    only the padding is cropped; at initialisation the model equals the default one (bilinear start)."""
    torch.manual_seed(0)
    model = FarSeeNet(num_classes=5, width=16, input_scale=0.5, full_resolution=True).eval()
    default = FarSeeNet(num_classes=5, width=16, input_scale=0.5).eval()
    default.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("super_resolution.")})
    assert model.super_resolution.factor == 8 and default.super_resolution is None
    assert model.config["full_resolution"] is True and "full_resolution" not in default.config
    assert build_farsee(**model.config).super_resolution is not None  # what load_farsee rebuilds from metadata
    assert FarSeeNet(num_classes=5, width=16, head="bilinear", full_resolution=True).super_resolution is None
    seen = {}
    model.super_resolution.register_forward_hook(lambda module, args, output: seen.update(shape=output.shape))
    image = torch.randn(1, 3, *size)
    with torch.no_grad():
        logits, reference = model(image), default(image)
    assert logits.shape == reference.shape == (1, 5, *size)
    assert seen["shape"][-2] >= size[0] - 1 and seen["shape"][-1] >= size[1] - 1
    if size == (96, 128):  # no padding at all: the two are the same function at initialisation
        assert torch.allclose(logits, reference, atol=1e-5)


def test_bad_configurations():
    with pytest.raises(ValueError, match="unknown head"):
        FarSeeNet(num_classes=3, head="nearest")
    with pytest.raises(ValueError, match="input_scale"):
        FarSeeNet(num_classes=3, input_scale=0)
    with pytest.raises(ValueError, match="factor >= 2"):
        LogitSuperResolution(num_classes=3, factor=1)
    with pytest.raises(ValueError, match="num_classes"):
        build_farsee(backbone="resnet18")
    with pytest.raises(ValueError, match="bad FarSee-Net config"):
        build_farsee(num_classes=3, colour="red")


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown FarSee-Net model"):
        load_farsee("farsee-mars")
    with pytest.raises(FileNotFoundError):
        load_farsee(tmp_path / "nothing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a FarSee-Net export"):
        load_farsee(tmp_path / "other.safetensors")


def test_shipped_weights_load_or_say_they_are_missing():
    try:
        model = load_farsee("farsee-camvid")
    except FileNotFoundError as error:
        assert "farsee_camvid.safetensors" in str(error) and "\n" not in str(error)
        return
    assert model.num_classes == len(model.class_names) == 11 and model.ignore_index == 11
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 360, 480)).shape == (1, 11, 360, 480)
