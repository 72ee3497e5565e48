"""Objectives bound to an explicit process group: a subgroup, or LOCAL (no communication).

Three gloo processes. Ranks 1 and 2 form a subgroup (group ranks 0 and 1) and
compute the objectives over their concatenated rows; at the same time rank 0
computes them on its own rows alone with ``LOCAL`` — as when process 0
validates while the others do not — and must neither wait for nor disturb the
others. Each result must equal the single-process reference on the rows of its
group, with the usual convention (every member returns the group's loss;
gradients are ``group size ×`` the single-process gradients of its rows).
"""
import copy
import math
import os
import pickle
import tempfile
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from jointspace.errors import ConfigError
from jointspace.objectives import (LOCAL, InfoNCE, MatryoshkaObjective, SigmoidLoss,
                                   all_gather_with_grad, blockwise_infonce, blockwise_sigmoid,
                                   build_objective)

from loss_reference import assert_close, ref_infonce, ref_sigmoid, unit_pair, value_and_grads

WORLD, PAIR = 3, (1, 2)  # global ranks in the subgroup
N_LOCAL, DIM, DIMS = 13, 24, [8, 24]
LOG_SCALE, BIAS = math.log(1 / 0.07), -5.0


def _objectives(group):
    """name → (callable(a, b, log_scale, bias), reference(a, b, log_scale, bias)), each bound
    to ``group`` in a different way (constructor, with_group, blockwise functions)."""
    def nested(ref):
        return lambda a, b, s, t: sum(ref(F.normalize(a[:, :k], dim=-1),
                                          F.normalize(b[:, :k], dim=-1), s, t) for k in DIMS)

    infonce = InfoNCE(block_size=5)
    return {
        "infonce": (infonce.with_group(group), lambda a, b, s, t: ref_infonce(a, b, s)),
        "sigmoid": (SigmoidLoss(block_size=4, group=group), ref_sigmoid),
        "matryoshka": (MatryoshkaObjective(SigmoidLoss(block_size=6), DIMS).with_group(group),
                       nested(ref_sigmoid)),
        "matryoshka-ctor": (MatryoshkaObjective("infonce", DIMS, group=group, block_size=7),
                            nested(lambda a, b, s, t: ref_infonce(a, b, s))),
        "blockwise_infonce": (lambda a, b, s, t: blockwise_infonce(a, b, s.exp(), group=group),
                              lambda a, b, s, t: ref_infonce(a, b, s)),
        "blockwise_sigmoid": (lambda a, b, s, t: blockwise_sigmoid(a, b, s.exp(), t, group=group),
                              ref_sigmoid),
    }


