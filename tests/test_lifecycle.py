"""Index lifecycle under faults: SIGKILL at random moments, concurrent readers, a second writer."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import bertsearch
from bertsearch.errors import IndexBusy

from conftest import ROOT

QUERIES = ["alpha beta", "gamma delta epsilon", "word17 word3", "zeta", "word99 eta theta"]


def make_corpus(path: Path, n: int, seed: int, version: int) -> dict[str, str]:
    """n documents; version 2 changes a tenth, drops a tenth and adds new ones."""
    rng = random.Random(seed)
    vocab = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"] + [f"word{i}" for i in range(200)]
    docs = {}
    for i in range(n):
        if version == 2 and i % 10 == 3:
            continue  # dropped
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(5, 60)))
        if version == 2 and i % 10 == 5:
            text += " changed in version two"
        docs[f"d{i}"] = text
    if version == 2:
        for i in range(n, n + n // 10):
            docs[f"d{i}"] = " ".join(rng.choice(vocab) for _ in range(20))
    path.write_text("".join(json.dumps({"id": k, "title": "", "text": v}) + "\n" for k, v in docs.items()))
    return docs


def index_cmd(corpus: Path, ix: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bertsearch", "index", str(corpus), "--index", str(ix), "--model", "hashing",
            "--batch-size", "16", *extra]


def run_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def results(ix) -> list[list[tuple[float, str]]]:
    out = []
    for mode in ("dense", "lexical", "hybrid"):
        for q in QUERIES:
            out.append(sorted((round(-h.score, 5), h.doc_id) for h in ix.search(q, k=10, mode=mode)))
    return out


def assert_consistent(path: Path, versions: list[dict[str, str]]) -> None:
    ix = bertsearch.open_index(path)
    try:
        report = ix.check()
        assert report["ok"], report
        for doc_id in list(ix.store.ids()):
            text = ix.get(doc_id)["text"]
            assert any(v.get(doc_id) == text for v in versions), f"{doc_id} holds text from no version"
        ix.search("alpha", k=5)  # searchable, rebuilding the vector file if it is behind
        assert ix.check()["vectors"] == "current"
    finally:
        ix.close()


def test_sigkill_at_random_moments_never_corrupts_and_the_job_can_finish(tmp_path):
    v1 = make_corpus(tmp_path / "v1.jsonl", 1200, seed=1, version=1)
    v2 = make_corpus(tmp_path / "v2.jsonl", 1200, seed=1, version=2)
    ref = bertsearch.open_index(tmp_path / "ref", create=True, model="hashing")
    ref.add_corpus(tmp_path / "v2.jsonl")
    want = results(ref)
    ref.close()

    ix = tmp_path / "ix"
    t0 = time.perf_counter()
    subprocess.run(index_cmd(tmp_path / "v1.jsonl", tmp_path / "timing"), check=True, env=run_env(), capture_output=True)
    full = time.perf_counter() - t0
    rng = random.Random(0)
    kills = runs = 0
    while kills < 20:
        runs += 1
        assert runs <= 80, f"only {kills} of {runs} runs were killed before finishing"
        # alternate versions so that every run adds, replaces and deletes documents
        corpus = tmp_path / ("v1.jsonl" if runs % 2 else "v2.jsonl")
        p = subprocess.Popen(index_cmd(corpus, ix, "--prune"), env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.2, full))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
        assert p.returncode in (0, -signal.SIGKILL), p.stderr.read().decode()
        if (ix / "store.db").exists():
            assert_consistent(ix, [v1, v2])
    subprocess.run(index_cmd(tmp_path / "v2.jsonl", ix, "--prune"), check=True, env=run_env(), capture_output=True)
    assert_consistent(ix, [v2])
    done = bertsearch.open_index(ix)
    assert {d: done.get(d)["text"] for d in done.store.ids()} == v2
    assert results(done) == want
    done.close()


def test_readers_keep_searching_while_a_writer_indexes(tmp_path):
    v1 = make_corpus(tmp_path / "v1.jsonl", 300, seed=2, version=1)
    v2 = make_corpus(tmp_path / "v2.jsonl", 2000, seed=3, version=2)
    ix_path = tmp_path / "ix"
    subprocess.run(index_cmd(tmp_path / "v1.jsonl", ix_path), check=True, env=run_env(), capture_output=True)
    writer = subprocess.Popen(index_cmd(tmp_path / "v2.jsonl", ix_path), env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    errors: list[BaseException] = []
    searches = [0]

    def reader() -> None:
        ix = bertsearch.open_index(ix_path)
        try:
            while writer.poll() is None:
                for mode in ("hybrid", "dense", "lexical"):
                    hits = ix.search("alpha gamma", k=5, mode=mode)
                    assert len(hits) == 5
                    searches[0] += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            ix.close()

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert writer.wait() == 0, writer.stderr.read().decode()
    assert not errors, errors[0]
    assert searches[0] > 3
    ix = bertsearch.open_index(ix_path)
    assert ix.check()["ok"] and ix.store.counts()["documents"] == len(v1.keys() | v2.keys())
    ix.close()


def test_a_second_writer_waits_then_fails_with_a_clear_message(tmp_path, docs):
    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing")
    ix.add(docs)
    other = bertsearch.store.Store(tmp_path / "ix" / "store.db", timeout=0.2)
    with ix.store.transaction():  # hold the write lock
        with pytest.raises(IndexBusy, match="being written by another process"):
            with other.transaction():
                pass
    other.close()
    ix.close()
