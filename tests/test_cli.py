"""End to end through the CLI on a tiny config, and the one-line errors."""
import json
import os
import subprocess
import sys

import pytest

from jointspace.cli import main


def test_end_to_end(tmp_path, capsys, tiny_overrides):
    data, model, col = tmp_path / "data", tmp_path / "model", tmp_path / "col"
    assert main(["data", "shapes", "--out", str(data), "--n", "120", "--seed", "1"]) == 0
    sets = sum((["--set", o] for o in tiny_overrides), [])
    assert main(["train", "--data", str(data / "train.csv"), "--val", str(data / "val.csv"),
                 "--out", str(model), *sets]) == 0
    assert main(["eval", str(model), "--data", str(data / "test.csv")]) == 0
    results = json.loads((model / "eval" / "results.json").read_text())
    assert results["n"] == 12 and "zero_shot" in results
    assert main(["index", str(model), str(data / "images" / "test"), "--collection", str(col)]) == 0
    capsys.readouterr()
    assert main(["search", "--collection", str(col), "a red circle", "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["score"] >= hits[1]["score"]
    image = hits[0]["path"]
    assert main(["search", "--collection", str(col), "--image", image, "-k", "1"]) == 0
    assert image in capsys.readouterr().out


def _cli(*args, cwd=None):
    env = {**os.environ, "JOINTSPACE_QUIET": "1"}
    return subprocess.run([sys.executable, "-m", "jointspace.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "nope.csv", "--out", "m"], "manifest not found: nope.csv"),
    (["train", "--data", "x.csv", "--out", "m", "--set", "train.lrr=1"], "unknown key 'lrr'"),
    (["train", "--data", "x.csv", "--out", "m", "--set", "model.towers.image={name: resnet}"],
     "unknown tower 'resnet'"),
    (["eval", "no_model", "--data", "x.csv"], "not a model folder"),
    (["search", "--collection", "nope", "red"], "not a collection"),
    (["train", "--data", "x.csv", "--out", "m", "--config", "missing.yaml"], "config file not found"),
    (["train", "--data", "x.csv", "--out", "m", "--set", "train.batch_size=0"],
     "train.batch_size must be at least 1, got 0"),
    (["train", "--data", "x.csv", "--out", "m", "--set", "train.lr=-1e-3"],
     "train.lr must be a positive finite number"),
    (["train", "--data", "oc.csv", "--out", "m"], "--image-column/--text-column"),
    (["eval", "trained", "--data", "x.csv", "--device", "gpu0"], "not a device name"),
    (["eval", "trained", "--data", "x.csv", "--templates", "x.csv"], "has no {label}"),
    (["eval", "trained", "--data", "x.csv", "--pairs", "image:image"], "two different modalities"),
    (["eval", "trained", "--data", "x.csv", "--tasks", "vibes"], "unknown task(s) vibes"),
    (["eval", "trained", "--data", "x.csv", "--tasks", "retrieval,probe"],
     "probe needs a labelled training manifest"),
    (["eval", "trained", "--data", "x.csv", "--tasks", "matryoshka"], "matryoshka needs a model"),
    (["compare", "trained", "trained", "--data", "x.csv", "--modalities", "audio"], "shared: image, text"),
])
def test_errors_are_one_clear_line(tmp_path, args, message, trained_model_dir):
    (tmp_path / "x.csv").write_text("image,text\na.png,hello\n")
    (tmp_path / "oc.csv").write_text("filepath,caption\na.png,hello\n")
    (tmp_path / "trained").symlink_to(trained_model_dir)
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


@pytest.mark.parametrize("verb", ["data", "train", "eval", "compare", "index", "search", "serve",
                                  "embed", "import", "towers", "demo"])
def test_help_has_examples(verb):
    proc = _cli(verb, "--help")
    assert proc.returncode == 0 and "example:" in proc.stdout and f"jointspace {verb}" in proc.stdout


def test_eval_help_lists_every_task():
    from jointspace.eval.run import TASKS
    text = " ".join(_cli("eval", "--help").stdout.split())
    assert all(task in text for task in TASKS), text


def test_openclip_columns_excel_bom_and_device(tmp_path, capsys, shapes_dir, trained_model_dir,
                                               monkeypatch):
    """A manifest as OpenCLIP users write it (filepath, caption), saved by Excel with a BOM."""
    import csv
    import jointspace.model
    with open(shapes_dir / "test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    manifest = tmp_path / "excel.csv"
    with open(manifest, "w", newline="", encoding="utf-8-sig") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "filepath", "caption", "label"])
        for r in rows:
            writer.writerow([r["id"], shapes_dir / r["image"], r["text"], r["label"]])
    asked = []
    real_resolve = jointspace.model.resolve_device

    def spy(name):
        asked.append(name)
        return real_resolve(name)
    for module in ("jointspace.model", "jointspace.eval.embed", "jointspace.index.collection"):
        monkeypatch.setattr(f"{module}.resolve_device", spy)
    out = tmp_path / "eval"
    assert main(["eval", str(trained_model_dir), "--data", str(manifest), "--out", str(out),
                 "--image-column", "filepath", "--text-column", "caption", "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert asked == ["cpu"]
    reference = json.loads(json.dumps(__import__("jointspace").eval.run.evaluate(
        trained_model_dir, shapes_dir / "test.csv")))
    assert results["n"] == 12 and results["device"] == "cpu"
    asked.clear()
    assert results["retrieval"] == reference["retrieval"]
    col = tmp_path / "col"
    assert main(["index", str(trained_model_dir), str(manifest), "--collection", str(col),
                 "--image-column", "filepath", "--device", "cpu"]) == 0
    assert "12 added" in capsys.readouterr().out
    assert asked == ["cpu"]
    assert main(["search", "--collection", str(col), "a red circle", "--device", "cpu"]) == 0
    assert asked == ["cpu", "cpu"]  # the query is embedded there too


def test_column_flags_are_one_per_registered_modality(monkeypatch):
    from jointspace.cli import _parser
    from jointspace.cli.common import columns
    from jointspace.modalities import MODALITIES, Modality
    monkeypatch.setitem(MODALITIES._items, "tabular", Modality("tabular", is_file=False))
    args = _parser().parse_args(["eval", "m", "--data", "x.csv", "--tabular-column", "row",
                                 "--text-column", "caption"])
    assert columns(args) == {"tabular": "row", "text": "caption"}
    assert columns(_parser().parse_args(["index", "m", "src", "--collection", "c"])) is None


def test_the_old_cli_modules_still_import_with_a_deprecation_warning():
    import importlib
    for old, new in (("jointspace.cli_search", "jointspace.cli.index"),
                     ("jointspace.cli_embed", "jointspace.cli.embed")):
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=new):
            shim = importlib.import_module(old)
        moved = importlib.import_module(new)
        assert all(getattr(shim, name) is getattr(moved, name) for name in vars(moved)
                   if not name.startswith("__") and name not in ("add_verbs", "run"))
    from jointspace import cli_embed, cli_search
    assert cli_search.parse_term("text:red:0.5").weight == 0.5 and callable(cli_embed.add_verb)
