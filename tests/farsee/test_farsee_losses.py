"""FarSee-Net losses against values computed by hand: ENet weights, weighted cross entropy, OHEM."""

from __future__ import annotations

import math

import pytest
import torch

from keenvision.farsee import enet_class_weights, ohem_cross_entropy, weighted_cross_entropy


def _two_class_logits(true_class_probabilities: list[float]) -> torch.Tensor:
    """Logits ``[1, 2, 1, N]`` whose class-0 probability at pixel i is the i-th value (class 0 is the label)."""
    p = torch.tensor(true_class_probabilities, dtype=torch.float64)
    return torch.stack([torch.log(p), torch.log1p(-p)]).view(1, 2, 1, -1).float()


def test_enet_class_weights():
    weights = enet_class_weights([0.5, 0.1, 0.0])
    expected = [1 / math.log(1.52), 1 / math.log(1.12), 1 / math.log(1.02)]
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
    assert weights.dtype == torch.float32
    with pytest.raises(ValueError):
        enet_class_weights([[0.5, 0.5]])


def test_weighted_cross_entropy_by_hand():
    # three labelled pixels (true-class probabilities 0.8, 0.3, 0.6) and one ignored pixel that is badly wrong
    logits = _two_class_logits([0.8, 0.3, 0.6, 0.01])
    labels = torch.tensor([[[0, 1, 0, 9]]])
    # pixel 1 has label 1, whose probability is 1 - 0.3 = 0.7
    nll = [-math.log(0.8), -math.log(0.7), -math.log(0.6)]
    assert float(weighted_cross_entropy(logits, labels, ignore_index=9)) == pytest.approx(sum(nll) / 3, rel=1e-5)
    weights = torch.tensor([1.0, 4.0])
    expected = (nll[0] + 4 * nll[1] + nll[2]) / (1 + 4 + 1)
    assert float(weighted_cross_entropy(logits, labels, 9, weights)) == pytest.approx(expected, rel=1e-5)


def test_ohem_keeps_the_hardest_pixels():
    probabilities = [0.9, 0.6, 0.3, 0.95, 0.001]
    logits = _two_class_logits(probabilities)
    labels = torch.tensor([[[0, 0, 0, 0, 255]]])  # the last (hardest) pixel is ignored
    nll = {p: -math.log(p) for p in probabilities}
    # enough pixels below 0.7: exactly those count
    assert float(ohem_cross_entropy(logits, labels, 255, 0.7, min_kept=1)) == pytest.approx(
        (nll[0.6] + nll[0.3]) / 2, rel=1e-5)
    # too few: the min_kept hardest labelled pixels count
    assert float(ohem_cross_entropy(logits, labels, 255, 0.7, min_kept=3)) == pytest.approx(
        (nll[0.6] + nll[0.3] + nll[0.9]) / 3, rel=1e-5)
    # more than there are: every labelled pixel
    assert float(ohem_cross_entropy(logits, labels, 255, 0.7, min_kept=100)) == pytest.approx(
        (nll[0.9] + nll[0.6] + nll[0.3] + nll[0.95]) / 4, rel=1e-5)
    # with class weights (class 0 weight 2): the weighted mean of the kept pixels, unchanged here
    assert float(ohem_cross_entropy(logits, labels, 255, 0.7, 1, torch.tensor([2.0, 1.0]))) == pytest.approx(
        (nll[0.6] + nll[0.3]) / 2, rel=1e-5)


def test_ohem_gradient_only_on_kept_pixels():
    logits = _two_class_logits([0.9, 0.6, 0.3, 0.95]).requires_grad_()
    ohem_cross_entropy(logits, torch.zeros(1, 1, 4, dtype=torch.int64), 255, 0.7, min_kept=1).backward()
    touched = logits.grad.abs().sum(1).flatten() > 0
    assert touched.tolist() == [False, True, True, False]


@pytest.mark.parametrize("loss", [weighted_cross_entropy, ohem_cross_entropy])
def test_all_ignored_gives_zero_with_a_graph(loss):
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    value = loss(logits, torch.full((2, 4, 5), 255), 255)
    value.backward()
    assert float(value.detach()) == 0.0 and logits.grad.abs().sum() == 0
