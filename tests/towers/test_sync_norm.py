"""SyncBatchNorm: two gloo processes with a share of the batch each equal one
``nn.BatchNorm`` on the whole batch (outputs, gradients, running statistics)."""
from __future__ import annotations

import torch
import torch.multiprocessing as mp
from torch import nn

from jointspace.towers.sync_norm import SyncBatchNorm, convert_sync_batchnorm

# (module kwargs, input shape); the first row is 5 + 3·N(0, 1) so the shifted sums matter
CASES = [
    ({"num_features": 4}, (8, 4, 5, 3)),
    ({"num_features": 3, "momentum": None}, (8, 3)),
    ({"num_features": 2, "affine": False}, (8, 2, 7)),
    ({"num_features": 3, "track_running_stats": False}, (8, 3, 2, 2)),
]
SPLIT = 3  # uneven shares: rows [0, 3) on process 0, [3, 8) on process 1
STEPS = 2


def _reference_bn(kwargs: dict, ndim: int) -> nn.Module:
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}[ndim]
    torch.manual_seed(1)
    bn = cls(**kwargs)
    if bn.affine:  # not the trivial 1 / 0 so their gradients and use are checked
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return bn


def _data(shape: tuple, case: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 * case + step)
    x = torch.randn(shape, generator=g, dtype=torch.float64).float()
    if case == 0:
        x = 5 + 3 * x
    return x, torch.randn(shape, generator=g)


def _run(bn: nn.Module, xs: list[torch.Tensor], gs: list[torch.Tensor]) -> list[dict]:
    """Per step: output, input gradient, parameter gradients, then the buffers."""
    out = []
    for x, g in zip(xs, gs):
        x = x.clone().requires_grad_()
        bn.zero_grad(set_to_none=True)
        y = bn(x)
        (y * g).sum().backward()
        rec = {"y": y.detach(), "dx": x.grad}
        for name, p in bn.named_parameters():
            rec["d" + name] = p.grad
        rec.update({n: b.clone() for n, b in bn.named_buffers()})
        out.append(rec)
    return out


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        rows = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
        results = []
        for i, (kwargs, shape) in enumerate(CASES):
            # the first case goes through convert_sync_batchnorm, the others are built directly
            bn = (convert_sync_batchnorm(_reference_bn(kwargs, len(shape))) if i == 0
                  else SyncBatchNorm(**kwargs))
            if i:
                bn.load_state_dict(_reference_bn(kwargs, len(shape)).state_dict())
            assert isinstance(bn, SyncBatchNorm)
            data = [_data(shape, i, s) for s in range(STEPS)]
            results.append(_run(bn, [x[rows] for x, _ in data], [g[rows] for _, g in data]))
        # bf16 in, bf16 out, close to the float32 result
        bn = convert_sync_batchnorm(_reference_bn(CASES[0][0], 4))
        x, _ = _data(CASES[0][1], 0, 0)
        y16 = bn(x[rows].bfloat16())
        # in eval mode (a frozen backbone) there is no collective: count them
        calls = []
        real = dist.all_reduce
        dist.all_reduce = lambda *a, **k: calls.append(1) or real(*a, **k)
        try:
            frozen = convert_sync_batchnorm(nn.Sequential(_reference_bn({"num_features": 4}, 4)))
            frozen.eval()
            frozen(x[rows])
            live = convert_sync_batchnorm(nn.Sequential(_reference_bn({"num_features": 4}, 4)))
            live(x[rows])
        finally:
            dist.all_reduce = real
        torch.save({"cases": results, "y16": y16, "calls": len(calls)}, f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_match_batch_norm_on_the_whole_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"{r}.pt") for r in (0, 1)]
    for i, (kwargs, shape) in enumerate(CASES):
        bn = _reference_bn(kwargs, len(shape))
        data = [_data(shape, i, s) for s in range(STEPS)]
        want = _run(bn, [x for x, _ in data], [g for _, g in data])
        for step, ref in enumerate(want):
            a, b = parts[0]["cases"][i][step], parts[1]["cases"][i][step]
            where = f"case {i} step {step}"
            for key in ("y", "dx"):
                torch.testing.assert_close(torch.cat([a[key], b[key]]), ref[key],
                                           rtol=1e-5, atol=1e-5, msg=f"{where} {key}")
            for key in ("dweight", "dbias"):
                if key in ref:  # each process holds the gradient of its rows' loss: they add up
                    torch.testing.assert_close(a[key] + b[key], ref[key], rtol=1e-5, atol=1e-5,
                                               msg=f"{where} {key}")
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                if key in ref:
                    for part in (a, b):
                        torch.testing.assert_close(part[key], ref[key], rtol=1e-5, atol=1e-6,
                                                   msg=f"{where} {key}")
            assert set(a) == set(ref), where
    # the discrimination: one process's share normalised alone is far from the whole batch
    x, _ = _data(CASES[0][1], 0, 0)
    alone = _reference_bn(CASES[0][0], 4)(x[:SPLIT])
    assert (alone - parts[0]["cases"][0][0]["y"]).abs().max() > 0.1
    whole = _reference_bn(CASES[0][0], 4)(x)
    y16 = torch.cat([parts[0]["y16"], parts[1]["y16"]])
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), whole.detach(), rtol=0.02, atol=0.03)
    assert parts[0]["calls"] == parts[1]["calls"] == 1  # the training layer only


def test_alone_it_is_batch_norm():
    torch.manual_seed(0)
    for kwargs, shape in CASES:
        ref = _reference_bn(kwargs, len(shape))
        sync = SyncBatchNorm(**kwargs)
        sync.load_state_dict(ref.state_dict())
        xs = [_data(shape, 0, s)[0] for s in range(STEPS)]
        gs = [_data(shape, 0, s)[1] for s in range(STEPS)]
        for a, b in zip(_run(sync, xs, gs), _run(ref, xs, gs)):
            assert a.keys() == b.keys()
            for key in a:
                assert torch.equal(a[key], b[key]), key
        sync.eval(), ref.eval()
        assert torch.equal(sync(xs[0]), ref(xs[0]))


def test_convert_keeps_parameters_buffers_names_and_modes():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Sequential(nn.Flatten(), nn.BatchNorm1d(4 * 6 * 6, momentum=None)))
    model[3][1].eval()  # e.g. a frozen backbone's layer
    model(torch.randn(5, 3, 8, 8))
    before = model.state_dict()
    params = {n: p for n, p in model.named_parameters()}
    converted = convert_sync_batchnorm(model)
    assert converted is model
    assert isinstance(model[1], SyncBatchNorm) and isinstance(model[3][1], SyncBatchNorm)
    assert model[1].training and not model[3][1].training
    assert model[3][1].momentum is None
    assert {n: p for n, p in model.named_parameters()}.items() == params.items()  # same objects
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Sequential(nn.Flatten(), nn.BatchNorm1d(4 * 6 * 6)))
    plain.load_state_dict(after)  # a model trained converted loads into plain towers
    bn = convert_sync_batchnorm(nn.BatchNorm3d(2))
    assert isinstance(bn, SyncBatchNorm)
