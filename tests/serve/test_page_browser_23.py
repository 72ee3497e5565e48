"""The search page of issue 23 in headless chromium, under its Content-Security-Policy:
the target-modality selector, filters built from GET /fields and the total count, errors
that replace the results in plain words, the detail view with "more like this", the query
in the page's address, an API key, previews of items indexed from shards, no element wider
than the viewport at 1280 and 390 px, and axe-core's accessibility check."""
import json
import urllib.request

import pytest

from jointspace.serve import create_app
from page_helpers import ARTIFACTS, running, wait_until

CARDS = "document.querySelectorAll('#grid .card').length"
IMAGES_LOADED = ("[...document.querySelectorAll('#grid img')].length > 0 && [...document.querySelectorAll("
                 "'#grid img')].every(i => i.complete && i.naturalWidth > 0)")


@pytest.fixture(scope="module")
def mixed_url(mixed_col):
    with running(create_app(mixed_col)) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_url(mixed_col):
    with running(create_app(mixed_col, api_key="page-23")) as url:
        yield url


@pytest.fixture(scope="module")
def shard_url(shard_col):
    with running(create_app(shard_col)) as url:
        yield url


def new_page(browser, width=1100, height=900):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.csp_errors = []
    page.on("console", lambda m: "Content Security Policy" in m.text and page.csp_errors.append(m.text))
    return page


@pytest.fixture
def page(browser):
    page = new_page(browser)
    yield page
    assert page.csp_errors == []
    page.context.close()


def api_total(url, body, key=None):
    request = urllib.request.Request(f"{url}/search", data=json.dumps(body).encode(), headers={
        "Content-Type": "application/json", **({"X-API-Key": key} if key else {})})
    with urllib.request.urlopen(request) as answer:
        return json.loads(answer.read())["total"]


def shown_total(page):
    text = page.inner_text("#total")
    return int(text.split()[0].replace(",", ""))


def card_modalities(page):
    return page.eval_on_selector_all("#grid .card", "els => els.map(e => e.dataset.modality)")


def search(page, url, query="a red circle"):
    page.goto(url)
    wait_until(page, "document.querySelectorAll('#target option').length === 4")
    page.fill("#q", query)
    page.press("#q", "Enter")
    wait_until(page, f"{CARDS} === 12")


def test_the_target_switch_changes_the_result_modalities(mixed_url, page):
    search(page, mixed_url)
    # by default everything the collection holds: pictures, tones and texts, merged
    assert page.input_value("#target") == "image,audio,text"
    assert sorted(set(card_modalities(page))) == ["audio", "image", "text"] and shown_total(page) == 12
    for modality in ("audio", "text", "image"):
        page.select_option("#target", modality)
        wait_until(page, f"{CARDS} === 4 && [...document.querySelectorAll('#grid .card')]"
                         f".every(c => c.dataset.modality === '{modality}')")
        assert shown_total(page) == 4
    wait_until(page, IMAGES_LOADED)
    page.select_option("#target", "image,audio,text")
    wait_until(page, f"{CARDS} === 12")
    assert page.eval_on_selector_all("#grid .card audio", "els => els.length") == 4


