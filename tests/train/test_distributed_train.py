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


def test_two_processes_match_one(shapes_dir, tiny_overrides, tmp_path):
    overrides = tiny_overrides + LN_TOWERS + ["train.max_steps=6"]
    _train(shapes_dir, tmp_path / "one", overrides, 1)
    _train(shapes_dir, tmp_path / "two", overrides, 2)
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
    assert float(one["logit_scale"]) != 2.6592600345611572  # training really happened
    logs = [[json.loads(l) for l in (tmp_path / d / "log.jsonl").read_text().splitlines()]
            for d in ("one", "two")]
    assert [r["loss"] for r in logs[0]] == pytest.approx([r["loss"] for r in logs[1]], rel=1e-5)
    assert logs[1][-1]["step"] == 6 and logs[1][-1]["val_loss"] > 0