def _inputs(which: str):
    """``"local"``: rank 0's own rows; ``"pair"``: the subgroup's rows in group-rank order."""
    if which == "local":
        return unit_pair(N_LOCAL + 4, DIM, seed=31)
    return unit_pair(len(PAIR) * N_LOCAL, DIM, seed=32)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=60))
    torch.set_num_threads(1)
    pair = dist.new_group(list(PAIR))  # every rank must take part in creating it
    results = {}
    if rank == 0:
        group, (a, b) = LOCAL, _inputs("local")
        rows = slice(None)
    else:
        group, (a, b) = pair, _inputs("pair")
        g_rank = dist.get_rank(pair)
        rows = slice(g_rank * N_LOCAL, (g_rank + 1) * N_LOCAL)
        results["group_rank"] = g_rank
    args = (a[rows], b[rows], torch.tensor(LOG_SCALE), torch.tensor(BIAS))
    for name, (objective, _) in _objectives(group).items():
        results[name] = value_and_grads(objective, *args)
    x = torch.full((2, 3), float(rank), requires_grad=True)
    gathered = all_gather_with_grad(x, group=group)
    (gathered * torch.arange(1.0, gathered.shape[0] + 1)[:, None]).sum().backward()
    results["all_gather"] = (gathered.detach(), x.grad)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def test_subgroup_and_local_match_single_process():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), tmp), nprocs=WORLD, join=True)
        per_rank = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(WORLD)]

    assert [per_rank[r]["group_rank"] for r in PAIR] == [0, 1]
    ls = torch.tensor(LOG_SCALE, dtype=torch.float64)
    lb = torch.tensor(BIAS, dtype=torch.float64)
    for which, members in (("local", [0]), ("pair", list(PAIR))):
        a, b = (t.double() for t in _inputs(which))
        size = len(members)
        for name, (_, ref_fn) in _objectives(LOCAL).items():
            ref, g_ref = value_and_grads(ref_fn, a, b, ls, lb)
            for i, r in enumerate(members):
                what = f"{name} on rank {r} ({which})"
                loss, grads = per_rank[r][name]
                rows = slice(i * N_LOCAL, (i + 1) * N_LOCAL) if which == "pair" else slice(None)
                assert_close(loss, ref, 1e-5, f"{what}: loss")
                assert_close(grads[0], size * g_ref[0][rows], 1e-5, f"{what}: grad a")
                assert_close(grads[1], size * g_ref[1][rows], 1e-5, f"{what}: grad b")
            for k, what in ((2, "logit_scale"), (3, "logit_bias")):
                if g_ref[k] is not None:  # InfoNCE has no bias
                    summed = sum(per_rank[r][name][1][k] for r in members)
                    assert_close(summed, size * g_ref[k], 1e-5, f"{name} ({which}): Σ grad {what}")

    # LOCAL: identity, gradient = the weights of its rows; the pair: rows of ranks 1 and 2,
    # weighted 1..4 by both members, so member i's row j gets 2·(2i + j + 1)
    gathered, grad = per_rank[0]["all_gather"]
    assert torch.equal(gathered, torch.zeros(2, 3))
    assert torch.equal(grad, torch.tensor([[1.0], [2.0]]).expand(2, 3))
    for i, r in enumerate(PAIR):
        gathered, grad = per_rank[r]["all_gather"]
        assert torch.equal(gathered, torch.tensor([1.0, 1.0, 2.0, 2.0])[:, None].expand(4, 3))
        expected = 2 * torch.tensor([[2.0 * i + 1], [2.0 * i + 2]]).expand(2, 3)
        assert torch.equal(grad, expected)


def test_with_group_returns_a_bound_copy():
    obj = InfoNCE(label_smoothing=0.1, block_size=7)
    local = obj.with_group(LOCAL)
    assert local is not obj and type(local) is InfoNCE
    assert (local.group, obj.group) == (LOCAL, None)  # the original is unchanged
    assert (local.label_smoothing, local.block_size) == (0.1, 7)
    assert "group=LOCAL" in repr(local) and "group" not in repr(obj)

    mat = MatryoshkaObjective(SigmoidLoss(block_size=3), [4, 8])
    mat_local = mat.with_group(LOCAL)
    assert mat_local.group is LOCAL and mat_local.base.group is LOCAL
    assert mat.group is None and mat.base.group is None  # shared containers were not mutated
    assert mat_local.base is not mat.base and mat_local.base.block_size == 3
    assert mat_local.init_logit_bias == -10.0 and mat_local.dims == [4, 8]
    assert MatryoshkaObjective(SigmoidLoss(group=LOCAL), [4]).group is LOCAL  # base's group kept
    assert MatryoshkaObjective(InfoNCE(), [4], group=LOCAL).base.group is LOCAL


def test_local_survives_copy_and_pickle():
    assert copy.deepcopy(LOCAL) is LOCAL and pickle.loads(pickle.dumps(LOCAL)) is LOCAL
    assert copy.deepcopy(InfoNCE(group=LOCAL)).group is LOCAL


def test_group_values_are_checked():
    with pytest.raises(TypeError, match="group must be None, LOCAL or"):
        InfoNCE(group="local")
    with pytest.raises(TypeError, match="group must be None, LOCAL or"):
        InfoNCE().with_group(0)
    with pytest.raises(ConfigError, match="objective 'sigmoid': group must be"):
        build_objective("sigmoid", group="everyone")
    a, b = unit_pair(4, 3)
    with pytest.raises(TypeError, match="group must be"):
        blockwise_sigmoid(a, b, 1.0, 0.0, group=1)
