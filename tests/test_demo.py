"""The demo end to end on a tiny budget, with its default text tower (locked MiniLM)."""
import json
from pathlib import Path

from jointspace.demos.shapes import demo_config, held_out_fractions, run_demo


#: steps the tiny demo needs to learn: with seed 0 it reaches zero-shot top-1 0.25 and
#: top-5 0.60 (chance 0.02, 0.10), image→text and text→image R@5 0.70 and 0.75 (chance
#: 0.25) on its 20 test scenes; after 6 steps it was at chance (0.00, 0.10, 0.30, 0.25)
DEMO_TEST_STEPS = 150


def test_demo_runs_end_to_end_with_the_locked_minilm(tmp_path):
    run = demo_config(["model.embed_dim=32", "model.towers.image={name: convnet, options: {widths: [8, 16]}}",
                       "train.batch_size=16", f"train.max_steps={DEMO_TEST_STEPS}",
                       f"train.eval_every={DEMO_TEST_STEPS}", "train.warmup_steps=2"])
    assert run.model.towers["text"].name == "minilm" and run.model.towers["text"].trainable == "none"
    result = run_demo(tmp_path / "demo", n=200, run=run, k=3)
    results = json.loads((tmp_path / "demo" / "eval" / "results.json").read_text())
    assert results["n"] == 20 and results["zero_shot"]["n_classes"] == 48
    # it learned: well above chance, computed from the test split (a model that learned
    # nothing passes none of these; the margins leave room for numeric drift)
    classes, n, metrics = results["zero_shot"]["n_classes"], results["n"], results["metrics"]
    assert results["retrieval"]["n_groups"] == n  # one caption per scene: recall@k chance is k/n
    assert results["zero_shot"]["top1"] >= 5 / classes, results["zero_shot"]
    assert results["zero_shot"]["top5"] >= 3 * 5 / classes, results["zero_shot"]
    for direction in ("image", "text"):
        assert metrics[f"{direction}_retrieval_recall@5"] >= 2 * 5 / n, metrics
    assert result.results["test_words_retrieval"]["n"] == 20
    shifted = result.results["test_shifted"]  # the test scenes, rendered with the shift
    assert shifted["retrieval"]["n"] == 20 and shifted["zero_shot"]["n_classes"] == 48
    assert "zero_shot_unseen_combos" in shifted and "retrieval_by_label" in shifted
    assert (tmp_path / "demo" / "eval_shifted" / "results.json").is_file()
    assert all(len(hits) == 3 for hits in result.queries.values())
    from jointspace.index import Collection  # the test images, on the collection's vector store
    col = Collection.open(result.collection_dir)
    assert len(col) == 20 and col.info["store"] == "faiss" and col.store("image").count() == 20
    card = (tmp_path / "demo" / "model" / "README.md").read_text()
    assert "| text | minilm | none | 0 |" in card


def test_demo_with_the_pretrained_image_tower(tmp_path):
    """``--image-tower efficientnet_lite0``: the ImageNet EfficientNet-Lite0 fine-tuned
    whole at 64 px next to the locked MiniLM; a few steps, both test splits evaluated."""
    import pytest
    from jointspace.demos.shapes import IMAGE_TOWERS
    assert IMAGE_TOWERS == ("convnet", "efficientnet_lite0")
    run = demo_config(["train.batch_size=8", "train.max_steps=2", "train.eval_every=2",
                       "train.warmup_steps=1"], image_tower="efficientnet_lite0")
    image = run.model.towers["image"]
    assert (image.name, image.trainable, image.options["image_size"]) == ("efficientnet_lite", "all", 64)
    assert run.model.towers["text"].trainable == "none"
    with pytest.raises(ValueError, match="image_tower"):
        demo_config(image_tower="resnet")
    result = run_demo(tmp_path / "eff", n=100, run=run, k=2)
    assert result.results["n"] == 10 and result.results["test_shifted"]["retrieval"]["n"] == 10
    assert "| image | efficientnet_lite | all |" in (result.model_dir / "README.md").read_text()


def test_held_out_splits_stay_at_700_rows():
    assert held_out_fractions(7000) == (0.8, 0.1, 0.1)
    train, val, test = held_out_fractions(20000)
    assert round(20000 * val) == round(20000 * test) == 700


def test_audio_demo_runs_end_to_end_and_queries_by_sound(tmp_path, chromium):
    from jointspace.config import load_run_config
    from jointspace.demos.audio import EVALUATIONS, run_audio_demo, summary
    tiny = ["train.batch_size=16", "train.max_steps=4", "train.eval_every=4", "train.warmup_steps=1"]
    base = load_run_config(None, ["model.embed_dim=32", "model.towers.image={name: convnet, options: "
                                  "{widths: [8, 16]}}", "model.towers.text={name: minilm, trainable: none}",
                                  *tiny])
    bind = load_run_config(None, ["model.towers.audio={name: audio_conv, options: {widths: [8, 16], "
                                  "layers: 1, heads: 2, n_mels: 32}}", *tiny])
    result = run_audio_demo(tmp_path / "audio", n=150, base=base, bind=bind, k=3)
    assert set(result.results) == {f"{m} {p}" for m, p in EVALUATIONS}
    assert result.results["bound audio:text"]["pair"] == ["audio", "text"]
    rows = summary(result.results)
    assert {r["direction"] for r in rows} >= {"audio_to_text", "text_to_audio", "audio_to_image"}
    (text_query, text_hits), (image_query, image_hits) = result.queries.items()
    assert "→ text" in text_query and "→ image" in image_query
    assert len(text_hits) == len(image_hits) == 3
    assert [s for s, _ in text_hits] == sorted((s for s, _ in text_hits), reverse=True)
    # the bound model's text and image towers are the image–text model's, untouched
    assert "| text | minilm | none |" in (result.models["bound"] / "README.md").read_text()
    # `make screenshots` on this demo: the README's six pictures, each a real PNG of the window
    import subprocess
    import sys

    from PIL import Image
    script = Path(__file__).resolve().parents[1] / "docs" / "make_screenshots.py"
    subprocess.run([sys.executable, str(script), "--work", str(tmp_path / "audio"), "--out",
                    str(tmp_path / "shots"), "--chromium", chromium.executable], check=True,
                   capture_output=True, timeout=600)
    shots = {p.name: Image.open(p).size for p in (tmp_path / "shots").glob("*.png")}
    assert set(shots) == {"report-first-screen.png", "report-examples.png", "compare.png",
                          "page-text.png", "page-image.png", "page-audio.png"}
    assert all(width == 1280 and height >= 300 for width, height in shots.values())


def test_the_old_demo_modules_still_import_with_a_deprecation_warning():
    import importlib
    import sys

    import pytest
    for old, new in (("jointspace.demo", "jointspace.demos.shapes"),
                     ("jointspace.demo_audio", "jointspace.demos.audio")):
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=new):
            shim = importlib.import_module(old)
        moved = importlib.import_module(new)
        assert all(getattr(shim, name) is getattr(moved, name) for name in vars(moved)
                   if not name.startswith("__"))
        assert getattr(shim, "__all__", None) == getattr(moved, "__all__", None)
