import pytest

from jointspace.config import ModelConfig, RunConfig, from_dict, load_run_config, to_dict
from jointspace.errors import ConfigError


def test_round_trip():
    run = load_run_config(overrides=["train.lr=0.01", "model.towers.image={name: vit}"])
    assert run.train.lr == 0.01 and run.model.towers["image"].name == "vit"
    assert run.model.towers["text"].name == "transformer"  # untouched modality kept
    assert from_dict(RunConfig, to_dict(run)) == run


def test_file_merge(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  max_steps: 7\nmodel:\n  embed_dim: 16\n")
    run = load_run_config(tmp_path / "c.yaml")
    assert run.train.max_steps == 7 and run.model.embed_dim == 16 and run.train.lr == 2e-3


@pytest.mark.parametrize("text, message", [
    ("train:\n  max_stepz: 7\n", "unknown key 'max_stepz'"),
    ("trian: {}\n", "unknown key 'trian'"),
    ("train:\n  max_steps: many\n", "train.max_steps must be int, got 'many'"),
    ("train: [1]\n", "train must be a mapping"),
    ("- 1\n", "must hold a mapping"),
    ("train: {max_steps: [\n", "cannot parse config file"),
])
def test_bad_config_files(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_run_config(tmp_path / "c.yaml")


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_run_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        load_run_config(overrides=["train.lr"])
    with pytest.raises(ConfigError, match="unknown key 'lrr'"):
        load_run_config(overrides=["train.lrr=1"])


def test_bool_is_not_int():
    with pytest.raises(ConfigError, match="embed_dim must be int"):
        from_dict(ModelConfig, {"embed_dim": True})


def test_objective_options_are_checked():
    from jointspace.objectives import build_objective
    with pytest.raises(ConfigError, match="unknown objective 'nce'; known: infonce, matryoshka, sigmoid"):
        build_objective("nce")
    with pytest.raises(ConfigError, match="objective 'infonce': .*label_smoothing"):
        build_objective("infonce", label_smoothing=2.0)
    with pytest.raises(ConfigError, match="objective 'sigmoid': .*unexpected keyword"):
        build_objective("sigmoid", temperature=3)
