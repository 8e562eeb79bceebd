"""The search page at `/`, driven in headless Chromium: answers, hits, modes, "no answer", server errors, and
server text shown as text. The models are fakes (tests/fakes.py); the app runs in uvicorn on a loopback port."""

from __future__ import annotations

import os
import socket
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from fakes import WordReader, WordReranker

import bertsearch
from bertsearch.service.app import Keys, create_app

CHROMIUM = Path("/usr/bin/chromium")
READ_KEY = "r" * 20
DOCS = [
    {"id": "penicillin", "title": "Penicillin", "text": "Penicillin is a group of antibiotics. Alexander Fleming "
     "discovered penicillin in 1928 when he noticed mould killing bacteria.", "topic": "medicine", "year": 1928},
    {"id": "aurora", "title": "Aurora", "text": "An aurora, also called the northern lights, is a natural light "
     "display in the sky caused by the solar wind.", "topic": "science"},
    {"id": "volcano", "title": "Volcano", "text": "A volcano is a rupture in the crust of a planet that lets hot "
     "lava, volcanic ash and gases escape from a magma chamber.", "topic": "science"},
    {"id": "piano", "title": "Piano", "text": "The piano is a keyboard instrument. Pressing a key makes a hammer "
     "strike strings.", "topic": "music"},
    {"id": "html", "title": "<b>Bold</b> claims", "text": "Markup <img src=x onerror=\"window.pwned=1\"> "
     "<script>window.pwned=2</script> stays text.", "topic": "<i>tags</i>"},
]


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the page tests need Python playwright: pip install playwright (never 'playwright install')")
    if not CHROMIUM.exists():
        _unavailable(f"the page tests need Chromium at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM),
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield b
        b.close()


@contextmanager
def _serve(app):
    """Run `app` in uvicorn on a free 127.0.0.1 port in a background thread; yield its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.025)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    ix = bertsearch.open_index(tmp_path_factory.mktemp("page") / "ix", create=True, model="hashing")
    ix.add([dict(d) for d in DOCS])
    ix._reranker = WordReranker("fleming")
    ix._reader = WordReader("1928")
    yield ix
    ix.close()


@pytest.fixture(scope="module")
def url(index):
    with _serve(create_app(index, warm=False)) as base:
        yield base


@pytest.fixture
def page(browser, url):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(5_000)
    page.goto(url + "/")
    yield page
    context.close()


def _search(page, text: str) -> None:
    page.fill("#q", text)
    with page.expect_response(lambda r: r.url.endswith(("/search", "/ask"))):
        page.press("#q", "Enter")  # the form submits on Enter
    page.wait_for_selector("#results[aria-busy=false]", state="attached")


def test_answer_comes_first_with_its_span_and_the_hits_follow(page):
    from playwright.sync_api import expect

    expect(page.locator("#info")).to_contain_text("5 documents")
    page.check("#ask")
    page.check("#rerank")
    _search(page, "who discovered penicillin")

    answer = page.locator("#best-answer")
    expect(answer.locator(".text")).to_have_text("1928")
    expect(answer.locator("mark.span")).to_have_text("1928")  # the span, highlighted in its passage
    expect(answer.locator(".passage")).to_contain_text("Alexander Fleming discovered penicillin in 1928")
    hits = page.locator("#hits .hit")
    expect(hits.first).to_contain_text("Penicillin")
    expect(hits.first.locator(".doc-id")).to_have_text("penicillin")
    expect(hits.first.locator("dl.fields")).to_contain_text("topic: medicine")
    expect(hits.first.locator("dl.fields")).to_contain_text("year: 1928")
    marked = hits.first.locator(".snippet mark").all_inner_texts()
    assert {"Penicillin", "discovered", "penicillin"} <= set(marked)
    assert "who" not in {m.lower() for m in marked}  # question words are not query terms
    expect(page.locator("#summary")).to_contain_text("hybrid, reranked")
    timings = page.locator("#timings").inner_text()
    assert all(f"{stage} " in timings for stage in ("retrieve", "rerank", "read")) and " ms" in timings
    # the answer is above the hits
    assert page.evaluate("document.getElementById('answer').compareDocumentPosition("
                         "document.getElementById('hits')) & Node.DOCUMENT_POSITION_FOLLOWING")


def test_switching_mode_searches_again_with_that_mode(page):
    from playwright.sync_api import expect

    _search(page, "volcano")
    expect(page.locator("#used-mode")).to_have_text("hybrid")
    hybrid = page.locator("#hits .hit").count()
    assert hybrid == len(DOCS)  # hybrid ranks every document with the hashing encoder
    assert page.locator("#answer").inner_text() == ""  # a plain search shows no answer box

    page.select_option("#mode", "lexical")  # a change of mode runs the search again
    expect(page.locator("#used-mode")).to_have_text("lexical")
    expect(page.locator("#hits .hit")).to_have_count(1)
    expect(page.locator("#hits .hit h3")).to_contain_text("Volcano")
    assert "mode=lexical" in page.url  # the search is kept in the URL


def test_a_question_with_no_answer_says_so(page):
    from playwright.sync_api import expect

    page.check("#ask")
    page.select_option("#mode", "lexical")
    _search(page, "piano keyboard")
    expect(page.locator("#no-answer")).to_contain_text("No answer found")
    expect(page.locator("#best-answer")).to_have_count(0)
    expect(page.locator("#hits .hit h3")).to_have_text(["1.Piano"])


def test_a_refused_request_shows_the_servers_message(page):
    from playwright.sync_api import expect

    page.click("summary")
    page.fill("#where", "colour = 'red'")
    _search(page, "volcano")
    error = page.locator("#error")
    expect(error).to_contain_text("no document has the field 'colour'")
    expect(page.locator("#hits .hit")).to_have_count(0)

    page.fill("#where", "topic = 'science'")  # a good filter clears the error
    _search(page, "volcano")
    expect(error).to_have_text("")
    expect(page.locator("#summary")).to_contain_text("topic = 'science'")
    assert set(page.locator("#hits .doc-id").all_inner_texts()) == {"volcano", "aurora"}


def test_server_text_is_shown_as_text_never_as_markup(page):
    from playwright.sync_api import expect

    _search(page, "markup stays text")
    hit = page.locator("#hits .hit").filter(has=page.locator(".doc-id", has_text="html"))
    expect(hit.locator("h3")).to_contain_text("<b>Bold</b> claims")
    expect(hit.locator(".snippet")).to_contain_text('<img src=x onerror="window.pwned=1">')
    expect(hit.locator("dl.fields")).to_contain_text("topic: <i>tags</i>")
    assert page.locator("#results img, #results script, #results b, #results i").count() == 0
    assert page.evaluate("window.pwned === undefined")


def test_a_read_key_is_asked_for_and_then_sent(browser, index):
    from playwright.sync_api import expect

    with _serve(create_app(index, keys=Keys(read=READ_KEY), warm=False)) as url:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(5_000)
        page.goto(url + "/")
        expect(page.locator("#info")).to_have_text("a read key is needed")
        _search(page, "volcano")
        expect(page.locator("#error")).to_contain_text("this needs the read key")
        expect(page.locator("#key")).to_be_visible()  # the key field is opened for it

        page.fill("#key", READ_KEY)
        _search(page, "volcano")
        expect(page.locator("#error")).to_have_text("")
        expect(page.locator("#hits .hit").first).to_contain_text("Volcano")
        assert page.evaluate("sessionStorage.getItem('bertsearch.key')") == READ_KEY
        context.close()
