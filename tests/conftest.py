"""Shared fixtures: a tiny shapes dataset and a tiny run config."""
from __future__ import annotations

import os

os.environ.setdefault("JOINTSPACE_QUIET", "1")

import pytest
import torch

from jointspace.config import RunConfig, load_run_config
from jointspace.data.shapes import ShapesSpec, write_shapes

TINY_OVERRIDES = [
    "model.embed_dim=32",
    "model.towers.image={name: convnet, options: {widths: [8, 16]}}",
    "model.towers.text={name: transformer, options: {vocab_size: 300, width: 32, layers: 1, heads: 2, context_length: 24}}",
    "train.batch_size=16", "train.max_steps=12", "train.warmup_steps=3", "train.eval_every=6",
    "train.checkpoint_every=4", "train.log_every=2", "train.lr=0.003",
]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _feature_cache(tmp_path_factory):
    """Frozen-feature caches go to a temporary folder, never the user's ~/.cache."""
    os.environ["JOINTSPACE_CACHE"] = str(tmp_path_factory.mktemp("feature-cache"))


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """120 scenes: 96 train, 12 val, 12 test."""
    out = tmp_path_factory.mktemp("shapes")
    write_shapes(out, ShapesSpec(n=120, seed=3))
    return out


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY_OVERRIDES)


@pytest.fixture
def tiny_run() -> RunConfig:
    return load_run_config(overrides=TINY_OVERRIDES)


@pytest.fixture(scope="session")
def trained_model_dir(shapes_dir, tmp_path_factory):
    """A tiny model trained once for the tests that need weights."""
    from jointspace.train.trainer import train
    out = tmp_path_factory.mktemp("model") / "m"
    train(load_run_config(overrides=TINY_OVERRIDES), shapes_dir / "train.csv", out,
          val_data=shapes_dir / "val.csv")
    return out
