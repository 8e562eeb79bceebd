"""Re-indexing with another encoder: the old index serves until the swap, writes made meanwhile carry
over, an interrupted run resumes, and a crash inside the swap is repaired on the next open."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import bertsearch
from bertsearch import reindex as rx
from bertsearch.cli import cli
from bertsearch.errors import IndexBusy, IndexReplaced


@pytest.fixture
def old(tmp_path, docs):
    path = tmp_path / "ix"
    with bertsearch.open_index(path, create=True, model="hashing:64") as ix:
        ix.add(docs)
    return path


def test_reindex_swaps_in_the_new_model_and_keeps_every_document(old, docs):
    report = rx.reindex(old, "hashing:128")
    assert report["from_model"] == "hashing:64" and report["to_model"] == "hashing:128"
    assert report["documents"] == len(docs) and report["embedded_chunks"] >= len(docs)
    with bertsearch.open_index(old) as ix:
        assert ix.config.model == "hashing:128" and ix.config.dim == 128
        assert ix.get("penicillin")["metadata"] == {"topic": "medicine", "year": 1928}
        assert ix.search("magma chamber", k=1, mode="dense")[0].doc_id == "volcano"
        assert ix.check()["ok"]
    assert not rx.staging_path(old).exists() and not rx.retired_path(old).exists()


def test_the_old_index_serves_and_takes_writes_until_the_swap(old):
    def meanwhile():
        with bertsearch.open_index(old) as ix:  # still the old model
            assert ix.config.model == "hashing:64"
            assert ix.search("piano", k=1)[0].doc_id == "piano"
            ix.add([{"id": "late", "text": "A late arrival about comets and their tails.", "topic": "science"}])
            ix.add([{"id": "piano", "text": "The piano, rewritten during the re-index.", "topic": "music"}])
            ix.delete(["aurora"])

    report = rx.reindex(old, "hashing:128", before_swap=meanwhile)
    assert report["caught_up"] == 3
    with bertsearch.open_index(old) as ix:
        assert ix.get("late") is not None and ix.get("aurora") is None
        assert ix.get("piano")["text"] == "The piano, rewritten during the re-index."
        assert ix.search("comets tails", k=1, mode="dense")[0].doc_id == "late"


def test_a_writer_holding_the_replaced_index_gets_an_error_not_a_lost_write(old):
    stale = bertsearch.open_index(old)
    try:
        rx.reindex(old, "hashing:128")
        with pytest.raises(IndexBusy, match="replaced"):
            stale.add([{"id": "lost", "text": "this write would vanish with the old folder"}])
        # nor does it read the old copy in silence (a search served documents deleted since, missed those added)
        for read in (lambda: stale.search("piano", k=1), lambda: stale.search("piano", k=1, mode="lexical"),
                     lambda: stale.get("piano"), lambda: stale.ask("what is a piano")):
            with pytest.raises(IndexReplaced, match="open it again"):
                read()
    finally:
        stale.close()
    with bertsearch.open_index(old) as ix:
        assert ix.get("lost") is None and ix.config.model == "hashing:128"


def test_an_interrupted_copy_resumes_and_the_old_index_is_untouched(old, monkeypatch):
    calls = []

    def crash():
        calls.append(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rx.reindex(old, "hashing:128", before_swap=crash)
    with bertsearch.open_index(old) as ix:
        assert ix.config.model == "hashing:64" and ix.store.counts()["documents"] == 4
    assert rx.staging_path(old).exists()
    report = rx.reindex(old, "hashing:128")
    assert report["embedded_chunks"] == 0  # everything was embedded by the first run
    with bertsearch.open_index(old) as ix:
        assert ix.config.model == "hashing:128"


def _cut_inside_the_swap(path, *, complete: bool) -> None:
    """Leave things as a crash after the first rename of the swap would: a built staging index (marked
    complete or not), the old folder retired, no index folder."""
    def stop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rx.reindex(path, "hashing:128", before_swap=stop)
    if complete:
        (rx.staging_path(path) / rx.COMPLETE).write_text("{}")
    path.rename(rx.retired_path(path))


@pytest.mark.parametrize(("complete", "model"), [(True, "hashing:128"), (False, "hashing:64")])
def test_a_crash_between_the_renames_is_repaired_on_open(old, complete, model):
    _cut_inside_the_swap(old, complete=complete)
    with bertsearch.open_index(old) as ix:
        assert ix.config.model == model and ix.store.counts()["documents"] == 4
        ix.add([{"id": "after", "text": "written after the repair"}])  # writable: not retired
        assert ix.get("after") is not None
    assert not rx.retired_path(old).exists()
    # a complete copy became the index; an incomplete one stays for the next reindex to resume
    assert rx.staging_path(old).exists() is not complete


def test_reindex_works_when_the_old_model_is_gone(old, tmp_path):
    from bertsearch.store import Store

    store = Store(old / Store.FILE)
    config = store.config
    config.model = str(tmp_path / "deleted-model")  # the folder the index was built with no longer exists
    store.set_config(config)
    store.close()
    with bertsearch.open_index(old) as ix, pytest.raises(bertsearch.BertsearchError, match="pass --model"):
        ix.search("magma chamber", k=1, mode="dense")  # (it opens: a lexical search needs no model)
    report = rx.reindex(old, "hashing:128")
    assert report["to_model"] == "hashing:128"
    with bertsearch.open_index(old) as ix:
        assert ix.search("magma chamber", k=1, mode="dense")[0].doc_id == "volcano"


def test_reindex_to_the_same_model_is_refused(old):
    with pytest.raises(bertsearch.BertsearchError, match="already holds vectors"):
        rx.reindex(old, "hashing:64")


def test_cli_reindex(old, tmp_path):
    r = CliRunner().invoke(cli, ["reindex", "--index", str(old), "--model", "hashing:128", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["to_model"] == "hashing:128"
    r = CliRunner().invoke(cli, ["reindex", "--index", str(tmp_path / "none"), "--model", "hashing:128"])
    assert r.exit_code == 1 and "no index" in r.stderr.lower()


def test_to_or_from_the_hashing_encoder_the_runtime_is_the_new_models_and_bad_names_leave_nothing(old, monkeypatch):
    """An index first built with hashing:N (recorded as torch) was re-embedded with a real model on torch, 9x slower
    than OpenVINO, and `hashing:0` gave a traceback and left a staging folder."""
    from bertsearch import models
    from bertsearch.errors import ModelNotFound
    from bertsearch.store import Store

    store = Store(old / Store.FILE)
    config = store.config
    config.backend = "openvino"  # what a hashing index must not pass on
    store.set_config(config)
    store.close()
    chosen = []
    real = models.auto_backend
    monkeypatch.setattr(models, "auto_backend", lambda model, device=None: chosen.append(model) or real(model, device))
    rx.reindex(old, "hashing:128")
    assert chosen == ["hashing:128"]  # chosen for the new model, not copied from the old index
    with bertsearch.open_index(old) as ix:
        assert ix.config.backend == "torch" and ix.info()["precision"] == "fp32"
    with pytest.raises(ModelNotFound, match="bad model name hashing:0"):
        rx.reindex(old, "hashing:0")
    assert not rx.staging_path(old).exists()


def test_nothing_to_reindex_leaves_no_staging_folder(old):
    """A refused reindex (the same model) left a hidden, empty staging index beside the index."""
    from bertsearch.errors import BadArgument

    with pytest.raises(BadArgument, match="already holds vectors of hashing:64.*nothing to re-index"):
        rx.reindex(old, "hashing:64")
    assert not rx.staging_path(old).exists()
    assert rx.reindex(old, "hashing:128")["documents"] == 4  # (and a real one still runs)
