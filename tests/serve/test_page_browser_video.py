"""The search page with clips (issue 24) in headless chromium, under its Content-Security-
Policy: a clip's card shows its poster (an image, as the plug-in's preview kind says), the
detail view plays the file in a <video> whose metadata loads (with a key, as a blob: URL
fetched only when the user asks, aborted when the dialog closes, refused over a size
limit), the file picker takes clips, an uploaded clip is shown and searched with, and a
clip jointspace cannot read is refused in a sentence. Pictures in the same
collection keep their <img> in the grid and the detail view."""
import pytest

pytest.importorskip("av")

from jointspace.index import index_source  # noqa: E402
from jointspace.serve import create_app  # noqa: E402
from page_helpers import ARTIFACTS, running, wait_until  # noqa: E402
from video_media import CLIPS, shape_clips, video_model  # noqa: E402

CARDS = "document.querySelectorAll('#grid .card').length"
POSTERS_LOADED = ("[...document.querySelectorAll('#grid .card img')].length === 2 * %d && [...document"
                  ".querySelectorAll('#grid .card img')].every(i => i.complete && i.naturalWidth > 0)" % CLIPS)
DETAIL_VIDEO = "document.querySelector('#detail-media video')"


@pytest.fixture(scope="module")
def clips_col(tmp_path_factory):
    """Six clips (``videos/``) and their six posters (``images/``) in one collection."""
    folder = tmp_path_factory.mktemp("video-page")
    clips = shape_clips(folder / "clips")
    (clips / "test.csv").unlink()  # a folder of files: each clip and each poster an item
    index_source(folder / "col", video_model(folder), clips)
    return folder / "col", clips


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    errors = []
    page.on("console", lambda m: "Content Security Policy" in m.text and errors.append(m.text))
    yield page
    assert errors == []
    context.close()


def cards(page):
    return page.eval_on_selector_all("#grid .card", "els => els.map(e => [e.dataset.modality, "
                                     "e.querySelector('img') !== null, e.innerText.includes('plays as a video')])")


def open_first(page, modality):
    page.click(f"#grid .card[data-modality={modality}] .open")
    wait_until(page, "document.querySelector('#detail').open")


def test_posters_in_the_grid_and_the_clip_plays_in_the_detail_view(clips_col, page):
    col, clips = clips_col
    with running(create_app(col)) as url:
        page.goto(url)
        wait_until(page, "document.querySelectorAll('#target option').length === 3")
        accept = page.get_attribute("#file", "accept").split(",")
        assert {".mp4", ".webm", ".mov", ".png"} <= set(accept)
        page.fill("#q", "a red circle moves to the left")
        page.press("#q", "Enter")
        wait_until(page, f"{CARDS} === {2 * CLIPS}")
        wait_until(page, POSTERS_LOADED)
        shown = cards(page)
        assert sorted(shown) == [["image", True, False]] * CLIPS + [["video", True, True]] * CLIPS
        poster = page.eval_on_selector("#grid .card[data-modality=video] img",
                                       "i => [i.getAttribute('src'), i.naturalWidth]")
        assert poster[0].endswith("/preview") and poster[1] == 32
        assert page.eval_on_selector_all("#grid video", "els => els.length") == 0  # no player in the grid
        page.screenshot(path=str(ARTIFACTS / "serve-video-grid.png"), full_page=True)

        open_first(page, "video")
        wait_until(page, f"{DETAIL_VIDEO} !== null && {DETAIL_VIDEO}.readyState >= 1", timeout=30)
        video = page.eval_on_selector("#detail-media video", "v => [v.getAttribute('src'), v.duration, "
                                      "v.videoWidth, v.controls, v.preload, v.getAttribute('poster')]")
        assert video[0].startswith("/items/") and video[0].endswith("/file")
        assert video[1] == pytest.approx(0.75, abs=0.01) and video[2:5] == [32, True, "metadata"]
        assert video[5] == video[0].replace("/file", "/preview")  # the poster frame until it plays
        assert "video" in page.inner_text("#detail-info")
        page.screenshot(path=str(ARTIFACTS / "serve-video-detail.png"))
        page.keyboard.press("Escape")
        wait_until(page, "!document.querySelector('#detail').open")

        open_first(page, "image")  # a picture's detail view still shows the picture
        wait_until(page, "document.querySelector('#detail-media img') !== null && document.querySelector("
                         "'#detail-media img').complete && document.querySelector('#detail-media img')"
                         ".naturalWidth > 0")
        assert page.eval_on_selector_all("#detail-media video", "els => els.length") == 0
        page.keyboard.press("Escape")


