"""The pretrained Hugging Face image tower (``hf_vision``).

A tiny randomly initialised model of each family is saved with its image processor
(non-default mean/std) into a temporary folder; jointspace's preprocessing and pooled
features must equal what ``transformers``' own PIL processor and forward pass give, on
images that exercise the preprocessing (non-square, larger and smaller than the crop,
an EXIF-rotated JPEG, RGBA, 16-bit).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

# transformers is a hard dependency: these tests never skip for want of it
import transformers

from jointspace.config import ModelConfig, TowerSpec
from jointspace.errors import ConfigError
from jointspace.model import JointModel, load
from jointspace.towers import build_tower
from jointspace.towers.image_processing import processing_from_config
from jointspace.towers.vision import decode_image, to_rgb8

MEAN, STD = [0.3, 0.4, 0.5], [0.2, 0.25, 0.3]
VIT = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
           num_attention_heads=4)
TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=16)


# --------------------------------------------------------------------------- test images
def _picture(width: int, height: int, seed: int) -> np.ndarray:
    """Smooth gradients plus noise, uint8 [height, width, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (width + height)], -1)
    return np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(_picture(97, 61, 0)).save(folder / "wide.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: exif_transpose turns the 50×70 pixels into 70×50
    Image.fromarray(_picture(50, 70, 1)).save(folder / "rotated.jpg", quality=90, exif=exif)
    rgba = np.dstack([_picture(64, 80, 2), np.linspace(0, 255, 64 * 80).reshape(80, 64).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    gray = np.linspace(0, 65535, 45 * 90).reshape(90, 45) + np.random.default_rng(3).normal(0, 900, (90, 45))
    Image.fromarray(np.clip(gray, 0, 65535).astype(np.uint16)).save(folder / "gray16.png")
    Image.fromarray(_picture(20, 24, 4)).save(folder / "small.png")
    return [folder / n for n in ("wide.png", "rotated.jpg", "alpha.png", "gray16.png", "small.png")]


def reference_input(path: Path, converts_rgb: bool = False) -> Image.Image:
    """What transformers' processor is given: the file fully decoded and upright; a
    16-bit image converted as jointspace's documented policy does (to_rgb8), RGBA as it
    is to a processor that composites it itself (``do_convert_rgb``)."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return im.copy() if im.mode == "RGB" or (converts_rgb and im.mode == "RGBA") else to_rgb8(im)


# --------------------------------------------------------------------------- tiny families
@dataclass
class Family:
    make: Callable[[], Any]  # the random model
    processor: Callable[[], Any]  # its PIL image processor
    pooled: Callable[[Any, torch.Tensor, dict], torch.Tensor]  # transformers' pooled output
    embeds: Callable[[Any, torch.Tensor], torch.Tensor] | None = None  # its joint-space vector
    interpolate: bool = True  # forward takes interpolate_pos_encoding
    at_48: dict | None = None  # the processor's options that give 48-px inputs


def _clip_whole():
    return transformers.CLIPModel(transformers.CLIPConfig(text_config=TEXT, vision_config=VIT,
                                                          projection_dim=24))


def _siglip_whole():
    return transformers.SiglipModel(transformers.SiglipConfig(text_config=TEXT, vision_config=VIT))


def _clip_processor():
    return transformers.CLIPImageProcessorPil(size={"shortest_edge": 40},
                                              crop_size={"height": 32, "width": 32},
                                              image_mean=MEAN, image_std=STD)


def _siglip_processor():
    return transformers.SiglipImageProcessorPil(size={"height": 32, "width": 32}, image_mean=MEAN,
                                                image_std=STD)


def _pooler(model, px, kw):
    return model(pixel_values=px, **kw).pooler_output


def _image_features(model, px):
    out = model.get_image_features(pixel_values=px)
    return out if torch.is_tensor(out) else out.pooler_output


CLIP_48 = {"size": {"shortest_edge": 60}, "crop_size": {"height": 48, "width": 48}}
SQUARE_48 = {"size": {"height": 48, "width": 48}}
FAMILIES = {
    "clip_vision": Family(
        lambda: transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(
            **VIT, projection_dim=24)),
        _clip_processor, lambda m, px, kw: m.vision_model(pixel_values=px, **kw).pooler_output,
        lambda m, px: m(pixel_values=px).image_embeds, at_48=CLIP_48),
    "clip_whole": Family(_clip_whole, _clip_processor,
                         lambda m, px, kw: m.vision_model(pixel_values=px, **kw).pooler_output,
                         _image_features, at_48=CLIP_48),
    "siglip_vision": Family(lambda: transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**VIT)),
                            _siglip_processor, _pooler, lambda m, px: m(pixel_values=px).pooler_output,
                            at_48=SQUARE_48),
    "siglip_whole": Family(_siglip_whole, _siglip_processor,
                           lambda m, px, kw: m.vision_model(pixel_values=px, **kw).pooler_output,
                           _image_features, at_48=SQUARE_48),
    "vit": Family(lambda: transformers.ViTModel(transformers.ViTConfig(**VIT)),
                  lambda: transformers.ViTImageProcessorPil(size={"height": 32, "width": 32},
                                                            image_mean=MEAN, image_std=STD),
                  _pooler, at_48=SQUARE_48),
    "vit_no_pooler": Family(
        lambda: transformers.ViTModel(transformers.ViTConfig(**VIT), add_pooling_layer=False),
        lambda: transformers.ViTImageProcessorPil(size={"height": 32, "width": 32}, resample=3,
                                                  image_mean=MEAN, image_std=STD),
        lambda m, px, kw: m(pixel_values=px, **kw).last_hidden_state[:, 0]),
    # shortest_edge 29 < crop 32: the crop pads (3 rows: 2 before, 1 after), as transformers' center_crop does
    "dinov2": Family(
        lambda: transformers.Dinov2Model(transformers.Dinov2Config(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            mlp_ratio=2)),
        lambda: transformers.BitImageProcessorPil(size={"shortest_edge": 29},
                                                  crop_size={"height": 32, "width": 32},
                                                  image_mean=MEAN, image_std=STD),
        _pooler, interpolate=False,
        at_48={"size": {"shortest_edge": 44}, "crop_size": {"height": 48, "width": 48}}),
    "convnext": Family(
        lambda: transformers.ConvNextModel(transformers.ConvNextConfig(
            num_stages=2, hidden_sizes=[16, 24], depths=[1, 1], image_size=32,
            layer_scale_init_value=1.0)),  # not 1e-6: the blocks (and int8 on them) count
        lambda: transformers.ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=0.8,
                                                       image_mean=MEAN, image_std=STD),
        _pooler, interpolate=False, at_48={"size": {"shortest_edge": 48}}),
}


@dataclass
class Saved:
    folder: Path
    model: Any
    processor: Any
    family: Family


_CACHE: dict[str, Saved] = {}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Callable[[str], Saved]:
    """``saved(name)``: the family's tiny model written (once) with its processor."""
    def get(name: str) -> Saved:
        if name not in _CACHE:
            fam = FAMILIES[name]
            torch.manual_seed(len(_CACHE))
            model = fam.make().eval()
            with torch.no_grad():  # transformers' zero biases would hide a mistake made with one
                for n, p in model.named_parameters():
                    if n.endswith(".bias"):
                        p.normal_(0.0, 0.1)
            folder = tmp_path_factory.mktemp(name)
            model.save_pretrained(str(folder))
            fam.processor().save_pretrained(str(folder))
            # the reference processor is read back from the folder, as a user's would be
            processor = transformers.AutoImageProcessor.from_pretrained(str(folder), backend="pil")
            _CACHE[name] = Saved(folder, model, processor, fam)
        return _CACHE[name]

    yield get
    _CACHE.clear()


def hfv(folder: Path, **options) -> TowerSpec:
    return TowerSpec("hf_vision", {"path": str(folder), **options})


def reference(s: Saved, paths, **processor_options) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' pixel values and pooled output for ``paths``."""
    converts = bool(getattr(s.processor, "do_convert_rgb", False))
    px = s.processor([reference_input(p, converts) for p in paths], return_tensors="pt",
                     **processor_options)["pixel_values"]
    kw = {"interpolate_pos_encoding": True} if processor_options and s.family.interpolate else {}
    with torch.no_grad():
        return px, s.family.pooled(s.model, px, kw)


def ours(tower, paths) -> tuple[torch.Tensor, torch.Tensor]:
    x = tower.collate([tower.preprocess_one(p) for p in paths])
    with torch.no_grad():
        return tower.processing.normalise(x), tower.features(x)


# --------------------------------------------------------------------------- equality
@pytest.mark.parametrize("name", list(FAMILIES))
def test_features_equal_transformers(saved, images, name):
    s = saved(name)
    tower = build_tower(hfv(s.folder), 16, "image").eval()
    px_ref, pooled_ref = reference(s, images)
    px, pooled = ours(tower, images)
    assert px.shape == px_ref.shape
    torch.testing.assert_close(px, px_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(pooled, pooled_ref, atol=1e-5, rtol=1e-5)
    assert tower(tower.collate([tower.preprocess_one(images[0])])).shape == (1, 16)
    # a PIL image passed in goes the same way as its file
    with torch.no_grad():
        alone = tower.features(tower.preprocess_one(Image.open(images[1]))[None])
    torch.testing.assert_close(alone[0], pooled_ref[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,dim", [("clip_vision", 24), ("clip_whole", 24), ("siglip_vision", 32),
                                      ("siglip_whole", 32)])
def test_pretrained_head_equals_the_familys_image_features(saved, images, name, dim):
    s = saved(name)
    tower = build_tower(hfv(s.folder, head="pretrained"), dim, "image", ).eval()
    px, _ = reference(s, images)
    with torch.no_grad():
        expected = F.normalize(s.family.embeds(s.model, px), dim=-1)
        x = tower.collate([tower.preprocess_one(p) for p in images])
        got = F.normalize(tower.head(tower.features(x)), dim=-1)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tower(x), expected, atol=1e-5, rtol=1e-5)


def test_pretrained_head_errors(saved, tmp_path):
    # as for every hf tower, a folder that does not fit says so when the tower is used
    with pytest.raises(ConfigError, match="embed_dim"):
        build_tower(hfv(saved("clip_whole").folder, head="pretrained"), 16, "image").prepare([])
    with pytest.raises(ConfigError, match="no projection"):
        build_tower(hfv(saved("dinov2").folder, head="pretrained"), 32, "image").prepare([])
    # a CLIPVisionModel folder has no visual_projection: head new works, pretrained says why
    torch.manual_seed(0)
    transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**VIT)).save_pretrained(tmp_path)
    _clip_processor().save_pretrained(tmp_path)
    assert build_tower(hfv(tmp_path), 8, "image").width == 32
    with pytest.raises(ConfigError, match="visual_projection"):
        build_tower(hfv(tmp_path, head="pretrained"), 512, "image").prepare([])


@pytest.mark.parametrize("name", ["clip_vision", "siglip_whole", "vit", "dinov2", "convnext"])
def test_image_size_interpolates_as_transformers(saved, images, name):
    s = saved(name)
    tower = build_tower(hfv(s.folder, image_size=48), 8, "image").eval()
    px_ref, pooled_ref = reference(s, images[:3], **s.family.at_48)
    px, pooled = ours(tower, images[:3])
    assert px.shape[-2:] == (48, 48)
    torch.testing.assert_close(px, px_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(pooled, pooled_ref, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- decoding
def test_jpeg_draft_never_decodes_below_the_resize(saved, tmp_path):
    """The one deliberate difference from transformers: a JPEG ≥ 2× the size the resize
    needs is decoded by libjpeg at a reduced scale, never below that size."""
    s = saved("clip_vision")
    tower = build_tower(hfv(s.folder), 8, "image").eval()
    big = tmp_path / "big.jpg"
    Image.fromarray(_picture(330, 170, 5)).save(big, quality=92)
    drafted = decode_image(big, tower.processing.decode_size())
    assert drafted.size != (330, 170)  # it was drafted …
    assert min(drafted.size) >= s.processor.size["shortest_edge"]  # … not below the resize's need
    px_ref, pooled_ref = reference(s, [big])
    px, pooled = ours(tower, [big])
    assert 0 < (px - px_ref).abs().mean() < 0.1  # close to the full decode, not equal
    assert F.cosine_similarity(pooled, pooled_ref).item() > 0.99


@pytest.mark.parametrize("config", [
    {"feature_extractor_type": "CLIPFeatureExtractor", "size": 40, "crop_size": 36},
    {"image_processor_type": "ViTImageProcessor", "size": 30},
    {"image_processor_type": "ConvNextImageProcessor", "size": 400, "image_mean": [0.1, 0.2, 0.3]},
    {"image_processor_type": "BitImageProcessor", "size": {"shortest_edge": 30, "longest_edge": 47},
     "do_center_crop": False, "resample": 2},
    {"image_processor_type": "SiglipImageProcessor", "size": {"height": 20, "width": 44},
     "do_normalize": False},
], ids=["clip-old-ints", "vit-int", "convnext-warp", "bit-longest-edge", "siglip-no-normalize"])
def test_sparse_processor_configs_take_the_class_defaults(images, tmp_path, config):
    """A preprocessor_config.json that leaves keys out gets the processor class's defaults,
    as transformers' own loader gives them."""
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    ref = transformers.AutoImageProcessor.from_pretrained(str(tmp_path), backend="pil")
    processing = processing_from_config(config)
    for path in images:
        image = reference_input(path)
        expected = ref(image, return_tensors="pt")["pixel_values"]
        got = processing.normalise(torch.from_numpy(processing.pixels(to_rgb8(image)))[None])
        assert got.shape == expected.shape, path.name
        torch.testing.assert_close(got, expected.float(), atol=1e-6, rtol=0)


def test_processor_config_json_is_read_as_transformers_reads_it(saved, images, tmp_path):
    """``CLIPProcessor.save_pretrained`` of the pinned transformers writes no
    preprocessor_config.json, only processor_config.json with the image processor's settings
    nested under "image_processor"; when a folder has both, the nested ones win (as
    AutoImageProcessor reads them)."""
    s = saved("clip_whole")
    folder = tmp_path / "clip"
    shutil.copytree(s.folder, folder)
    (folder / "preprocessor_config.json").unlink()
    nested = _clip_processor()
    transformers.CLIPProcessor(image_processor=nested, tokenizer=transformers.CLIPTokenizer(
        vocab={"a": 0, "<|endoftext|>": 1, "<|startoftext|>": 2}, merges=[])).save_pretrained(folder)
    assert not (folder / "preprocessor_config.json").exists()
    tower = build_tower(hfv(folder, head="pretrained"), 24, "image").eval()
    px_ref, pooled_ref = reference(s, images)
    px, pooled = ours(tower, images)
    torch.testing.assert_close(px, px_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(pooled, pooled_ref, atol=1e-5, rtol=1e-5)

    # both files, saying different things: the nested settings are the ones transformers uses
    other = transformers.CLIPImageProcessorPil(size={"shortest_edge": 48}, crop_size={"height": 40, "width": 40})
    other.save_pretrained(folder)
    ref = transformers.AutoImageProcessor.from_pretrained(str(folder), backend="pil")
    assert ref.crop_size == {"height": 32, "width": 32}
    assert build_tower(hfv(folder), 8, "image").processing.output_size() == (32, 32)

    # a processor_config.json without image settings, and no preprocessor_config.json
    (folder / "preprocessor_config.json").unlink()
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "CLIPProcessor"}))
    with pytest.raises(ConfigError, match="preprocessor_config.json.*processor_config.json"):
        build_tower(hfv(folder), 8, "image").prepare([])


# --------------------------------------------------------------------------- training modes
@pytest.mark.parametrize("name,dim", [("clip_whole", 24), ("siglip_whole", 32), ("convnext", 8)])
def test_trainable_modes_freeze_what_they_should(saved, images, name, dim):
    s = saved(name)
    pretrained = name != "convnext"
    options = {"head": "pretrained"} if pretrained else {}
    for mode in ("all", "head", "adapter", "none"):
        tower = build_tower(TowerSpec("hf_vision", {"path": str(s.folder), **options}, mode), dim, "image")
        trains = {n for n, p in tower.named_parameters() if p.requires_grad}
        backbone = {"backbone." + n for n, _ in tower.backbone.named_parameters()}
        head = {n for n, _ in tower.named_parameters() if n.startswith("proj.")}
        adapter = {n for n, _ in tower.named_parameters() if n.startswith("adapter.")}
        expected = {"all": backbone | head, "head": head, "adapter": head | adapter, "none": set()}[mode]
        assert trains == expected, mode
        assert bool(adapter) == (mode == "adapter")
        tower.train()
        assert tower.backbone.training == (mode == "all")
    if name == "clip_whole":  # the pretrained projection is the head, with the model's weights
        tower = build_tower(TowerSpec("hf_vision", {"path": str(s.folder), **options}, "head"), dim, "image")
        torch.testing.assert_close(tower.proj.weight, s.model.visual_projection.weight)
        tower.train()
        x = tower.collate([tower.preprocess_one(p) for p in images[:2]])
        tower(x).sum().backward()
        assert tower.proj.weight.grad is not None
        assert all(p.grad is None for p in tower.backbone.parameters())


# --------------------------------------------------------------------------- model folders
def _perturb(tower) -> None:
    with torch.no_grad():
        for p in tower.parameters():
            p.add_(torch.randn_like(p) * 0.05)


@pytest.mark.parametrize("name,dim,options", [("clip_whole", 24, {"head": "pretrained"}),
                                              ("siglip_vision", 32, {"head": "pretrained"}),
                                              ("vit_no_pooler", 8, {"image_size": 40})])
def test_round_trip_without_the_original_folder(saved, images, tmp_path, rebuilt_without_source, name,
                                               dim, options):
    s = saved(name)
    source = tmp_path / "source"
    shutil.copytree(s.folder, source)
    spec = TowerSpec("hf_vision", {"path": str(source), **options}, trainable="adapter")
    tower = build_tower(spec, dim, "image").eval()
    _perturb(tower)
    x = tower.collate([tower.preprocess_one(p) for p in images])
    with torch.no_grad():
        before = tower(x)
    fresh, _ = rebuilt_without_source(tower, spec, dim, source)
    assert torch.equal(fresh.collate([fresh.preprocess_one(p) for p in images]), x)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), before)
    assert not any(p.requires_grad for p in fresh.backbone.parameters())
    assert all(p.requires_grad for p in fresh.adapter.parameters())


