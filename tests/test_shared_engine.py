"""One `Index` shared by threads: searches and asks in every mode while a writer adds, replaces and deletes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import bertsearch
from bertsearch.models.shared import Batcher, SharedReader, SharedReranker
from fakes import WordReader, WordReranker

WORDS = "amber basalt cedar delta ember fjord garnet harbor iris jasper kelp lagoon meadow nectar onyx".split()


def _doc(i: int, version: int) -> dict:
    rng = np.random.default_rng(i)
    words = " ".join(rng.choice(WORDS, 12))
    return {"id": f"w{i}", "title": f"Doc {i}", "text": f"v{version} marker{i} {words}. Second sentence v{version}.",
            "version": version}


@pytest.mark.parametrize("background", [False, True])
def test_threads_search_and_ask_while_a_writer_adds_replaces_and_deletes(tmp_path, background):
    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing", ann="hnsw")
    ix.background_rebuild = background
    base = [{"id": f"base{i}", "title": "Base", "text": f"steady{i} granite harbor lighthouse", "version": 0}
            for i in range(20)]
    ix.add(base)
    ix._reranker = SharedReranker(WordReranker("harbor"))
    ix._reader = SharedReader(WordReader("harbor"))
    texts: dict[str, set[str]] = {d["id"]: {d["text"]} for d in base}
    for i in range(2000):
        for v in (1, 2):
            texts.setdefault(f"w{i}", set()).add(_doc(i, v)["text"])
    done = threading.Event()
    errors: list[BaseException] = []
    checked = [0]

    def consistent(hits) -> None:
        ids = [h.doc_id for h in hits]
        assert len(ids) == len(set(ids)), ids
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        for h in hits:
            full = next(t for t in texts[h.doc_id] if h.text in t)  # the chunk is text of one committed version
            assert h.metadata["version"] == 0 or f"v{h.metadata['version']} " in full  # metadata of the same write
            assert f"v{h.metadata['version']}" in h.text or h.metadata["version"] == 0

    def reader(n: int) -> None:
        rng = np.random.default_rng(n)
        modes = ["dense", "lexical", "hybrid"]
        try:
            while not done.is_set():
                mode = modes[rng.integers(3)]
                b = int(rng.integers(20))
                q = f"steady{b} granite {WORDS[rng.integers(len(WORDS))]}"
                kind = rng.integers(3)
                if kind == 0:
                    hits = ix.search(q, k=5, mode=mode)
                elif kind == 1:
                    hits = ix.search(q, k=5, mode=mode, rerank=True, rerank_depth=10)
                else:
                    result = ix.ask(q, k=2, passages=3, mode=mode, min_confidence=0)
                    hits = result.hits
                    assert result.abstained or all("harbor" == a.text for a in result.answers)
                consistent(hits)
                if mode == "lexical":  # the base documents never change: the unique word finds its own
                    assert f"base{b}" in [h.doc_id for h in hits]
                checked[0] += 1
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    try:
        for start in range(0, 2000, 100):
            ix.add([_doc(i, 1) for i in range(start, start + 100)], batch_size=50)
            ix.add([_doc(i, 2) for i in range(start, start + 50)])  # replaced
            ix.delete([f"w{i}" for i in range(start + 50, start + 75)])
        ix.delete(where="version = 1")
    finally:
        done.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert checked[0] > 100
    ix.vectors.wait()
    assert ix.store.counts()["documents"] == 20 + 1000
    assert ix.check()["ok"]
    assert ix.search("marker1234", k=1, mode="lexical")[0].doc_id == "w1234"
    assert ix.get("w1234")["metadata"]["version"] == 2 and ix.get("w1260") is None and ix.get("w1249") is not None
    ix.close()


def test_batcher_runs_concurrent_calls_together_and_gives_each_its_own_results():
    started = threading.Event()
    release = threading.Event()
    sizes: list[int] = []

    def fn(items):
        sizes.append(len(items))
        if len(sizes) == 1:
            started.set()
            release.wait(5)
        return [x * 10 for x in items]

    b = Batcher(fn, max_items=64)
    out: dict[int, list[int]] = {}
    first = threading.Thread(target=lambda: out.__setitem__(0, b.call([0])))
    first.start()
    started.wait(5)  # the worker is busy: the next calls queue up and go as one batch
    rest = [threading.Thread(target=lambda i=i: out.__setitem__(i, b.call([i, i + 100]))) for i in range(1, 9)]
    for t in rest:
        t.start()
    time.sleep(0.2)
    release.set()
    for t in [first, *rest]:
        t.join()
    assert out[0] == [0] and all(out[i] == [10 * i, 10 * (i + 100)] for i in range(1, 9))
    assert sizes[0] == 1 and sum(sizes) == 17 and len(sizes) < 9  # calls were batched
    b.close()


def test_batcher_gives_an_error_to_the_caller_whose_input_caused_it():
    def fn(items):
        if "bad" in items:
            raise ValueError("bad input")
        return [x.upper() for x in items]

    b = Batcher(fn)
    results: dict[str, object] = {}

    def call(x):
        try:
            results[x] = b.call([x])
        except ValueError as e:
            results[x] = e

    threads = [threading.Thread(target=call, args=(x,)) for x in ("a", "bad", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["a"] == ["A"] and results["c"] == ["C"] and isinstance(results["bad"], ValueError)
    b.close()


def test_per_call_settings_leave_the_index_alone(index):
    index._reranker = WordReranker("piano")
    index._reader = WordReader("piano")
    index.search("keys", k=3, rerank=True, rerank_depth=2, rerank_penalty=0.0)
    index.ask("keys", min_confidence=0)
    assert (index.rerank_depth, index.rerank_penalty) == (20, 0.75)
    with pytest.raises(bertsearch.BertsearchError, match="probability"):
        index.ask("keys", min_confidence=2)
    with pytest.raises(bertsearch.BertsearchError, match="rerank depth"):
        index.search("keys", rerank=True, rerank_depth=0)


CLOSE_SCRIPT = """
import sys, threading, time
sys.path.insert(0, sys.argv[2])
import bertsearch
from bertsearch.errors import IndexClosed
from bertsearch.models.shared import SharedReader, SharedReranker
from fakes import WordReader, WordReranker

