"""The ``video_frames`` tower reading files and clips decoded from bytes (random frames
within segments while training, the centres in eval) and training: video–text pairs, the
binding through an image anchor, and the order a temporal transformer learns."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jointspace.config import ModelConfig, TowerSpec, load_run_config
from jointspace.model import JointModel, load
from video_tower_helpers import (COLOURS, EMBED, FRAME, decode_all, embed, make_tower, square_clip,  # noqa: F401
                                 write_clip)


@pytest.fixture(autouse=True)
def _one_thread(_threads):
    """Tiny models run faster on one thread (and leave the other core to the rest)."""
    torch.set_num_threads(1)


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


def test_a_clip_decoded_from_bytes_is_sampled_as_its_file_in_training_and_in_eval(video_rows):
    """A shard member or an upload reaches the tower as a Clip of uniform frames that kept
    its bytes: while training the tower samples the bytes at random as it would the file,
    within the pixel bound of the first decode; in eval it takes the clip's frames."""
    import dataclasses
    from jointspace.modalities import TooLarge
    from jointspace.modalities.video import VIDEO
    path = video_rows / "red-grows-0.mp4"
    clip = VIDEO.decode(path.read_bytes(), where="KEY.mp4", frames=3, max_pixels=16 * 16)
    assert (clip.max_pixels, len(clip.frames)) == (256, 3)
    tower = make_tower(frames=3).eval()
    assert np.array_equal(tower.read(clip), tower.read(path))
    assert np.array_equal(tower.read(clip), clip.frames)
    every = decode_all(path)
    index = lambda fs: [int(np.argmin([np.abs(e.astype(int) - f).sum() for e in every])) for f in fs]  # noqa: E731
    tower.train()
    seen = set()
    for seed in range(6):
        torch.manual_seed(seed)
        picked = tower.read(clip)
        assert [p // 2 for p in index(picked)] == [0, 1, 2]  # one frame in each third
        torch.manual_seed(seed)
        assert np.array_equal(tower.read(path), picked)  # the file's frames for the same seed
        seen.add(tuple(index(picked)))
    assert len(seen) > 1
    with pytest.raises(TooLarge, match="at most 255 pixels"):  # the first decode's bound holds
        tower.read(dataclasses.replace(clip, max_pixels=255))


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
