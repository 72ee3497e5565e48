"""Training under torchrun with 2 gloo processes matches one process."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

# LayerNorm towers: batch norm statistics would differ between a half batch and a whole one
LN_TOWERS = [
    "model.towers.image={name: vit, options: {width: 32, layers: 1, heads: 2, patch_size: 16}}",
    "model.towers.text={name: transformer, options: {vocab_size: 300, width: 32, layers: 1, heads: 2, context_length: 24}}",
]


def _train(shapes_dir, out, overrides, nproc):
    sets = sum((["--set", o] for o in overrides), [])
    cmd = ["-m", "jointspace.cli", "train", "--data", str(shapes_dir / "train.csv"),
           "--val", str(shapes_dir / "val.csv"), "--out", str(out), *sets]
    if nproc > 1:
        cmd = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *cmd]
    env = {**os.environ, "JOINTSPACE_QUIET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("extra", [
    [],
    ["train.accum_steps=2"],
    ["model.objective.name=sigmoid", "train.accum_steps=2"],
], ids=["infonce", "infonce-accum2", "sigmoid-accum2"])
def test_two_processes_match_one(shapes_dir, tiny_overrides, tmp_path, extra):
    overrides = tiny_overrides + LN_TOWERS + ["train.max_steps=6", "train.log_every=1"] + extra
    _train(shapes_dir, tmp_path / "one", overrides, 1)
    _train(shapes_dir, tmp_path / "two", overrides, 2)
    logs = [[json.loads(l) for l in (tmp_path / d / "log.jsonl").read_text().splitlines()]
            for d in ("one", "two")]
    assert [r["step"] for r in logs[1]] == list(range(1, 7))
    # The gradient norm is logged before clipping and the optimiser, which would
    # hide a wrong gradient scale (Adam is scale-invariant): it must match exactly.
    assert [r["grad_norm"] for r in logs[1]] == pytest.approx([r["grad_norm"] for r in logs[0]], rel=1e-4)
    assert [r["loss"] for r in logs[1]] == pytest.approx([r["loss"] for r in logs[0]], rel=1e-5)
    assert logs[1][-1]["val_loss"] == pytest.approx(logs[0][-1]["val_loss"], rel=1e-4)
    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "model.safetensors"))
    for name in one:
        a, b = one[name], two[name]
        if name.endswith("in_proj_bias"):
            # The key bias has an exactly-zero true gradient (softmax ignores a shift),
            # so Adam turns float noise into full-size steps there: compare q and v only.
            width = a.shape[0] // 3
            a, b = torch.cat([a[:width], a[2 * width:]]), torch.cat([b[:width], b[2 * width:]])
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=name)


def test_batch_norm_towers_match_one_process(shapes_dir, tiny_overrides, tmp_path):
    """The default towers (a batch-norm convnet for images): under two processes
    each normalises its half batch by the statistics of the whole one."""
    overrides = tiny_overrides + ["train.max_steps=4", "train.log_every=1", "train.eval_every=4"]
    _train(shapes_dir, tmp_path / "one", overrides, 1)
    _train(shapes_dir, tmp_path / "two", overrides, 2)
    logs = [[json.loads(l) for l in (tmp_path / d / "log.jsonl").read_text().splitlines()]
            for d in ("one", "two")]
    assert [r["grad_norm"] for r in logs[1]] == pytest.approx([r["grad_norm"] for r in logs[0]], rel=1e-4)
    assert [r["loss"] for r in logs[1]] == pytest.approx([r["loss"] for r in logs[0]], rel=1e-5)
    assert logs[1][-1]["val_loss"] == pytest.approx(logs[0][-1]["val_loss"], rel=1e-4)
    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert one.keys() == two.keys()  # saved under the plain batch norm's names
    assert any(k.endswith("running_var") for k in one)
    # The stem convolution's bias (batch norm follows it) has an exactly-zero true gradient,
    # so Adam walks it by float noise, at most lr per step each way; the running mean of
    # the batch norm after it carries that walk.
    walk = 2 * 0.003 * 4  # both ways, lr 0.003, 4 steps
    drifting = {"towers.image.trunk.0.bias": walk, "towers.image.trunk.1.running_mean": walk}
    for name in one:
        a, b = one[name], two[name]
        if name.endswith("in_proj_bias"):  # the key bias: see test_two_processes_match_one
            width = a.shape[0] // 3
            a, b = torch.cat([a[:width], a[2 * width:]]), torch.cat([b[:width], b[2 * width:]])
        torch.testing.assert_close(b, a, rtol=1e-3, atol=drifting.get(name, 1e-4), msg=name)


def _read_worker(rank, init_file, manifest, out_dir, results):
    """Process 1's image check would reject every row: with the manifest read on
    process 0 only, both train on process 0's rows and process 1 decodes nothing."""
    import torch.distributed as dist
    from jointspace.modalities import image as image_module  # the image plug-in's check
    from jointspace.config import load_run_config
    from jointspace.train import sources
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    calls = []
    real_check = image_module.check_image

    def check(path, *args, **kwargs):
        calls.append(path)
        return "flaky read on process 1" if rank == 1 else real_check(path, *args, **kwargs)
    image_module.check_image = check
    try:
        [source] = sources.read_sources([manifest], load_run_config(), out_dir, "skip", None)
        m = source.manifest
        results[rank] = ([r.id for r in m.records], len(calls))
    finally:
        dist.destroy_process_group()


def test_only_process_0_reads_the_manifest(shapes_dir, tmp_path):
    import torch.multiprocessing as mp
    results = mp.Manager().dict()
    mp.spawn(_read_worker, args=(str(tmp_path / "init"), shapes_dir / "val.csv", tmp_path, results),
             nprocs=2, join=True)
    ids0, calls0 = results[0]
    ids1, calls1 = results[1]
    assert ids0 == ids1 and len(ids0) == 12 and calls0 == 12 and calls1 == 0
