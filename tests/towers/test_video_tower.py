"""The ``video_frames`` tower: frames through an image tower, then mean pooling or a
temporal transformer. Tiny everywhere (4 frames of 16 px, a one-width convnet, embed 8)."""
from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jointspace.config import ModelConfig, PairSpec, TowerSpec, load_run_config
from jointspace.errors import ConfigError, DataError
from jointspace.model import JointModel, load
import jointspace.modalities.video  # noqa: F401 (registers the video plug-in)
from jointspace.towers import build_tower
from jointspace.towers.video import VideoFramesTower, resample_indices

FRAME = {"name": "convnet", "options": {"image_size": 16, "widths": [8]}}
EMBED = 8
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}


def options(temporal: str = "transformer", frames: int = 4, **kw) -> dict:
    return {"frame_tower": dict(FRAME), "frames": frames, "temporal": temporal, "width": 16,
            "heads": 2, "layers": 1, **kw}


def make_tower(temporal: str = "transformer", seed: int = 0, trainable: str = "all",
               **kw) -> VideoFramesTower:
    torch.manual_seed(seed)
    return build_tower(TowerSpec("video_frames", options(temporal, **kw), trainable), EMBED, "video")


def random_clips(n: int, t: int = 4, size: int = 16, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8) for _ in range(n)]


def square_clip(colour, sizes, size: int = 16, at=(0, 0)) -> np.ndarray:
    """A square of ``colour`` whose side is ``sizes[t]`` in frame ``t``, on grey."""
    out = np.full((len(sizes), size, size, 3), 90, dtype=np.uint8)
    for t, s in enumerate(sizes):
        y, x = at
        out[t, y:y + s, x:x + s] = colour
    return out


def embed(tower, clips) -> torch.Tensor:
    with torch.no_grad():
        return tower(tower.collate([tower.preprocess_one(c) for c in clips]))


# --------------------------------------------------------------------------- video files
def write_clip(path: Path, frames: np.ndarray, fps: int = 8) -> Path:
    """An MPEG-4 clip of ``frames`` written with PyAV (lossy: tests match decoded frames to
    the nearest of a plain decode, never to the pixels written)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def decode_all(path: Path) -> np.ndarray:
    """Every frame of ``path``, a plain PyAV loop (the independent reference)."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


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


# --------------------------------------------------------------------------- files, training
DIRECTIONS = {"grows": (2, 5, 8, 11, 14, 16), "shrinks": (16, 14, 11, 8, 5, 2)}


@pytest.fixture(scope="module")
def video_rows(tmp_path_factory) -> Path:
    """36 six-frame MP4 clips (a square of 3 colours that grows or shrinks, at 6 places)
    and their captions, plus each clip's middle frame as an image."""
    from PIL import Image
    root = tmp_path_factory.mktemp("videos")
    rows = []
    for colour, rgb in COLOURS.items():
        for direction, sizes in DIRECTIONS.items():
            for k in range(6):
                at = (k % 3, 2 * (k // 3))
                frames = square_clip(rgb, sizes, at=at)
                name = f"{colour}-{direction}-{k}"
                write_clip(root / f"{name}.mp4", frames)
                Image.fromarray(frames[3]).save(root / f"{name}.png")
                rows.append([name, f"{name}.mp4", f"{name}.png", f"a {colour} square {direction}"])
    with open(root / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "video", "image", "text"], *rows])
    return root


