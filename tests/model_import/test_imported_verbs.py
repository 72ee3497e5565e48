"""Every verb on an imported tiny CLIP, unchanged: eval (zero-shot with the usual templates,
equal to transformers' own prompt ensembling), compare, index → search → serve by text and
by image, train --init-from (image locked, text tuned) and --bind audio:image."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clip_folders import reference, reference_images, reference_text
from fastapi.testclient import TestClient

import jointspace
from jointspace.cli import main
from jointspace.data.manifest import read_manifest
from jointspace.data.shapes import ShapesSpec, write_shapes
from jointspace.eval.zeroshot import DEFAULT_TEMPLATES
from jointspace.index import Collection
from jointspace.serve import create_app

SHORT = ["--set", "train.batch_size=16", "--set", "train.max_steps=4", "--set", "train.warmup_steps=1",
         "--set", "train.eval_every=100", "--set", "train.checkpoint_every=100", "--set", "train.log_every=1"]
TINY_AUDIO = ("model.towers.audio={name: audio_conv, options: {widths: [8, 16], layers: 1, heads: 2, "
              "n_mels: 32}}")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """120 shapes scenes with captions, labels and sounds."""
    return write_shapes(tmp_path_factory.mktemp("shapes"), ShapesSpec(n=120, seed=3, audio=True))


@pytest.fixture(scope="module")
def imported(clip_source, tmp_path_factory):
    return jointspace.import_model(clip_source, tmp_path_factory.mktemp("imported") / "clip")


@pytest.fixture(scope="module")
def test_rows(data):
    rows = read_manifest(data["test"], required=("image", "text")).records
    return [{"id": r.id, "label": r.label, **r.fields} for r in rows]


def test_eval_zero_shot_equals_transformers_prompt_ensembling(imported, clip_source, data, test_rows,
                                                              tmp_path, capsys):
    assert main(["eval", str(imported), "--data", str(data["test"]), "--out", str(tmp_path / "eval"),
                 "--no-report"]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    z = results["zero_shot"]
    assert z["templates"] == list(DEFAULT_TEMPLATES) and results["retrieval"]["n"] == len(test_rows)
    # the same zero-shot classifier built from transformers' own features
    hf, processor = reference(clip_source)
    classes = z["classes"]
    prompts = [t.format(label=c) for c in classes for t in DEFAULT_TEMPLATES]
    class_emb = F.normalize(reference_text(hf, processor, prompts)
                            .reshape(len(classes), len(DEFAULT_TEMPLATES), -1).mean(1), dim=-1)
    images = reference_images(hf, processor, [r["image"] for r in test_rows])
    predicted = (images @ class_emb.T).argmax(1)
    truth = [classes.index(r["label"]) for r in test_rows]
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    np.add.at(confusion, (truth, predicted.numpy()), 1)
    assert z["confusion"] == confusion.tolist()


def test_compare_with_an_imported_siglip(imported, siglip_source, data, tmp_path):
    siglip = jointspace.import_model(siglip_source, tmp_path / "siglip")
    assert main(["compare", str(imported), str(siglip), "--data", str(data["test"]),
                 "--out", str(tmp_path / "cmp")]) == 0
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert {"image", "text"} <= set(results) and 0 <= results["image"]["linear_cka"] <= 1 + 1e-6


def test_indexed_and_served_queried_by_text_and_by_image(imported, clip_source, data, test_rows,
                                                         tmp_path):
    assert main(["index", str(imported), str(data["test"]), "--collection", str(tmp_path / "col")]) == 0
    col = Collection.open(tmp_path / "col")
    client = TestClient(create_app(col))
    hf, processor = reference(clip_source)
    query = "a red circle"
    text_ref = reference_text(hf, processor, [query])[0]

    hits = client.post("/search", json={"text": query, "k": 5}).json()["hits"]
    expected = col.search(text=query, k=5)
    assert [h["id"] for h in hits] == [h.item["id"] for h in expected] and len(hits) == 5
    assert {h["modality"] for h in hits} == {"image"}
    by_id = {r["id"]: r["image"] for r in test_rows}
    image_ref = reference_images(hf, processor, [by_id[h["meta"]["id"]] for h in hits])
    np.testing.assert_allclose([h["score"] for h in hits], (image_ref @ text_ref).numpy(), atol=1e-4)
    every = reference_images(hf, processor, [r["image"] for r in test_rows]) @ text_ref
    assert hits[0]["score"] == pytest.approx(float(every.max()), abs=1e-4)  # the best of them all

    target = test_rows[3]
    data_b64 = base64.b64encode(open(target["image"], "rb").read()).decode()
    found = client.post("/search", json={"image": data_b64, "k": 1}).json()["hits"][0]
    assert found["meta"]["id"] == target["id"] and found["score"] == pytest.approx(1, abs=1e-4)
    assert col.search(image=target["image"], k=1)[0].item["meta"]["id"] == target["id"]


def _state(model, modality):
    return {k: v.clone() for k, v in model.towers[modality].state_dict().items()}


def test_train_init_from_locks_the_image_side_and_tunes_the_text_side(imported, data, tmp_path):
    assert main(["train", "--data", str(data["train"]), "--out", str(tmp_path / "lit"),
                 "--init-from", str(imported), "--config", str(imported / "run.json"),
                 "--set", "model.towers.image.trainable=none", "--set", "train.lr=0.001", *SHORT]) == 0
    before, after = jointspace.load(imported), jointspace.load(tmp_path / "lit")
    for (k, a), b in zip(_state(before, "image").items(), _state(after, "image").values()):
        assert torch.equal(a, b), f"image.{k} changed though locked"
    assert not torch.equal(_state(before, "text")["proj.weight"], _state(after, "text")["proj.weight"])
    assert after.config.towers["text"].name == "hf_clip_text"
    log = [json.loads(line) for line in open(tmp_path / "lit" / "log.jsonl")]
    assert all(np.isfinite(row["loss"]) for row in log if "loss" in row)


def test_audio_bound_onto_the_imported_image_tower_trains_and_evaluates(imported, data, tmp_path):
    assert main(["train", "--data", str(data["train"]), "--out", str(tmp_path / "bound"),
                 "--init-from", str(imported), "--bind", "audio:image", "--set", TINY_AUDIO,
                 "--set", "train.lr=0.003", *SHORT]) == 0
    source, bound = jointspace.load(imported), jointspace.load(tmp_path / "bound")
    for m in ("image", "text"):
        for (k, a), b in zip(_state(source, m).items(), _state(bound, m).values()):
            assert torch.equal(a, b), f"{m}.{k} changed while binding audio"
    assert [p.key for p in bound.pairs] == ["audio-image"]
    assert main(["eval", str(tmp_path / "bound"), "--data", str(data["test"]), "--pairs",
                 "audio:text,audio:image", "--out", str(tmp_path / "eval"), "--no-report"]) == 0
    for pair in ("audio-text", "audio-image"):
        results = json.loads((tmp_path / "eval" / pair / "results.json").read_text())
        assert results["retrieval"]["n"] > 0 and "zero_shot" in results