for trial in range(6):  # lexical searches alone (most of their time in SQLite), then every kind of call
    ix = bertsearch.open_index(f"{sys.argv[1]}/ix{trial}", create=True, model="hashing")
    ix.add([{"id": f"d{i}", "text": " ".join(f"harbor word{j} granite{(i * j) % 97}" for j in range(300))}
            for i in range(200)])
    ix._reranker = SharedReranker(WordReranker("harbor"))
    ix._reader = SharedReader(WordReader("harbor"))
    unexpected = []

    def loop(n):
        i = 0
        try:
            while True:
                i += 1
                if n == 0:
                    ix.add([{"id": f"new{i}", "text": f"harbor added {i}"}])
                elif n == 1:
                    ix.ask("harbor lighthouse")
                elif n == 2:
                    ix.get(f"d{i % 200}")
                elif n == 3:
                    ix.search("harbor granite5", k=5, mode=("dense", "hybrid")[i % 2])
                else:
                    ix.search("harbor granite5 word7", k=5, mode="lexical")
        except IndexClosed:
            pass
        except BaseException as e:
            unexpected.append(repr(e))

    threads = [threading.Thread(target=loop, args=(n,)) for n in ((4, 5, 6) if trial % 2 == 0 else range(7))]
    for t in threads:
        t.start()
    time.sleep(0.3 + 0.1 * trial)
    ix.close()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads), "a thread still waits after close"
    assert not unexpected, unexpected
    ix2 = bertsearch.open_index(f"{sys.argv[1]}/ix{trial}")
    assert ix2.check()["ok"], ix2.check()
    ix2.close()
print("ok")
"""


def test_close_while_threads_search_ask_and_add_ends_each_with_index_closed(tmp_path):
    """Closing an Index that other threads were using crashed the process (SIGSEGV) or left a thread waiting for
    ever on a model worker; now each call in flight finishes, and later ones raise IndexClosed."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "close.py"
    script.write_text(CLOSE_SCRIPT)
    r = subprocess.run([sys.executable, str(script), str(tmp_path), str(Path(__file__).parent)], capture_output=True,
                       text=True, timeout=300, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout, r.stderr[-2000:])


def test_a_batcher_call_after_close_is_refused_not_left_waiting():
    from bertsearch.errors import IndexClosed

    b = Batcher(lambda items: [x * 2 for x in items], name="doubler")
    assert b.call([1, 2]) == [2, 4]  # the worker runs
    b.close()
    with pytest.raises(IndexClosed, match="closed"):
        b.submit([3]).result(timeout=5)


def test_close_lets_a_call_in_flight_finish(tmp_path):
    """close() made the calls in flight on other threads fail at their next store access: an add that had
    committed its documents raised IndexClosed from the vector sync after it."""
    from bertsearch.errors import IndexClosed

    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing")
    ix.add([{"id": "a", "text": "first"}])
    encode, started = ix.ingest.encoder.encode, threading.Event()

    def slow(texts, **kw):
        started.set()
        time.sleep(1.0)
        return encode(texts, **kw)

    ix.ingest.encoder.encode = slow
    outcome = []
    t = threading.Thread(target=lambda: outcome.append(ix.add([{"id": "b", "text": "second"}])))
    t.start()
    assert started.wait(10)
    ix.close()  # while the add is in its encoder call
    t.join(10)
    assert outcome and outcome[0].added == 1  # finished, no IndexClosed
    with pytest.raises(IndexClosed):
        ix.search("second", mode="lexical")
    with bertsearch.open_index(tmp_path / "ix") as again:
        assert again.get("b") is not None and again.check()["ok"]
