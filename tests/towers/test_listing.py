"""`jointspace towers`: what can be loaded, counted from the towers themselves."""
import json

from jointspace.config import TowerSpec
from jointspace.towers import build_tower
from jointspace.towers.listing import LISTING_EMBED_DIM, list_towers, opens_as, scan_folders


def test_each_registered_tower_is_listed_with_its_weights_and_size():
    listed = {t.name: t for t in list_towers()}
    assert {"convnet", "vit", "transformer", "audio_conv", "hf", "minilm"} <= set(listed)
    convnet = build_tower(TowerSpec(name="convnet"), LISTING_EMBED_DIM, "image")
    assert listed["convnet"].parameters == sum(p.numel() for p in convnet.parameters())
    assert listed["convnet"].weights == "from scratch" and listed["convnet"].modality == "image"
    # MiniLM's weights ship in a package: present, and counted from the real model
    assert listed["minilm"].weights == "pretrained: present"
    from transformers import AutoModel
    from jointspace.towers.hf_text import packaged_minilm_path
    bert = AutoModel.from_pretrained(packaged_minilm_path(), add_pooling_layer=False)
    backbone = sum(p.numel() for p in bert.parameters())
    assert listed["minilm"].parameters == backbone + 384 * LISTING_EMBED_DIM + LISTING_EMBED_DIM
    assert listed["hf"].weights.startswith("pretrained: needs options.path")
    assert listed["hf"].parameters is None


def test_scan_finds_local_folders_and_what_opens_them(tmp_path):
    for name, config in {"clip": {"model_type": "clip", "architectures": ["CLIPModel"]},
                         "org/dino": {"model_type": "dinov2", "architectures": ["Dinov2Model"]},
                         "bert": {"model_type": "bert", "architectures": ["BertModel"]},
                         "runs/m": {"embed_dim": 32, "towers": {}}, "other": {"foo": 1},
                         "broken": None}.items():
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "config.json").write_text("{not json" if config is None else json.dumps(config))
    found = {f.path.relative_to(tmp_path).as_posix(): f for f in scan_folders([tmp_path])}
    assert set(found) == {"clip", "org/dino", "bert", "runs/m"}  # unreadable or foreign: passed over
    assert found["runs/m"].architecture == "jointspace model"
    assert found["clip"].opens_as.startswith("jointspace import")
    assert found["org/dino"].opens_as == "tower hf_vision" and found["org/dino"].architecture == "Dinov2Model"
    assert found["bert"].opens_as == "tower hf (text)"
    for other in ("swin", "whisper", "clap", "clip_text_model", "siglip2_vision_model"):
        assert opens_as({"model_type": other}).startswith("not supported"), other
    assert len(scan_folders([tmp_path, tmp_path / "org"])) == 4  # each folder once


def test_cli_lists_towers_and_scanned_folders(tmp_path):
    import subprocess
    import sys
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text(json.dumps({"model_type": "clip",
                                                                "architectures": ["CLIPModel"]}))
    proc = subprocess.run([sys.executable, "-m", "jointspace.cli", "towers", "--scan", str(tmp_path),
                           "--json"], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "HF_HUB_CACHE": str(tmp_path / "none")})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {t["name"] for t in out["towers"]} >= {"convnet", "minilm", "hf_vision", "hf_clip_text"}
    assert [f["architecture"] for f in out["folders"]] == ["CLIPModel"]


def test_folder_parameters_come_from_the_safetensors_headers(tmp_path):
    import torch
    from safetensors.torch import save_file
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, str(tmp_path / "m" / "model.safetensors"))
    (found,) = scan_folders([tmp_path])
    assert found.parameters == 3 * 4 + 5 and found.opens_as == "tower hf_vision"
