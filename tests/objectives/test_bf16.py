"""bf16 inputs (as from autocast): float32 accumulation; loss and gradients against the
float32/float64 reference within a tolerance derived from bf16's precision.

Tolerance. bf16 keeps 8 significant bits (7 stored + the implicit one), so one
round-to-nearest changes a value by at most ``U = 2⁻⁸ ≈ 3.9e-3`` relative, and
a whole tensor by at most ``U`` norm-wise. The objectives compute in float32,
so the error of a gradient is what the bf16 roundings on its path put there;
each rounding adds at most ``U``, and the change of the inputs moves the logits
(and so the softmax / sigmoid weights) by a comparable relative amount, which
averages out over rows rather than compounding. With ``k`` roundings on the
path we therefore require

* norm-wise relative error ``‖g − ref‖ / ‖ref‖ ≤ k·U`` (this also bounds the
  relative error of the gradient *norm*, ``|‖g‖ − ‖ref‖| ≤ ‖g − ref‖``);
* max abs error ``max|g − ref| ≤ 2k·U · max|ref|``: single elements do not
  average, so they get twice the norm-wise budget.

Measured errors are at most 0.7 of these bounds (the a/b gradients of InfoNCE
at scale 99, where the logits amplify the input rounding most). A gradient off
by a factor 2 (error 1) or of the wrong sign (error 2) is 60× or more beyond
them, which :func:`test_tolerance_has_teeth` checks directly.
"""
import math

import pytest
import torch

from jointspace.objectives import InfoNCE, SigmoidLoss

from loss_reference import ref_infonce, ref_sigmoid, rel_err, unit_pair, value_and_grads

U = 2.0 ** -8  # bf16 unit roundoff: half of torch.finfo(torch.bfloat16).eps
assert U == torch.finfo(torch.bfloat16).eps / 2


def grad_errors(g: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(norm-wise relative error, max abs error relative to max|ref|)."""
    g, ref = g.detach().double(), ref.detach().double()
    return rel_err(g, ref), float((g - ref).abs().max() / ref.abs().max())


def assert_grad_close(g: torch.Tensor, ref: torch.Tensor, roundings: int, what: str) -> None:
    rel, max_abs = grad_errors(g, ref)
    assert rel <= roundings * U, f"{what}: relative error {rel:.2e} > {roundings}·2⁻⁸"
    assert max_abs <= 2 * roundings * U, \
        f"{what}: max abs error {max_abs:.2e}·max|ref| > {2 * roundings}·2⁻⁸"


def test_tolerance_has_teeth():
    """The check rejects a gradient scaled by 2, of the wrong sign, or one bad element."""
    _, (ref, *_) = value_and_grads(ref_infonce, *unit_pair(50, 16, seed=1), torch.tensor(2.6))
    assert_grad_close(ref.bfloat16(), ref, 1, "bf16 rounding of the reference itself")
    for wrong in (2 * ref, -ref, 0.5 * ref):
        with pytest.raises(AssertionError):
            assert_grad_close(wrong, ref, 4, "wrong")
    spike = ref.clone()
    spike.view(-1)[7] += 0.03 * ref.abs().max()  # 3% of the largest entry, in one place
    with pytest.raises(AssertionError, match="max abs"):
        assert_grad_close(spike, ref, 2, "spike")


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
@pytest.mark.parametrize("log_scale", [math.log(1 / 0.07), math.log(99.0)])
def test_bf16_inputs(kind, log_scale):
    a, b = unit_pair(211, 64, seed=4)
    ls, lb = torch.tensor(log_scale), torch.tensor(-10.0)
    if kind == "infonce":
        obj, ref_fn, extra = InfoNCE(block_size=50), ref_infonce, ()
    else:
        obj, ref_fn, extra = SigmoidLoss(block_size=50), ref_sigmoid, (lb,)
    ours, g_ours = value_and_grads(obj, a.bfloat16(), b.bfloat16(), ls, *extra)
    ref, g_ref = value_and_grads(ref_fn, a.double(), b.double(), ls.double(),
                                 *(t.double() for t in extra))
    assert ours.dtype == torch.float32
    assert g_ours[0].dtype == torch.bfloat16 and g_ours[2].dtype == torch.float32
    assert rel_err(ours, ref) <= U, "loss: only the inputs were rounded"
    # roundings on the path: the inputs to bf16, and a/b gradients back to bf16 (k = 2)
    for name, g, r in zip(("a", "b", "logit_scale", "logit_bias"), g_ours, g_ref):
        assert_grad_close(g, r, 2, f"{kind} grad {name}")


def test_under_autocast():
    """A bf16-autocast layer in front of the loss gets the float32 run's parameter gradients."""
    a, b = unit_pair(96, 32, seed=6)
    ls = torch.tensor(2.5)

    def run(autocast: bool):
        torch.manual_seed(0)
        lin = torch.nn.Linear(32, 32)
        with torch.no_grad():
            lin.weight.add_(torch.eye(32))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            x = lin(a)  # bf16 activations under autocast, as a model produces
            assert x.dtype == (torch.bfloat16 if autocast else torch.float32)
            loss = InfoNCE(block_size=40)(x, b, ls)
        loss.backward()
        return loss, lin

    loss, lin = run(True)
    ref_loss, ref_lin = run(False)
    assert loss.dtype == torch.float32
    # the loss sees a, W rounded and the layer's output rounded: 3 roundings
    assert rel_err(loss, ref_loss) <= 3 * U
    # the gradients add the incoming bf16 gradient and the bf16 backward products: k = 4
    assert_grad_close(lin.weight.grad, ref_lin.weight.grad, 4, "weight grad")
    assert_grad_close(lin.bias.grad, ref_lin.bias.grad, 4, "bias grad")
