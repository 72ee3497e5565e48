"""The ``hf_clip_text`` tower: the text half of a CLIP / SigLIP folder, checked against
``get_text_features`` of transformers on raw strings through the folder's tokenizer."""
from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from clip_folders import TEXTS, reference, reference_text

from jointspace.config import ModelConfig, TowerSpec
from jointspace.errors import ConfigError
from jointspace.model import JointModel, load
from jointspace.model_import import import_model
from jointspace.towers import build_tower

EMBED = {"clip": 16, "siglip": 32}  # CLIP: projection_dim; SigLIP: the text head's size


def text_spec(path, **options) -> TowerSpec:
    trainable = options.pop("trainable", "all")
    return TowerSpec("hf_clip_text", {"path": str(path), **options}, trainable=trainable)


def embed(tower, texts) -> torch.Tensor:
    with torch.no_grad():
        return tower(tower.collate([tower.preprocess_one(t) for t in texts]))


def test_text_embeddings_equal_get_text_features(family_source):
    family, source = family_source
    tower = build_tower(text_spec(source), EMBED[family], "text").eval()
    model, processor = reference(source)
    expected = reference_text(model, processor, TEXTS)
    torch.testing.assert_close(embed(tower, TEXTS), expected, atol=1e-5, rtol=0)
    # the longest text is truncated to the tokenizer's length (CLIP 77, SigLIP 64), EOS kept
    assert len(tower.preprocess_one(TEXTS[4])) == (77 if family == "clip" else 64)
    if family == "clip":  # padding to the longest with a mask = CLIPProcessor's padding to 77
        padded = reference_text(model, processor, TEXTS, padding="max_length")
        torch.testing.assert_close(embed(tower, TEXTS), padded, atol=1e-5, rtol=0)
        assert tower.collate([tower.preprocess_one(t) for t in TEXTS]).shape[1] == 77
        assert tower.collate([tower.preprocess_one("a dog")]).shape[1] < 10
    else:  # SigLIP pools the last position: padding decides the embedding, always 64
        assert tower.collate([tower.preprocess_one("a dog")]).shape == (1, 64)
        short = [t for t in TEXTS if len(t) < 100]
        longest = reference_text(model, processor, short, padding="longest")
        assert (longest - embed(tower, short)).abs().max() > 1e-2  # padding matters: tested


