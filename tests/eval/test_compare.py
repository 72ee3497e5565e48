"""compare: a model against itself is identical; against another, less so; the CLI."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from jointspace.cli import main
from jointspace.errors import ConfigError
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
    assert "Only one modality was compared" in (tmp_path / "cmp" / "report.html").read_text()
    assert "own" not in result and result["modalities"] == ["image"]
    assert main(["compare", str(trained_model_dir), str(other), "--data", str(shapes_dir / "test.csv"),
                 "--modalities", "audio"]) == 2


def test_k_outside_1_to_n_minus_1_is_a_config_error(trained_model_dir, shapes_dir, tmp_path):
    """Issue 20: -k 0 and -k 1000 ended in a ValueError traceback after both models embedded."""
    test = shapes_dir / "test.csv"  # 12 rows
    for k in (0, -1):
        with pytest.raises(ConfigError, match=f"must be at least 1: .*; got {k}"):
            compare(trained_model_dir, trained_model_dir, test, k=k)
    with pytest.raises(ConfigError, match="k \\(-k\\) is 1000, but each of the 12 rows compared has only 11"):
        compare(trained_model_dir, trained_model_dir, test, k=1000, out_dir=tmp_path / "c")
    assert not list((tmp_path / "c").glob("embeddings-*"))  # refused before embedding
    two = tmp_path / "two.csv"
    two.write_text("\n".join(test.read_text().splitlines()[:3]).replace(",images/", f",{shapes_dir}/images/"))
    with pytest.raises(ConfigError, match="needs at least 4 valid rows"):
        compare(trained_model_dir, trained_model_dir, two, k=1)


@pytest.mark.parametrize("k, message", [("0", "k (-k) must be at least 1"),
                                        ("1000", "k (-k) is 1000, but each of the 12 rows")])
def test_cli_k_errors_are_one_line(trained_model_dir, shapes_dir, k, message):
    proc = subprocess.run([sys.executable, "-m", "jointspace.cli", "compare", str(trained_model_dir),
                           str(trained_model_dir), "--data", str(shapes_dir / "test.csv"), "-k", k],
                          capture_output=True, text=True, env={**os.environ, "JOINTSPACE_QUIET": "1"},
                          timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr


def test_cli_without_out_writes_beside_model_a_and_says_where(trained_model_dir, shapes_dir, tmp_path,
                                                               capsys):
    """Issue 20: without --out nothing was written and nothing said so; now MODEL_A/compare-<B>."""
    a = shutil.copytree(trained_model_dir, tmp_path / "a")
    assert main(["compare", str(a), str(trained_model_dir), "--data", str(shapes_dir / "test.csv"),
                 "-k", "3"]) == 0
    out = a / f"compare-{trained_model_dir.name}"
    assert f"results: {out / 'results.json'}" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["image"]["mutual_knn@3"] == 1.0
    assert (out / "report.html").is_file()


def test_a_manifest_without_the_shared_columns_names_the_cause(trained_model_dir, tmp_path):
    (tmp_path / "m.csv").write_text("Image,Text\na.png,hello\n")
    with pytest.raises(ConfigError, match="no 'image' column; 'Image' differs only in case — rename it "
                                          "or pass --image-column Image"):
        compare(trained_model_dir, trained_model_dir, tmp_path / "m.csv")


def test_each_model_is_scored_by_itself_as_evaluate_scores_it(compare_report, eval_report):
    _, results = compare_report
    _, evaluated = eval_report  # the first model alone on the same rows
    own = results["own"]["a"]
    assert results["pair"] == ["image", "text"] and set(results["own"]) == {"a", "b"}
    for d in ("text_to_image", "image_to_text"):
        for k in ("R@1", "R@5", "R@10", "median_rank"):
            assert own["retrieval"][d][k] == evaluated["retrieval"][d][k]
        assert own["retrieval"]["strict"]["ceiling"][d] == evaluated["retrieval"]["strict"]["ceiling"][d]
    assert own["zero_shot"]["top1"] == evaluated["zero_shot"]["top1"]
    assert results["own"]["b"]["retrieval"]["text_to_image"]["R@1"] != own["retrieval"]["text_to_image"]["R@1"] \
        or results["own"]["b"]["zero_shot"]["top1"] != own["zero_shot"]["top1"]


def test_disagreements_and_least_shared_neighbours_are_the_extremes(compare_report):
    import math
    _, results = compare_report
    for d, found in results["disagreements"].items():
        gaps = [abs(math.log(e["rank_a"]) - math.log(e["rank_b"])) for e in found]
        assert found and gaps == sorted(gaps, reverse=True) and all(g > 0 for g in gaps)
        assert len({e["row"] for e in found}) == len(found)
    for m in ("image", "text"):
        shared = [e["shared"] for e in results[m]["least_shared_neighbours"]]
        assert len(shared) == 8 and shared == sorted(shared) and all(0 <= s <= 3 for s in shared)
        assert shared[0] <= 3 * results[m]["mutual_knn@3"]  # the least is at most the mean
        assert -1 <= results[m]["similarity_correlation"] <= 1
    p = results["pair_similarity"]
    assert p["n_paired"] == 12 and p["n_unpaired"] > 1000 and -1 <= p["correlation"] <= 1


def test_the_compare_report_puts_both_models_side_by_side(compare_report, trained_model_dir, other_model_dir):
    import re
    path, results = compare_report
    page = path.read_text()
    a, b = trained_model_dir.name, other_model_dir.name
    assert f"<h1>{a} vs {b}: how alike the two spaces are</h1>" in page
    assert "<h2>Model A: m</h2>" in page and f"<h2>Model B: {b}</h2>" in page
    titles = re.findall(r"<h2[^>]*>([^<]+)</h2>", page)
    assert titles[3:] == ["Headline figures", "Each model by itself", "How alike the spaces are",
                          "The same pairs in both spaces", "Where the two disagree most"]
    own = results["own"]
    r1 = f"text → image R@1: {a} {own['a']['retrieval']['text_to_image']['R@1']:.2f}, {b} " \
         f"{own['b']['retrieval']['text_to_image']['R@1']:.2f}"
    assert r1 in page
    assert "about k / (N − 1) for unrelated spaces" in page and "equal up to rotation" in page
    assert f"{results['image']['linear_cka']:.3f}" in page
    for m in results["modalities"]:  # the table's row: mutual k-NN, CKA, Procrustes R@1/5/10, chance
        r, p = results[m], results[m]["procrustes"]
        knn = next(key for key in r if key.startswith("mutual_knn"))
        cells = "".join(f"<td class='n'>{v:.3f}</td>" for v in
                        (r[knn], r["linear_cka"], p["R@1"], p["R@5"], p["R@10"], 1 / p["n_test"]))
        assert f"<th scope='row'>{m}</th>{cells}" in page
    assert 'alt="similarities of image–text pairs in both spaces"' in page
    rows = re.findall(r"<div class='row disagreement' data-row='(\d+)'>", page)
    assert [int(r) for r in rows] == [e["row"] for d in results["disagreements"].values() for e in d]
    assert page.count("src='data:image/jpeg;base64,") >= 3 * len(rows) // 2
    assert "neighbours differ most" in page
    assert path.stat().st_size <= 5_000_000
