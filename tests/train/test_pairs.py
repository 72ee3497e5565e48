"""Pairs as configuration, --init-from with frozen towers, and the frozen-feature cache."""
import csv
import json
import math

import pytest
import torch
from safetensors.torch import load_file

import jointspace
from jointspace.config import load_run_config
from jointspace.errors import ConfigError
from jointspace.model import JointModel
from jointspace.train import feature_cache
from jointspace.train.trainer import train

TEXT = "{name: transformer, options: {vocab_size: 300, width: 32, layers: 1, heads: 2, context_length: 24}}"


def _paraphrase_manifest(shapes_dir, tmp_path):
    """Each row: an image, its caption, and the caption reworded (a second text column)."""
    with open(shapes_dir / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out = tmp_path / "para.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "text", "paraphrase", "label"])
        for r in rows:
            w.writerow([r["id"], shapes_dir / r["image"], r["text"], f"picture: {r['label']}", r["label"]])
    return out


def test_config_errors_name_the_pair():
    with pytest.raises(ConfigError, match="names a modality with no tower"):
        JointModel(load_run_config(overrides=["model.pairs=[{a: image, b: audio}]"]).model)
    with pytest.raises(ConfigError, match="are in no pair"):
        JointModel(load_run_config(overrides=["model.pairs=[{a: text, b: text@paraphrase}]"]).model)
    with pytest.raises(ConfigError, match="must join two different fields"):
        load_run_config(overrides=["model.pairs=[{a: text, b: text}]"])


def test_same_modality_pair_with_one_shared_tower(shapes_dir, tiny_overrides, tmp_path):
    """Sentence-embedding training: text against text@paraphrase, one text tower."""
    manifest = _paraphrase_manifest(shapes_dir, tmp_path)
    run = load_run_config(overrides=tiny_overrides + [
        "model.towers.image=null", "model.pairs=[{a: text, b: text@paraphrase}]",
        "train.max_steps=30"])
    train(run, manifest, tmp_path / "m", val_data=manifest)
    log = [json.loads(l) for l in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.8 * log[0]["loss"]
    assert "val_text_to_text@paraphrase_R@1" in log[-1]
    model = jointspace.load(tmp_path / "m")
    assert list(model.towers) == ["text"] and list(model.logit_scales) == ["text-text@paraphrase"]


def test_each_pair_has_its_own_objective_and_temperature(shapes_dir, tiny_overrides, tmp_path):
    manifest = _paraphrase_manifest(shapes_dir, tmp_path)
    run = load_run_config(overrides=tiny_overrides + [
        "model.pairs=[{a: image, b: text}, {a: image, b: text@paraphrase, weight: 0.5, "
        "objective: {name: sigmoid}}]", "train.max_steps=4", "train.log_every=1"])
    model = JointModel(run.model)
    assert model.logit_scales["image-text"].item() == pytest.approx(math.log(1 / 0.07))
    assert model.logit_scales["image-text@paraphrase"].item() == pytest.approx(math.log(10))
    assert list(model.logit_biases) == ["image-text@paraphrase"]  # only the sigmoid pair
    train(run, manifest, tmp_path / "m")
    log = [json.loads(l) for l in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    first = log[0]
    assert first["loss"] == pytest.approx(first["loss_image-text"] + 0.5 * first["loss_image-text@paraphrase"],
                                          rel=1e-4)
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert {"logit_scales.image-text", "logit_scales.image-text@paraphrase",
            "logit_biases.image-text@paraphrase"} <= set(weights)


def _spy_features(monkeypatch, tower_cls):
    calls = []
    real = tower_cls.features

    def features(self, x):
        calls.append(len(x))
        return real(self, x)
    monkeypatch.setattr(tower_cls, "features", features)
    return calls


def test_init_from_with_a_locked_text_tower(shapes_dir, tiny_overrides, trained_model_dir, tmp_path,
                                            monkeypatch):
    """LiT: the text tower comes from a trained model and stays locked; its features are
    computed once per distinct caption, reused on the next run, and never replayed."""
    from jointspace.towers.text import TextTransformerTower
    source = load_file(str(trained_model_dir / "model.safetensors"))
    overrides = tiny_overrides + ["model.towers.text.trainable=none",
                                  "model.towers.image.trainable=head",
                                  "train.accum_steps=2", "train.max_steps=6"]
    calls = _spy_features(monkeypatch, TextTransformerTower)
    train(load_run_config(overrides=overrides), shapes_dir / "train.csv", tmp_path / "lit",
          val_data=shapes_dir / "val.csv", init_from=trained_model_dir)
    out = load_file(str(tmp_path / "lit" / "model.safetensors"))
    for k, v in source.items():
        if k.startswith("towers.text.") or (k.startswith("towers.image.") and ".proj." not in k):
            assert torch.equal(out[k], v), k  # frozen: exactly the source's weights and statistics
    assert not torch.equal(out["towers.image.proj.weight"], source["towers.image.proj.weight"])
    distinct = len({r["text"] for r in csv.DictReader(open(shapes_dir / "train.csv"))}) + \
        len({r["text"] for r in csv.DictReader(open(shapes_dir / "val.csv"))})
    assert sum(calls) <= distinct  # once per distinct caption, not once per step (6 × 16)
    card = (tmp_path / "lit" / "README.md").read_text()
    assert "| text | transformer | none | 0 |" in card and "| image | convnet | head |" in card
    calls.clear()
    train(load_run_config(overrides=overrides), shapes_dir / "train.csv", tmp_path / "again",
          val_data=shapes_dir / "val.csv", init_from=trained_model_dir)
    assert calls == []  # the disk cache served every caption
    again = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert all(torch.equal(again[k], out[k]) for k in out)


def test_cached_features_train_like_recomputed_ones(shapes_dir, tiny_overrides, trained_model_dir,
                                                   tmp_path):
    overrides = tiny_overrides + ["model.towers.text.trainable=head", "train.max_steps=5"]
    train(load_run_config(overrides=overrides), shapes_dir / "train.csv", tmp_path / "cached",
          init_from=trained_model_dir)
    train(load_run_config(overrides=overrides + ["train.cache_features=false"]),
          shapes_dir / "train.csv", tmp_path / "recomputed", init_from=trained_model_dir)
    a = load_file(str(tmp_path / "cached" / "model.safetensors"))
    b = load_file(str(tmp_path / "recomputed" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_init_from_refuses_a_different_tower(shapes_dir, tiny_overrides, trained_model_dir, tmp_path):
    overrides = tiny_overrides + ["model.towers.image={name: convnet, options: {widths: [8, 32]}}"]
    with pytest.raises(ConfigError, match="its 'image' tower is convnet"):
        train(load_run_config(overrides=overrides), shapes_dir / "train.csv", tmp_path / "m",
              init_from=trained_model_dir)


def test_two_manifests_feed_their_own_pairs(shapes_dir, tiny_overrides, tmp_path):
    """image–text from one file, image–text@paraphrase from another: each step's batch
    comes from one source, its pair's loss is logged, and resume is exact."""
    para = _paraphrase_manifest(shapes_dir, tmp_path)
    only_para = tmp_path / "only_para.csv"
    with open(para, newline="") as f, open(only_para, "w", newline="") as g:
        rows = list(csv.DictReader(f))
        w = csv.writer(g)
        w.writerow(["id", "image", "paraphrase"])
        for r in rows:
            w.writerow([r["id"], r["image"], r["paraphrase"]])
    overrides = tiny_overrides + [
        "model.pairs=[{a: image, b: text}, {a: image, b: text@paraphrase}]",
        "train.max_steps=10", "train.log_every=1", "train.checkpoint_every=5"]
    run = load_run_config(overrides=overrides)
    sources = [shapes_dir / "train.csv", only_para]
    train(run, sources, tmp_path / "a", data_weights=[1, 1])
    log = [json.loads(l) for l in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    seen = [{k for k in r if k.startswith("loss_")} for r in log]
    assert {"loss_image-text"} in seen and {"loss_image-text@paraphrase"} in seen  # one source a step
    assert all(len(s) == 1 for s in seen)
    train(run, sources, tmp_path / "b", data_weights=[1, 1], stop_after=5)
    train(run, sources, tmp_path / "b", data_weights=[1, 1], resume=True)
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_manifest_without_any_pair_is_named(shapes_dir, tiny_overrides, tmp_path):
    from jointspace.errors import DataError
    bad = tmp_path / "images_only.csv"
    bad.write_text("image\nimages/train/train-000000.png\n")
    with pytest.raises(DataError, match="has no pair's columns.*image-text needs columns 'image' and 'text'"):
        train(load_run_config(overrides=tiny_overrides), [shapes_dir / "train.csv", bad], tmp_path / "m")


def test_init_from_starts_at_the_source_models_temperature(trained_model_dir, tiny_overrides, tmp_path):
    """Fine-tuning an imported CLIP or SigLIP starts from its learned scale (and bias),
    not from the objective's default; a different kind of objective keeps its own."""
    import jointspace
    from jointspace.model import JointModel
    from jointspace.train.init import init_from_model
    source = jointspace.load(trained_model_dir)
    with torch.no_grad():
        source.logit_scales["image-text"].fill_(3.9)
    source.save(tmp_path / "src")
    run = load_run_config(overrides=tiny_overrides)
    model = JointModel(run.model)
    assert model.logit_scales["image-text"].item() != pytest.approx(3.9)
    init_from_model(model, tmp_path / "src")
    assert model.logit_scales["image-text"].item() == pytest.approx(3.9)
    sigmoid = JointModel(load_run_config(overrides=tiny_overrides + ["model.objective.name=sigmoid"]).model)
    before = sigmoid.logit_scales["image-text"].item()
    init_from_model(sigmoid, tmp_path / "src")  # InfoNCE source, sigmoid run: own start kept
    assert sigmoid.logit_scales["image-text"].item() == before
