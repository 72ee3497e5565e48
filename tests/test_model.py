import numpy as np
import torch
import pytest
from PIL import Image

import jointspace
from jointspace.config import ModelConfig
from jointspace.errors import ConfigError, JointspaceError
from jointspace.model import WEIGHTS_FILE, JointModel


def test_load_round_trip(trained_model_dir, tmp_path, shapes_dir):
    model = jointspace.load(trained_model_dir)
    texts = ["a red circle", "a big blue square on the left"]
    images = [shapes_dir / "images/test/test-000000.png", Image.new("RGB", (64, 64))]
    t, i = model.encode_text(texts), model.encode_image(images)
    assert t.dtype == np.float32 and t.shape == (2, 32) and i.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(i, axis=1), 1, atol=1e-6)
    model.save(tmp_path / "copy")
    again = jointspace.load(tmp_path / "copy")
    np.testing.assert_array_equal(again.encode_text(texts), t)
    np.testing.assert_array_equal(again.encode_image(images), i)
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == [
        "config.json", "model.safetensors", "text"]  # each tower's assets in its own folder
    assert (tmp_path / "copy" / "text" / "tokenizer.json").is_file()


def test_batching_does_not_change_embeddings(trained_model_dir):
    model = jointspace.load(trained_model_dir)
    texts = [f"a red circle number {i}" for i in range(7)]
    np.testing.assert_allclose(model.encode_text(texts, batch_size=3), model.encode_text(texts),
                               atol=1e-6)
    assert model.encode_text([]).shape == (0, 32)


def test_load_errors(tmp_path, trained_model_dir):
    with pytest.raises(JointspaceError, match="not a model folder"):
        jointspace.load(tmp_path)
    model = jointspace.load(trained_model_dir)
    model.save(tmp_path / "m")
    (tmp_path / "m" / WEIGHTS_FILE).unlink()
    with pytest.raises(JointspaceError, match="lacks model.safetensors"):
        jointspace.load(tmp_path / "m")
    with pytest.raises(JointspaceError, match="no 'audio' tower"):
        model.encode("audio", ["x.wav"])
    with pytest.raises(JointspaceError, match="dim 7 is not one this model was trained for"):
        model.encode_text(["a"], dim=7)


def test_matryoshka_dims_are_checked():
    with pytest.raises(ConfigError, match="matryoshka_dims entry 300"):
        JointModel(ModelConfig(embed_dim=128, matryoshka_dims=[300]))


def test_save_is_atomic_per_file(trained_model_dir, tmp_path, monkeypatch):
    """A crash while writing leaves the previous weights in place and readable."""
    model = jointspace.load(trained_model_dir)
    model.save(tmp_path / "m")
    before = (tmp_path / "m" / WEIGHTS_FILE).read_bytes()
    import jointspace.model_io as model_module

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")
    monkeypatch.setattr(model_module, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "m")
    assert (tmp_path / "m" / WEIGHTS_FILE).read_bytes() == before
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".save-")]
    jointspace.load(tmp_path / "m")


def test_save_crash_after_a_rename_leaves_a_loadable_model(trained_model_dir, tmp_path, monkeypatch):
    """A kill between the renames (config already replaced, weights not yet) still
    leaves whole files and the previous weights."""
    import jointspace.model_io as model_module
    model = jointspace.load(trained_model_dir)
    model.save(tmp_path / "m")
    before = (tmp_path / "m" / WEIGHTS_FILE).read_bytes()
    real_replace, renamed = model_module.os.replace, []

    def replace_then_die(src, dst):
        if str(dst).endswith(WEIGHTS_FILE):
            raise KeyboardInterrupt("killed before the weights were renamed")
        real_replace(src, dst)
        renamed.append(str(dst))
    monkeypatch.setattr(model_module.os, "replace", replace_then_die)
    with torch.no_grad():
        model.logit_scale.add_(1.0)  # the new save differs
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "m")
    monkeypatch.undo()
    assert renamed  # the crash really came after some renames
    assert (tmp_path / "m" / WEIGHTS_FILE).read_bytes() == before
    jointspace.load(tmp_path / "m")


def test_save_syncs_files_and_the_folder(trained_model_dir, tmp_path, monkeypatch):
    import jointspace.model_io as model_module
    synced = []
    monkeypatch.setattr(model_module, "fsync_file", lambda p: synced.append(("file", p.name)))
    monkeypatch.setattr(model_module, "fsync_dir", lambda p: synced.append(("dir", str(p))))
    jointspace.load(trained_model_dir).save(tmp_path / "m")
    assert ("file", WEIGHTS_FILE) in synced and ("file", "config.json") in synced
    assert synced[-1] == ("dir", str(tmp_path / "m"))