def test_an_uploaded_clip_is_shown_and_finds_itself(clips_col, page):
    col, clips = clips_col
    query = sorted((clips / "videos" / "test").glob("*.mp4"))[4]
    with running(create_app(col)) as url:
        page.goto(url)
        wait_until(page, "document.querySelectorAll('#target option').length === 3")
        page.select_option("#target", "video")
        page.set_input_files("#file", str(query))
        wait_until(page, f"{CARDS} === {CLIPS}")
        first = page.eval_on_selector("#grid .card", "c => [c.dataset.modality, c.innerText]")
        assert first[0] == "video" and query.name in first[1]
        wait_until(page, "document.querySelector('#file-preview video') !== null && "
                         "document.querySelector('#file-preview video').readyState >= 1")
        assert page.eval_on_selector("#file-preview video", "v => v.src.startsWith('blob:')")
        assert page.inner_text("#file-name") == query.name
        page.screenshot(path=str(ARTIFACTS / "serve-video-upload.png"), full_page=True)

        broken = clips / "x.mp4"
        broken.write_bytes(query.read_bytes()[:400])
        page.set_input_files("#file", str(broken))
        wait_until(page, "document.querySelector('#status').classList.contains('error')")
        assert page.inner_text("#status").startswith("“x.mp4” is not a video jointspace can read.")
        assert page.eval_on_selector_all("#grid .card", "els => els.length") == 0


def slow_files(app, delay):
    """``app`` with its answers to ``/items/{id}/file`` held back ``delay["s"]`` seconds: a
    fetch the page aborts is still under way when the test closes the dialog."""
    import asyncio

    @app.middleware("http")
    async def hold(request, call_next):
        if request.url.path.endswith("/file"):
            await asyncio.sleep(delay["s"])
        return await call_next(request)
    return app


def open_with_key(page, url):
    page.goto(url)
    page.fill("#key", "clips")
    page.fill("#q", "a shape")
    page.press("#q", "Enter")  # the page learns the modalities once the key is given
    wait_until(page, "document.querySelectorAll('#target option').length === 3")
    page.select_option("#target", "video")
    wait_until(page, f"{CARDS} === {CLIPS} && document.querySelectorAll('#grid .card"
                     f"[data-modality=video]').length === {CLIPS}")
    wait_until(page, "[...document.querySelectorAll('#grid img')].every(i => i.complete && "
                     "i.naturalWidth > 0 && i.src.startsWith('blob:'))")


def test_with_a_key_the_clip_is_fetched_only_when_asked_and_aborted_on_close(clips_col, page):
    """A player cannot send the key, so with one the file comes as a whole blob: not when the
    detail view opens (its poster does), only when the user asks; closing the dialog aborts
    the fetch; a file over the page's size limit is refused in a sentence."""
    col, _ = clips_col
    delay = {"s": 0.0}
    files, failed = [], []
    page.on("request", lambda r: r.url.endswith("/file") and files.append(r.url))
    page.on("requestfailed", lambda r: r.url.endswith("/file") and failed.append(r.failure))
    with running(slow_files(create_app(col, api_key="clips"), delay)) as url:
        open_with_key(page, url)
        open_first(page, "video")
        wait_until(page, f"{DETAIL_VIDEO} !== null && {DETAIL_VIDEO}.poster.startsWith('blob:')")
        page.wait_for_timeout(500)
        assert files == []  # the poster, not the file
        assert page.eval_on_selector("#detail-media video", "v => [v.getAttribute('src'), v.readyState]") \
            == [None, 0]
        page.click("#detail-media .load-file")
        wait_until(page, f"{DETAIL_VIDEO}.readyState >= 1", timeout=30)
        src, duration = page.eval_on_selector("#detail-media video", "v => [v.src, v.duration]")
        assert src.startswith("blob:") and duration == pytest.approx(0.75, abs=0.01)
        assert len(files) == 1 and page.eval_on_selector_all("#detail-media .load-file", "b => b.length") == 0
        page.keyboard.press("Escape")
        wait_until(page, "!document.querySelector('#detail').open")

        delay["s"] = 2.0  # closed mid-fetch: aborted, and the player gets nothing
        open_first(page, "video")
        page.click("#detail-media .load-file")
        wait_until(page, "document.querySelector('#detail-media .load-file').disabled")
        page.wait_for_timeout(300)
        page.keyboard.press("Escape")
        page.wait_for_timeout(2500)  # past the server's answer
        assert len(files) == 2 and failed == ["net::ERR_ABORTED"]
        assert page.eval_on_selector("#detail-media video", "v => v.getAttribute('src')") is None
        assert page.evaluate("detailUrls.length") == 0

        delay["s"] = 0.0  # a file over the limit is refused, not loaded
        open_first(page, "video")
        page.evaluate("blobLimit = 100")
        page.click("#detail-media .load-file")
        wait_until(page, "document.querySelector('#detail-media p[role=status]') !== null")
        said = page.inner_text("#detail-media p[role=status]")
        assert said.startswith("The file was not loaded: it is") and "more than the page loads" in said
        assert page.eval_on_selector("#detail-media video", "v => v.getAttribute('src')") is None
        assert len(files) == 3
