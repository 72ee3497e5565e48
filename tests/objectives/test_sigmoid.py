"""Blockwise SigLIP loss against a plain full-matrix computation and OpenCLIP's SigLipLoss."""
import math

import pytest
import torch

from jointspace.objectives import SigmoidLoss, build_objective

from loss_reference import assert_close, ref_sigmoid, unit_pair, value_and_grads

CASES = [(64, 16, None), (77, 32, 10), (203, 48, 64), (300, 24, 299), (131, 8, 1)]


@pytest.mark.parametrize("n,d,block", CASES)
@pytest.mark.parametrize("log_scale,bias", [(math.log(10.0), -10.0), (math.log(99.0), -3.0),
                                            (5.0, 2.0)])
def test_matches_full_matrix(n, d, block, log_scale, bias):
    a, b = unit_pair(n, d, seed=n * d)
    ls, lb = torch.tensor(log_scale), torch.tensor(bias)
    ours, g_ours = value_and_grads(SigmoidLoss(block_size=block), a, b, ls, lb)
    ref, g_ref = value_and_grads(ref_sigmoid, a.double(), b.double(), ls.double(), lb.double())
    assert_close(ours, ref, 1e-5, "loss")
    for name, g, r in zip(("a", "b", "logit_scale", "logit_bias"), g_ours, g_ref):
        assert g.dtype == torch.float32
        assert_close(g, r, 1e-5, name)


def test_matches_openclip(openclip_loss):
    a, b = unit_pair(257, 64, seed=12)
    ls, lb = torch.tensor(math.log(10.0)), torch.tensor(-10.0)
    ours, g_ours = value_and_grads(SigmoidLoss(block_size=60), a, b, ls, lb)
    siglip = openclip_loss.SigLipLoss()
    ref, g_ref = value_and_grads(lambda x, y, s, t: siglip(x, y, s.exp(), t), a, b, ls, lb)
    assert_close(ours, ref, 1e-5, "loss")
    for name, g, r in zip(("a", "b", "logit_scale", "logit_bias"), g_ours, g_ref):
        assert_close(g, r, 1e-5, name)


def test_init_and_registry():
    obj = build_objective("sigmoid")
    assert isinstance(obj, SigmoidLoss)
    assert obj.init_logit_scale == pytest.approx(math.log(10.0))
    assert obj.init_logit_bias == -10.0


def test_no_grad_and_missing_bias():
    a, b = unit_pair(45, 8, seed=2)
    ls = torch.tensor(2.0)
    with torch.no_grad():
        value = SigmoidLoss(block_size=8)(a, b, ls)  # bias None → 0
    assert_close(value, ref_sigmoid(a.double(), b.double(), ls.double(), 0.0), 1e-5, "loss")


def test_backward_twice_is_refused():
    a, b = unit_pair(20, 4)
    a.requires_grad_()
    loss = SigmoidLoss()(a, b, torch.tensor(1.0), torch.tensor(-1.0))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()
