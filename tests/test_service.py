"""The HTTP service: the API through FastAPI's test client, its errors, keys and limits, and the remote client."""

from __future__ import annotations

import json
import threading

import pytest

fastapi = pytest.importorskip("fastapi")
from fakes import WordReader, WordReranker
from fastapi.testclient import TestClient

import bertsearch
from bertsearch.errors import BadQuery, ReadOnlyIndex
from bertsearch.filters import BadFilter
from bertsearch.service import schemas
from bertsearch.service.app import Keys, create_app
from bertsearch.service.client import RemoteError, RemoteIndex

WRITE = "w" * 24
READ = "r" * 24


@pytest.fixture
def ix(tmp_path, docs):
    index = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing")
    index.add(docs)
    index._reranker = WordReranker("fleming")
    index._reader = WordReader("1928")
    yield index
    index.close()


@pytest.fixture
def client(ix):
    with TestClient(create_app(ix, keys=Keys(write=WRITE), warm=False)) as c:
        yield c


def auth(key=WRITE):
    return {"Authorization": f"Bearer {key}"}


def error_of(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["status"] == status and body["error"]["message"]
    return body["error"]["message"]


def test_search_get_and_post_agree_and_carry_timings(client):
    a = client.get("/search", params={"q": "northern lights", "k": 2}).json()
    b = client.post("/search", json={"query": "northern lights", "k": 2}).json()
    assert [h["doc_id"] for h in a["hits"]] == [h["doc_id"] for h in b["hits"]]
    assert a["hits"][0]["doc_id"] == "aurora" and set(a["timings"]) == {"retrieve"} and a["k"] == 2
    r = client.post("/search", json={"query": "penicillin", "mode": "lexical", "where": "year = 1928", "rerank": True})
    body = r.json()
    assert [h["doc_id"] for h in body["hits"]] == ["penicillin"] and "rerank" in body["timings"]
    a = client.get("/search", params={"q": "fleming", "k": 3, "rerank": True, "rerank_depth": 1, "rerank_penalty": 2})
    b = client.post("/search", json={"query": "fleming", "k": 3, "rerank": True, "rerank_depth": 1, "rerank_penalty": 2})
    assert a.status_code == 200 and a.json()["hits"] == b.json()["hits"] != []
    assert sum("rerank" in h["scores"] for h in a.json()["hits"]) == 1  # GET took no rerank_depth, only POST
    assert "no such endpoint" in error_of(client.get("/documents/"), 404)  # (it redirected, 307, to a 405)
    assert "not UTF-8" in error_of(client.get("/search?q=%FF%FE"), 400)  # (it searched for "\ufffd\ufffd")
    assert "not UTF-8" in error_of(client.get("/documents/%FF"), 400)  # (404, naming "\ufffd")
    assert client.get("/search?q=caf%C3%A9+%E2%98%95").json()["query"] == "café ☕"


def test_batch_search_and_ask(client):
    r = client.post("/search/batch", json={"queries": ["northern lights", "volcano lava"], "k": 1})
    assert [res["hits"][0]["doc_id"] for res in r.json()["results"]] == ["aurora", "volcano"]
    a = client.post("/ask", json={"question": "when did Fleming discover penicillin"}).json()
    assert not a["abstained"] and a["answers"][0]["text"] == "1928" and a["answers"][0]["doc_id"] == "penicillin"
    assert set(a["timings"]) == {"retrieve", "rerank", "read"}
    none = client.post("/ask", json={"question": "piano keys hammer", "mode": "lexical", "passages": 1}).json()
    assert none["abstained"] and none["answers"] == []


def test_curl_style_json_without_a_content_type(client):
    r = client.post("/ask", content=json.dumps({"question": "when did Fleming discover penicillin"}),
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["answers"][0]["text"] == "1928"


def test_a_body_that_is_not_json_gets_415_and_head_answers_as_get(client):
    body = json.dumps({"query": "penicillin"})
    for kind in ("text/plain", "multipart/form-data; boundary=x", "application/xml"):
        assert "application/json" in error_of(client.post("/search", content=body, headers={"content-type": kind}), 415)
    assert client.post("/search", content=body, headers={"content-type": "application/json; charset=utf-8"}).status_code == 200
    for path in ("/health", "/info", "/search?q=penicillin"):
        get, head = client.get(path), client.head(path)
        assert head.status_code == get.status_code == 200, (path, head.status_code)
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    assert client.head("/documents/nothing-here").status_code == 404


@pytest.mark.parametrize("body, status, words", [
    ({"query": "   "}, 422, "empty query"),
    ({"query": "\u0000"}, 422, "empty query"),
    ({"query": ""}, 422, "query"),
    ({"query": "x", "k": 10**6}, 422, "less than or equal to 100"),
    ({"query": "x", "k": 0}, 422, "k"),
    ({"query": "x", "k": True}, 422, "k"),
    ({"query": "x", "k": "5"}, 422, "k"),
    ({"query": "x", "mode": "fuzzy"}, 422, "mode"),
    ({"query": "x" * (schemas.MAX_QUERY_CHARS + 1)}, 422, "query"),
    ({"query": "x", "where": "year >>= 3"}, 400, "bad filter"),
    ({"query": "x", "where": "Year > 3"}, 400, "did you mean 'year'"),
    ({"query": "x", "surprise": 1}, 422, "surprise"),
])
def test_bad_searches_get_a_4xx_that_says_what_to_fix(client, body, status, words):
    assert words in error_of(client.post("/search", json=body), status)


def test_malformed_json_huge_body_wrong_method_unknown_path(client):
    assert "not valid JSON" in error_of(client.post("/search", content=b'{"query": ', headers={"content-type": "application/json"}), 422)
    big = b'{"query": "' + b"x" * (schemas.MAX_BODY_BYTES + 10) + b'"}'
    assert "limit" in error_of(client.post("/search", content=big, headers={"content-type": "application/json"}), 413)
    r = client.patch("/search")
    error_of(r, 405)
    assert r.headers["allow"] == "GET, POST"
    assert "/docs" in error_of(client.get("/nowhere"), 404)
    assert "not UTF-8" in error_of(client.put("/documents", content=b"\xff\xfe", headers={**auth(), "content-type": "application/json"}), 400)


def test_writes_need_the_write_key(client, ix):
    docs = {"documents": [{"id": "new", "text": "Glaciers carve valleys."}]}
    assert "Authorization: Bearer" in error_of(client.put("/documents", json=docs), 401)
    assert "not the write key" in error_of(client.put("/documents", json=docs, headers=auth("x" * 24)), 403)
    error_of(client.post("/documents/delete", json={"ids": ["piano"]}), 401)
    error_of(client.delete("/documents/piano", headers=auth(READ)), 403)
    assert ix.store.counts()["documents"] == 4


def test_writes_refused_when_the_server_has_no_write_key(ix):
    with TestClient(create_app(ix, warm=False)) as c:
        assert "BERTSEARCH_WRITE_KEY" in error_of(c.put("/documents", json={"documents": [{"id": "a", "text": "b"}]},
                                                        headers=auth()), 403)


def test_a_read_key_closes_reads_but_not_health(ix):
    with TestClient(create_app(ix, keys=Keys(write=WRITE, read=READ), warm=False)) as c:
        error_of(c.get("/search", params={"q": "aurora"}), 401)
        assert c.get("/search", params={"q": "aurora"}, headers=auth(READ)).status_code == 200
        assert c.get("/search", params={"q": "aurora"}, headers=auth(WRITE)).status_code == 200
        assert c.get("/health").json() == {"status": "ok"} and c.get("/ready").status_code == 200


def test_documents_add_upsert_get_delete(client, ix):
    r = client.post("/documents", json=[{"id": "glacier", "title": "Glacier", "text": "Glaciers carve valleys.", "year": 2001}],
                    headers=auth())
    assert r.status_code == 200 and r.json()["added"] == 1 and r.json()["documents"] == 5
    assert "already stored" in error_of(client.post("/documents", json={"documents": [{"id": "glacier", "text": "x"}]},
                                                    headers=auth()), 409)
    ndjson = "\n".join(json.dumps(d) for d in [{"id": "glacier", "text": "Glaciers are rivers of ice."},
                                                {"id": "fjord", "text": "A fjord is a long narrow inlet."}])
    r = client.put("/documents", content=ndjson, headers={**auth(), "content-type": "application/x-ndjson"})
    assert (r.json()["replaced"], r.json()["added"]) == (1, 1)
    got = client.get("/documents/glacier").json()
    assert got["text"] == "Glaciers are rivers of ice." and got["metadata"] == {}
    assert client.post("/search", json={"query": "narrow inlet", "k": 1}).json()["hits"][0]["doc_id"] == "fjord"
    r = client.put("/documents/fjord", json={"text": "A fjord is carved by a glacier.", "region": "Norway"}, headers=auth())
    assert r.json()["replaced"] == 1 and client.get("/documents/fjord").json()["metadata"] == {"region": "Norway"}
    dry = client.post("/documents/delete", json={"where": "topic = 'science'", "dry_run": True}, headers=auth()).json()
    assert sorted(dry["would_delete"]) == ["aurora", "volcano"] and dry["deleted"] == 0 and dry["documents"] == 6
    both = error_of(client.post("/documents/delete", json={"ids": ["piano"], "where": "topic = 'x'"}, headers=auth()), 400)
    assert "not both" in both and "dry_run" in both and "--" not in both  # (the API's fields, not the CLI's options)
    assert client.post("/documents/delete", json={"where": "topic = 'science'"}, headers=auth()).json()["deleted"] == 2
    assert client.delete("/documents/piano", headers=auth()).json()["deleted"] == 1
    error_of(client.delete("/documents/piano", headers=auth()), 404)
    error_of(client.get("/documents/piano"), 404)
    assert "line 2" in error_of(client.put("/documents", content='{"id": "a", "text": "b"}\n{oops',
                                           headers={**auth(), "content-type": "application/x-ndjson"}), 400)
    assert "documents.0.text" in error_of(client.put("/documents", json=[{"id": "a"}], headers=auth()), 422)
    assert ix.store.counts()["documents"] == 3 and ix.check()["ok"]


def test_two_writers_at_once_both_land(client, ix):
    results: list[int] = []

    def write(n):
        docs = [{"id": f"{n}-{i}", "text": f"writer {n} document {i} about rivers"} for i in range(40)]
        results.append(client.put("/documents", json=docs, headers=auth()).status_code)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200, 200] and ix.store.counts()["documents"] == 4 + 80


def test_concurrent_posts_of_one_new_id_add_it_once_and_409_the_rest(client, ix, monkeypatch):
    """Six POSTs of one new id at once were all answered 200 "added": the last one's text was kept, and the others'
    were lost though each was told its document was added (the check of what is stored and the add were apart)."""
    add = ix.add

    def slow_add(docs, **kwargs):  # widen the window between the check and the write, as a loaded server does
        import time

        time.sleep(0.2)
        return add(docs, **kwargs)

    monkeypatch.setattr(ix, "add", slow_add)
    codes: list[int] = []

    def post(n):
        r = client.post("/documents", json=[{"id": "race", "text": f"client {n} wrote this"}], headers=auth())
        codes.append(r.status_code)

    threads = [threading.Thread(target=post, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] + [409] * 5


def test_a_write_waiting_for_another_of_the_same_ids_gives_up_with_503():
    """A write waits for another of the same ids without end held a worker thread, which reads need too."""
    from bertsearch.errors import IndexBusy
    from bertsearch.service.app import _Claims

    claims = _Claims()
    with claims.hold(["a", "b"]):
        with pytest.raises(IndexBusy, match="another write of some of these documents"), claims.hold(["b", "c"], timeout=0.1):
            pass
        with claims.hold(["c"], timeout=0.1):  # other ids: no wait
            pass
    with claims.hold(["b"], timeout=0.1):  # released
        pass


def test_bad_document_writes_get_a_4xx(client, ix):
    """A document with neither text nor title was answered 200 and not stored; metadata nested thousands deep got
    500 (RecursionError); a filter naming an unknown field came back as BadQuery, not BadFilter."""
    before = ix.store.counts()["documents"]
    msg = error_of(client.post("/documents", json=[{"id": "blank", "text": "  "}], headers=auth()), 422)
    assert "neither text nor title" in msg and "blank" in msg
    assert client.post("/documents", json=[{"id": "named", "title": "Mount Etna", "text": ""}],
                       headers=auth()).json()["added"] == 1  # a title alone is a document
    deep = '[{"id": "deep", "text": "x", "m": ' + "[" * 5000 + "]" * 5000 + "}]"
    for kind in ("application/json", "application/x-ndjson"):
        body = deep if kind == "application/json" else deep[1:-1]
        assert "too deeply" in error_of(client.post("/documents", content=body, headers={**auth(), "content-type": kind}), 400)
    for depth in (40, 300, 990):  # (300 was stored; then GET and every search that found it answered 500)
        medium = '[{"id": "deep", "text": "x", "m": ' + "[" * depth + "]" * depth + "}]"
        error_of(client.post("/documents", content=medium, headers={**auth(), "content-type": "application/json"}), 400)
    assert ix.store.counts()["documents"] == before + 1 and ix.get("deep") is None
    r = client.get("/search", params={"q": "lava", "where": "nosuch = 1"})
    assert r.status_code == 400 and r.json()["error"]["kind"] == "BadFilter", r.text
    with pytest.raises(BadFilter, match="no document has the field 'nosuch'"):
        RemoteIndex("http://testserver", client=client).search("lava", where="nosuch = 1")


def test_a_body_that_stops_coming_gets_408_and_frees_its_place(ix, monkeypatch, caplog):
    """70 requests whose bodies never came held every place: other clients got 503 until they hung up."""
    import asyncio

    from bertsearch.service import app as service

    monkeypatch.setattr(service, "BODY_IDLE_SECONDS", 0.2)
    app = create_app(ix, keys=Keys(write=WRITE), warm=False, max_pending=1)
    sent: list[dict] = []

    async def never() -> dict:
        await asyncio.sleep(3600)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/documents", "raw_path": b"/documents", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"authorization", f"Bearer {WRITE}".encode())],
             "scheme": "http", "server": ("t", 80), "client": ("c", 1), "root_path": "", "http_version": "1.1"}

    async def run():
        await asyncio.wait_for(app(scope, never, send), 10)
        assert sent[0]["status"] == 408 and b"did not come in time" in sent[1]["body"]
        sent.clear()
        await asyncio.wait_for(app(dict(scope, path="/search", raw_path=b"/search"), never, send), 10)
        assert sent[0]["status"] == 408  # a body FastAPI reads itself (a search's) is timed as well

        async def gone() -> dict:  # the client hung up: two ERROR tracebacks were logged for each one
            return {"type": "http.disconnect"}

        sent.clear()
        await asyncio.wait_for(app(scope, gone, send), 10)
        assert sent[0]["status"] == 400

    with caplog.at_level("INFO"):
        asyncio.run(run())
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert "closed the connection" in caplog.text


def test_overload_answers_503_with_retry_after(ix):
    app = create_app(ix, warm=False, max_pending=1)
    release = threading.Event()
    entered = threading.Event()

    @app.get("/slow")
    def slow() -> dict:
        entered.set()
        release.wait(5)
        return {}

    with TestClient(app) as c:
        t = threading.Thread(target=lambda: c.get("/slow"))
        t.start()
        assert entered.wait(5)
        r = c.get("/search", params={"q": "aurora"})
        release.set()
        t.join()
    assert "busy" in error_of(r, 503) and r.headers["retry-after"] == "1"


def test_info_and_openapi_state_the_limits(client):
    info = client.get("/info").json()
    assert info["documents"] == 4 and info["writable"] is True and info["limits"]["k"] == schemas.MAX_K
    spec = client.get("/openapi.json").json()
    k = spec["components"]["schemas"]["SearchRequest"]["properties"]["k"]
    assert k["maximum"] == schemas.MAX_K
    assert "403" in spec["paths"]["/documents"]["put"]["responses"]
    assert "application/x-ndjson" in spec["paths"]["/documents"]["put"]["requestBody"]["content"]


def test_the_remote_client_makes_the_calls_of_index(client, ix):
    remote = RemoteIndex("http://testserver", key=WRITE, client=client)
    local = ix.search("northern lights", k=3)
    hits = remote.search("northern lights", k=3)
    assert [h.doc_id for h in hits] == [h.doc_id for h in local] and hits[0].text == local[0].text
    assert "retrieve" in hits.timings
    assert [r[0].doc_id for r in remote.batch_search(["volcano lava", "piano"], k=1)] == ["volcano", "piano"]
    answer = remote.ask("when did Fleming discover penicillin")
    assert answer.answers[0].text == "1928" and not answer.abstained
    report = remote.add([{"id": "glacier", "text": "Glaciers carve valleys."}])
    assert report.added == 1 and remote.get("glacier")["text"] == "Glaciers carve valleys." and remote.get("nope") is None
    assert remote.to_delete(where="topic = 'science'") == ["aurora", "volcano"]
    assert remote.delete(["glacier"]) == 1 and remote.info()["documents"] == 4
    with pytest.raises(RemoteError, match="empty query") as e:
        remote.search("  ")
    assert e.value.status == 422 and isinstance(e.value, BadQuery)  # what Index raises in process, too
    with pytest.raises(BadFilter, match="bad filter"):
        remote.search("x", where="year >>= 3")
    queries = [f"query {i} volcano" for i in range(schemas.MAX_BATCH + 8)]  # more than one request takes
    assert [[h.doc_id for h in hits] for hits in remote.batch_search(queries, k=2)] == [
        [h.doc_id for h in hits] for hits in ix.batch_search(queries, k=2)]
    reader_only = RemoteIndex("http://testserver", client=client)
    with pytest.raises(RemoteError, match="write key"):
        reader_only.add([{"id": "x", "text": "y"}])


def test_keys_come_from_the_environment_or_a_file(tmp_path):
    keys = Keys.load({"BERTSEARCH_WRITE_KEY": WRITE})
    assert (keys.write, keys.read) == (WRITE, None)
    f = tmp_path / "keys"
    f.write_text(f"# keys\nread={READ}\nwrite={WRITE}\n")
    keys = Keys.load({}, f)
    assert (keys.write, keys.read) == (WRITE, READ)
    with pytest.raises(bertsearch.BertsearchError, match="at least 16"):
        Keys.load({"BERTSEARCH_WRITE_KEY": "short"})
    f.write_text("writer=abc\n")
    with pytest.raises(bertsearch.BertsearchError, match="keys:1"):
        Keys.load({}, f)


def test_cors_is_off_unless_an_origin_is_named(ix):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    with TestClient(create_app(ix, warm=False)) as c:
        r = c.get("/search", params={"q": "aurora"}, headers={"Origin": "https://app.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    with TestClient(create_app(ix, warm=False, cors_origins=["https://app.example"])) as c:
        r = c.options("/search", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        other = c.options("/search", headers={**preflight, "Origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


def test_ids_with_slashes_and_dots_are_documents_not_paths(client, ix):
    """An id holding "/" was added, then every per-id call answered 404 "no such endpoint", and connect().get() said
    the document was not there."""
    remote = RemoteIndex("http://testserver", key=WRITE, client=client)
    ids = ["a/b", "../../etc/passwd", "..", "x/", "100%/sure?#", "\n0", "two\nlines\n"]  # (a newline: 404 too)
    remote.add([{"id": i, "text": f"Text of {i}."} for i in ids])
    for i in ids:
        assert remote.get(i)["text"] == f"Text of {i}.", i
    assert client.get("/documents/a%2Fb").json()["id"] == "a/b"
    assert client.put("/documents/a%2Fb", json={"text": "New text."}, headers=auth()).json()["replaced"] == 1
    assert ix.get("a/b")["text"] == "New text."
    assert client.delete("/documents/..%2F..%2Fetc%2Fpasswd", headers=auth()).json()["deleted"] == 1
    assert remote.get("../../etc/passwd") is None and remote.get("..")["id"] == ".."
    r = client.patch("/documents/a%2Fb")  # the methods a document's path takes are named
    assert "use DELETE, GET, PUT" in error_of(r, 405) and r.headers["allow"] == "DELETE, GET, PUT"
    assert "not the path's" in error_of(client.put("/documents/a", json={"id": "b", "text": "t"}, headers=auth()), 422)
    assert ix.get("b") is None


def test_a_read_only_index_is_served_for_reads_and_says_so(client, ix, monkeypatch):
    from bertsearch.store import Store

    assert client.get("/info").json()["writable"] is True
    monkeypatch.setattr(Store, "writable", property(lambda self: False))
    assert client.get("/info").json()["writable"] is False
    r = client.put("/documents", json=[{"id": "glacier", "text": "Glaciers carve valleys."}], headers=auth())
    assert "read-only on this server" in error_of(r, 403) and r.json()["error"]["code"] == "read_only"
    assert client.get("/search", params={"q": "aurora"}).status_code == 200
    monkeypatch.setattr(Store, "writable", property(lambda self: True))  # the folder turns read-only later
    monkeypatch.setattr(type(ix), "add", lambda self, docs: (_ for _ in ()).throw(ReadOnlyIndex("cannot write")))
    r = client.put("/documents", json=[{"id": "glacier", "text": "Glaciers carve valleys."}], headers=auth())
    assert error_of(r, 403) == "cannot write" and r.json()["error"]["kind"] == "ReadOnlyIndex"


def test_after_another_process_reindexes_the_server_serves_the_new_index(client, ix):
    """After `bertsearch reindex` swapped in a new index, the server searched the old copy in silence (the
    re-index guide says the index keeps serving while it runs); now the first request after the swap opens the
    new index (503 with Retry-After), and the next ones are served from it."""
    from bertsearch import reindex as rx

    rx.reindex(ix.path, "hashing:128")
    with bertsearch.open_index(ix.path) as other:  # written after the swap: only the new index has it
        other.add([{"id": "late", "text": "a late document about comets"}])
    r = client.get("/search", params={"q": "comets", "mode": "lexical"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "replaced" and r.headers["retry-after"] == "1"
    assert "serves the new one" in r.json()["error"]["message"]
    r = client.get("/search", params={"q": "comets", "mode": "lexical"})
    assert r.status_code == 200 and [h["doc_id"] for h in r.json()["hits"]] == ["late"]
    assert client.get("/info").json()["model"] == "hashing:128"
