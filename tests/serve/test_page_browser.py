"""The search page in headless chromium against a real server: a typed query, pages, an
image query by upload, a composed query, the API key prompt, and audio players.

The page is served with its Content-Security-Policy, so these runs also show the page
works under it (Playwright's own ``wait_for_function`` would need ``unsafe-eval``: the
waits below poll with ``page.evaluate`` instead)."""
import numpy as np
import pytest

from jointspace.index import index_source
from jointspace.serve import create_app
from page_helpers import ARTIFACTS, running, wait_until


@pytest.fixture(scope="module")
def collection(trained_model_dir, shapes_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("page")
    index_source(folder / "col", trained_model_dir, shapes_dir / "test.csv")
    index_source(folder / "col", trained_model_dir, shapes_dir / "val.csv")  # 24 items: 2 pages of 12
    return folder / "col"


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.csp_errors = []
    page.on("console", lambda m: "Content Security Policy" in m.text and page.csp_errors.append(m.text))
    try:
        yield page
    finally:
        context.close()


def loaded_thumbnails(page):
    return page.eval_on_selector_all(
        "#grid img", "els => els.filter(e => e.complete && e.naturalWidth > 0).length")


def grid_texts(page):
    return page.eval_on_selector_all("#grid .card", "els => els.map(e => e.innerText)")


ALL_LOADED = "[...document.querySelectorAll('#grid img')].every(i => i.complete && i.src)"


def test_search_page_text_upload_composed_and_pages(collection, shapes_dir, page):
    ARTIFACTS.mkdir(exist_ok=True)
    with running(create_app(collection)) as url:
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url)
        wait_until(page, "document.querySelector('#count').textContent.includes('24 items')")
        page.select_option("#k", "12")
        page.fill("#q", "a red circle")
        page.press("#q", "Enter")
        wait_until(page, "document.querySelectorAll('#grid .card').length === 12")
        wait_until(page, ALL_LOADED)
        assert loaded_thumbnails(page) == 12
        first_page = grid_texts(page)
        assert "#1 ·" in first_page[0] and "results 1–12" in page.inner_text("#page")
        page.screenshot(path=str(ARTIFACTS / "serve-text.png"), full_page=True)

        page.click("#next")  # the second page: ranks 13–24, other items
        wait_until(page, "document.querySelector('#page').textContent.includes('13–24')")
        assert "#13 ·" in grid_texts(page)[0] and not set(grid_texts(page)) & set(first_page)
        page.click("#prev")
        wait_until(page, "document.querySelector('#page').textContent.includes('1–12')")

        # an image query by upload: that image is the first result, at score 1.000
        page.fill("#q", "")
        page.eval_on_selector("#status", "e => { e.textContent = ''; }")  # wait for the new answer
        image = sorted((shapes_dir / "images" / "test").glob("*.png"))[3]
        page.set_input_files("#file", str(image))
        wait_until(page, "document.querySelector('#status').textContent.includes('results in')")
        wait_until(page, ALL_LOADED)
        assert "1.000" in grid_texts(page)[0] and loaded_thumbnails(page) == 12
        assert page.inner_text("#file-name") == image.name
        page.screenshot(path=str(ARTIFACTS / "serve-image.png"), full_page=True)

        # a composed query: the same image plus a weighted word changes the ranking
        before = grid_texts(page)
        page.click("#add-term")
        page.fill("#terms .term input[type=text]", "a big blue square")
        page.eval_on_selector("#terms .term input[type=range]", "e => { e.value = 1; e.dispatchEvent(new Event('input')); }")
        page.click("#go")
        wait_until(page, f"document.querySelector('#grid .card').innerText !== {before[0]!r}")
        wait_until(page, ALL_LOADED)
        assert page.inner_text("#terms .term output") == "1"
        after = grid_texts(page)
        assert after != before and len(after) == 12 and loaded_thumbnails(page) == 12
        page.screenshot(path=str(ARTIFACTS / "serve-composed.png"), full_page=True)

        # nothing to search for: the page says so; a server error shows the server's message
        page.eval_on_selector("#terms .term input[type=text]", "e => { e.value = ''; }")
        page.click("#file-clear")
        page.click("#go")
        assert "type a query" in page.inner_text("#status")
        page.fill("#q", "a")
        page.eval_on_selector("#k", "e => { e.add(new Option('5000')); e.value = '5000'; }")
        page.click("#go")
        wait_until(page, "document.querySelector('#status').className === 'error'")
        assert "k must be at most 1000" in page.inner_text("#status")
    assert all(u.startswith((url, "data:", "blob:")) for u in requests), \
        [u for u in requests if not u.startswith(url)]
    assert page.csp_errors == []
    assert (ARTIFACTS / "serve-composed.png").stat().st_size > 10_000


def test_search_page_with_an_api_key(collection, page):
    with running(create_app(collection, api_key="page-key")) as url:
        page.goto(url)
        page.fill("#q", "a green star")
        page.press("#q", "Enter")
        wait_until(page, "document.querySelector('#status').textContent.includes('401')")
        assert "type the API key below" in page.inner_text("#status")
        assert page.evaluate("document.activeElement.id") == "key"
        page.fill("#key", "page-key")
        page.press("#key", "Enter")
        wait_until(page, "document.querySelectorAll('#grid .card').length === 24")
        wait_until(page, ALL_LOADED)
        # <img src> cannot carry the key: thumbnails arrive by fetch() as blob URLs
        assert loaded_thumbnails(page) == 24
        assert page.eval_on_selector_all("#grid img", "els => els.every(e => e.src.startsWith('blob:'))")
        page.screenshot(path=str(ARTIFACTS / "serve-key.png"), full_page=True)
        page.reload()  # the key is kept in this browser
        assert page.input_value("#key") == "page-key"
        page.fill("#q", "a green star")
        page.fill("#key", "wrong")
        page.press("#key", "Enter")
        wait_until(page, "document.querySelector('#status').textContent.includes('wrong API key')")
    assert page.csp_errors == []


