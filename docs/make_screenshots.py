"""Regenerate the screenshots under ``docs/`` that the README shows: ``make screenshots``.

It runs the audio demo (``jointspace demo --audio``: shapes scenes with a picture, a
sound and captions; an image–text model; an audio tower bound to its images, and one
trained on audio–text pairs) into ``--work`` unless a finished one is there, then takes,
in headless chromium (Debian's, as the tests use):

* ``report-first-screen.png`` and ``report-examples.png``: the image–text model's
  ``report.html`` (what the demo's evaluation wrote), its first screen and its
  retrieval examples;
* ``compare.png``: ``compare`` of the bound and the direct audio models on audio and text;
* ``page-text.png``, ``page-image.png``, ``page-audio.png``: the search page over the
  test split (pictures, sounds and captions, indexed with the bound model) queried by
  a caption, by one of the test pictures and by one of the test sounds.

    python docs/make_screenshots.py [--work demo_audio] [--chromium /usr/bin/chromium]
"""
from __future__ import annotations

import argparse
import csv
import shutil
import time
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
WIDTH, HEIGHT = 1280, 900
TEXT_QUERY = "a red circle on the left"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("demo_audio"),
                        help="the audio demo's folder (run there when it has no finished demo)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=DOCS, help="where the PNGs go")
    args = parser.parse_args()
    demo = ensure_demo(args.work)
    compare_html = compare_report(demo)
    collection = search_collection(demo)
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, headless=True,
                                             args=["--no-sandbox", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        shoot_report(page, demo / "eval" / "image_text-image-text" / "report.html", args.out)
        page.goto(compare_html.as_uri())
        page.screenshot(path=str(args.out / "compare.png"))
        shoot_page(page, collection, demo / "data" / "test.csv", args.out)
        browser.close()
    for png in sorted(args.out.glob("*.png")):
        print(f"{png} ({png.stat().st_size / 1e3:.0f} kB)")


def ensure_demo(work: Path) -> Path:
    """``work`` holding a finished audio demo (its last evaluation written), run if not."""
    if not (work / "eval" / "direct-audio-image" / "results.json").is_file():
        from jointspace.demos.audio import run_audio_demo
        print(f"running the audio demo in {work} (about 15 minutes on 2 cores)")
        run_audio_demo(work)
    return work


def compare_report(demo: Path) -> Path:
    from jointspace.eval.compare import compare
    out = demo / "compare-bound-direct"
    compare(demo / "bound", demo / "direct", demo / "data" / "test.csv",
            modalities=["audio", "text"], out_dir=out)
    return out / "report.html"


def search_collection(demo: Path) -> Path:
    """The test split's pictures, sounds and captions indexed with the bound model (rebuilt)."""
    from jointspace.index import index_source
    collection = demo / "collection"
    shutil.rmtree(collection, ignore_errors=True)
    index_source(collection, demo / "bound", demo / "data" / "test.csv")
    return collection


def shoot_report(page: Any, report: Path, out: Path) -> None:
    page.goto(report.as_uri())
    page.screenshot(path=str(out / "report-first-screen.png"))
    box = page.locator("#examples").bounding_box()
    page.screenshot(path=str(out / "report-examples.png"), full_page=True,
                    clip={"x": 0, "y": box["y"], "width": WIDTH, "height": min(box["height"], 1100)})


def shoot_page(page: Any, collection: Path, manifest: Path, out: Path) -> None:
    from jointspace.serve import create_app
    from jointspace.serve.run import serving_in_thread
    row = first_row(manifest)
    root = manifest.parent
    with serving_in_thread(create_app(collection)) as url:
        page.goto(f"{url}/?q={TEXT_QUERY.replace(' ', '+')}")
        page.fill("#q", TEXT_QUERY)
        page.press("#q", "Enter")
        settle(page)
        page.screenshot(path=str(out / "page-text.png"))
        for modality, name in (("image", "page-image.png"), ("audio", "page-audio.png")):
            page.goto(url)
            page.set_input_files("#file", str(root / row[modality]))
            settle(page)
            page.screenshot(path=str(out / name))


def first_row(manifest: Path) -> dict[str, str]:
    with open(manifest, newline="", encoding="utf-8") as f:
        return next(csv.DictReader(f))


def settle(page: Any, timeout: float = 60.0) -> None:
    """Wait for the results and their thumbnails (polled: the page's CSP forbids eval)."""
    ready = ("document.querySelector('#status').textContent.includes('results in') && "
             "[...document.querySelectorAll('#grid img')].every(i => i.complete)")
    deadline = time.monotonic() + timeout
    while not page.evaluate(ready):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page did not show results: {page.inner_text('#status')!r}")
        page.wait_for_timeout(100)


if __name__ == "__main__":
    main()