def test_encode_image_takes_one_path_or_image(trained_model_dir, shapes_dir):
    model = jointspace.load(trained_model_dir)
    path = shapes_dir / "images/test/test-000000.png"
    one = model.encode_image(str(path))
    assert one.shape == (1, 32)
    np.testing.assert_array_equal(one, model.encode_image([path]))
    np.testing.assert_array_equal(model.encode_image(path), one)
    np.testing.assert_allclose(model.encode_image(Image.open(path)), one, atol=1e-6)


def test_temperature_starts_from_the_built_objective():
    """Matryoshka over sigmoid starts at SigLIP's scale and bias, not CLIP's."""
    import math
    from jointspace.config import ObjectiveSpec
    cfg = ModelConfig(objective=ObjectiveSpec("sigmoid"), matryoshka_dims=[64, 32])
    model = JointModel(cfg)
    assert model.logit_scale.item() == pytest.approx(math.log(10.0))
    assert model.logit_bias is not None and model.logit_bias.item() == pytest.approx(-10.0)
    clip = JointModel(ModelConfig(matryoshka_dims=[64]))
    assert clip.logit_scale.item() == pytest.approx(math.log(1 / 0.07)) and clip.logit_bias is None


def test_device_names_are_checked():
    from jointspace.model import resolve_device
    assert resolve_device("cpu").type == "cpu" and resolve_device(None).type in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="not a device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda:1")


def test_encode_image_takes_any_iterable(trained_model_dir, shapes_dir):
    model = jointspace.load(trained_model_dir)
    paths = [shapes_dir / f"images/test/test-00000{i}.png" for i in range(3)]
    np.testing.assert_array_equal(model.encode_image(p for p in paths), model.encode_image(paths))


def test_folder_with_the_old_matryoshka_objective_loads(trained_model_dir, tmp_path):
    """Before ``matryoshka`` stopped being an objective name, a config could say
    objective: {name: matryoshka, options: {base: sigmoid, dims: [...]}}."""
    import json
    import shutil
    shutil.copytree(trained_model_dir, tmp_path / "old", ignore=shutil.ignore_patterns("checkpoint.pt"))
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    config["objective"] = {"name": "matryoshka", "options": {"base": "infonce", "dims": [16, 32],
                                                             "label_smoothing": 0.1}}
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    model = jointspace.load(tmp_path / "old")
    assert model.config.objective.name == "infonce"
    assert model.config.objective.options == {"label_smoothing": 0.1}
    assert model.config.matryoshka_dims == [16] and model.config.nested_dims() == [32, 16]
    assert model.encode_text("a red circle", dim=16).shape == (1, 16)


def test_a_folder_in_the_old_layout_loads(trained_model_dir, tmp_path):
    """Before pairs and asset subfolders: tokenizer.json beside the weights, one
    ``logit_scale`` parameter."""
    import shutil
    from safetensors.torch import load_file, save_file
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(trained_model_dir / "config.json", old / "config.json")
    shutil.copy(trained_model_dir / "text" / "tokenizer.json", old / "tokenizer.json")
    state = load_file(str(trained_model_dir / WEIGHTS_FILE))
    state["logit_scale"] = state.pop("logit_scales.image-text")
    save_file(state, str(old / WEIGHTS_FILE))
    model, reference = jointspace.load(old), jointspace.load(trained_model_dir)
    np.testing.assert_array_equal(model.encode_text("a red circle"), reference.encode_text("a red circle"))
    assert model.logit_scale.item() == reference.logit_scale.item()


def test_encode_takes_one_item_alone_as_one_item(trained_model_dir, tmp_path, monkeypatch):
    """``encode("text", "red")`` is one text, not three characters, and
    ``encode("image", "a.png")`` is one image, not a file named ``a`` (issue 18)."""
    from pathlib import Path
    from jointspace.model import as_items

    model = jointspace.load(trained_model_dir)
    one = model.encode("text", "red")
    assert one.shape == (1, 32)
    np.testing.assert_array_equal(one, model.encode("text", ["red"]))
    np.testing.assert_array_equal(model.encode_text("red"), one)
    Image.new("RGB", (20, 12), (200, 30, 30)).save(tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)
    image = model.encode("image", "a.png")
    assert image.shape == (1, 32)
    np.testing.assert_array_equal(image, model.encode("image", ["a.png"]))
    np.testing.assert_array_equal(model.encode("image", Path("a.png")), image)
    np.testing.assert_allclose(model.encode("image", Image.open("a.png")), image, atol=1e-6)
    assert model.encode("text", ("red", "blue")).shape == (2, 32)  # a sequence stays many
    # one clip's samples is one clip; a batch of clips, or a list of them, is many
    clip = np.zeros(160, np.float32)
    assert len(as_items(clip)) == 1 and len(as_items(torch.zeros(160))) == 1
    assert len(as_items(np.zeros((3, 160), np.float32))) == 3 and len(as_items([clip, clip])) == 2
    with pytest.raises(JointspaceError, match="expected an item or a sequence of items, got int"):
        model.encode("text", 5)