def test_a_filter_narrows_the_count_to_the_apis_total(mixed_url, page):
    def fewer_names(route):  # as the server lists a field with more values than it sends
        answer = route.fetch()
        fields = answer.json()
        for field in fields["fields"]:
            if field["name"] == "name":
                field["values"] = field["values"][:3]
        route.fulfill(response=answer, json=fields)
    page.route("**/fields", fewer_names)
    search(page, mixed_url, "a")
    assert shown_total(page) == 12
    page.click("#filters summary")
    options = page.eval_on_selector("select[data-field=folder]", "s => [...s.options].map(o => o.textContent)")
    assert options == ["any", "day (6)", "night (6)"]
    # a field with more values than listed is a text box, the listed ones its suggestions
    assert page.eval_on_selector("input[data-field=name]", "e => e.list.options.length") == 3
    page.select_option("select[data-field=folder]", "night")
    wait_until(page, "document.querySelector('#total').textContent.startsWith('6 ')")
    body = {"text": "a", "target": "image,audio,text", "where": {"folder": "night"}}
    assert shown_total(page) == api_total(mixed_url, body) == 6 and page.eval_on_selector_all(
        "#grid .card", "els => els.length") == 6
    page.select_option("#target", "audio")  # the filter and the target together
    wait_until(page, "document.querySelector('#total').textContent.startsWith('2 ')")
    assert shown_total(page) == api_total(mixed_url, {**body, "target": "audio"}) == 2
    page.fill("input[data-field=name]", "tone-440.wav")
    page.press("input[data-field=name]", "Enter")
    wait_until(page, "document.querySelector('#total').textContent.startsWith('1 ')")
    assert "tone-440.wav" in page.inner_text("#grid .card")


def test_a_failed_upload_clears_the_results_and_says_why_plainly(mixed_url, page, tmp_path):
    search(page, mixed_url)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a picture at all")
    page.set_input_files("#file", str(broken))
    wait_until(page, "document.querySelector('#status').className === 'error'")
    status = page.inner_text("#status")
    assert status.startswith("“broken.png” is not an image jointspace can read.")
    assert "Error" not in status  # no exception's name
    assert page.evaluate(f"{CARDS}") == 0
    assert page.inner_text("#total") == "" and page.inner_text("#page") == ""
    assert page.is_disabled("#next") and page.is_disabled("#prev")
    page.screenshot(path=str(ARTIFACTS / "serve-upload-error.png"), full_page=True)


def test_the_detail_view_and_more_like_this(mixed_url, page):
    search(page, mixed_url, "a")
    button = "#grid .card[data-modality=image] .open >> text=green.png"
    item_id = page.eval_on_selector("#grid .card[data-modality=image]:has(.text:text-is('green.png'))",
                                    "c => c.dataset.id")
    page.click(button)
    wait_until(page, "document.querySelector('#detail').open")
    assert page.evaluate("document.activeElement.id") == "detail-close"  # focus moved in
    assert page.inner_text("#detail-title") == "green.png"
    wait_until(page, "document.querySelector('#detail-media img').complete && "
                     "document.querySelector('#detail-media img').naturalWidth > 0")
    img = page.eval_on_selector("#detail-media img", "i => [i.getAttribute('src'), i.naturalWidth, i.naturalHeight]")
    assert img == [f"/items/{item_id}/file", 40, 30]  # the file itself, at full size
    info = page.inner_text("#detail-info")
    assert "folder\nday" in info and "modality\nimage" in info and "name\ngreen.png" in info
    page.screenshot(path=str(ARTIFACTS / "serve-detail.png"), full_page=False)
    page.keyboard.press("Escape")
    wait_until(page, "!document.querySelector('#detail').open")
    assert page.evaluate("document.activeElement.closest('.card').dataset.id") == item_id  # focus back

    page.click(button)
    wait_until(page, "document.querySelector('#detail').open")
    page.click("#detail-close")
    wait_until(page, "!document.querySelector('#detail').open")
    page.click(button)
    page.click("#more-like")
    wait_until(page, f"!document.querySelector('#detail').open && {CARDS} === 4 && "
                     f"document.querySelector('#grid .card').dataset.id === '{item_id}'")
    assert page.input_value("#target") == "image" and page.input_value("#q") == ""
    assert page.is_visible("#like") and page.inner_text("#like-name") == "green.png"
    assert "1.000" in page.inner_text("#grid .card")
    assert f"item={item_id}" in page.url and "target=image" in page.url
    page.reload()  # "more like this" is in the address too
    wait_until(page, f"{CARDS} === 4 && document.querySelector('#grid .card').dataset.id === '{item_id}'")
    assert page.inner_text("#like-name") == "green.png" and page.input_value("#target") == "image"
    page.click("#like-clear")
    assert not page.is_visible("#like")


