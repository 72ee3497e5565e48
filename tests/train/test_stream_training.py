"""Training streams shards: same result through a kill and --resume, bad samples counted."""
import io
import tarfile

import pytest
import torch
from safetensors.torch import load_file

from jointspace.config import load_run_config
from jointspace.data.export import export_manifest
from jointspace.errors import ConfigError
from jointspace.train.trainer import train


@pytest.fixture(scope="module")
def shards(shapes_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("train-shards")
    export_manifest(shapes_dir / "train.csv", out / "wds", format="webdataset", shard_size=10)
    export_manifest(shapes_dir / "val.csv", out / "val", format="parquet", shard_size=5)
    # one more shard holding a corrupt image: quarantined in the stream, the run goes on
    with tarfile.open(out / "wds" / "00010.tar", "w") as tar:
        for name, data in (("bad.png", b"\x89PNG\r\n\x1a\n broken"), ("bad.txt", b"a red circle")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_training_resumes_to_the_same_weights(shards, tiny_overrides, tmp_path, workers):
    """Stopped after an odd number of steps: with 2 loader workers the resumed run must
    also take its next batch from the right worker's stream."""
    run = load_run_config(overrides=[*tiny_overrides, "train.max_steps=9", "train.eval_every=9",
                                     f"train.num_workers={workers}"])
    spec = f"{shards}/wds/{{00000..00010}}.tar"
    whole = train(run, spec, tmp_path / "whole", val_data=shards / "val")
    assert whole.steps == 9 and whole.quarantined == 1  # the corrupt sample, once however often met
    assert whole.validation["val_loss"] > 0
    part = train(run, spec, tmp_path / "part", val_data=shards / "val", stop_after=5)
    assert part.steps == 5 and not part.finished
    state = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)
    assert state["stream"]["positions"]["0"][2] > 0  # where slot 0 stopped
    resumed = train(run, spec, tmp_path / "part", resume=True, val_data=shards / "val")
    assert resumed.steps == 9
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "part" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_other_workers_is_refused(shards, tiny_overrides, tmp_path):
    run = load_run_config(overrides=[*tiny_overrides, "train.max_steps=6"])
    spec = f"{shards}/wds/*.tar"
    train(run, spec, tmp_path / "m", stop_after=2)
    state = torch.load(tmp_path / "m" / "checkpoint.pt", weights_only=False)
    state["run"]["train"]["num_workers"] = 2
    torch.save(state, tmp_path / "m" / "checkpoint.pt")
    with pytest.raises(ConfigError, match="resume it with the same"):
        train(run, spec, tmp_path / "m", resume=True)


def test_streams_cannot_be_mixed_with_manifests(shards, shapes_dir, tiny_overrides, tmp_path):
    run = load_run_config(overrides=tiny_overrides)
    with pytest.raises(ConfigError, match="only --data source"):
        train(run, [f"{shards}/wds/*.tar", shapes_dir / "train.csv"], tmp_path / "m")


def test_the_shuffle_block_is_set_from_the_run_config(shards, tiny_overrides, tmp_path):
    """Position (epoch, block, index) after 80 samples of 10-sample shards: block 7 or 8
    with one shard per block, block 1 or 2 with the default four."""
    blocks = {}
    for size in (1, 4):
        run = load_run_config(overrides=[*tiny_overrides, f"train.stream_block_shards={size}"])
        train(run, f"{shards}/wds/*.tar", tmp_path / str(size), stop_after=5)
        state = torch.load(tmp_path / str(size) / "checkpoint.pt", weights_only=False)
        blocks[size] = state["stream"]["positions"]["0"][1]
    assert blocks[1] >= 6 and blocks[4] <= 2
