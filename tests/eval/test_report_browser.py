"""The reports as a new user opens them, in headless chromium: the first screen says what was
evaluated, nothing is wider than the window at 1280 or 390 px, no request leaves the file,
and axe-core finds no serious or critical accessibility violation."""
from __future__ import annotations

from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _open(chromium, p, path: Path, width: int, height: int = 800):
    """A page of ``path`` in a fresh context, every request but the file's own refused and
    recorded (``page.refused``)."""
    browser = chromium.launch(p)
    context = browser.new_context(viewport={"width": width, "height": height})
    refused: list[str] = []

    def route(r):
        if r.request.url == path.as_uri():
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("request", lambda r: None if r.url == path.as_uri() or r.url.startswith("data:")
            else refused.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    page.refused = refused
    return browser, page


#: elements wider than the window, or whose right edge passes it (scrollable wrappers'
#: contents excepted: they scroll inside a box that fits)
OVERFLOW = """() => {
  const w = document.documentElement.clientWidth;
  const inside = el => { for (let p = el.parentElement; p; p = p.parentElement)
      if (p.classList.contains('scroll')) return true; return false; };
  const wide = [];
  for (const el of document.querySelectorAll('body *')) {
    if (inside(el)) continue;
    const r = el.getBoundingClientRect();
    if (r.width > w + 0.5 || r.right > w + 0.5)
      wide.push(el.tagName + '.' + el.className + ' ' + Math.round(r.width) + '/' + Math.round(r.right));
  }
  return {wide, scrollWidth: document.documentElement.scrollWidth, width: w};
}"""


@pytest.fixture(scope="module", params=["report", "compare"])
def report_path(request, eval_report, compare_report) -> Path:
    return (eval_report if request.param == "report" else compare_report)[0]


def test_the_first_screen_holds_the_model_and_the_headline_sentences(eval_report, trained_model_dir,
                                                                     chromium):
    path, results = eval_report
    with chromium.sync_playwright() as p:
        browser, page = _open(chromium, p, path, 1280, 800)
        try:
            visible = page.evaluate("""() => [...document.querySelectorAll('h1, .headline li, dd')]
                .filter(e => e.getBoundingClientRect().bottom <= window.innerHeight)
                .map(e => e.innerText)""")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report-first-screen.png"))
        finally:
            browser.close()
    assert visible[0] == f"{trained_model_dir.name}: image ↔ text evaluation"
    assert trained_model_dir.name in visible and "trained with jointspace" in visible
    r = results["retrieval"]
    for d, words in (("text_to_image", "text → image"), ("image_to_text", "image → text")):
        assert any(v.startswith(f"{words} R@1 {r[d]['R@1']:.2f} (chance ") for v in visible), visible
        assert any(v.startswith(f"{words} strict R@1 ") and ", ceiling " in v for v in visible), visible
    assert any(v.startswith("zero-shot top-1 ") for v in visible)


@pytest.mark.parametrize("width", [1280, 390])
def test_nothing_is_wider_than_the_window(report_path, chromium, width):
    with chromium.sync_playwright() as p:
        browser, page = _open(chromium, p, report_path, width)
        try:
            found = page.evaluate(OVERFLOW)
        finally:
            browser.close()
    assert found["wide"] == [] and found["scrollWidth"] <= width, found


def test_no_request_leaves_the_file(report_path, chromium):
    with chromium.sync_playwright() as p:
        browser, page = _open(chromium, p, report_path, 1280)
        try:
            shown = page.eval_on_selector_all("img", "els => els.every(e => e.complete && e.naturalWidth > 0)")
            page.mouse.wheel(0, 100_000)  # anything lazily loaded would ask now
            page.wait_for_timeout(200)
            refused = list(page.refused)
        finally:
            browser.close()
    assert refused == [] and shown


def test_no_serious_accessibility_violation(report_path, chromium):
    from axe_playwright_python.sync_playwright import Axe
    with chromium.sync_playwright() as p:
        browser, page = _open(chromium, p, report_path, 1280)
        try:
            results = Axe().run(page)
        finally:
            browser.close()
    bad = [f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes'][:3]]}"
           for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert bad == [], "\n".join(bad)
