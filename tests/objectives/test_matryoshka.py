"""Matryoshka wrapper against a direct computation over renormalised prefixes."""
import math

import pytest
import torch
import torch.nn.functional as F

from jointspace.errors import ConfigError
from jointspace.objectives import (OBJECTIVES, InfoNCE, MatryoshkaObjective, SigmoidLoss,
                                   build_objective, truncate_normalise)

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


def test_not_a_registered_objective():
    """One route to nested sizes (model.matryoshka_dims), not a second one by objective name."""
    assert "matryoshka" not in OBJECTIVES
    with pytest.raises(ConfigError, match=r"unknown objective 'matryoshka'; known: infonce, "
                                          r"sigmoid; .*model\.matryoshka_dims"):
        build_objective("matryoshka", base="sigmoid", dims=[4, 8])
    with pytest.raises(ConfigError, match=r"unknown objective 'nce'; known: infonce, sigmoid$"):
        build_objective("nce")  # other unknown names get the plain registry error


def _init_attrs(obj):
    """The three temperature attributes, read from the instance's own __dict__."""
    own = vars(obj)
    return own["init_logit_scale"], own["init_logit_bias"], own["max_logit_scale"]


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_objective_has_instance_init_attributes(name):
    obj = build_objective(name)
    assert _init_attrs(obj) == (type(obj).init_logit_scale, type(obj).init_logit_bias,
                                type(obj).max_logit_scale)


def test_init_comes_from_the_base_instance():
    sig = MatryoshkaObjective(SigmoidLoss(block_size=3), dims=[4, 8])
    scale, bias, max_scale = _init_attrs(sig)
    assert scale == pytest.approx(math.log(10.0)) and bias == -10.0  # SigLIP's, not CLIP's
    assert max_scale == pytest.approx(math.log(100.0))
    clip = MatryoshkaObjective("infonce", dims=[4, 8])
    assert _init_attrs(clip) == (pytest.approx(math.log(1 / 0.07)), None,
                                 pytest.approx(math.log(100.0)))
    by_name = MatryoshkaObjective("sigmoid", dims=[4, 8], block_size=3)
    assert by_name.weights == [1.0, 1.0] and by_name.base.block_size == 3
    assert _init_attrs(by_name)[:2] == (pytest.approx(math.log(10.0)), -10.0)


def test_rejects_bad_options():
    with pytest.raises(ValueError, match="2 weights for 1 dims"):
        MatryoshkaObjective("infonce", dims=[4], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="positive sizes"):
        MatryoshkaObjective("infonce", dims=[0, 4])
    with pytest.raises(TypeError, match="base_kwargs"):
        MatryoshkaObjective(InfoNCE(), dims=[4], block_size=3)
