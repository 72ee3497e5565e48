"""Two gloo processes on CPU reproduce the single-process loss and gradients.

Convention under test (the default, no flags): every rank returns the global
loss over the concatenated batch; the gradient on a rank's own ``a``/``b`` rows
is ``world_size ×`` the single-process gradient of those rows; the
``logit_scale``/``logit_bias`` gradients summed over ranks are ``world_size ×``
the single-process ones (so DDP's averaging gives exactly the single-process
gradients).
"""
import math
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from jointspace.objectives import InfoNCE, SigmoidLoss, all_gather_with_grad, infonce

from loss_reference import assert_close, ref_infonce, ref_sigmoid, unit_pair, value_and_grads

WORLD = 2
N_LOCAL = 37
CONFIGS = [  # (name, objective factory, log scale, bias, a positive flipped on rank 1)
    ("infonce", lambda: InfoNCE(block_size=10), math.log(1 / 0.07), None, False),
    ("infonce-smooth-exact", lambda: InfoNCE(label_smoothing=0.1, block_size=16),
     math.log(99.0), None, True),
    ("sigmoid", lambda: SigmoidLoss(block_size=9), math.log(10.0), -10.0, False),
    ("sigmoid-big-scale", lambda: SigmoidLoss(), 4.0, -2.0, False),
]


def global_inputs(flip: bool):
    a, b = unit_pair(WORLD * N_LOCAL, 24, seed=21)
    if flip:
        b[N_LOCAL + 3] = -a[N_LOCAL + 3]  # forces the max-tracking path on every rank
    return a, b


def _record_infonce_paths() -> list[str]:
    """Make InfoNCE's two passes report which variant (shifted / exact) ran."""
    ran: list[str] = []
    for name in ("_pass1_exact", "_pass1_shifted", "_pass2_exact", "_pass2_shifted"):
        fn = getattr(infonce, name)
        setattr(infonce, name, lambda *args, _fn=fn, _name=name: ran.append(_name) or _fn(*args))
    return ran


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    torch.set_num_threads(1)
    paths = _record_infonce_paths()
    results = {}
    rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
    for name, factory, log_scale, bias, flip in CONFIGS:
        a, b = global_inputs(flip)
        extra = () if bias is None else (torch.tensor(bias),)
        paths.clear()
        loss, grads = value_and_grads(factory(), a[rows], b[rows], torch.tensor(log_scale), *extra)
        results[name] = (loss, grads)
        results[name + ":paths"] = list(paths)
    # the differentiable all-gather on its own: grad of Σ_ranks Σ (w ⊙ gathered)
    x = torch.full((3, 2), float(rank + 1), requires_grad=True)
    gathered = all_gather_with_grad(x)
    (gathered * torch.arange(6.0)[:, None] * (rank + 1)).sum().backward()
    results["all_gather"] = (gathered.detach(), [x.grad])
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def test_two_processes_match_single_process():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), tmp), nprocs=WORLD, join=True)
        per_rank = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(WORLD)]

    for name, _, log_scale, bias, flip in CONFIGS:
        a, b = global_inputs(flip)
        ls = torch.tensor(log_scale, dtype=torch.float64)
        if bias is None:
            smoothing = 0.1 if "smooth" in name else 0.0
            ref, g_ref = value_and_grads(lambda x, y, s: ref_infonce(x, y, s, smoothing),
                                         a.double(), b.double(), ls)
        else:
            ref, g_ref = value_and_grads(ref_sigmoid, a.double(), b.double(), ls,
                                         torch.tensor(bias, dtype=torch.float64))
        for r in range(WORLD):  # every rank reports the global loss
            assert_close(per_rank[r][name][0], ref, 1e-5, f"{name} rank {r} loss")
        if bias is None:  # the numerical path is agreed by all ranks (the flip is on rank 1 only)
            kind = "exact" if flip else "shifted"
            for r in range(WORLD):
                assert per_rank[r][name + ":paths"] == [f"_pass1_{kind}", f"_pass2_{kind}"], r
        for r in range(WORLD):
            rows = slice(r * N_LOCAL, (r + 1) * N_LOCAL)
            g_a, g_b = per_rank[r][name][1][:2]
            assert_close(g_a, WORLD * g_ref[0][rows], 1e-5, f"{name} rank {r} grad a")
            assert_close(g_b, WORLD * g_ref[1][rows], 1e-5, f"{name} rank {r} grad b")
        for k, what in enumerate(("logit_scale", "logit_bias")[: len(g_ref) - 2]):
            summed = sum(per_rank[r][name][1][2 + k] for r in range(WORLD))
            assert_close(summed, WORLD * g_ref[2 + k], 1e-5, f"{name} Σ ranks grad {what}")

    # all_gather_with_grad: rank r's loss weights gathered row i by i·(r+1), so the gradient
    # on rank q's row j (global row 3q+j) is Σ_r (3q+j)·(r+1) = 3·(3q+j).
    expected = torch.cat([torch.full((3, 2), 1.0), torch.full((3, 2), 2.0)])
    for r in range(WORLD):
        gathered, (g,) = per_rank[r]["all_gather"]
        assert torch.equal(gathered, expected)
        rows = torch.arange(3 * r, 3 * r + 3, dtype=torch.float32)[:, None].expand(3, 2)
        assert torch.allclose(g, 3 * rows)
