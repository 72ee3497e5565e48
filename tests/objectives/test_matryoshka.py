"""Matryoshka wrapper against a direct computation over renormalised prefixes."""
import math

import pytest
import torch
import torch.nn.functional as F

from jointspace.objectives import (InfoNCE, MatryoshkaObjective, SigmoidLoss, build_objective,
                                   truncate_normalise)

from loss_reference import assert_close, ref_infonce, ref_sigmoid, unit_pair, value_and_grads


def test_truncate_normalise():
    x = torch.randn(5, 10)
    y = truncate_normalise(x, 4)
    assert y.shape == (5, 4)
    assert torch.allclose(y, x[:, :4] / x[:, :4].norm(dim=1, keepdim=True))
    with pytest.raises(ValueError):
        truncate_normalise(x, 11)


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
def test_matches_direct_sum(kind):
    dims, weights = [8, 16, 48], [0.5, 1.0, 2.0]
    a, b = unit_pair(70, 48, seed=9)
    ls, lb = torch.tensor(math.log(1 / 0.07)), torch.tensor(-5.0)
    base = InfoNCE(block_size=16) if kind == "infonce" else SigmoidLoss(block_size=16)
    ref_fn = (lambda x, y, s, t: ref_infonce(x, y, s)) if kind == "infonce" else ref_sigmoid

    def direct(x, y, s, t):
        return sum(w * ref_fn(F.normalize(x[:, :k], dim=-1), F.normalize(y[:, :k], dim=-1), s, t)
                   for k, w in zip(dims, weights))

    ours, g_ours = value_and_grads(MatryoshkaObjective(base, dims, weights), a, b, ls, lb)
    ref, g_ref = value_and_grads(direct, a.double(), b.double(), ls.double(), lb.double())
    assert_close(ours, ref, 1e-5, "loss")
    n_grads = 3 if kind == "infonce" else 4
    for g, r in zip(g_ours[:n_grads], g_ref[:n_grads]):
        assert_close(g, r, 1e-5, "grad")


def test_build_by_name_inherits_init():
    obj = build_objective("matryoshka", base="sigmoid", dims=[4, 8], block_size=3)
    assert obj.weights == [1.0, 1.0]
    assert obj.init_logit_bias == -10.0 and obj.base.block_size == 3
    with pytest.raises(ValueError):
        MatryoshkaObjective("infonce", dims=[4], weights=[1.0, 2.0])
