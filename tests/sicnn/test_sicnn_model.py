"""CNN-H, CNN-R and the margin heads: shapes, ranges, the heads' margins against hand computations, exports."""

from __future__ import annotations

import math

import pytest
import torch

from keenvision.core.weights import WeightsError
from keenvision.sicnn import ArcFaceHead, CosFaceHead, HallucinationNet, RecognitionNet, SphereFaceHead, load_cnn_h
from keenvision.sicnn.model import PAPER_CNN_H, PAPER_CNN_R, load_cnn_r
from keenvision.sicnn.train import export_cnn_h, export_cnn_r

TINY_H = {"stem_channels": 8, "growth": 4, "dense_layers": [2, 2, 2, 1], "upsample_channels": 8}
TINY_R = {"channels": [8, 16, 16, 32], "blocks": [1, 1, 1, 1], "stem_channels": 8, "embedding_dim": 64}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("config", [{}, TINY_H])
def test_cnn_h_maps_12x14_to_96x112_in_open_unit_range(config):
    torch.manual_seed(0)
    model = HallucinationNet(**config)
    low = torch.rand(2, 3, 14, 12) * 2 - 1
    out = model(low)
    assert out.shape == (2, 3, 112, 96)
    assert out.abs().max() < 1  # tanh
    assert model(torch.rand(1, 3, 7, 5)).shape == (1, 3, 56, 40)  # any size, exactly 8x


def test_cnn_h_bicubic_residual_starts_at_bicubic_and_learns_a_residual(tmp_path):
    torch.manual_seed(0)
    model = HallucinationNet(**TINY_H, bicubic_residual=True)
    low = torch.rand(4, 3, 14, 12) * 2 - 1
    bicubic = torch.nn.functional.interpolate(low, scale_factor=8, mode="bicubic", align_corners=False).clamp(-1, 1)
    assert torch.equal(model(low), bicubic)  # the last conv starts at zero
    assert "bicubic_residual" not in HallucinationNet(**TINY_H).config  # earlier exports keep their metadata
    # the residual trains: a few steps toward a sharper target than bicubic lower the loss below bicubic's
    target = torch.nn.functional.interpolate(low, scale_factor=8, mode="nearest")
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    start = torch.nn.functional.mse_loss(model(low), target).item()
    for _ in range(15):
        loss = torch.nn.functional.mse_loss(model(low), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.8 * start
    out = model(low)
    assert out.min() >= -1 and out.max() <= 1  # clamped, not tanh
    loaded = load_cnn_h(str(export_cnn_h(model.eval(), tmp_path / "residual.safetensors")))
    assert loaded.bicubic_residual and loaded.config == model.config


def test_cnn_h_paper_size_is_the_caffe_sample():
    model = HallucinationNet(**PAPER_CNN_H)
    # stages 1-3 end in 64 + 6 * 32 = 256 channels, stage 4 in 64 + 2 * 32 = 128, as the sample's concat*_7/4_3
    assert [stage[-1].out_channels for stage in model.stages] == [256, 256, 256, 128]
    assert [up[0].kernel_size for up in model.upsamplers] == [(3, 3), (5, 5), (5, 5)]
    assert 4.5e6 < sum(p.numel() for p in model.parameters()) < 5e6
    default = sum(p.numel() for p in HallucinationNet().parameters())
    assert default * 2 < 2e6  # the CPU default stays under 2 MB in fp16


def test_cnn_r_embeds_faces_and_paper_layout_has_28_layers():
    model = RecognitionNet(**TINY_R)
    assert model.embed(torch.rand(3, 3, 112, 96) * 2 - 1).shape == (3, 64)
    paper = RecognitionNet(**PAPER_CNN_R)
    convs = [m for m in paper.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) + 1 == 28  # 27 convolutions + FC5
    assert paper.feature_shape == (512, 5, 4) and paper.embedding_dim == 512
    with pytest.raises(ValueError, match="one entry per stage"):
        RecognitionNet(channels=[8, 16], blocks=[1])


def _embedding_at_angle(theta: float, norm: float = 2.0) -> torch.Tensor:
    return norm * torch.tensor([[math.cos(theta), math.sin(theta), 0.0]])


@pytest.mark.parametrize("theta_degrees, psi", [(30, -0.5), (60, 1.5 - 3.0)])
def test_a_softmax_target_logit_matches_hand_computation(theta_degrees, psi):
    # W_0 along x, W_1 along z: the embedding makes theta with class 0 and 90 degrees with class 1
    head = SphereFaceHead(3, 2, margin=4, lambda_base=0.0, lambda_min=0.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    theta = math.radians(theta_degrees)
    # psi(theta) = (-1)^k cos(4 theta) - 2k: 30 deg -> k=0, cos 120 = -0.5; 60 deg -> k=1, -cos 240 - 2 = -1.5
    logits = head(_embedding_at_angle(theta), torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(2.0 * psi, abs=1e-5)
    assert logits[0, 1].item() == pytest.approx(0.0, abs=1e-6)
    plain = head(_embedding_at_angle(theta))
    assert plain[0, 0].item() == pytest.approx(2.0 * math.cos(theta), abs=1e-5)
    assert logits[0, 0] < plain[0, 0]  # the margin lowers the target logit


def test_a_softmax_lambda_anneals_with_training_iterations():
    head = SphereFaceHead(3, 2)  # SphereFace's base 1000, gamma 0.12, power 1, lambda_min 5
    assert head.current_lambda() == 1000.0
    embedding, label = _embedding_at_angle(0.5), torch.tensor([0])
    head.train()
    for _ in range(10):
        head(embedding, label)
    assert int(head.iteration) == 10
    assert head.current_lambda() == pytest.approx(1000 / (1 + 0.12 * 10))
    head.eval()
    head(embedding, label)
    assert int(head.iteration) == 10  # evaluation does not advance the schedule
    head.iteration.fill_(10**6)
    assert head.current_lambda() == 5.0
    # with a large lambda the target logit is nearly the plain one; with lambda_min the margin shows
    cosine = head(embedding)[0, 0]
    assert head(embedding, label)[0, 0] < cosine - 0.1


def test_cosface_and_arcface_subtract_their_margins():
    theta = math.radians(40)
    embedding, label = _embedding_at_angle(theta, norm=7.0), torch.tensor([0])
    for head, expected in ((CosFaceHead(3, 2, scale=30.0, margin=0.35), 30 * (math.cos(theta) - 0.35)),
                           (ArcFaceHead(3, 2, scale=30.0, margin=0.5), 30 * math.cos(theta + 0.5))):
        with torch.no_grad():
            head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]))
        logits = head(embedding, label)
        assert logits[0, 0].item() == pytest.approx(expected, abs=1e-4)
        assert logits[0, 1].item() == pytest.approx(0.0, abs=1e-5)  # scale-only, norm of x ignored
        assert head(embedding)[0, 0].item() == pytest.approx(30 * math.cos(theta), abs=1e-4)
    # ArcFace past pi - m falls back to cos - m sin m (InsightFace), still below the plain logit
    head = ArcFaceHead(3, 2, scale=1.0, margin=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    far = _embedding_at_angle(math.radians(170))
    assert head(far, label)[0, 0].item() == pytest.approx(math.cos(math.radians(170)) - 0.5 * math.sin(0.5),
                                                          abs=1e-5)


def test_cnn_h_export_round_trip(tmp_path):
    torch.manual_seed(1)
    model = HallucinationNet(**TINY_H).eval()
    path = export_cnn_h(model, tmp_path / "cnn_h.safetensors", {"global_step": "7"})
    loaded = load_cnn_h(str(path))
    assert loaded.config == model.config and not loaded.training
    low = torch.rand(2, 3, 14, 12) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded(low), model(low), atol=5e-3)  # fp16 weights
    assert path.stat().st_size < 100_000


