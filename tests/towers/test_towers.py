import pytest
import torch
from PIL import Image

from jointspace.config import TowerSpec
from jointspace.errors import ConfigError, DataError
from jointspace.towers import TOWERS, build_tower
from jointspace.towers.text import train_tokenizer

IMAGE_SPECS = [TowerSpec("convnet", {"widths": [8, 16, 32]}),
               TowerSpec("vit", {"width": 32, "layers": 1, "heads": 2, "patch_size": 16})]


@pytest.mark.parametrize("spec", IMAGE_SPECS, ids=lambda s: s.name)
def test_image_towers_give_unit_vectors(spec, tmp_path):
    tower = build_tower(spec, 24, "image")
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.png")
    items = [tmp_path / "a.png", Image.new("L", (64, 64), 128), Image.new("RGBA", (100, 64))]
    x = tower.collate([tower.preprocess_one(i) for i in items])
    assert x.shape == (3, 3, 64, 64) and x.dtype == torch.uint8
    out = tower(x)
    assert out.shape == (3, 24)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    out.sum().backward()  # every parameter is reachable from the output
    assert all(p.grad is not None for p in tower.parameters())


def test_text_tower_gives_unit_vectors_and_handles_unseen_words():
    tower = build_tower(TowerSpec("transformer", {"vocab_size": 300, "width": 32, "layers": 1,
                                                  "heads": 2, "context_length": 16}), 24, "text")
    tower.prepare(["a red circle", "a blue square on the left", "there is a green star"] * 5)
    texts = ["a red circle", "zebra ünïcode 🙂 words never seen", "x " * 100]
    x = tower.collate([tower.preprocess_one(t) for t in texts])
    assert x.shape == (3, 16) and (x[:, 0] == 1).all()  # BOS first
    assert (x[2] != 0).all()  # over-long text is cut to the context length
    out = tower(x)
    assert out.shape == (3, 24)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))


def test_padding_does_not_change_text_embedding():
    tower = build_tower(TowerSpec("transformer", {"vocab_size": 300, "width": 32, "layers": 1,
                                                  "heads": 2, "context_length": 16}), 8, "text").eval()
    tower.prepare(["a red circle", "a blue square"] * 5)
    ids = tower.preprocess_one("a red circle")
    longer = torch.cat([ids, torch.zeros(8, dtype=torch.long)])
    tower.pos.data = torch.randn(1, 24, 32) * 0.01
    tower.pos.data[:, 16:] = 0
    torch.testing.assert_close(tower(ids[None]), tower(longer[None]), atol=1e-5, rtol=1e-5)


def test_tokenizer_round_trip(tmp_path):
    tok = train_tokenizer(["a red circle on a grey background"] * 3, 300)
    assert tok.decode(tok.encode("a red circle").ids).strip() == "a red circle"
    tower = build_tower(TowerSpec("transformer", {"vocab_size": 300}), 8, "text")
    tower.tokenizer = tok
    tower.save_assets(tmp_path)
    other = build_tower(TowerSpec("transformer", {"vocab_size": 300}), 8, "text")
    other.load_assets(tmp_path)
    assert other.preprocess_one("a red circle").tolist() == tower.preprocess_one("a red circle").tolist()


def test_registry_errors():
    assert {"convnet", "vit", "transformer"} <= set(TOWERS.names())
    with pytest.raises(ConfigError, match=r"unknown tower 'resnet9000'; known: audio_conv, convnet, .*, vit$"):
        build_tower(TowerSpec("resnet9000"), 8, "image")
    with pytest.raises(ConfigError, match="unknown key 'depth' in towers.image.options"):
        build_tower(TowerSpec("vit", {"depth": 3}), 8, "image")
    with pytest.raises(ConfigError, match="encodes 'text', not 'image'"):
        build_tower(TowerSpec("transformer"), 8, "image")
    with pytest.raises(ConfigError, match="not a multiple of patch_size"):
        build_tower(TowerSpec("vit", {"patch_size": 7}), 8, "image")


def test_bad_inputs_are_clear(tmp_path):
    tower = build_tower(IMAGE_SPECS[0], 8, "image")
    with pytest.raises(DataError, match="image file not found"):
        tower.preprocess_one(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="cannot be decoded"):
        tower.preprocess_one(tmp_path / "bad.png")
    with pytest.raises(DataError, match="expected an image path or PIL image"):
        tower.preprocess_one(3)