def test_joint_model_folder_loads_with_the_source_deleted(saved, images, tmp_path):
    source = tmp_path / "clip"
    shutil.copytree(saved("clip_whole").folder, source)
    config = ModelConfig(embed_dim=24, towers={
        "image": TowerSpec("hf_vision", {"path": str(source), "head": "pretrained"}, trainable="head"),
        "text": TowerSpec("transformer", {"vocab_size": 300, "width": 32, "layers": 1, "heads": 2})})
    model = JointModel(config).eval()
    model.towers["text"].prepare(["a red circle", "a blue square"])
    _perturb(model.towers["image"])
    before = model.encode_image([str(p) for p in images])
    model.save(tmp_path / "m")
    shutil.rmtree(source)
    again = load(tmp_path / "m")
    torch.testing.assert_close(torch.from_numpy(again.encode_image([str(p) for p in images])),
                               torch.from_numpy(before))


# --------------------------------------------------------------------------- speed options
@pytest.mark.parametrize("name", ["clip_vision", "convnext"])
def test_bf16_and_int8_keep_each_image_and_workers_keep_the_order(saved, images, name):
    """Different images of a tiny random model already have cosines of 0.97–0.99, so a
    cosine floor cannot tell a swapped pair: the threaded path must equal the serial one
    exactly (same fp32 model), and each image's bf16 / int8 features must lie closer to its
    own fp32 features than half the distance to the nearest other image's (so nearest to
    its own)."""
    s = saved(name)
    _, expected = reference(s, images)
    paths = [str(p) for p in images]
    exact = build_tower(hfv(s.folder), 8, "image").eval()
    serial = exact.encode_features(paths, batch_size=2, workers=0)
    torch.testing.assert_close(serial, F.normalize(expected, dim=-1), atol=1e-5, rtol=1e-5)
    assert torch.equal(exact.encode_features(paths, batch_size=2, workers=1), serial)
    assert torch.equal(exact.encode_features(paths, batch_size=2, workers=2), serial)
    apart = torch.cdist(expected, expected).fill_diagonal_(float("inf")).min(dim=1).values
    for options in ({"precision": "bf16"}, {"quantize": True}):
        tower = build_tower(hfv(s.folder, **options), 8, "image").eval()
        _, got = ours(tower, images)
        error = (got - expected).norm(dim=-1)
        assert (error < apart / 2).all(), (options, (error / apart).tolist())
        assert torch.cdist(got, expected).argmin(dim=1).tolist() == list(range(len(images))), options


