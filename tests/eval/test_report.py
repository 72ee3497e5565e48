"""report.html: self-contained, and every plot loads in a real browser (Debian's chromium)."""
import re
import shutil
from pathlib import Path

import pytest

from jointspace.eval.run import evaluate

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def report(trained_model_dir, shapes_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    results = evaluate(trained_model_dir, shapes_dir / "test.csv", out_dir=out)
    return out / "report.html", results


def test_report_is_one_offline_file_with_the_numbers(report):
    path, results = report
    page = path.read_text()
    # no network: every image is inline, no script or stylesheet is fetched
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert {"recall at K", "similarity histogram", "modality gap projection", "confusion matrix",
            "training curves"} <= set(images)
    assert f"{results['metrics']['image_retrieval_recall@1']:.3f}" in page
    assert "<h2>Geometry</h2>" in page and len(re.findall(r'alt="hub \d+"', page)) == 10  # thumbnails
    assert f"{results['geometry']['rankme_image']:.3f}" in page


def test_every_plot_loads_in_headless_chromium(report, chromium):
    path, results = report
    with chromium.sync_playwright() as p:
        browser = chromium.launch(p)
        try:
            page = browser.new_page()
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            sizes = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth, e.naturalHeight])")
            text = page.inner_text("body")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert len(sizes) >= 5
    broken = [alt for alt, complete, w, h in sizes if not (complete and w > 0 and h > 0)]
    assert broken == []
    assert f"{results['metrics']['image_retrieval_recall@1']:.3f}" in text
    assert f"{results['zero_shot']['top1']:.3f}" in text
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
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
