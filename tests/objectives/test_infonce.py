"""Blockwise InfoNCE against a plain full-matrix computation and OpenCLIP's ClipLoss."""
import math

import pytest
import torch

from jointspace.objectives import LOCAL, InfoNCE, build_objective
from jointspace.objectives import infonce
from jointspace.objectives.infonce import _shift_for

from loss_reference import assert_close, ref_infonce, unit_pair, value_and_grads

CASES = [  # (B, d, block_size)
    (64, 16, None),
    (77, 32, 10),
    (203, 48, 64),
    (300, 24, 299),
    (131, 8, 1),
]
# init, just below the clamp (log 100; exactly at it fp32 and fp64 round differently), above it
LOG_SCALES = [math.log(1 / 0.07), math.log(99.0), 5.0]


@pytest.mark.parametrize("n,d,block", CASES)
@pytest.mark.parametrize("log_scale", LOG_SCALES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_matches_full_matrix(n, d, block, log_scale, smoothing):
    a, b = unit_pair(n, d, seed=n + d)
    ls = torch.tensor(log_scale)
    ours, g_ours = value_and_grads(
        InfoNCE(label_smoothing=smoothing, block_size=block), a, b, ls)
    ref, g_ref = value_and_grads(
        lambda x, y, s: ref_infonce(x, y, s, smoothing), a.double(), b.double(), ls.double())
    assert ours.dtype == torch.float32
    assert_close(ours, ref, 1e-5, "loss")
    for name, g, r in zip(("a", "b", "logit_scale"), g_ours, g_ref):
        assert g.dtype == torch.float32
        assert_close(g, r, 1e-5, name)


@pytest.mark.parametrize("shifted", [True, False])
def test_both_numerical_paths(shifted, monkeypatch):
    """The fixed-shift path and the max-tracking path (forced by an anti-aligned positive),
    each checked to be the path that actually ran, in both passes."""
    a, b = unit_pair(150, 16, seed=3)
    b = torch.nn.functional.normalize(0.3 * a + b, dim=-1)  # positive cosines > -0.4
    if not shifted:
        b[7] = -a[7]
    s = torch.tensor(99.0)
    assert (_shift_for(a, b, b, s, LOCAL) is not None) == shifted
    ran = []
    for name in ("_pass1_exact", "_pass1_shifted", "_pass2_exact", "_pass2_shifted"):
        fn = getattr(infonce, name)
        monkeypatch.setattr(infonce, name,
                            lambda *args, _fn=fn, _name=name: ran.append(_name) or _fn(*args))
    ours, g_ours = value_and_grads(InfoNCE(block_size=33), a, b, s.log())
    kind = "shifted" if shifted else "exact"
    assert ran == [f"_pass1_{kind}", f"_pass2_{kind}"]
    ref, g_ref = value_and_grads(ref_infonce, a.double(), b.double(), s.log().double())
    assert_close(ours, ref, 1e-5, "loss")
    for g, r in zip(g_ours, g_ref):
        assert_close(g, r, 1e-5, "grad")


def test_unnormalised_and_extreme_inputs():
    """Rows far from unit norm (logits of several hundred) stay finite and exact."""
    a, b = unit_pair(90, 12, seed=5)
    a, b = a * 3.0, b * 2.5
    ls = torch.tensor(math.log(60.0))
    ours, g_ours = value_and_grads(InfoNCE(block_size=17), a, b, ls)
    ref, g_ref = value_and_grads(ref_infonce, a.double(), b.double(), ls.double())
    assert torch.isfinite(ours)
    assert_close(ours, ref, 1e-5, "loss")
    for g, r in zip(g_ours, g_ref):
        assert_close(g, r, 1e-5, "grad")


def test_float64_inputs_stay_float64():
    a, b = unit_pair(50, 8, seed=1, dtype=torch.float64)
    ls = torch.tensor(2.0, dtype=torch.float64)
    ours, g_ours = value_and_grads(InfoNCE(block_size=7), a, b, ls)
    ref, g_ref = value_and_grads(ref_infonce, a, b, ls)
    assert ours.dtype == torch.float64
    assert_close(ours, ref, 1e-12, "loss")
    for g, r in zip(g_ours, g_ref):
        assert_close(g, r, 1e-12, "grad")


def test_matches_openclip(openclip_loss):
    a, b = unit_pair(257, 64, seed=11)
    ls = torch.tensor(math.log(1 / 0.07))
    ours, g_ours = value_and_grads(InfoNCE(block_size=50), a, b, ls)
    clip = openclip_loss.ClipLoss()
    ref, g_ref = value_and_grads(lambda x, y, s: clip(x, y, s.exp()), a, b, ls)
    assert_close(ours, ref, 1e-5, "loss")
    for name, g, r in zip(("a", "b", "logit_scale"), g_ours, g_ref):
        assert_close(g, r, 1e-5, name)


def test_no_grad_forward_and_partial_grads():
    a, b = unit_pair(40, 8)
    ls = torch.tensor(2.5)
    with torch.no_grad():
        value = InfoNCE(block_size=9)(a, b, ls)
    assert_close(value, ref_infonce(a.double(), b.double(), ls.double()), 1e-5, "no_grad loss")
    a_leaf = a.clone().requires_grad_()  # only a requires grad
    InfoNCE(block_size=9)(a_leaf, b, ls).backward()
    _, (g_ref, _, _) = value_and_grads(ref_infonce, a.double(), b.double(), ls.double())
    assert_close(a_leaf.grad, g_ref, 1e-5, "a grad")


def test_grad_output_scaling_and_registry():
    obj = build_objective("infonce", label_smoothing=0.05, block_size=16)
    assert isinstance(obj, InfoNCE) and obj.init_logit_bias is None
    a, b = unit_pair(33, 8)
    ls = torch.tensor(2.0)
    _, g1 = value_and_grads(lambda x, y, s: 3.0 * obj(x, y, s), a, b, ls)
    _, g2 = value_and_grads(obj, a, b, ls)
    for x, y in zip(g1, g2):
        assert_close(x, 3 * y, 1e-6, "scaled grad")


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        InfoNCE()(torch.zeros(4, 3), torch.zeros(5, 3), torch.tensor(1.0))
    with pytest.raises(ValueError):
        InfoNCE(label_smoothing=1.0)