@pytest.mark.parametrize("name,pruned", [("clip_whole", 1), ("siglip_vision", 0)])
def test_fused_cpu_copy_is_what_runs_and_follows_the_weights(saved, images, name, pruned):
    """fp32 CPU inference runs the fused copy (:mod:`jointspace.towers.fused_cpu`), equal to
    transformers' modules; a weight changed in place is seen; the tower still pickles."""
    import copy
    import pickle
    from jointspace.towers.fused_cpu import fused_summary
    s = saved(name)
    fused = build_tower(hfv(s.folder), 8, "image").eval()
    plain = build_tower(hfv(s.folder, fused_cpu=False), 8, "image").eval()
    _, expected = ours(plain, images)
    assert "copy" not in plain._fast  # fused_cpu: false runs the backbone itself
    _, got = ours(fused, images)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    kind, copied = fused._fast["copy"][0][0], fused._fast["copy"][1]
    summary = fused_summary(copied)
    assert kind == "fused" and summary["plain"] == 0 and summary["fused"] >= 2
    assert summary["cls_only_layers"] == pruned
    ours(fused, images)
    assert fused._fast["copy"][1] is copied  # kept while the weights stay
    for tower in (fused, plain):  # the same in-place change to both
        with torch.no_grad():
            tower.backbone.encoder.layers[0].mlp.fc1.weight.mul_(1.5)
            tower.backbone.encoder.layers[-1].mlp.fc2.bias.add_(0.5)
    _, changed = ours(fused, images)
    assert not torch.allclose(changed, got, atol=1e-3)
    torch.testing.assert_close(changed, ours(plain, images)[1], atol=1e-5, rtol=1e-5)
    # an edit through .data keeps the version the copy is keyed by: drop_inference_copies
    for tower in (fused, plain):
        tower.backbone.encoder.layers[0].mlp.fc2.weight.data.mul_(0.5)
    fused.drop_inference_copies()
    _, changed = ours(fused, images)
    torch.testing.assert_close(changed, ours(plain, images)[1], atol=1e-5, rtol=1e-5)
    for clone in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))):
        assert clone._fast == {}  # packed weights are not copied: rebuilt on the next call
        torch.testing.assert_close(ours(clone, images)[1], changed, atol=1e-5, rtol=1e-5)