def test_the_query_is_kept_in_the_address(mixed_url, page):
    search(page, mixed_url, "a low hum")
    page.select_option("#target", "text")
    wait_until(page, f"{CARDS} === 4")
    page.click("#filters summary")
    page.select_option("select[data-field=folder]", "day")
    wait_until(page, f"{CARDS} === 2")
    page.click("#add-term")
    page.fill("#terms .term input[type=text]", "square")
    page.eval_on_selector("#status", "e => { e.textContent = ''; }")  # wait for the new answer
    page.click("#go")
    wait_until(page, "location.search.includes('term=') && "
                     "document.querySelector('#status').textContent.includes('results in')")
    before = page.eval_on_selector_all("#grid .card", "els => els.map(e => e.dataset.id)")
    address = page.url
    assert all(part in address for part in ("q=a+low+hum", "target=text", "f.folder=day", "term=0.5%3Asquare"))
    page.reload()
    wait_until(page, f"{CARDS} === 2")
    assert page.eval_on_selector_all("#grid .card", "els => els.map(e => e.dataset.id)") == before
    assert (page.input_value("#q"), page.input_value("#target"), page.input_value("select[data-field=folder]"),
            page.input_value("#terms .term input[type=text]")) == ("a low hum", "text", "day", "square")
    assert shown_total(page) == 2

    # a shared link with a page of a longer ranking; back goes to the search before
    page.goto(f"{mixed_url}/?q=a&k=5&offset=5")
    wait_until(page, f"{CARDS} === 5")
    assert page.inner_text("#page") == "results 6–10 of 12" and "#6 ·" in page.inner_text("#grid .card")
    page.click("#next")
    wait_until(page, "document.querySelector('#page').textContent === 'results 11–12 of 12'")
    assert page.is_disabled("#next") and "offset=10" in page.url
    page.go_back()
    wait_until(page, "document.querySelector('#page').textContent === 'results 6–10 of 12'")


def test_everything_works_with_an_api_key(keyed_url, page):
    requests = []
    page.on("request", lambda r: requests.append((r.url, r.headers.get("x-api-key"))))
    page.goto(keyed_url)
    page.fill("#key", "page-23")
    wait_until(page, "document.readyState === 'complete'")
    requests.clear()  # those the page made before it had the key
    page.fill("#q", "a green square")
    page.press("#q", "Enter")
    wait_until(page, f"{CARDS} > 0 && document.querySelectorAll('#target option').length === 4 && "
                     "!document.querySelector('#filters').hidden")
    page.eval_on_selector("#status", "e => { e.textContent = ''; }")  # wait for the new answer
    page.select_option("#target", "image")
    wait_until(page, f"{CARDS} === 4 && document.querySelector('#status').textContent.includes('results in')")
    wait_until(page, IMAGES_LOADED)
    assert page.eval_on_selector_all("#grid img", "els => els.every(e => e.src.startsWith('blob:'))")
    page.click("#filters summary")
    page.select_option("select[data-field=folder]", "day")
    wait_until(page, f"{CARDS} === 2")
    assert shown_total(page) == api_total(keyed_url, {"text": "a green square", "target": "image",
                                                      "where": {"folder": "day"}}, key="page-23")
    page.click("#grid .card .open")
    wait_until(page, "document.querySelector('#detail-media img') && "
                     "document.querySelector('#detail-media img').naturalWidth > 0")
    assert page.eval_on_selector("#detail-media img", "i => i.src.startsWith('blob:')")
    assert page.is_hidden("#detail-open")  # a plain link could not carry the key
    first = page.eval_on_selector("#grid .card", "c => c.dataset.id")
    page.click("#more-like")
    wait_until(page, f"document.querySelector('#like-name').textContent !== '' && {CARDS} > 0 && "
                     f"document.querySelector('#grid .card').dataset.id === '{first}'")
    served = [(u, k) for u, k in requests if u.startswith(keyed_url) and not u.rstrip("/").endswith(
        ("/healthz", keyed_url))]
    assert served and all(k == "page-23" for _, k in served), served
    assert any(u.endswith("/fields") for u, _ in served)


