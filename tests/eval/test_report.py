"""report.html's content: the first screen says what was evaluated and the headline figures
in words (with chance and ceiling), every section answers its question, the qualitative
examples are the protocol's (checked against a brute-force ranking), items are previews."""
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from jointspace.data.manifest import read_manifest
from jointspace.eval.report import describe_folder
from jointspace.eval.retrieval import group_field, group_keys, item_identity
from jointspace.model import load

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _text(page: str) -> str:
    """The page's text, roughly as a reader sees it (tags dropped, entities kept)."""
    import html
    body = page[page.find("<body>"):] if "<body>" in page else page
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))).strip()


def test_the_first_screen_says_which_model_and_data_and_the_headline_figures(eval_report,
                                                                               trained_model_dir):
    path, results = eval_report
    page = path.read_text()
    head = _text(page[:page.index("<section id='retrieval'")])  # everything before the first section
    assert head.startswith(f"{trained_model_dir.name}: image ↔ text evaluation")
    assert "source trained with jointspace" in head and "training steps 12" in head
    counts = load(trained_model_dir).parameter_counts()
    for modality in ("image", "text"):
        n = counts[modality]["trainable"] + counts[modality]["frozen"]
        assert f"{modality}: " in head and f"{n:,} parameters" in head
    assert f"rows {results['n']}" in head and "12 image, 12 text" in head and "quarantined rows 0" in head
    r = results["retrieval"]
    for d, words in (("text_to_image", "text → image"), ("image_to_text", "image → text")):
        assert f"{words} R@1 {r[d]['R@1']:.2f} (chance {r['chance'][d]['R@1']:.2f})" in head
        strict = r["strict"]
        assert (f"{words} strict R@1 {strict[d]['R@1']:.2f} (chance {strict['chance'][d]['R@1']:.2f}, "
                f"ceiling {strict['ceiling'][d]['R@1']:.2f})") in head
    z = results["zero_shot"]
    assert f"zero-shot top-1 {z['top1']:.2f} over {z['n_classes']} classes (chance {z['chance_top1']:.2f})" in head
    # CLIP_benchmark's key names only in the collapsed table at the end
    first = page.index("image_retrieval_recall@1")
    assert page.rfind("<details>", 0, first) > page.index("id='all'")


def test_every_section_answers_its_question(eval_report):
    path, results = eval_report
    page = path.read_text()
    text = _text(page)
    titles = re.findall(r"<h2[^>]*>([^<]+)</h2>", page)
    assert titles == ["Model", "Data", "Headline figures", "Retrieval", "Retrieval examples",
                      "Zero-shot classification", "Probes", "Geometry", "Training", "All figures"]
    for view in ("plain (same text)", "CSLS-scored", "strict (own pair only)", "by label (same label)"):
        assert view in text
    assert f"{results['retrieval']['strict']['ceiling']['text_to_image']['R@1']:.3f}" in text
    assert f"{results['retrieval_by_label']['text_to_image']['R@1']:.3f}" in text
    assert f"{results['linear_probe']['acc1']:.3f}" in text and "k-NN (k = 10)" in text
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert {"recall at K per direction", "similarity histogram", "per-class recall", "confusion matrix",
            "modality gap projection", "training curves"} <= set(images)
    geometry = page[page.index("id='geometry'"):page.index("id='training'")]
    for key, value in results["geometry"].items():
        if isinstance(value, float):  # each measure once, with what good looks like
            assert geometry.count(f">{key.replace('_', ' ')}<") == 1
            assert f"{value:.3f}" in geometry
    assert "lower is better" in geometry and "0.5 means no gap" in geometry


