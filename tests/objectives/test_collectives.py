"""Which collective runs is decided from the backend up front, and errors propagate.

A helper that caught a failed collective and retried with a *different* one
would leave its peers waiting in the first collective (a hang at scale). These
tests fake a two-process world in this process (``torch.distributed``'s query
functions patched) and record which collectives the helpers call.
"""
import pytest
import torch
import torch.distributed as dist

from jointspace.objectives import InfoNCE, SigmoidLoss
from jointspace.objectives.distributed import gather_rows, reduce_scatter_rows

WORLD = 2
COLLECTIVES = ("all_gather", "all_gather_into_tensor", "all_reduce", "reduce_scatter_tensor")


class FakeCollectives:
    """Two ranks holding identical tensors; records calls and can make one collective fail."""

    def __init__(self, monkeypatch, backend: str, fail: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
        monkeypatch.setattr(dist, "get_world_size", lambda group=None: WORLD)
        monkeypatch.setattr(dist, "get_backend", lambda group=None: backend)
        for name in COLLECTIVES:
            monkeypatch.setattr(dist, name, self._recorder(name, getattr(self, "_" + name)))

    def _recorder(self, name, effect):
        def call(*args, **kwargs):
            self.calls.append(name)
            if name == self.fail:
                raise RuntimeError(f"{name}: connection reset by peer")
            effect(*args)
        return call

    # what the collective would do when every rank passes the same tensor
    @staticmethod
    def _all_gather(outputs, x):
        for out in outputs:
            out.copy_(x)

    @staticmethod
    def _all_gather_into_tensor(out, x):
        out.copy_(x.repeat(WORLD, *([1] * (x.dim() - 1))))

    @staticmethod
    def _all_reduce(x):
        x.mul_(WORLD)

    @staticmethod
    def _reduce_scatter_tensor(out, x):
        out.copy_(WORLD * x[: out.shape[0]])


# backend → (gather collective, reduce-scatter collective) it must use, and nothing else
PLAN = {
    "gloo": ("all_gather", "all_reduce"),
    "nccl": ("all_gather_into_tensor", "reduce_scatter_tensor"),
    "cpu:gloo,cuda:nccl": ("all_gather", "all_reduce"),  # CPU tensors: the gloo part
    "mpi": ("all_gather", "all_reduce"),  # unknown to us: the collectives every backend has
}


@pytest.mark.parametrize("backend", list(PLAN))
def test_collective_is_chosen_from_the_backend(monkeypatch, backend):
    fake = FakeCollectives(monkeypatch, backend)
    x = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(gather_rows(x, group=None), torch.cat([x, x]))
    assert torch.equal(reduce_scatter_rows(torch.cat([x, x + 1]), group=None), WORLD * x)
    assert fake.calls == list(PLAN[backend])


@pytest.mark.parametrize("backend", list(PLAN))
@pytest.mark.parametrize("step", [0, 1])
def test_errors_propagate_without_fallback(monkeypatch, backend, step):
    failing = PLAN[backend][step]
    fake = FakeCollectives(monkeypatch, backend, fail=failing)
    x = torch.ones(4, 3)
    helper = gather_rows if step == 0 else reduce_scatter_rows
    with pytest.raises(RuntimeError, match="connection reset"):
        helper(x, group=None)
    assert fake.calls == [failing]  # no second, different collective was tried


@pytest.mark.parametrize("backend", ["gloo", "nccl"])
@pytest.mark.parametrize("make", [lambda: InfoNCE(block_size=3), lambda: SigmoidLoss(block_size=3)])
def test_objective_backward_propagates_errors(monkeypatch, backend, make):
    """A failed reduce-scatter in backward reaches the caller; no all-reduce is tried instead
    (on gloo the all-reduce *is* the planned collective, so nothing else may follow it)."""
    fake = FakeCollectives(monkeypatch, backend, fail=None)
    a = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1).requires_grad_()
    b = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1).requires_grad_()
    loss = make()(a, b, torch.tensor(2.0), torch.tensor(-1.0))
    before = len(fake.calls)
    fake.fail = PLAN[backend][1]
    with pytest.raises(RuntimeError, match="connection reset"):
        loss.backward()
    assert fake.calls[before:] == [PLAN[backend][1]]
    assert "all_gather" not in fake.calls or backend == "gloo"
    assert "all_gather_into_tensor" not in fake.calls or backend == "nccl"