def test_fused_cpu_copy_stays_out_of_gradients(saved, images):
    """A frozen backbone under a trained head runs the copy (no gradient is wanted from it);
    pixels that need a gradient, or a backbone that trains, run transformers' modules."""
    s = saved("clip_whole")
    tower = build_tower(TowerSpec("hf_vision", {"path": str(s.folder)}, "head"), 8, "image").train()
    x = tower.collate([tower.preprocess_one(p) for p in images[:2]])
    tower(x).sum().backward()
    assert tower.proj.weight.grad is not None and tower._fast["copy"][0][0] == "fused"
    copied = tower._fast["copy"][1]
    tower.eval().train()  # as the feature cache and encode do around each call
    assert tower._fast["copy"][1] is copied  # a frozen backbone keeps its copy
    plain = build_tower(TowerSpec("hf_vision", {"path": str(s.folder), "fused_cpu": False}, "head"),
                        8, "image").train()
    grads = []
    for t in (tower, plain):
        pixels = x.float().requires_grad_()
        pooled = t.features(pixels)
        # weighted: a plain sum of a LayerNorm's output has zero gradient
        (pooled * torch.linspace(-1, 1, pooled.shape[-1])).sum().backward()
        grads.append(pixels.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)
    assert grads[0].abs().sum() > 0
    # inside an autocast region (bf16 training of a frozen tower) the modules run as they are
    tower.drop_inference_copies()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = tower.features(x)
        expected = plain.features(x)
    assert "copy" not in tower._fast
    torch.testing.assert_close(under_autocast, expected, atol=0, rtol=0)
    trains = build_tower(TowerSpec("hf_vision", {"path": str(s.folder)}, "all"), 8, "image").eval()
    with torch.no_grad():
        trains(x)
    assert trains._fast["copy"][0][0] == "fused"
    trains.train()  # a backbone about to train: its copy would go stale
    assert "copy" not in trains._fast
    trains(x).sum().backward()
    assert "copy" not in trains._fast
    assert trains.backbone.encoder.layers[0].mlp.fc1.weight.grad is not None


