"""The ``video_frames`` tower: frames through an image tower, then mean pooling or a
temporal transformer. Tiny everywhere (4 frames of 16 px, a one-width convnet, embed 8).
Reading files and training: ``test_video_training``."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jointspace.config import ModelConfig, PairSpec, TowerSpec
from jointspace.errors import ConfigError, DataError
from jointspace.model import JointModel, load
from jointspace.towers import build_tower
from jointspace.towers.video import resample_indices
from video_tower_helpers import EMBED, FRAME, embed, make_tower, options, random_clips


@pytest.fixture(autouse=True)
def _one_thread(_threads):
    """Tiny models run faster on one thread (and leave the other core to the rest)."""
    torch.set_num_threads(1)


# --------------------------------------------------------------------------- shapes, inputs
def test_shapes_resampling_and_the_frame_towers_preprocessing():
    tower = make_tower().eval()
    six = random_clips(1, t=6, size=20)[0]
    x = tower.preprocess_one(six)
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.uint8
    # six frames → segment centres 0.75, 2.25, 3.75, 5.25 → frames 0, 2, 3, 5, each resized
    # by the convnet's own preprocessing
    assert resample_indices(6, 4).tolist() == [0, 2, 3, 5]
    from PIL import Image
    want = torch.stack([tower.frame_tower.preprocess_one(Image.fromarray(six[i])) for i in (0, 2, 3, 5)])
    assert torch.equal(x, want)
    assert resample_indices(2, 4).tolist() == [0, 0, 1, 1]  # a short clip repeats frames
    batch = tower.collate([x, tower.preprocess_one(random_clips(1, t=4)[0])])
    assert batch.shape == (2, 4, 3, 16, 16)
    out = tower(batch)
    assert out.shape == (2, EMBED)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))


def test_a_decoded_clip_and_a_tensor_are_taken_and_bad_items_are_clear_errors():
    from jointspace.modalities.video_io import Clip
    tower = make_tower().eval()
    frames = random_clips(1, t=4)[0]
    clip = Clip(frames=frames, times=np.arange(4) / 8.0, duration=0.5, size=(16, 16), notes=())
    assert torch.equal(tower.preprocess_one(clip), tower.preprocess_one(frames))
    assert torch.equal(tower.preprocess_one(torch.from_numpy(frames)), tower.preprocess_one(frames))
    for bad, what in ((frames.astype(np.float32), "uint8"), (frames[..., :2], r"\[T, H, W, 3\]"),
                      (frames[0], "T >= 1"), (frames[:0], "T >= 1"), ({"a": 1}, "got dict")):
        with pytest.raises(DataError, match=what):
            tower.preprocess_one(bad)
    with pytest.raises(DataError, match=r"\[B, T, C, H, W\]"):
        tower.features(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))


def test_bad_options_are_config_errors():
    for opts, what in ((options(temporal="lstm"), "temporal must be"), (options(pool="max"), "pool"),
                       (options(frames=0), "frames must be"),
                       (options(frames=65), "at most 64"), (options(width=15), "multiple of heads"),
                       ({"frame_tower": {"name": "transformer"}}, "encodes 'text'"),
                       ({"frame_tower": {"name": "convnet", "trainable": "some"}}, "trainable")):
        with pytest.raises(ConfigError, match=what):
            build_tower(TowerSpec("video_frames", opts), EMBED, "video")


# --------------------------------------------------------------------------- batching, order
@pytest.mark.parametrize("temporal", ["mean", "transformer"])
def test_a_batch_embeds_each_clip_as_alone_and_frames_run_in_one_batch(temporal):
    tower = make_tower(temporal).eval()
    clips = random_clips(3, seed=1)
    calls = []
    hook = tower.frame_tower.trunk.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    together = embed(tower, clips)
    hook.remove()
    assert calls == [3 * 4]  # all frames of all clips through the frame tower at once
    alone = torch.cat([embed(tower, [c]) for c in clips])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_outside_training_frames_go_through_the_frame_tower_in_chunks(monkeypatch):
    """At most FRAME_CHUNK frames a frame-tower call in eval, the same embeddings; a
    training frame tower takes the whole batch (its batch-norm statistics are the batch's)."""
    import jointspace.towers.video as video_tower
    assert video_tower.FRAME_CHUNK == 256
    tower = make_tower().eval()
    clips = random_clips(5, seed=7)  # 20 frames
    calls = []
    tower.frame_tower.trunk.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    whole = embed(tower, clips)
    monkeypatch.setattr(video_tower, "FRAME_CHUNK", 8)
    chunked = embed(tower, clips)
    assert calls == [20, 8, 8, 4]
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
    x = tower.collate([tower.preprocess_one(c) for c in clips])
    tower.train()
    tower.features(x)
    assert calls[-1] == 20


def test_mean_pooling_is_blind_to_order_and_the_transformer_is_not():
    clips = random_clips(2, seed=2)
    mean, transformer = make_tower("mean").eval(), make_tower("transformer").eval()
    perm = [2, 0, 3, 1]
    torch.testing.assert_close(embed(mean, [c[perm] for c in clips]), embed(mean, clips),
                               atol=1e-6, rtol=0)
    forward, backward = embed(transformer, clips), embed(transformer, [c[::-1] for c in clips])
    assert (forward - backward).abs().max() > 1e-4  # at initialisation: small, but 100× the noise
    # the CLS pool sees order too
    cls = make_tower("transformer", pool="cls").eval()
    assert (embed(cls, clips) - embed(cls, [c[::-1] for c in clips])).abs().max() > 1e-4


# --------------------------------------------------------------------------- positions
def test_more_frames_than_positions_resample_the_table_linearly():
    tower = make_tower(frames=6, max_positions=4).eval()
    table = tower.temporal.pos.detach().numpy()
    # independent: each of 6 rows read at its segment centre on the 4-row table, np.interp
    at = np.clip((np.arange(6) + 0.5) * 4 / 6 - 0.5, 0, 3)
    want = np.stack([np.interp(at, np.arange(4), table[:, c]) for c in range(table.shape[1])], 1)
    np.testing.assert_allclose(tower.temporal.positions(6).detach().numpy(), want, atol=1e-6)
    assert torch.equal(tower.temporal.positions(3), tower.temporal.pos[:3])  # fewer: the first rows
    assert torch.equal(tower.temporal.positions(4), tower.temporal.pos)
    # end to end: the same as a tower with a 6-row table holding the resampled rows
    wide = make_tower(frames=6, max_positions=6).eval()
    state = tower.state_dict()
    state["temporal.pos"] = torch.from_numpy(want).float()
    wide.load_state_dict(state)
    clips = random_clips(2, t=6, seed=3)
    torch.testing.assert_close(embed(tower, clips), embed(wide, clips), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- what trains
def test_a_frozen_frame_tower_gets_no_grad_and_its_features_are_the_cacheable_part():
    frozen = dict(FRAME, trainable="none")
    torch.manual_seed(0)
    tower = build_tower(TowerSpec("video_frames", {**options(), "frame_tower": frozen}), EMBED, "video")
    assert tower.splits_at_frames and tower.backbone_frozen
    frame_params = sum(p.numel() for p in tower.frame_tower.parameters())
    assert tower.parameter_counts()["frozen"] == frame_params
    tower.train()
    assert not tower.frame_tower.trunk.training  # batch-norm statistics stay put
    running = tower.frame_tower.trunk[1].running_mean.clone()
    x = tower.collate([tower.preprocess_one(c) for c in random_clips(4, seed=4)])
    tower(x).sum().backward()
    assert all(p.grad is None for p in tower.frame_tower.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.temporal.parameters()
               if p.requires_grad and p.ndim > 1)
    assert tower.proj.weight.grad.abs().sum() > 0
    assert torch.equal(tower.frame_tower.trunk[1].running_mean, running)
    # what the feature cache stores per clip: the frozen frame features; the head does the rest
    tower.eval()
    with torch.no_grad():
        feats = tower.features(x)
        assert feats.shape == (4, 4 * 8)
        torch.testing.assert_close(F.normalize(tower.head(feats), dim=-1), tower(x))
    # a video tower trained only at its head locks its frames and its temporal module too
    head_only = make_tower(trainable="head")
    assert not head_only.splits_at_frames and head_only.backbone_frozen
    assert {n for n, p in head_only.named_parameters() if p.requires_grad} == {"proj.weight", "proj.bias"}
    head_only.set_trainable("all")
    assert all(p.requires_grad for p in head_only.parameters())


# --------------------------------------------------------------------------- save and load
def _image_video_model(frame_spec=None, temporal="transformer", seed=0) -> JointModel:
    frame = frame_spec or FRAME
    config = ModelConfig(embed_dim=EMBED, towers={
        "image": TowerSpec("convnet", {"image_size": 16, "widths": [8]}),
        "video": TowerSpec("video_frames", {**options(temporal), "frame_tower": frame})},
        pairs=[PairSpec("video", "image")])
    torch.manual_seed(seed)
    model = JointModel(config)
    with torch.no_grad():  # not the initial weights: a load that fell back to them would show
        for p in model.towers["video"].parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.mark.parametrize("temporal", ["mean", "transformer"])
def test_save_and_load_give_identical_embeddings(tmp_path, temporal):
    model = _image_video_model(temporal=temporal)
    clips = random_clips(3, seed=5)
    before = model.encode("video", clips)
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["towers"]["video"]["options"]["frame_tower"]["name"] == "convnet"
    again = load(tmp_path / "m")
    assert np.array_equal(again.encode("video", clips), before)


def test_an_hf_vision_frame_tower_keeps_its_assets_in_the_model_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    source = tmp_path / "vit"
    torch.manual_seed(1)
    vit = transformers.ViTModel(transformers.ViTConfig(
        image_size=16, patch_size=8, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
        num_attention_heads=2))
    vit.save_pretrained(str(source))
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.3, 0.4, 0.5],
                                   image_std=[0.2, 0.25, 0.3]).save_pretrained(str(source))
    model = _image_video_model({"name": "hf_vision", "options": {"path": str(source)},
                                "trainable": "none"})
    clips = random_clips(2, seed=6)
    before = model.encode("video", clips)
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "video" / "frames" / "hf_vision.json").is_file()
    shutil.rmtree(source)
    assert np.array_equal(load(tmp_path / "m").encode("video", clips), before)