def _brute_force_ranks(a, b, keys, a_ids):
    """0-based rank of each query's best positive, both directions, by explicit loops."""
    items = list(dict.fromkeys(a_ids))
    first = [a_ids.index(i) for i in items]
    item_keys = [{keys[r] for r in range(len(keys)) if a_ids[r] == i} for i in items]
    t2i = []
    for row in range(len(keys)):  # text query → the distinct images
        scores = a[first] @ b[row]
        pos = np.array([keys[row] in ks for ks in item_keys])
        t2i.append(int(((scores >= scores[pos].max()) & ~pos).sum()))
    i2t = []
    for j, item in enumerate(items):  # image query → every row's text
        scores = b @ a[first[j]]
        pos = np.array([keys[r] in item_keys[j] for r in range(len(keys))])
        i2t.append(int(((scores >= scores[pos].max()) & ~pos).sum()))
    return {"text_to_image": (t2i, list(range(len(keys)))), "image_to_text": (i2t, first)}


def test_examples_are_seeded_queries_and_the_worst_failures_marked_correct(eval_report, shapes_dir):
    path, results = eval_report
    page = path.read_text()
    records = read_manifest(shapes_dir / "test.csv", required=("image", "text")).records
    caches = [np.load(f) for f in path.parent.glob("embeddings-*.npz")]
    emb = next(c for c in caches if {"image", "text"} <= set(c.files))  # the vectors the report drew
    keys, _ = group_keys(records, group_field(("image", "text")))
    a_ids = [item_identity(r.fields["image"]) for r in records]
    expected = _brute_force_ranks(emb["image"], emb["text"], keys, a_ids)
    rows = re.findall(r"<div class='row (sample|failure)' data-direction='(\w+)' data-rank='(\d+)' "
                      r"data-row='(\d+)'>(.*?)</div></div>(?=<div class='row|<h3|</section)", page)
    for direction, (ranks, query_rows) in expected.items():
        samples = [r for r in rows if r[0] == "sample" and r[1] == direction]
        failures = [r for r in rows if r[0] == "failure" and r[1] == direction]
        assert len(samples) == 8 and len(failures) == 8
        # failures only (rank > 0), lowest first, each distinct query once (a caption the
        # test split repeats is one query)
        seen, worst = set(), []
        for q in np.argsort(-np.array(ranks), kind="stable"):
            shown = records[query_rows[q]].fields["text" if direction == "text_to_image" else "image"]
            if ranks[q] > 0 and shown not in seen and len(worst) < 8:
                seen.add(shown)
                worst.append(q)
        assert all(int(r[2]) > 0 for r in failures)
        assert [int(r[2]) for r in failures] == [ranks[q] for q in worst]
        assert [int(r[3]) for r in failures] == [query_rows[q] for q in worst]
        for kind, _, rank, row, cards in samples + failures:
            q = query_rows.index(int(row))
            assert int(rank) == ranks[q]
            marks = re.findall(r"data-correct='(\d)' data-item='(\d+)'", cards)
            assert len(marks) >= 5
            for correct, item in marks:  # a mark says whether the answer shares the query's key
                query_keys = {keys[int(row)]} if direction == "text_to_image" else \
                    {keys[r] for r in range(len(keys)) if a_ids[r] == a_ids[int(row)]}
                answer_keys = {keys[r] for r in range(len(keys)) if a_ids[r] == a_ids[int(item)]} \
                    if direction == "text_to_image" else {keys[int(item)]}
                assert (correct == "1") == bool(query_keys & answer_keys)
            if kind == "failure" or ranks[q] == 0:
                assert "data-correct='1'" in cards  # a failure shows its correct answer too
        assert "✓ correct" in page and "✗ wrong" in page


def test_hubs_are_previews_not_paths(eval_report):
    path, results = eval_report
    page = path.read_text()
    hubs = page[page.index("Hubs among the image items"):page.index("Hubs among the text items")]
    thumbnails = re.findall(r"data-hub='(\d+)'><span class='preview'><img alt='hub \d+' "
                            r"src='data:image/jpeg;base64,", hubs)
    assert [int(i) for i in thumbnails] == [i for i, _ in results["geometry"]["hubs_image"][:10]]
    assert ".png" not in _text(hubs)  # no file path printed
    text_hubs = page[page.index("Hubs among the text items"):page.index("id='training'")]
    assert "<span class='text'>" in text_hubs


