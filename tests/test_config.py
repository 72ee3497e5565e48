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
    with pytest.raises(ConfigError, match="unknown objective 'nce'; known: infonce, sigmoid"):
        build_objective("nce")
    with pytest.raises(ConfigError, match="objective 'infonce': .*label_smoothing"):
        build_objective("infonce", label_smoothing=2.0)
    with pytest.raises(ConfigError, match="objective 'sigmoid': .*unexpected keyword"):
        build_objective("sigmoid", temperature=3)


def test_scientific_notation_everywhere(tmp_path):
    """YAML 1.1 reads 1e-3 as a string; ours reads it as a number, in files and --set."""
    run = load_run_config(overrides=["train.lr=1e-3", "train.max_steps=1e3"])
    assert run.train.lr == 1e-3 and run.train.max_steps == 1000
    assert isinstance(run.train.max_steps, int)
    (tmp_path / "c.yaml").write_text("train:\n  lr: 1e-4\n  weight_decay: 5E-2\n"
                                     "model:\n  objective: {name: infonce, options: {label_smoothing: 1e-1}}\n")
    run = load_run_config(tmp_path / "c.yaml")
    assert run.train.lr == 1e-4 and run.train.weight_decay == 0.05
    assert run.model.objective.options["label_smoothing"] == 0.1
    assert load_run_config(overrides=["train.lr=.5e-2"]).train.lr == 0.005
    assert load_run_config(overrides=["model.objective.options={x: -.5}"]).model.objective.options["x"] == -0.5
    with pytest.raises(ConfigError, match="max_steps must be int, got 1.5"):
        load_run_config(overrides=["train.max_steps=1.5"])
    # strings that merely look numeric stay strings
    assert load_run_config(overrides=["train.device=1e3x"]).train.device == "1e3x"


def test_a_tower_can_be_removed(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  towers:\n    text: null\n")
    assert list(load_run_config(tmp_path / "c.yaml").model.towers) == ["image"]
    assert list(load_run_config(overrides=["model.towers.text=null"]).model.towers) == ["image"]
    (tmp_path / "d.yaml").write_text("model:\n  towers:\n    image: {name: vit}\n")
    towers = load_run_config(tmp_path / "d.yaml").model.towers  # others are kept
    assert towers["image"].name == "vit" and towers["text"].name == "transformer"


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size must be at least 1, got 0"),
    ("train.lr=-1e-3", "train.lr must be a positive finite number, got -0.001"),
    ("train.lr=.nan", "train.lr must be a positive finite number"),
    ("train.max_steps=0", "train.max_steps must be at least 1, got 0"),
    ("train.accum_steps=0", "train.accum_steps must be at least 1"),
    ("train.stream_block_shards=0", "train.stream_block_shards must be at least 1"),
    ("train.warmup_steps=-5", "train.warmup_steps must not be negative"),
    ("model.embed_dim=0", "model.embed_dim must be at least 1"),
])
def test_nonsense_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_run_config(overrides=[override])
