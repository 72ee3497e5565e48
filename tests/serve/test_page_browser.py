"""The search page in headless chromium against a real server: a typed query, an image
query by upload, a composed query, pages, and the API key prompt."""
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from jointspace.index import index_source
from jointspace.serve import create_app

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def server(trained_model_dir, shapes_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("page")
    index_source(folder / "col", trained_model_dir, shapes_dir / "test.csv")
    index_source(folder / "col", trained_model_dir, shapes_dir / "val.csv")  # 24 items: 2 pages of 12
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(folder / "col", api_key=None), host="127.0.0.1", port=port,
                            log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", shapes_dir
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def page():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"no {CHROMIUM} on this machine (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-background-networking"])
        try:
            yield browser.new_page(viewport={"width": 1100, "height": 900})
        finally:
            browser.close()


def loaded_thumbnails(page):
    return page.eval_on_selector_all(
        "#grid img", "els => els.filter(e => e.complete && e.naturalWidth > 0).length")


def grid_texts(page):
    return page.eval_on_selector_all("#grid .card", "els => els.map(e => e.innerText)")


def test_search_page_text_upload_composed_and_pages(server, page):
    url, shapes_dir = server
    ARTIFACTS.mkdir(exist_ok=True)
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    page.wait_for_function("document.querySelector('#count').textContent.includes('24 items')")
    page.select_option("#k", "12")
    page.fill("#q", "a red circle")
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelectorAll('#grid .card').length === 12")
    page.wait_for_function("[...document.querySelectorAll('#grid img')].every(i => i.complete)")
    assert loaded_thumbnails(page) == 12
    first_page = grid_texts(page)
    assert "#1 ·" in first_page[0] and "results 1–12" in page.inner_text("#page")
    page.screenshot(path=str(ARTIFACTS / "serve-text.png"), full_page=True)

    page.click("#next")  # the second page: ranks 13–24, other items
    page.wait_for_function("document.querySelector('#page').textContent.includes('13–24')")
    assert "#13 ·" in grid_texts(page)[0] and not set(grid_texts(page)) & set(first_page)
    page.click("#prev")
    page.wait_for_function("document.querySelector('#page').textContent.includes('1–12')")

    # an image query by upload: that image is the first result, at score 1.000
    page.fill("#q", "")
    page.eval_on_selector("#status", "e => { e.textContent = ''; }")  # wait for the new answer
    image = sorted((shapes_dir / "images" / "test").glob("*.png"))[3]
    page.set_input_files("#file", str(image))
    page.wait_for_function("document.querySelector('#status').textContent.includes('results in')")
    page.wait_for_function("[...document.querySelectorAll('#grid img')].every(i => i.complete)")
    assert "1.000" in grid_texts(page)[0] and loaded_thumbnails(page) == 12
    page.screenshot(path=str(ARTIFACTS / "serve-image.png"), full_page=True)

    # a composed query: the same image plus a weighted word changes the ranking
    before = grid_texts(page)
    page.click("#add-term")
    page.fill("#terms .term input[type=text]", "a big blue square")
    page.eval_on_selector("#terms .term input[type=range]", "e => { e.value = 1; }")
    page.click("#go")
    page.wait_for_function(f"document.querySelector('#grid .card').innerText !== {before[0]!r}")
    after = grid_texts(page)
    assert after != before and len(after) == 12
    page.screenshot(path=str(ARTIFACTS / "serve-composed.png"), full_page=True)

    # a bad request shows the server's message
    page.eval_on_selector("#terms .term input[type=text]", "e => { e.value = ''; }")
    page.click("#file-clear")
    page.click("#go")
    assert "type a query" in page.inner_text("#status")
    assert all(u.startswith(url) or u.startswith("data:") or u.startswith("blob:") for u in requests), \
        [u for u in requests if not u.startswith(url)]
    assert (ARTIFACTS / "serve-composed.png").stat().st_size > 10_000
