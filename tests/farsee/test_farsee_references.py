"""Reference networks for `benchmark` (ENet, ESPNet, DDRNet-23-slim): full-size logits for even and odd input sizes,
parameter counts and FLOPs close to the published ones, and gradients reaching every parameter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from keenvision.farsee.references import (
    REFERENCE_NETWORKS,
    DDRNet23SlimReference,
    ENetReference,
    ESPNetReference,
)

# Published parameter counts, 19 Cityscapes classes:
# - ENet 0.37 M: Paszke et al. 2016 (arXiv:1606.02147), Table 3 (0.37 M against SegNet's 29.46 M, the abstract's "79x
#   less parameters").
# - ESPNet 0.364 M: the authors' ESPNetv2 segmentation README (sacmehta/ESPNetv2, "ESPNet | 0.364 M | 424 M | 60.3"),
#   the paper's ESPNet (p=2, q=8).
# - DDRNet-23-slim 5.7 M: Hong et al. 2021 (arXiv:2101.06085), Cityscapes comparison table (5.7 M, 36.3 GFLOPs at
#   1024x2048); Qualcomm's model card for the authors' checkpoint counts 5.69 M.
PUBLISHED_PARAMETERS = {"enet": 0.37e6, "espnet": 0.364e6, "ddrnet23-slim": 5.7e6}
# Published compute, in FLOPs with a multiply-add counted as 2 (FlopCounterMode's convention): ENet's Table 3 gives
# 3.83 GFLOPs at 640x360 (consistent with the abstract's "75x less FLOPs" than SegNet's 286.03, so 2 per multiply-add);
# DDRNet's 36.3 "GFLOPs" at 1024x2048 are multiply-adds, 72.6 GFLOPs here.
PUBLISHED_FLOPS = {"enet": ((360, 640), 3.83e9), "ddrnet23-slim": ((1024, 2048), 2 * 36.3e9)}
NAMES = sorted(REFERENCE_NETWORKS)


def test_registry():
    assert REFERENCE_NETWORKS == {"enet": ENetReference, "espnet": ESPNetReference,
                                  "ddrnet23-slim": DDRNet23SlimReference}


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_close_to_published(name):
    model = REFERENCE_NETWORKS[name](num_classes=19)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count / PUBLISHED_PARAMETERS[name] - 1) < 0.15, count


@pytest.mark.parametrize("name", sorted(PUBLISHED_FLOPS))
def test_flops_close_to_published(name):
    (height, width), published = PUBLISHED_FLOPS[name]
    model = REFERENCE_NETWORKS[name](num_classes=19).to("meta").eval()  # shapes only: no memory, no compute
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(1, 3, height, width, device="meta"))
    assert abs(counter.get_total_flops() / published - 1) < 0.15, counter.get_total_flops()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(360, 480), (720, 960), (97, 131)])  # CamVid, its full size, odd (no factor of 2)
def test_logits_at_input_size(name, size):
    torch.manual_seed(0)
    model = REFERENCE_NETWORKS[name](num_classes=11).eval()
    batch = 2 if size[0] < 400 else 1
    with torch.no_grad():
        logits = model(torch.randn(batch, 3, *size))
    assert logits.shape == (batch, 11, *size)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_trainable_every_parameter_gets_a_finite_gradient(name):
    torch.manual_seed(0)
    model = REFERENCE_NETWORKS[name](num_classes=5).train()
    images, labels = torch.randn(2, 3, 90, 130), torch.randint(0, 5, (2, 90, 130))
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert sum(p.grad.abs().sum() for p in model.parameters()) > 0