def test_the_report_is_self_contained_and_small(eval_report):
    path, _ = eval_report
    page = path.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert "<script" not in page and "<link" not in page
    assert path.stat().st_size <= 5_000_000
    assert "<html lang='en'>" in page and "<meta name='viewport'" in page


def test_describe_folder_reads_the_model_without_building_it(trained_model_dir):
    info = describe_folder(trained_model_dir)
    counts = load(trained_model_dir).parameter_counts()
    assert info.name == trained_model_dir.name and info.steps == 12 and not info.imported
    assert {t.modality: t.parameters for t in info.towers} == {
        m: counts[m]["trainable"] + counts[m]["frozen"] for m in ("image", "text")}
    assert info.log and info.log[-1]["step"] == 12 and "scale" in info.log[0]  # the temperature
    assert info.date and info.source == "trained with jointspace"


def test_every_plot_loads_in_headless_chromium(eval_report, chromium):
    path, results = eval_report
    with chromium.sync_playwright() as p:
        browser = chromium.launch(p)
        try:
            page = browser.new_page()
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            sizes = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth, e.naturalHeight])")
            text = page.inner_text("body")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert len(sizes) >= 40  # plots, thumbnails of the examples and the hubs
    broken = [alt for alt, complete, w, h in sizes if not (complete and w > 0 and h > 0)]
    assert broken == []
    assert f"{results['retrieval']['text_to_image']['R@1']:.3f}" in text
    assert f"{results['zero_shot']['top1']:.3f}" in text
    shutil.copy(path, ARTIFACTS / "report.html")


def test_cli_templates_and_classes_files(trained_model_dir, shapes_dir, tmp_path, capsys):
    from jointspace.cli import main
    (tmp_path / "templates.txt").write_text("a photo of a {label}\n\n{label}\n")
    (tmp_path / "classes.txt").write_text("red circle\nblue square\n")
    rows = (shapes_dir / "test.csv").read_text().replace(",images/", f",{shapes_dir}/images/").splitlines()
    kept = [rows[0]] + [r for r in rows[1:] if r.endswith((",red circle", ",blue square"))]
    extra = [r.rsplit(",", 1)[0] + ",red circle" for r in rows[1:3]]  # make sure both exist
    (tmp_path / "t.csv").write_text("\n".join(kept + [e.replace("test-", "x-", 1) for e in extra]) + "\n")
    assert main(["eval", str(trained_model_dir), "--data", str(tmp_path / "t.csv"), "--templates",
                 str(tmp_path / "templates.txt"), "--classes", str(tmp_path / "classes.txt"),
                 "--out", str(tmp_path / "ev"), "--no-report"]) == 0
    import json
    z = json.loads((tmp_path / "ev" / "results.json").read_text())["zero_shot"]
    assert z["templates"] == ["a photo of a {label}", "{label}"] and z["classes"] == ["red circle", "blue square"]
    assert not (tmp_path / "ev" / "report.html").exists()


def test_a_perfect_model_has_no_failures_to_show():
    """Worst failures are failures: with every query's answer ranked first there are none,
    and the section says so instead of showing correct queries as failures."""
    from jointspace.eval.report import qualitative
    emb = np.eye(8, dtype=np.float32)
    found = qualitative.retrieval_examples(emb, emb, [str(i) for i in range(8)], None,
                                           ("image", "text"), n=8, k=3)
    assert [len(d.worst) for d in found] == [0, 0] and [len(d.sampled) for d in found] == [8, 8]
    items = {"image": [f"i{i}" for i in range(8)], "text": [f"t{i}" for i in range(8)]}
    page = qualitative.render(found, items, lambda side, item, label: item)
    assert page.count(": no failures</h3>") == 2 and "worst failures" not in page


