"""What the video tests of indexing, serving, shards and the page share: a tiny untrained
image + video + text model and a handful of shape clips from the data generator."""
from __future__ import annotations

from pathlib import Path

import pytest

#: the clips' generator settings: six 32 px clips of 6 frames, all in the test split
CLIPS = 6


def video_model(folder: Path, temporal: str = "transformer") -> Path:
    """An untrained model of video (4 frames through a 16 px convnet, then ``temporal``),
    image (the posters) and text (a tokenizer fitted on caption words): the mechanics of
    indexing and serving clips need one model of all three, not a good one."""
    import torch

    from jointspace.config import ModelConfig, PairSpec, TowerSpec
    from jointspace.model import JointModel

    frame = {"name": "convnet", "options": {"image_size": 16, "widths": [8]}}
    config = ModelConfig(embed_dim=16, towers={
        "image": TowerSpec("convnet", {"image_size": 16, "widths": [8]}),
        "video": TowerSpec("video_frames", {"frame_tower": frame, "frames": 4, "temporal": temporal,
                                            "width": 16, "heads": 2, "layers": 1}),
        "text": TowerSpec("transformer", {"vocab_size": 300, "width": 16, "layers": 1, "heads": 2,
                                          "context_length": 16})},
        pairs=[PairSpec("video", "text"), PairSpec("image", "text")])
    torch.manual_seed(0)
    model = JointModel(config)
    model.towers["text"].prepare(["a red circle moves to the left", "a blue square grows",
                                  "a green star shrinks", "first a disc appears then a box"] * 5)
    return model.save(folder / "m")


def shape_clips(folder: Path) -> Path:
    """Six shape clips (H.264 MP4, 32 px, 6 frames, none of them a minimal pair) with posters and a manifest of two
    caption rows per clip: ``folder/test.csv``, ``folder/videos/test/*.mp4``."""
    from jointspace.data.video_shapes import VideoSpec, write_video_shapes

    write_video_shapes(folder, VideoSpec(n=CLIPS, frames=6, frame_size=32, fractions=(0.0, 0.0, 1.0),
                                         pair_fraction=0.0, workers=1))
    return folder


def all_frames(path: Path):
    """Every frame of a clip as RGB arrays, by a plain PyAV loop (the independent reference)."""
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture
def cli_logging():
    """The CLI sets up logging to the stderr of its test: undone after it (threads log later)."""
    from jointspace.progress import logger

    saved = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
