"""Shared fixtures: a tiny shapes dataset, a tiny run config, the pretrained towers' no
network and rebuild from a model folder, the evaluation and compare reports, Debian's chromium."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable

os.environ.setdefault("JOINTSPACE_QUIET", "1")

import pytest
import torch

from jointspace.config import RunConfig, load_run_config
from jointspace.data.shapes import ShapesSpec, write_shapes

TINY_OVERRIDES = [
    "model.embed_dim=32",
    "model.towers.image={name: convnet, options: {widths: [8, 16]}}",
    "model.towers.text={name: transformer, options: {vocab_size: 300, width: 32, layers: 1, heads: 2, context_length: 24}}",
    "train.batch_size=16", "train.max_steps=12", "train.warmup_steps=3", "train.eval_every=6",
    "train.checkpoint_every=4", "train.log_every=2", "train.lr=0.003",
]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _feature_cache(tmp_path_factory):
    """Frozen-feature caches go to a temporary folder, never the user's ~/.cache."""
    os.environ["JOINTSPACE_CACHE"] = str(tmp_path_factory.mktemp("feature-cache"))


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """120 scenes: 96 train, 12 val, 12 test."""
    out = tmp_path_factory.mktemp("shapes")
    write_shapes(out, ShapesSpec(n=120, seed=3))
    return out


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY_OVERRIDES)


@pytest.fixture
def tiny_run() -> RunConfig:
    return load_run_config(overrides=TINY_OVERRIDES)


@pytest.fixture(scope="session")
def trained_model_dir(shapes_dir, tmp_path_factory):
    """A tiny model trained once for the tests that need weights."""
    from jointspace.train.trainer import train
    out = tmp_path_factory.mktemp("model") / "m"
    train(load_run_config(overrides=TINY_OVERRIDES), shapes_dir / "train.csv", out,
          val_data=shapes_dir / "val.csv")
    return out


@pytest.fixture(scope="session")
def other_model_dir(shapes_dir, tmp_path_factory):
    """A second tiny trained model, compared with ``trained_model_dir`` (another seed and
    embedding size)."""
    from jointspace.train.trainer import train
    out = tmp_path_factory.mktemp("other-model") / "other"
    train(load_run_config(overrides=TINY_OVERRIDES + ["train.seed=7", "model.embed_dim=16"]),
          shapes_dir / "train.csv", out, val_data=shapes_dir / "val.csv")
    return out


@pytest.fixture(scope="session")
def eval_report(trained_model_dir, shapes_dir, tmp_path_factory):
    """``(report.html, results)`` of the tiny model on the shapes test split (the probe fitted
    on the validation split)."""
    from jointspace.eval.run import evaluate
    out = tmp_path_factory.mktemp("report")
    results = evaluate(trained_model_dir, shapes_dir / "test.csv", out_dir=out,
                       train_manifest=shapes_dir / "val.csv")
    return out / "report.html", results


@pytest.fixture(scope="session")
def compare_report(trained_model_dir, other_model_dir, shapes_dir, tmp_path_factory):
    """``(report.html, results)`` of ``compare`` between the two tiny models."""
    from jointspace.eval.compare import compare
    out = tmp_path_factory.mktemp("compare")
    results = compare(trained_model_dir, other_model_dir, shapes_dir / "test.csv", out_dir=out, k=3)
    return out / "report.html", results


@pytest.fixture(scope="session")
def image_audio_model_dir(tmp_path_factory):
    """An untrained but complete image + audio model (fast to build and to run): for the
    mechanics of indexing, searching and serving, which need a model, not a good one."""
    from jointspace.config import ModelConfig, PairSpec, TowerSpec
    from jointspace.model import JointModel
    config = ModelConfig(embed_dim=16, towers={
        "image": TowerSpec("convnet", {"image_size": 16, "widths": [8]}),
        "audio": TowerSpec("audio_conv", {"widths": [8, 16], "layers": 1, "heads": 2, "n_mels": 32,
                                          "clip_seconds": 0.5})},
        pairs=[PairSpec("audio", "image")])
    torch.manual_seed(0)
    return JointModel(config).save(tmp_path_factory.mktemp("image-audio-model") / "m")


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory):
    """A folder of three PNGs, tones as WAV and MP3, and one silent WAV."""
    import numpy as np
    import soundfile
    from PIL import Image
    folder = tmp_path_factory.mktemp("media")
    for colour in ("red", "green", "blue"):
        Image.new("RGB", (20, 20), colour).save(folder / f"{colour}.png")
    t = np.arange(8000) / 16000
    for hz in (220, 440):
        soundfile.write(folder / f"tone-{hz}.wav", 0.3 * np.sin(2 * np.pi * hz * t), 16000)
    soundfile.write(folder / "tone-330.mp3", 0.3 * np.sin(2 * np.pi * 330 * t), 16000, format="MP3")
    soundfile.write(folder / "silence.wav", np.zeros(8000), 16000)
    return folder