def test_items_indexed_from_shards_show_their_pictures(shard_url, page):
    page.goto(shard_url)
    page.fill("#q", "a red circle")
    page.press("#q", "Enter")
    wait_until(page, f"{CARDS} === 12")
    wait_until(page, IMAGES_LOADED)
    assert page.eval_on_selector_all("#grid img", "els => els.filter(e => e.naturalWidth > 0).length") == 12
    srcs = page.eval_on_selector_all("#grid img", "els => els.map(e => e.getAttribute('src'))")
    assert all(s.startswith("/items/") and s.endswith("/preview") for s in srcs)
    page.screenshot(path=str(ARTIFACTS / "serve-shards.png"), full_page=True)
    page.click("#grid .card .open")
    wait_until(page, "document.querySelector('#detail-media img') && "
                     "document.querySelector('#detail-media img').naturalWidth > 0")
    assert page.eval_on_selector("#detail-media img", "i => i.getAttribute('src').endsWith('/file')")


WIDER_THAN_THE_VIEWPORT = """() => {
  const width = window.innerWidth, found = [];
  if (document.documentElement.scrollWidth > width) found.push(`the page: ${document.documentElement.scrollWidth}`);
  for (const e of document.querySelectorAll('body *')) {
    const r = e.getBoundingClientRect();
    if (r.width > 0 && r.right > width + 0.5) found.push(`${e.tagName}#${e.id}.${e.className}: ${r.right}`);
  }
  return found;
}"""


@pytest.mark.parametrize("width", [1280, 390])
def test_no_element_is_wider_than_the_viewport(mixed_url, browser, width):
    page = new_page(browser, width=width, height=844)
    try:
        search(page, mixed_url, "a red circle, and a rather long query to see that it wraps well")
        page.click("#filters summary")
        page.click("#add-term")
        page.fill("#terms .term input[type=text]", "square")
        page.set_input_files("#file", {"name": "q.wav", "mimeType": "audio/wav",
                                       "buffer": wav_bytes()})
        wait_until(page, "document.querySelector('#status').textContent.includes('results in')")
        wait_until(page, IMAGES_LOADED)
        assert page.evaluate(WIDER_THAN_THE_VIEWPORT) == []
        page.screenshot(path=str(ARTIFACTS / f"serve-width-{width}.png"), full_page=True)
        page.click("#grid .card[data-modality=text] .open")
        wait_until(page, "document.querySelector('#detail').open")
        assert page.evaluate(WIDER_THAN_THE_VIEWPORT) == []
        page.screenshot(path=str(ARTIFACTS / f"serve-width-{width}-detail.png"), full_page=False)
        assert page.csp_errors == []
    finally:
        page.context.close()


def wav_bytes():
    import io

    import numpy as np
    import soundfile

    out = io.BytesIO()
    soundfile.write(out, 0.3 * np.sin(2 * np.pi * 330 * np.arange(8000) / 16000), 16000, format="WAV")
    return out.getvalue()


def test_no_serious_accessibility_violation(mixed_url, browser):
    """axe-core (from the axe-playwright-python package, injected by Playwright; the page's
    CSP would refuse it as a script of the page) on the page with results, filters and a
    composed term, then with the detail view open."""
    from axe_playwright_python.sync_playwright import Axe

    context = browser.new_context(viewport={"width": 1100, "height": 900}, bypass_csp=True)
    page = context.new_page()
    try:
        search(page, mixed_url, "a")
        page.click("#filters summary")
        page.click("#add-term")
        wait_until(page, IMAGES_LOADED)
        checks = [Axe().run(page)]
        page.click("#grid .card[data-modality=image] .open")
        wait_until(page, "document.querySelector('#detail').open")
        checks.append(Axe().run(page))
        bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
               for check in checks for v in check.response["violations"]
               if v["impact"] in ("serious", "critical")]
        assert bad == []
    finally:
        context.close()