def test_many_classes_give_confused_pairs_and_bounded_bars():
    """1,000 classes: no illegible matrix but the most confused pairs, counted right, and a
    bar plot of the worst and best classes only (not 1,000 bars)."""
    import base64
    import io

    from PIL import Image

    from jointspace.eval.report import plots, sections
    n = 1000
    classes = [f"class {i:04d}" for i in range(n)]
    confusion = np.eye(n, dtype=int) * 3
    confusion[5, 7], confusion[9, 2], confusion[9, 9] = 4, 2, 1  # 5 taken for 7 most often
    per_class = {c: confusion[i, i] / confusion[i].sum() for i, c in enumerate(classes)}
    z = {"top1": 0.9, "top5": 1.0, "mean_per_class_recall": 0.9, "n_classes": n, "n": 3006,
         "chance_top1": 1 / n, "per_class_top1": per_class, "classes": classes,
         "confusion": confusion.tolist(), "templates": ["a photo of a {label}"]}
    page = sections.zero_shot_section({"pair": ["image", "text"], "zero_shot": z})
    assert "confusion matrix" not in page and "the most confused pairs" in page
    cells = re.findall(r"<tr><th scope='row'>([^<]*)</th><td>([^<]*)</td><td class='n'>(\d+)</td>", page)
    assert cells[:2] == [("class 0005", "class 0007", "4"), ("class 0009", "class 0002", "2")]
    assert len(cells) == 2  # no other class was ever confused
    png = re.search(r'alt="per-class recall" src="data:image/png;base64,([^"]+)"', page).group(1)
    height = Image.open(io.BytesIO(base64.b64decode(png))).size[1]
    assert height < 0.25 * (plots.MAX_BARS + 1) * 90 + 400  # ~0.22 in per bar at 90 dpi, not 1,000 bars
    assert "the 30 worst and best of 1,000" in page


@pytest.fixture
def drawn(monkeypatch):
    """The figures the report's plots draw, kept (their PNG is then only a placeholder)."""
    from jointspace.eval.report import plots
    figures = []
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or "cGxvdA==")
    return figures


def _lines(ax):
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_training_curves_plot_the_loss_validation_recall_and_temperature(drawn):
    from jointspace.eval.report import plots
    log = [{"step": 10, "loss": 3.0, "scale": 14.3}, {"step": 20, "loss": 2.0, "scale": 20.0},
           {"step": 20, "val_loss": 2.5, "val_text_to_image_R@1": 0.2, "val_image_to_text_R@1": 0.3},
           {"step": 30, "loss": 1.5, "scale": 25.0},
           {"step": 30, "val_loss": 2.1, "val_text_to_image_R@1": 0.4, "val_image_to_text_R@1": 0.5}]
    assert plots.training_curves(log) is not None
    loss, recall, scale = drawn[-1].axes
    assert _lines(loss)["training loss"] == ([10, 20, 30], [3.0, 2.0, 1.5])
    assert _lines(loss)["validation loss"] == ([20, 30], [2.5, 2.1])
    assert _lines(recall)["text → image"] == ([20, 30], [0.2, 0.4])
    assert _lines(recall)["image → text"] == ([20, 30], [0.3, 0.5])
    assert _lines(scale)["logit scale"] == ([10, 20, 30], [14.3, 20.0, 25.0])
    assert [ax.get_xlabel() for ax in (loss, recall, scale)] == ["step"] * 3
    assert recall.get_ylabel() == "validation R@1" and "temperature" in scale.get_ylabel()
    assert plots.training_curves([{"step": 1, "val_loss": 2.0}]) is None  # no training row


def test_the_matryoshka_section_plots_each_size(drawn):
    from jointspace.eval.report import sections
    per_size = {str(d): {"retrieval": {"text_to_image": {"R@1": r}, "image_to_text": {"R@1": r + 0.1}},
                         "zero_shot": {"top1": z}}
                for d, r, z in ((16, 0.1, 0.5), (64, 0.3, 0.7), (32, 0.2, 0.6))}
    page = sections.matryoshka_section({"pair": ["image", "text"], "matryoshka": per_size})
    assert "matryoshka curve" in page
    ys = {label: (x, y) for label, (x, y) in _lines(drawn[-1].axes[0]).items()}
    assert ys["text → image R@1"] == ([16, 32, 64], [0.1, 0.2, 0.3])
    assert ys["zero-shot top-1"] == ([16, 32, 64], [0.5, 0.6, 0.7])
    assert sections.matryoshka_section({"pair": ["image", "text"]}) == ""