# --------------------------------------------------------------------------- pretrained towers
@pytest.fixture
def no_network(monkeypatch):
    """Every socket connect or name lookup fails the test (attempts are recorded even when
    the library that made them swallows the error); the Hub's offline switches are unset."""
    import socket

    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args))
        raise OSError("network access attempted in a test")

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    for target, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"),
                         (socket, "create_connection"), (socket, "getaddrinfo")):
        monkeypatch.setattr(target, name, refuse)
    yield attempts
    assert not attempts, f"network access attempted: {attempts}"


@pytest.fixture(params=["weights-then-assets", "assets-then-weights"])
def load_order(request) -> str:
    """The two orders a tower meets its weights and its model folder's assets in:
    ``load_state_dict`` first (``JointModel.load``, ``--init-from``) or ``load_assets``
    first (a resumed run)."""
    return request.param


@pytest.fixture
def rebuilt_without_source(tmp_path, load_order):
    """``rebuilt_without_source(tower, spec, embed_dim, source)`` → ``(fresh, assets)``:
    ``tower``'s assets saved to ``assets`` and its state dict kept, ``source`` (the folder
    ``spec`` names) deleted, then a tower built afresh from ``spec`` (it cannot open the
    path) given both in ``load_order``; ``fresh`` is in eval mode."""
    import shutil

    from jointspace.towers import build_tower

    def rebuild(tower, spec, embed_dim: int, source):
        assets = tmp_path / "model" / tower.modality
        assets.mkdir(parents=True)
        tower.save_assets(assets)
        state = {k: v.clone() for k, v in tower.state_dict().items()}
        shutil.rmtree(source)
        fresh = build_tower(spec, embed_dim, tower.modality)
        assert fresh.unavailable and "does not exist" in fresh.unavailable
        if load_order == "weights-then-assets":
            missing, unexpected = fresh.load_state_dict(state, strict=False)
            assert not missing and not unexpected
            fresh.load_assets(assets)
        else:
            fresh.load_assets(assets)
            fresh.load_state_dict(state, strict=True)
        return fresh.eval(), assets

    return rebuild


# --------------------------------------------------------------------------- the browser tests
#: Debian's chromium (Playwright never downloads a browser); another one can be named
CHROMIUM = os.environ.get("JOINTSPACE_TEST_CHROMIUM", "/usr/bin/chromium")


def in_ci() -> bool:
    """Whether the ``CI`` environment variable is set to something true (CI=true, CI=1)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class Chromium:
    """What a browser test needs: the chromium executable and Playwright's ``sync_playwright``."""

    executable: str
    sync_playwright: Callable[[], Any]

    def launch(self, playwright: Any) -> Any:
        """Headless chromium, sandbox off (containers), no background requests."""
        return playwright.chromium.launch(executable_path=self.executable, headless=True,
                                          args=["--no-sandbox", "--disable-background-networking"])


def _missing_browser(problem: str, fix: str) -> None:
    """Under CI the test fails; elsewhere it skips, loudly: a warning in the summary's
    warnings and the reason in its skip line (``-ra``)."""
    if in_ci():
        pytest.fail(f"{problem} under CI (CI={os.environ['CI']}): {fix}", pytrace=False)
    message = (f"browser test NOT RUN: {problem} ({fix}); under CI=true this fails")
    warnings.warn(pytest.PytestWarning(message), stacklevel=2)
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    """Debian's chromium driven by Playwright; see :func:`_missing_browser` when either is
    missing (the one check the browser tests share)."""
    if not os.path.exists(CHROMIUM):
        _missing_browser(f"no {CHROMIUM} on this machine", "apt-get install chromium; .ci/run does")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing_browser("playwright is not installed", "pip install -e .[test]")
    return Chromium(CHROMIUM, sync_playwright)