def test_a_file_is_sampled_uniformly_in_eval_and_at_random_within_segments_in_training(video_rows):
    from jointspace.modalities.video_io import read_clip
    path = video_rows / "red-grows-0.mp4"
    tower = make_tower(frames=3).eval()
    uniform = read_clip(path, frames=3, sampling="uniform")
    assert torch.equal(tower.preprocess_one(path), tower.preprocess_one(uniform.frames))
    assert torch.equal(tower.preprocess_one(str(path)), tower.preprocess_one(path))
    # every sampled frame is one of the file's frames (a plain PyAV decode), in order
    every = decode_all(path)
    assert len(every) == 6
    index = lambda fs: [int(np.argmin([np.abs(e.astype(int) - f).sum() for e in every])) for f in fs]  # noqa: E731
    assert [p // 2 for p in index(uniform.frames)] == [0, 1, 2], index(uniform.frames)
    tower.train()
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        picked = index(tower.read(path))
        assert [p // 2 for p in picked] == [0, 1, 2], picked  # one frame in each third
        seen.add(tuple(picked))
        torch.manual_seed(seed)
        assert index(tower.read(path)) == picked  # the run's seed reproduces it
    assert len(seen) > 1


def _run(overrides):
    return load_run_config(overrides=[
        "model.embed_dim=16", "train.batch_size=12", "train.warmup_steps=3", "train.lr=0.005",
        "train.eval_every=1000", "train.checkpoint_every=1000", "train.log_every=2", *overrides])


TEXT = ("model.towers.text={name: transformer, options: {vocab_size: 300, width: 16, layers: 1, "
        "heads: 2, context_length: 12}}")


def test_training_on_video_text_pairs_lowers_the_loss(video_rows, tmp_path):
    from jointspace.train.trainer import train
    video = ("model.towers={video: {name: video_frames, options: {frame_tower: {name: convnet, "
             "options: {image_size: 16, widths: [8]}}, frames: 4, width: 16, heads: 2, layers: 1}}}")
    run = _run([video, TEXT, "train.max_steps=40", "train.seed=1"])
    torch.manual_seed(0)
    result = train(run, video_rows / "train.csv", tmp_path / "m")
    log = [json.loads(line) for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    first = np.mean([r["loss"] for r in log[:2]])
    last = np.mean([r["loss"] for r in log[-2:]])
    assert last < 0.7 * first, (first, last)
    model = load(result.model_dir)
    v = model.encode("video", [str(video_rows / "red-grows-0.mp4"), str(video_rows / "blue-shrinks-0.mp4")])
    t = model.encode("text", ["a red square grows", "a blue square shrinks"])
    assert np.trace(v @ t.T) > (v @ t.T).sum() - np.trace(v @ t.T)  # the right captions score higher


def test_binding_through_the_image_anchor_reuses_and_locks_its_tower(video_rows, tmp_path):
    """``--bind video:image``: the frames go through a locked copy of the anchor's image tower,
    initialised from its weights; its frame features are cached per clip."""
    from jointspace.train.feature_cache import read_entry
    from jointspace.train.init import bind_config
    from jointspace.train.trainer import train
    base = JointModel(ModelConfig(embed_dim=16, towers={
        "image": TowerSpec("convnet", {"image_size": 16, "widths": [8]}),
        "text": TowerSpec("transformer", {"vocab_size": 300, "width": 16, "layers": 1, "heads": 2,
                                          "context_length": 12})}))
    base.towers["text"].prepare(["a red square grows", "a blue square shrinks"])
    with torch.no_grad():
        for p in base.towers["image"].parameters():
            p.add_(torch.randn_like(p) * 0.1)
    base.save(tmp_path / "base")
    video = "model.towers.video={name: video_frames, options: {frames: 4, width: 16, heads: 2, layers: 1}}"
    run = bind_config(_run([video, "train.max_steps=4", f"train.feature_cache_dir={tmp_path / 'cache'}"]),
                      tmp_path / "base", "video", "image")
    spec = run.model.towers["video"]
    assert spec.trainable == "all" and spec.options["frame_tower_from"] == "image"
    assert spec.options["frame_tower"] == {"name": "convnet", "options": {"image_size": 16, "widths": [8]},
                                           "trainable": "none"}
    # a frame tower the user names is kept; a text anchor leaves the frames alone
    own = bind_config(_run([video.replace("frames: 4", f"frames: 4, frame_tower: {FRAME}")]),
                      tmp_path / "base", "video", "image").model.towers["video"]
    assert "frame_tower_from" not in own.options
    text = bind_config(_run([video]), tmp_path / "base", "video", "text").model.towers["video"]
    assert "frame_tower" not in text.options
    result = train(run, video_rows / "train.csv", tmp_path / "bound", init_from=tmp_path / "base")
    bound, source = load(result.model_dir), load(tmp_path / "base")
    frames, image = bound.towers["video"].frame_tower, source.towers["image"]
    for k, v in image.state_dict().items():
        assert torch.equal(frames.state_dict()[k], v), k
    for k, v in source.towers["image"].state_dict().items():
        assert torch.equal(bound.towers["image"].state_dict()[k], v), k
    x = torch.stack([image.preprocess_one(video_rows / "red-grows-0.png")])
    with torch.no_grad():
        torch.testing.assert_close(frames(x), image(x))
    # the bound video tower trained (its temporal module moved), its frames were cached
    entries = list((tmp_path / "cache").rglob("entry.npz"))
    widths = sorted(read_entry(e.parent)[1].shape for e in entries)
    assert (36, 4 * 8) in widths, widths  # 36 clips × (4 frames × 8 frame features)


# --------------------------------------------------------------------------- time matters
def _direction_batch(n: int, rng: np.random.Generator) -> tuple[list[np.ndarray], torch.Tensor]:
    """``n // 2`` clips of a square growing (label 1), each also reversed (label 0): the
    two directions hold the same frames."""
    clips, labels = [], []
    for _ in range(n // 2):
        colour = rng.integers(60, 256, 3)
        sizes = np.sort(rng.choice(np.arange(3, 15), 4, replace=False))
        clip = square_clip(colour, sizes, at=tuple(rng.integers(0, 2, 2)))
        clips += [clip, clip[::-1].copy()]
        labels += [1.0, 0.0]
    return clips, torch.tensor(labels)


def _direction_accuracy(temporal: str, steps: int = 150) -> float:
    tower = make_tower(temporal, seed=3)
    classifier = torch.nn.Linear(EMBED, 1)
    params = [p for p in tower.parameters() if p.requires_grad] + list(classifier.parameters())
    opt = torch.optim.Adam(params, lr=0.01)
    rng = np.random.default_rng(0)
    tower.train()
    for _ in range(steps):
        clips, labels = _direction_batch(16, rng)
        x = tower.collate([tower.preprocess_one(c) for c in clips])
        loss = F.binary_cross_entropy_with_logits(classifier(tower(x)).squeeze(1), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tower.eval()
    clips, labels = _direction_batch(200, np.random.default_rng(99))
    with torch.no_grad():
        logits = classifier(embed(tower, clips)).squeeze(1)
    return float(((logits > 0).float() == labels).float().mean())


def test_the_temporal_transformer_learns_order_where_mean_pooling_cannot():
    start = time.perf_counter()
    transformer, mean = _direction_accuracy("transformer"), _direction_accuracy("mean")
    assert transformer > 0.9, transformer
    assert abs(mean - 0.5) <= 0.05, mean
    assert time.perf_counter() - start < 30