# --------------------------------------------------------------------------- cache, offline, errors
def test_frozen_features_are_cached_like_the_text_towers(saved, images, tmp_path):
    from jointspace.train.feature_cache import FeatureCache, tower_fingerprint

    s = saved("dinov2")
    spec = TowerSpec("hf_vision", {"path": str(s.folder)}, trainable="none")
    tower = build_tower(spec, 8, "image")
    assert tower.backbone_frozen
    (tmp_path / "assets").mkdir()
    tower.save_assets(tmp_path / "assets")
    cache = FeatureCache(tower, tower_fingerprint(tower, spec, tmp_path / "assets"), tmp_path / "cache", True)
    _, expected = reference(s, images)
    torch.testing.assert_close(cache.lookup([str(p) for p in images]), expected, atol=1e-5, rtol=1e-5)
    assert any((tmp_path / "cache").rglob("entry.npz"))


def test_loads_without_network(saved, no_network):
    assert build_tower(hfv(saved("siglip_whole").folder), 8, "image").width == 32


def test_bad_paths_are_config_errors(saved, tmp_path):
    missing = build_tower(hfv(tmp_path / "nowhere"), 8, "image")  # a model folder may still load it
    with pytest.raises(ConfigError, match="does not exist"):
        missing.prepare([])
    with pytest.raises(ConfigError, match="does not exist"):
        missing.preprocess_one("a.png")
    with pytest.raises(ConfigError, match="needs a path"):
        build_tower(TowerSpec("hf_vision", {}), 8, "image").prepare([])
    no_processor = tmp_path / "no_processor"
    saved("vit").model.save_pretrained(str(no_processor))
    with pytest.raises(ConfigError, match="preprocessor_config.json"):
        build_tower(hfv(no_processor), 8, "image").prepare([])
    bert = tmp_path / "bert"
    transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                            intermediate_size=37).save_pretrained(str(bert))
    with pytest.raises(ConfigError, match="'bert'"):
        build_tower(hfv(bert), 8, "image").prepare([])
    with pytest.raises(ConfigError, match="head"):
        build_tower(hfv(tmp_path, head="mine"), 8, "image")