@pytest.fixture(scope="module")
def audio_collection(tmp_path_factory, image_audio_model_dir):
    """Six tones indexed by an untrained image+audio model: the page's mechanics need
    audio items, not a good model."""
    from jointspace.data.sounds import write_wav

    folder = tmp_path_factory.mktemp("page-audio")
    (folder / "sounds").mkdir()
    t = np.arange(8000) / 16_000
    for hz in (220, 330, 440, 550, 660, 880):
        write_wav(folder / "sounds" / f"tone-{hz}.wav", (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32))
    index_source(folder / "col", image_audio_model_dir, folder / "sounds")
    return folder


def test_audio_results_get_players_that_load(audio_collection, page):
    with running(create_app(audio_collection / "col")) as url:
        page.goto(url)
        page.set_input_files("#file", str(audio_collection / "sounds" / "tone-440.wav"))
        wait_until(page, "document.querySelectorAll('#grid .card audio').length === 6")
        assert "tone-440.wav" in grid_texts(page)[0] and "1.000" in grid_texts(page)[0]
        assert page.eval_on_selector_all("#grid img", "els => els.length") == 0
        page.eval_on_selector("#grid audio", "a => a.load()")  # players fetch nothing until asked
        wait_until(page, "document.querySelector('#grid audio').readyState >= 1")
        duration = page.eval_on_selector("#grid audio", "a => a.duration")
        page.screenshot(path=str(ARTIFACTS / "serve-audio.png"), full_page=True)
    assert duration == pytest.approx(0.5, abs=0.01)
    assert page.csp_errors == []


def test_docs_page_renders_offline(image_audio_model_dir, media_dir, tmp_path, page):
    """Swagger UI lists the operations with every request but this server's refused (issue
    20: FastAPI's default page loads it from a CDN, and was blank offline)."""
    index_source(tmp_path / "col", image_audio_model_dir, media_dir)
    with running(create_app(tmp_path / "col")) as url:
        outside = []

        def only_local(route):
            if route.request.url.startswith(url):
                return route.continue_()
            outside.append(route.request.url)
            return route.abort()
        page.route("**/*", only_local)
        page.goto(url + "/docs")
        wait_until(page, "document.querySelectorAll('.opblock-summary-path').length >= 4")
        paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.innerText)")
        assert {"/search", "/search/upload", "/healthz", "/readyz"} <= {p.strip() for p in paths}
        page.screenshot(path=str(ARTIFACTS / "serve-docs.png"), full_page=False)
        assert outside == []


def test_each_hit_is_shown_by_its_modalitys_preview_kind(image_audio_model_dir, media_dir, tmp_path, page):
    """Issue 22: the page asks GET /modalities and renders a hit by its preview kind (a
    picture an <img>, a clip an <audio> player), not by modality names of its own; an
    uploaded file is sent without a modality, recognised by the server from its bytes."""
    import json

    index_source(tmp_path / "col", image_audio_model_dir, media_dir)  # 3 pictures, 3 clips
    with running(create_app(tmp_path / "col")) as url:
        sent = []
        page.on("request", lambda r: r.url.endswith("/search") and sent.append(json.loads(r.post_data)))
        page.goto(url)
        # everything the collection holds (the default), or one of its two modalities
        wait_until(page, "document.querySelectorAll('#target option').length === 3")
        accept = page.get_attribute("#file", "accept").split(",")  # the uploadable plug-ins' suffixes
        assert {".wav", ".mp3", ".png", ".jpg"} <= set(accept)
        page.select_option("#target", "audio")
        page.set_input_files("#file", str(media_dir / "tone-440.wav"))
        wait_until(page, "document.querySelectorAll('#grid .card').length === 3")
        cards = page.eval_on_selector_all("#grid .card", "els => els.map(e => [e.dataset.modality, "
                                          "e.querySelector('audio') !== null, e.querySelector('img') !== null])")
        assert cards == [["audio", True, False]] * 3
        assert "tone-440.wav" in grid_texts(page)[0] and "1.000" in grid_texts(page)[0]
        assert page.eval_on_selector("#file-preview audio", "a => a.src.startsWith('blob:')")
        assert sent[-1]["terms"] == [{"data": sent[-1]["terms"][0]["data"], "weight": 1}]  # no modality
        assert sent[-1]["target"] == "audio"

        page.select_option("#target", "image")  # the same query, the pictures searched
        wait_until(page, "[...document.querySelectorAll('#grid .card')].every(c => c.dataset.modality "
                         "=== 'image') && document.querySelectorAll('#grid .card').length === 3")
        wait_until(page, ALL_LOADED)
        assert loaded_thumbnails(page) == 3 and page.eval_on_selector_all("#grid audio", "els => els.length") == 0
        srcs = page.eval_on_selector_all("#grid img", "els => els.map(e => e.getAttribute('src'))")
        assert all(s.endswith("/preview") for s in srcs), srcs
        page.screenshot(path=str(ARTIFACTS / "serve-modalities.png"), full_page=True)
    assert page.csp_errors == []
