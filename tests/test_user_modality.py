"""A user's own modality, defined here and nowhere in the package: a "tabular" row of
numbers with a tiny MLP tower. It trains against text, evaluates, is indexed, and is
searched over HTTP — by text and by an uploaded row — with no change to jointspace."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from jointspace.config import load_run_config
from jointspace.errors import DataError
from jointspace.modalities import MODALITIES, Modality
from jointspace.towers import TOWERS, Tower

DIM = 6
CLASSES = ("alpha", "beta", "gamma", "delta")


class Tabular(Modality):
    """A manifest cell ``"0.1;-2;3.5;…"`` of ``DIM`` numbers (not a file)."""

    name = "tabular"
    is_file = False
    shard_keys = ("tab",)
    default_tower = "test_tabular_mlp"
    preview_kind = "text"

    # no check and no max_pixels: the base class checks by decoding, and the server and
    # the readers pass a decode only the bounds it declares
    def decode(self, source: Any, *, where: str = "") -> np.ndarray:
        if isinstance(source, bytes):
            source = source.decode("utf-8", errors="replace")
        try:
            values = np.array([float(v) for v in str(source).split(";")], dtype=np.float32)
        except ValueError:
            raise DataError(f"{where or 'tabular'}: not numbers separated by ';'") from None
        if values.shape != (DIM,) or not np.isfinite(values).all():
            raise DataError(f"{where or 'tabular'}: expected {DIM} finite numbers, got {values.size}")
        return values




@dataclass
class TabularMLPConfig:
    hidden: int = 16


class TabularMLP(Tower):
    Config = TabularMLPConfig
    modality = "tabular"

    def __init__(self, config: TabularMLPConfig, embed_dim: int) -> None:
        super().__init__(config, embed_dim)
        self.body = nn.Sequential(nn.Linear(DIM, config.hidden), nn.GELU())
        self.proj = nn.Linear(config.hidden, embed_dim)

    def preprocess_one(self, item: Any) -> torch.Tensor:
        values = item if isinstance(item, np.ndarray) else MODALITIES.get("tabular").decode(item)
        return torch.from_numpy(np.asarray(values, dtype=np.float32))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.float())


@pytest.fixture(scope="module", autouse=True)
def tabular_plugin():
    """The plug-in and its tower, registered for this module's tests only."""
    MODALITIES.register("tabular")(Tabular())
    TOWERS.register("test_tabular_mlp")(TabularMLP)
    yield
    MODALITIES.unregister("tabular")
    TOWERS.unregister("test_tabular_mlp")


def _row(cls: int, rng: np.random.Generator) -> str:
    centre = np.zeros(DIM, dtype=np.float32)
    centre[cls] = 3.0
    return ";".join(f"{v:.3f}" for v in centre + rng.normal(0, 0.3, DIM))


def write_manifest(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "tabular", "text", "label"])
        for i in range(n):
            cls = i % len(CLASSES)
            w.writerow([f"r{i}", _row(cls, rng), f"a row of kind {CLASSES[cls]}", CLASSES[cls]])
    return path


@pytest.fixture(scope="module")
def tabular_model(tmp_path_factory) -> tuple[Path, Path]:
    from jointspace.train.trainer import train

    root = tmp_path_factory.mktemp("tabular")
    train_csv = write_manifest(root / "train.csv", 160, 0)
    test_csv = write_manifest(root / "test.csv", 40, 1)
    run = load_run_config(overrides=[
        "model.embed_dim=16",
        "model.towers={tabular: {name: test_tabular_mlp}, text: {name: transformer, options: "
        "{vocab_size: 300, width: 32, layers: 1, heads: 2, context_length: 16}}}",
        "train.batch_size=32", "train.max_steps=60", "train.warmup_steps=5", "train.lr=0.01",
        "train.eval_every=1000", "train.checkpoint_every=1000", "train.log_every=20"])
    torch.manual_seed(0)
    train(run, train_csv, root / "model")
    return root / "model", test_csv


def test_a_bad_row_of_a_user_modality_is_quarantined_with_its_reason(tmp_path) -> None:
    from jointspace.data.manifest import read_manifest

    manifest = write_manifest(tmp_path / "m.csv", 4, 0)
    with open(manifest, "a", newline="") as f:
        csv.writer(f).writerow(["bad", "1;2;x", "a row of kind alpha", "alpha"])
    data = read_manifest(manifest, required=("tabular", "text"))
    assert [r.id for r in data.records] == ["r0", "r1", "r2", "r3"]
    assert len(data.bad_rows) == 1 and "not numbers" in data.bad_rows[0].reason, data.bad_rows


def test_a_user_modality_trains_and_evaluates(tabular_model, tmp_path) -> None:
    from jointspace.eval.run import evaluate

    model_dir, test_csv = tabular_model
    results = evaluate(model_dir, test_csv, pair=("tabular", "text"), out_dir=tmp_path / "eval",
                       report=False)
    assert results["pair"] == ["tabular", "text"]
    by_label = results["retrieval_by_label"]
    # 4 classes: chance is 0.25; the tiny model separates the clusters
    assert by_label["text_to_tabular"]["R@1"] > 0.8, by_label
    assert by_label["tabular_to_text"]["R@1"] > 0.8, by_label


def test_a_user_modality_is_indexed_and_searched_over_http(tabular_model, tmp_path) -> None:
    from fastapi.testclient import TestClient

    from jointspace.index import build_collection
    from jointspace.serve.app import create_app

    model_dir, test_csv = tabular_model
    collection = build_collection(model_dir, test_csv, tmp_path / "col")
    assert len(collection) == 40
    client = TestClient(create_app(collection))

    found = client.post("/search", json={"text": "a row of kind gamma", "k": 5})
    assert found.status_code == 200, found.text
    hits = found.json()["hits"]
    assert hits and all(h["label"] == "gamma" for h in hits), hits

    described = client.get("/modalities")
    assert described.status_code == 200, described.text
    assert "tabular" in json.dumps(described.json())

    row = _row(CLASSES.index("beta"), np.random.default_rng(7))
    by_row = client.post("/search", json={"terms": [{"modality": "tabular", "text": row}], "k": 5})
    assert by_row.status_code == 200, by_row.text
    assert [h["label"] for h in by_row.json()["hits"]] == ["beta"] * 5

    bad = client.post("/search", json={"terms": [{"modality": "tabular", "text": "1;2"}], "k": 5})
    assert bad.status_code == 400 and "6 finite numbers" in bad.text, bad.text
