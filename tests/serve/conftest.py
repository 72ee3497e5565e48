"""Small served collections, one per test module: images with captions, a mix of pictures,
tones and texts, and one indexed from shards through `jointspace embed`."""
import shutil

import pytest

from jointspace.index import index_source
from mixed_media import write_mixed_folder


@pytest.fixture(scope="module")
def col_dir(trained_model_dir, shapes_dir, tmp_path_factory):
    """12 images with texts and labels, from a folder this module owns (its root)."""
    folder = tmp_path_factory.mktemp("serve")
    shutil.copytree(shapes_dir / "images" / "test", folder / "data" / "images" / "test")
    shutil.copy(shapes_dir / "test.csv", folder / "data" / "test.csv")
    index_source(folder / "col", trained_model_dir, folder / "data" / "test.csv")
    return folder / "col"


@pytest.fixture(scope="session")
def three_modality_model_dir(tmp_path_factory):
    """An untrained image + audio + text model (text tokenizer fitted on a few words): the
    mechanics of searching several modalities need one model of all three, not a good one."""
    import torch

    from jointspace.config import ModelConfig, PairSpec, TowerSpec
    from jointspace.model import JointModel
    config = ModelConfig(embed_dim=16, towers={
        "image": TowerSpec("convnet", {"image_size": 16, "widths": [8]}),
        "audio": TowerSpec("audio_conv", {"widths": [8, 16], "layers": 1, "heads": 2, "n_mels": 32,
                                          "clip_seconds": 0.5}),
        "text": TowerSpec("transformer", {"vocab_size": 300, "width": 16, "layers": 1, "heads": 2,
                                          "context_length": 16})},
        pairs=[PairSpec("audio", "image"), PairSpec("text", "image")])
    torch.manual_seed(0)
    model = JointModel(config)
    model.towers["text"].prepare(["a red circle", "a low hum", "a green square", "a high tone"] * 5)
    return model.save(tmp_path_factory.mktemp("three-modality-model") / "m")


@pytest.fixture(scope="module")
def mixed_col(three_modality_model_dir, tmp_path_factory):
    """A collection of twelve items: four pictures, four tones, four texts."""
    folder = tmp_path_factory.mktemp("mixed")
    index_source(folder / "col", three_modality_model_dir, write_mixed_folder(folder / "data"))
    return folder / "col"


@pytest.fixture(scope="module")
def shard_col(trained_model_dir, shapes_dir, tmp_path_factory):
    """The img2dataset → clip-retrieval path: the shapes test split as WebDataset shards
    (``KEY.png``, ``KEY.txt``, ``KEY.json``), ``jointspace embed`` over them, then
    ``index`` of embed's output. Returns the collection's folder (its parent holds ``shards``)."""
    from jointspace.bulk_embed import embed
    from jointspace.data.export import export_manifest

    folder = tmp_path_factory.mktemp("shard-col")
    export_manifest(shapes_dir / "test.csv", folder / "shards", format="webdataset", shard_size=6)
    embed(trained_model_dir, f"{folder}/shards/*.tar", folder / "emb", use_ray=False)
    index_source(folder / "col", trained_model_dir, folder / "emb")
    return folder / "col"


@pytest.fixture(scope="module")
def browser(chromium):
    """Headless chromium, one per test module."""
    with chromium.sync_playwright() as p:
        browser = chromium.launch(p)
        try:
            yield browser
        finally:
            browser.close()
