"""``jointspace import`` / :func:`jointspace.import_model`: a CLIP or SigLIP folder becomes a
jointspace model that embeds and scores exactly as transformers does, with no source."""
from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
from clip_folders import TEXTS, reference, reference_images, reference_text, write_tiny_clip
from PIL import Image

import jointspace
from jointspace.cli import main
from jointspace.errors import ConfigError


def write_images(folder, sizes, seed: int = 0) -> list:
    """Smooth random image files of the given ``(width, height, extension)``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (w, h, ext) in enumerate(sizes):
        pixels = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        paths.append(folder / f"img{i}.{ext}")
        Image.fromarray(pixels).resize((w, h), Image.BILINEAR).save(paths[-1], quality=95)
    return paths


#: non-square, larger and smaller than the 32 px input; JPEGs under twice the input size
#: (a larger one jointspace's image decoding may draft-decode at a reduced DCT scale, which
#: transformers' processor does not do: close, not equal)
EXACT = [(48, 40, "png"), (64, 96, "png"), (32, 32, "png"), (100, 37, "png"), (20, 28, "png"),
         (40, 50, "jpg"), (60, 33, "jpg")]


def test_imported_model_equals_transformers_without_the_source(family_source, tmp_path):
    family, source = family_source
    images = write_images(tmp_path / "images", EXACT)
    hf, processor = reference(source)
    text_ref = reference_text(hf, processor, TEXTS)
    image_ref = reference_images(hf, processor, images)

    siglip = family == "siglip"
    inputs = processor(text=TEXTS, images=[Image.open(p).convert("RGB") for p in images], truncation=True,
                       return_tensors="pt", **({"padding": "max_length", "max_length": 64} if siglip
                                               else {"padding": True}))
    if siglip:
        inputs.pop("attention_mask")
    with torch.no_grad():
        logits_ref = hf(**inputs).logits_per_image

    out = jointspace.import_model(source, tmp_path / "model")
    shutil.rmtree(source)  # everything must now come from the model folder
    model = jointspace.load(out)

    text = torch.from_numpy(model.encode_text(TEXTS))
    image = torch.from_numpy(model.encode_image(images))
    torch.testing.assert_close(text, text_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(image, image_ref, atol=1e-5, rtol=0)
    scale = float(model.logit_scale.detach().exp())
    bias = float(model.logit_bias.detach()) if siglip else 0.0
    torch.testing.assert_close(scale * image @ text.T + bias, logits_ref, atol=1e-4, rtol=0)
    # the temperature is the folder's, not jointspace's initial one
    assert float(model.logit_scale.detach()) == pytest.approx(float(hf.logit_scale.detach()), abs=1e-6)
    if siglip:
        assert float(model.logit_bias.detach()) == pytest.approx(float(hf.logit_bias.detach()), abs=1e-6)
    else:
        assert model.logit_bias is None
    config = model.config
    assert config.objective.name == ("sigmoid" if siglip else "infonce")
    assert config.embed_dim == (32 if siglip else 16)
    assert {m: s.name for m, s in config.towers.items()} == {"image": "hf_vision", "text": "hf_clip_text"}
    assert all(s.options["path"] == "" for s in config.towers.values())
    card = (out / "README.md").read_text()
    assert str(source) in card and ("SigLIP" if siglip else "CLIP") in card
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == json.loads((out / "config.json").read_text())


def test_cli_import_and_its_errors(clip_source, tmp_path, capsys):
    assert main(["import", str(clip_source), "--out", str(tmp_path / "m")]) == 0
    assert "model: " in capsys.readouterr().out
    model = jointspace.load(tmp_path / "m")
    assert model.encode_text("a photo of a dog").shape == (1, 16)
    assert math.isclose(float(model.logit_scale.detach()), 3.1, abs_tol=1e-6)
    assert main(["import", str(clip_source), "--out", str(tmp_path / "m")]) == 2
    assert "already holds a model" in capsys.readouterr().err
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    assert main(["import", str(tmp_path / "bert"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "opens whole clip, siglip models" in err[0]
    with pytest.raises(ConfigError, match="not a Hugging Face model folder"):
        jointspace.import_model(tmp_path, tmp_path / "c")


def test_siglip2_is_refused_before_anything_loads(siglip2_source, tmp_path, monkeypatch, capsys):
    """SigLIP 2's text half opens as hf_clip_text, its image half is no hf_vision family yet:
    import says so from config.json, before a tower or transformers' config is built."""
    import jointspace.model_import as model_import

    def fail(*args, **kwargs):
        raise AssertionError("import loaded something before refusing SigLIP 2")

    monkeypatch.setattr(model_import, "JointModel", fail)
    monkeypatch.setattr(model_import, "transformers_module", fail)
    with pytest.raises(ConfigError, match=r"SigLIP 2.*not imported yet.*hf_clip_text.*hf_vision"):
        jointspace.import_model(siglip2_source, tmp_path / "m")
    assert main(["import", str(siglip2_source), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SigLIP 2" in err[0] and not (tmp_path / "m").exists()
    with pytest.raises(SystemExit):
        main(["import", "--help"])
    assert "Siglip2Model" not in capsys.readouterr().out


def test_the_temperature_bound_warning_allows_float32_rounding(tmp_path, monkeypatch):
    """CLIP checkpoints store logit_scale = ln 100 in float32 (4.6051702499…, above
    math.log(100)): that is the bound, not above it; a scale really above it warns."""
    import jointspace.model_import as model_import

    warnings = []
    monkeypatch.setattr(model_import.logger, "warning", lambda *a: warnings.append(a[0] % a[1:]))
    at_bound = write_tiny_clip(tmp_path / "at", logit_scale=math.log(100))
    assert float(torch.tensor(math.log(100), dtype=torch.float32)) > math.log(100)
    jointspace.import_model(at_bound, tmp_path / "m1")
    assert not warnings
    jointspace.import_model(write_tiny_clip(tmp_path / "above", logit_scale=math.log(100) + 0.01),
                            tmp_path / "m2")
    assert len(warnings) == 1 and "101.0 is above jointspace's bound 100" in warnings[0]


def _weightless_copy(source, folder):
    """``source``'s config, tokenizer and processor files in ``folder``, and its state dict."""
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.index.json"),
                    dirs_exist_ok=True)
    return reference(source)[0].state_dict()


def test_sharded_and_legacy_weight_files_are_read(clip_source, tmp_path):
    """Sharded safetensors (save_pretrained's max_shard_size), sharded and pre-zipfile
    pytorch_model.bin: the temperature is found; unreadable weights are a ConfigError
    naming the file."""
    from jointspace.model_import import FAMILIES, read_temperature

    hf = reference(clip_source)[0]
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    _weightless_copy(clip_source, tmp_path / "sharded")
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 2

    state = _weightless_copy(clip_source, tmp_path / "bin-sharded")
    names = sorted(state)
    shards = {"pytorch_model-00001-of-00002.bin": names[:len(names) // 2],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
    for file, keys in shards.items():
        torch.save({k: state[k] for k in keys}, tmp_path / "bin-sharded" / file)
    (tmp_path / "bin-sharded" / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: file for file, keys in shards.items() for k in keys}}))

    state = _weightless_copy(clip_source, tmp_path / "legacy")
    torch.save(state, tmp_path / "legacy" / "pytorch_model.bin", _use_new_zipfile_serialization=False)

    texts = torch.from_numpy(jointspace.load(jointspace.import_model(clip_source, tmp_path / "m")).encode_text(TEXTS))
    for name in ("sharded", "bin-sharded", "legacy"):
        model = jointspace.load(jointspace.import_model(tmp_path / name, tmp_path / f"m-{name}"))
        assert math.isclose(float(model.logit_scale.detach()), 3.1, abs_tol=1e-6), name
        torch.testing.assert_close(torch.from_numpy(model.encode_text(TEXTS)), texts, atol=0, rtol=0)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="pytorch_model.bin"):
        read_temperature(broken, FAMILIES["clip"])
    (broken / "pytorch_model.bin").unlink()
    (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    (broken / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(ConfigError, match="model.safetensors.index.json"):
        read_temperature(broken, FAMILIES["clip"])
    (broken / "model.safetensors.index.json").unlink()
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="model.safetensors"):
        read_temperature(broken, FAMILIES["clip"])


def test_import_and_load_make_no_network_request(clip_source, tmp_path, no_network):
    model = jointspace.load(jointspace.import_model(clip_source, tmp_path / "m"))
    assert model.encode_text("a photo of a dog").shape == (1, 16)
    assert "HF_HUB_OFFLINE" not in os.environ


def test_loading_a_hugging_face_folder_says_how_to_import_it(clip_source):
    from jointspace.errors import JointspaceError
    with pytest.raises(JointspaceError, match="jointspace import"):
        jointspace.load(clip_source)
