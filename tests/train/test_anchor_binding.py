"""Binding audio through images (ImageBind): the config, and emergent audio↔text alignment.

A tiny image–text model is trained, then two audio towers with the same budget:
*bound* against the locked image tower only, *direct* against the locked text
tower. The bound model never sees an audio–text pair; its audio↔text retrieval
must still be far above chance and at least half the direct model's.
"""
import json

import pytest
import torch

from jointspace.cli import main
from jointspace.config import load_run_config
from jointspace.data.shapes import ShapesSpec, class_names, write_shapes
from jointspace.errors import ConfigError
from jointspace.eval.run import evaluate
from jointspace.model import load
from jointspace.train.init import bind_config
from jointspace.train.trainer import train

TINY_AUDIO = "model.towers.audio={name: audio_conv, options: {widths: [16, 32], layers: 1, heads: 2, n_mels: 32}}"
BASE = ["model.embed_dim=32", "model.towers.image={name: convnet, options: {widths: [16, 32]}}",
        "model.towers.text={name: transformer, options: {vocab_size: 300, width: 32, layers: 1, heads: 2, "
        "context_length: 24}}", "train.batch_size=64", "train.max_steps=150", "train.warmup_steps=10",
        "train.eval_every=1000", "train.checkpoint_every=1000", "train.log_every=50", "train.lr=0.003"]
BIND = [TINY_AUDIO, "train.batch_size=64", "train.max_steps=120", "train.warmup_steps=10",
        "train.eval_every=1000", "train.checkpoint_every=1000", "train.log_every=40", "train.lr=0.003"]


@pytest.fixture(scope="module")
def audio_shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes_audio")
    return write_shapes(out, ShapesSpec(n=700, seed=5, audio=True, fractions=(0.8, 0.05, 0.15)))


@pytest.fixture(scope="module")
def models(audio_shapes, tmp_path_factory):
    root = tmp_path_factory.mktemp("bind")
    torch.manual_seed(0)
    train(load_run_config(None, BASE), audio_shapes["train"], root / "base")
    for name, anchor in (("bound", "image"), ("direct", "text")):
        run = bind_config(load_run_config(None, BIND), root / "base", "audio", anchor)
        train(run, audio_shapes["train"], root / name, init_from=root / "base",
              val_data=audio_shapes["val"])
    return root


def test_bind_config_locks_the_source_and_pairs_only_the_anchor(models):
    run = bind_config(load_run_config(None, BIND), models / "base", "audio", "image")
    assert {m: s.trainable for m, s in run.model.towers.items()} == {
        "image": "none", "text": "none", "audio": "all"}
    assert [p.key for p in run.model.resolved_pairs()] == ["audio-image"]
    assert run.model.embed_dim == 32
    with pytest.raises(ConfigError, match="already has"):
        bind_config(run, models / "bound", "audio", "image")
    with pytest.raises(ConfigError, match="no 'depth' tower"):
        bind_config(run, models / "base", "audio", "depth")


def test_bound_model_keeps_the_image_and_text_towers_bit_for_bit(models, audio_shapes):
    base, bound = load(models / "base"), load(models / "bound")
    for m in ("image", "text"):
        for (k, a), (_, b) in zip(base.towers[m].state_dict().items(),
                                  bound.towers[m].state_dict().items()):
            assert torch.equal(a, b), f"{m}.{k} changed while binding audio"
    log = [json.loads(line) for line in open(models / "bound" / "log.jsonl")]
    assert not any("text" in k for row in log for k in row if k.startswith(("loss_", "val_")))


def test_emergent_audio_text_alignment_is_at_least_half_the_direct_model(models, audio_shapes):
    results = {name: evaluate(models / name, audio_shapes["test"], pair="audio:text",
                              classes=class_names()) for name in ("bound", "direct")}
    for direction in ("audio_to_text", "text_to_audio"):
        bound = results["bound"]["retrieval_by_label"][direction]["R@1"]
        direct = results["direct"]["retrieval_by_label"][direction]["R@1"]
        chance = results["bound"]["retrieval_by_label"]["chance"][direction]["R@1"]
        assert bound > 3 * chance, (direction, bound, chance)
        assert bound >= 0.5 * direct, (direction, bound, direct)
    # and audio finds its own image through the anchor it was trained on
    to_image = evaluate(models / "bound", audio_shapes["test"], pair="audio:image")
    assert to_image["retrieval"]["audio_to_image"]["R@10"] > 5 * to_image["retrieval"]["chance"]["audio_to_image"]["R@10"]


def test_cli_evaluates_the_audio_text_pair_of_the_bound_model(models, audio_shapes, capsys, tmp_path):
    code = main(["eval", str(models / "bound"), "--data", str(audio_shapes["test"]),
                 "--pair", "audio:text", "--out", str(tmp_path / "ev")])
    printed = capsys.readouterr().out
    assert code == 0
    assert "audio↔text retrieval" in printed and "text_to_audio" in printed and "audio_to_text" in printed
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["pair"] == ["audio", "text"] and results["zero_shot"]["n"] == results["n"]
    code = main(["eval", str(models / "bound"), "--data", str(audio_shapes["test"]), "--pairs",
                 "audio:text,audio:image", "--tasks", "retrieval,probe", "--train-data",
                 str(audio_shapes["train"]), "--out", str(tmp_path / "both")])
    printed = capsys.readouterr().out
    assert code == 0 and "linear probe on audio" in printed and "report:" in printed
    for pair in ("audio-text", "audio-image"):
        both = json.loads((tmp_path / "both" / pair / "results.json").read_text())
        assert both["pair"] == pair.split("-") and "zero_shot" not in both
        assert both["linear_probe"]["acc1"] > 3 / 48  # audio embeddings hold the label
        assert (tmp_path / "both" / pair / "report.html").is_file()
    code = main(["eval", str(models / "base"), "--data", str(audio_shapes["test"]),
                 "--pair", "audio:text", "--out", str(tmp_path / "ev2")])
    assert code == 2 and "no 'audio' tower" in capsys.readouterr().err


def test_cli_binds_with_init_from(models, audio_shapes, tmp_path, capsys):
    out = tmp_path / "cli_bound"
    code = main(["train", "--data", str(audio_shapes["train"]), "--out", str(out), "--init-from",
                 str(models / "base"), "--bind", "audio:image", "--set", TINY_AUDIO,
                 "--set", "train.max_steps=2", "--set", "train.batch_size=8"])
    assert code == 0, capsys.readouterr().err
    assert sorted(load(out).towers) == ["audio", "image", "text"]
    assert main(["train", "--data", str(audio_shapes["train"]), "--out", str(tmp_path / "x"),
                 "--bind", "audio:image"]) == 2
    assert "--init-from" in capsys.readouterr().err
