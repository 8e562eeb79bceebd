"""Encoding through Ray Data (`index --ray`): the vectors and the search results equal the single-process path's.

Ray starts once for the module, on this machine, and the CLI runs in-process, so `--ray` joins that Ray. Without
ray installed these tests are skipped, except under CI=1, where a missing ray fails them.
"""

from __future__ import annotations

import importlib
import json
import os
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

if os.environ.get("CI") == "1":
    importlib.import_module("ray")  # CI installs the ray extra: a missing ray is a failure there, not a skip
else:
    pytest.importorskip("ray")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")  # Ray Data's own settings, not ours

WIKI = ROOT / "corpora" / "wiki-demo" / "docs.jsonl"
QUERIES = ["what causes the northern lights", "who discovered penicillin", "volcanic eruptions", "a piano keyboard"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (`--ray` and `Index.open(ray=...)` use a Ray already started)."""
    import ray

    from bertsearch.models.ray_encoder import connect

    connect(None)
    yield
    ray.shutdown()


def wiki(tmp_path: Path, name: str, start: int, stop: int) -> Path:
    lines = WIKI.read_text(encoding="utf-8").splitlines()[start:stop]
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def stored_vectors(index: Path) -> dict[tuple[str, int, int, int], np.ndarray]:
    """Every chunk's vector, by (document id, chunk number, start, end)."""
    with sqlite3.connect(index / "store.db") as conn:
        rows = conn.execute('SELECT d.id, c.ord, c.start, c."end", c.vector FROM chunks c '
                            "JOIN documents d ON d.rowid = c.doc").fetchall()
    return {(d, o, a, b): np.frombuffer(v, dtype=np.float32) for d, o, a, b, v in rows}


def assert_same_vectors(a: Path, b: Path) -> int:
    xa, xb = stored_vectors(a), stored_vectors(b)
    assert xa.keys() == xb.keys()  # the same chunks
    keys = sorted(xa)
    assert np.allclose(np.stack([xa[k] for k in keys]), np.stack([xb[k] for k in keys]), atol=1e-6)
    return len(keys)


def results(run, index: Path, mode: str) -> list[list[tuple[str, float]]]:
    out = []
    for q in QUERIES:
        r = run("search", q, "--index", index, "--mode", mode, "-k", 5, "--json")
        assert r.exit_code == 0, r.output
        out.append([(h["doc_id"], round(h["score"], 5)) for h in json.loads(r.stdout)["hits"]])
    return out


def test_index_and_add_with_ray_equal_the_single_process_index(run, tmp_path):
    first, more = wiki(tmp_path, "first.jsonl", 0, 200), wiki(tmp_path, "more.jsonl", 200, 260)
    plain, rayed = tmp_path / "plain", tmp_path / "rayed"
    for index, extra in ((plain, []), (rayed, ["--ray"])):
        r = run("index", first, "--index", index, "--model", "hashing:64", *extra)
        assert r.exit_code == 0, r.output
        r = run("add", more, "--index", index, *extra)
        assert r.exit_code == 0, r.output
    assert assert_same_vectors(plain, rayed) > 200  # more chunks than Ray's local fallback (64): Ray encoded them
    for mode in ("dense", "hybrid"):
        assert results(run, plain, mode) == results(run, rayed, mode)
    info = json.loads((rayed / "config.json").read_text())
    assert "ray" not in json.dumps(info).lower()  # the index does not record Ray: searching needs none


def test_one_ray_call_per_large_document_batch_and_queries_stay_local(tmp_path):
    import bertsearch
    from bertsearch.models.ray_encoder import RayEncoder

    docs = [json.loads(line) for line in WIKI.read_text(encoding="utf-8").splitlines()[:300]]
    with bertsearch.open_index(tmp_path / "ix", create=True, model="hashing:64", ray="local") as ix:
        enc = ix.encoder.inner
        assert isinstance(enc, RayEncoder)
        assert enc.preferred_batch >= 1024
        report = ix.add(docs)  # 300 documents: one batch, so one Ray call
        assert report.chunks > enc.local_below and enc.calls == 1
        hits = ix.search("who discovered penicillin", k=3, mode="dense")  # a query runs on the local encoder
        assert hits and enc.calls == 1


def test_a_bad_address_is_one_line_and_loses_nothing(run, tmp_path):
    corpus = wiki(tmp_path, "c.jsonl", 0, 20)
    index = tmp_path / "ix"
    assert run("index", corpus, "--index", index, "--model", "hashing:64").exit_code == 0
    before = stored_vectors(index)
    r = run("add", wiki(tmp_path, "more.jsonl", 20, 40), "--index", index, "--ray", "ray://127.0.0.1:1")
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and "cannot reach the Ray cluster at ray://127.0.0.1:1" in r.stderr
    assert stored_vectors(index).keys() == before.keys()  # the index is as it was
    r = run("index", corpus, "--index", tmp_path / "new", "--model", "hashing:64", "--ray", "ray://127.0.0.1:1")
    assert r.exit_code == 1 and "cannot reach" in r.stderr
    assert not (tmp_path / "new").exists()  # no half-made index left behind


def test_without_ray_installed_the_error_names_the_extra(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    monkeypatch.setitem(sys.modules, "ray.data", None)
    r = run("index", wiki(tmp_path, "c.jsonl", 0, 5), "--index", tmp_path / "ix", "--model", "hashing", "--ray")
    assert r.exit_code == 1
    assert "pip install bertsearch[ray]" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.model
def test_real_model_vectors_on_ray_equal_the_local_ones():
    from bertsearch.models import load_encoder
    from bertsearch.models.ray_encoder import RayEncoder

    texts = [f"{d['title']}\n{d['text']}" for d in map(json.loads, WIKI.read_text(encoding="utf-8").splitlines()[:30])]
    local = load_encoder(None, precision="fp32")  # bf16 autocast rounds differently as a batch's padding changes
    xq = local.encode(texts)
    enc = RayEncoder(local, precision="fp32", local_below=0).start()
    xr = enc.encode(texts)
    assert enc.calls == 1 and xr.shape == xq.shape == (30, 384)
    assert np.abs(xr - xq).max() < 1e-5