def test_cnn_r_export_round_trip_with_head(tmp_path):
    torch.manual_seed(2)
    model, head = RecognitionNet(**TINY_R).eval(), SphereFaceHead(64, 5, lambda_min=12.0)
    head.iteration.fill_(33)
    path = export_cnn_r(model, head, tmp_path / "cnn_r.safetensors", {"kind": "sphereface", "options":
                                                                       {"lambda_min": 12.0}})
    loaded, loaded_head = load_cnn_r(path, with_head=True)
    faces = torch.rand(2, 3, 112, 96) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded.embed(faces), model.embed(faces), atol=5e-3)
    assert loaded_head.lambda_min == 12.0 and int(loaded_head.iteration) == 33
    with pytest.raises(WeightsError, match="not CNN-H"):
        load_cnn_h(str(path))


def test_load_cnn_h_errors(tmp_path, monkeypatch):
    shipped = load_cnn_h("sicnn-celeba")  # the shipped weights: checksum-checked, eval mode
    assert isinstance(shipped, HallucinationNet) and not shipped.training
    from keenvision.core import registry

    shipped_files = registry.shipped_files  # a trimmed install: the name resolves to a file that is not there
    monkeypatch.setattr(registry, "shipped_files", lambda system: {
        **shipped_files(system), **({"sicnn-celeba": "absent_cnn_h.safetensors"} if system == "sicnn" else {})})
    with pytest.raises(FileNotFoundError, match="sicnn-celeba"):
        load_cnn_h("sicnn-celeba")
    with pytest.raises(FileNotFoundError):
        load_cnn_h(str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="unknown SICNN model"):
        load_cnn_h("not-a-model")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WeightsError):
        load_cnn_h(str(tmp_path / "bad.safetensors"))