def test_clip_with_the_legacy_eos_id_pools_as_transformers(clip_legacy_eos_source, tmp_path):
    """OpenAI's CLIP configs say eos_token_id 2, which is no EOS of their tokenizer:
    transformers then pools the position of each text's highest token id (its EOS)."""
    tower = build_tower(text_spec(clip_legacy_eos_source), 16, "text").eval()
    model, processor = reference(clip_legacy_eos_source)
    eos = processor.tokenizer.eos_token_id
    assert model.text_model.eos_token_id == 2 != eos and eos == len(processor.tokenizer) - 1
    expected = reference_text(model, processor, TEXTS)
    torch.testing.assert_close(embed(tower, TEXTS), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(embed(tower, TEXTS), reference_text(model, processor, TEXTS, padding="max_length"),
                               atol=1e-5, rtol=0)
    copy = tmp_path / "source"
    shutil.copytree(clip_legacy_eos_source, copy)
    imported = import_model(copy, tmp_path / "m")
    shutil.rmtree(copy)
    torch.testing.assert_close(torch.from_numpy(load(imported).encode_text(TEXTS)), expected, atol=1e-5, rtol=0)


def test_siglip2_text_embeddings_equal_get_text_features(siglip2_source):
    """SigLIP 2: a Gemma tokenizer that pads on the left; 64 tokens, no mask, as SigLIP."""
    tower = build_tower(text_spec(siglip2_source), 32, "text").eval()
    model, processor = reference(siglip2_source)
    assert tower.padding_side == "left" and tower.collate([tower.preprocess_one("a dog")])[0, 0] == 0
    torch.testing.assert_close(embed(tower, TEXTS), reference_text(model, processor, TEXTS),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("fixture", ["clip_source", "siglip_source", "siglip2_source"])
def test_only_the_text_model_is_read(request, fixture, monkeypatch):
    """The tower loads the folder's text model with its projection, never the vision model
    beside it (which would hold a second copy of the vision weights while importing)."""
    import transformers

    def no_vision(self, *args, **kwargs):
        raise AssertionError(f"the text tower built a {type(self).__name__}")

    for name in ("CLIPVisionModel", "SiglipVisionModel", "Siglip2VisionModel"):
        monkeypatch.setattr(getattr(transformers, name), "__init__", no_vision)
    tower = build_tower(text_spec(request.getfixturevalue(fixture)), 16 if fixture == "clip_source" else 32,
                        "text")
    assert tower.unavailable is None and tower.encode_features("a dog").shape == (1, 32)


def test_one_text_alone_and_in_a_batch_agree(clip_source):
    tower = build_tower(text_spec(clip_source), 16, "text").eval()
    alone = torch.cat([embed(tower, [t]) for t in TEXTS])
    torch.testing.assert_close(alone, embed(tower, TEXTS), atol=1e-5, rtol=0)
    feats = tower.encode_features(TEXTS[0])
    assert feats.shape == (1, 32) and abs(float(feats.norm()) - 1) < 1e-5


def test_round_trip_without_the_source_folder(family_source, rebuilt_without_source):
    family, source = family_source
    spec = text_spec(source, trainable="head")
    tower = build_tower(spec, EMBED[family], "text").eval()
    with torch.no_grad():  # weights unlike the folder's, so they must come from the state dict
        for p in tower.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = embed(tower, TEXTS)
    assert (tower.proj.bias is not None) == (family == "siglip")  # CLIP's text_projection has none
    fresh, _ = rebuilt_without_source(tower, spec, EMBED[family], source)
    torch.testing.assert_close(embed(fresh, TEXTS), before, atol=1e-6, rtol=0)
    assert not any(p.requires_grad for p in fresh.backbone.parameters())
    assert all(p.requires_grad for p in fresh.proj.parameters())


def test_joint_model_with_the_tower_loads_after_the_source_is_deleted(family_source, tmp_path):
    family, source = family_source
    config = ModelConfig(embed_dim=EMBED[family], towers={
        "image": TowerSpec("convnet", {"widths": [8, 16]}), "text": text_spec(source)})
    model = JointModel(config).eval()
    before = model.encode_text(TEXTS)
    model.save(tmp_path / "m")
    shutil.rmtree(source)
    again = load(tmp_path / "m")
    torch.testing.assert_close(torch.from_numpy(again.encode_text(TEXTS)), torch.from_numpy(before),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["all", "head", "adapter", "none"])
def test_trainable_modes(clip_source, mode):
    tower = build_tower(text_spec(clip_source, trainable=mode), 16, "text")
    trains = {n.split(".")[0] for n, p in tower.named_parameters() if p.requires_grad}
    assert trains == {"all": {"backbone", "proj"}, "head": {"proj"}, "adapter": {"adapter", "proj"},
                      "none": set()}[mode]
    tower.train()
    if mode != "none":
        out = tower(tower.collate([tower.preprocess_one(t) for t in TEXTS]))
        out[:, 0].sum().backward()
        assert all(p.grad is not None for p in tower.parameters() if p.requires_grad)
    assert tower.backbone.training == (mode == "all")


def test_new_head_and_speed_options(clip_source):
    new = build_tower(text_spec(clip_source, head="new"), 24, "text").eval()
    assert new.proj.in_features == 32 and new.proj.out_features == 24 and new.proj.bias is not None
    exact = build_tower(text_spec(clip_source), 16, "text").eval()
    for options in ({"precision": "bf16"}, {"quantize": True}):
        fast = build_tower(text_spec(clip_source, **options), 16, "text").eval()
        cos = F.cosine_similarity(embed(fast, TEXTS), embed(exact, TEXTS))
        assert cos.min() > 0.98, options


def test_user_errors_are_config_errors(clip_source, tmp_path):
    with pytest.raises(ConfigError, match="embed_dim"):  # the pretrained projection gives 16
        build_tower(text_spec(clip_source), 8, "text")
    with pytest.raises(ConfigError, match="needs a path"):
        build_tower(TowerSpec("hf_clip_text", {}), 8, "text").prepare([])
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConfigError, match="opens whole clip, siglip, siglip2"):
        build_tower(text_spec(tmp_path / "bert"), 8, "text").preprocess_one("a")
    with pytest.raises(ConfigError, match="head must be"):
        build_tower(text_spec(clip_source, head="mlp"), 16, "text")
