"""compare: a model against itself is identical; against another, less so; the CLI."""
import json

from jointspace.cli import main
from jointspace.eval.compare import compare


def test_a_model_compared_with_itself_is_the_same_space(trained_model_dir, shapes_dir, tmp_path):
    out = compare(trained_model_dir, trained_model_dir, shapes_dir / "test.csv", out_dir=tmp_path, k=3)
    for modality in ("image", "text"):
        assert out[modality]["mutual_knn@3"] == 1.0
        assert abs(out[modality]["linear_cka"] - 1.0) < 1e-9
        assert out[modality]["procrustes"]["fit_residual"] < 1e-6
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["image"]["linear_cka"] == out["image"]["linear_cka"]
    assert "mutual k-NN" in (tmp_path / "report.html").read_text()


def test_cli_compares_two_different_models(trained_model_dir, shapes_dir, tmp_path, capsys, tiny_overrides):
    from jointspace.config import load_run_config
    from jointspace.train.trainer import train
    other = tmp_path / "other"
    train(load_run_config(overrides=tiny_overrides + ["train.seed=7", "model.embed_dim=16"]),
          shapes_dir / "train.csv", other)
    code = main(["compare", str(trained_model_dir), str(other), "--data", str(shapes_dir / "test.csv"),
                 "--modalities", "image", "-k", "3", "--out", str(tmp_path / "cmp")])
    printed = capsys.readouterr().out
    assert code == 0 and printed.startswith("image: mutual k-NN")
    result = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert set(result) >= {"image"} and "text" not in result
    assert 0 <= result["image"]["linear_cka"] < 0.999  # different seeds and sizes: not the same space
    assert main(["compare", str(trained_model_dir), str(other), "--data", str(shapes_dir / "test.csv"),
                 "--modalities", "audio"]) == 2
