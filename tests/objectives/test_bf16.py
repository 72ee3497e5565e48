"""bf16 inputs (as from autocast): float32 accumulation, within 1e-2 of the float32 reference."""
import math

import pytest
import torch

from jointspace.objectives import InfoNCE, SigmoidLoss

from loss_reference import assert_close, ref_infonce, ref_sigmoid, unit_pair, value_and_grads


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
def test_bf16_inputs(kind):
    a, b = unit_pair(211, 64, seed=4)
    ls, lb = torch.tensor(math.log(1 / 0.07)), torch.tensor(-10.0)
    if kind == "infonce":
        obj, ref_fn, extra = InfoNCE(block_size=50), ref_infonce, ()
    else:
        obj, ref_fn, extra = SigmoidLoss(block_size=50), ref_sigmoid, (lb,)
    ours, g_ours = value_and_grads(obj, a.bfloat16(), b.bfloat16(), ls, *extra)
    ref, g_ref = value_and_grads(ref_fn, a, b, ls, *extra)
    assert ours.dtype == torch.float32
    assert g_ours[0].dtype == torch.bfloat16 and g_ours[2].dtype == torch.float32
    assert_close(ours, ref, 1e-2, "loss")
    for g, r in zip(g_ours, g_ref):
        assert_close(g, r, 1e-2, "grad")


def test_under_autocast():
    a, b = unit_pair(96, 32, seed=6)
    ls = torch.tensor(2.5)
    lin = torch.nn.Linear(32, 32)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(32))
        lin.bias.zero_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = lin(a)  # bf16 activations, as a model under autocast produces
        assert x.dtype == torch.bfloat16
        loss = InfoNCE(block_size=40)(x, b, ls)
    assert loss.dtype == torch.float32
    loss.backward()
    assert_close(loss, ref_infonce(a, b, ls), 1e-2, "loss")
    assert torch.isfinite(lin.weight.grad).all()
