"""The encoder, reranker and reader on OpenVINO: close to torch, converted once, recorded by the index."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

if os.environ.get("CI") != "1":  # CI installs openvino: there, a missing one is a failure, not a skip
    pytest.importorskip("openvino")

import bertsearch
from bertsearch.errors import BadArgument, BertsearchError, ModelMismatch, ModelNotFound
from bertsearch.models import load_encoder, query_backend
from bertsearch.models import openvino as ovb
from bertsearch.models.reader import load_reader
from bertsearch.models.reranker import load_reranker

TEXTS = ["Aurora\nAn aurora is a natural light display in the sky caused by the solar wind.",
         "Alexander Fleming discovered penicillin in 1928.", "short", "A volcano " * 150]
QUESTION = "who discovered penicillin"
PASSAGES = ["Alexander Fleming discovered penicillin in 1928 when he noticed mould killing bacteria.",
            "The aurora borealis is caused by the solar wind striking the magnetosphere.",
            "Penicillin is a group of antibiotics used against bacterial infections. " * 40,  # windowed: 3 windows
            "Fleming was a Scottish physician and microbiologist.",
            "The piano is a keyboard instrument; a hammer strikes strings.",
            "Antibiotics such as penicillin were first used widely during the Second World War."]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.mark.model
def test_openvino_vectors_are_close_to_torch_and_the_tokenizer_agrees(export_cache):
    torch = load_encoder(None, precision="fp32")
    b = torch.encode(TEXTS)
    for precision, floor in (("auto", 0.99), ("fp32", 0.9999)):  # auto: bfloat16 on a CPU that runs it natively
        ov = load_encoder(None, backend="openvino", precision=precision)
        a = ov.encode(TEXTS)
        assert a.shape == b.shape == (4, 384) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
        assert (a * b).sum(1).mean() >= floor, precision
    assert ov.token_spans(TEXTS) == torch.token_spans(TEXTS) and ov.input_tokens(TEXTS) == torch.input_tokens(TEXTS)
    assert (ov.dim, ov.max_tokens, ov.special_tokens) == (384, 256, 2)
    assert ov.fingerprint() == torch.fingerprint()
    assert ov.encode(TEXTS[:1], batch_size=1).shape == (1, 384) and ov.encode([]).shape == (0, 384)
    # a batch padded with longer texts gives the same vector as the text alone
    assert np.allclose(ov.encode(TEXTS)[2], ov.encode(TEXTS[2:3])[0], atol=1e-5)


@pytest.mark.model
def test_encode_reuses_the_ids_that_input_tokens_counted(export_cache):
    """Ingestion counts each chunk's word pieces before it encodes the chunk: the second tokenization is skipped."""
    enc = load_encoder(None, backend="openvino")
    fresh = enc.encode(TEXTS)
    real, calls = enc.tokenizer, []

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def encode_batch(self, texts, **kwargs):
            calls.append(list(texts))
            return real.encode_batch(texts, **kwargs)

    enc._tokenizer = Spy()
    assert enc.input_tokens(TEXTS[:3]) == [len(e.ids) for e in real.encode_batch(TEXTS[:3])]
    v = enc.encode(TEXTS)
    assert calls == [TEXTS[:3], TEXTS[3:]]  # only the text not counted was tokenized again
    assert np.allclose(v, fresh, atol=1e-6)
    enc.encode(TEXTS[:1])  # the counted ids serve one encode: afterwards a text is tokenized again
    assert calls[-1] == TEXTS[:1]


@pytest.mark.model
def test_the_conversion_is_made_once_and_reused(export_cache, monkeypatch):
    enc = load_encoder(None, backend="openvino")
    folder = ovb.converted(enc.path, "encoder")
    stamp = (folder / ovb.IR).stat().st_mtime_ns
    assert folder.parent == export_cache / "openvino" and folder.name == f"{enc.fingerprint()}-encoder"

    def no_export(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(ovb, "export_fp32", no_export)
    again = load_encoder(None, backend="openvino")
    assert again.encode(TEXTS[:2]).shape == (2, 384)
    assert ovb.converted(enc.path, "encoder") == folder and (folder / ovb.IR).stat().st_mtime_ns == stamp
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no half-made folder left behind
    # a new recipe (a change to how the folders are made) never reads a folder the old one made
    from bertsearch.models import onnx as onnxb

    monkeypatch.setattr(onnxb, "RECIPE", 2)
    made = []
    monkeypatch.setattr(ovb, "export_fp32", lambda *a, **k: made.append(a) or no_export())
    with pytest.raises(AssertionError, match="converted again"):
        ovb.converted(enc.path, "encoder")
    assert made and ovb.folder_name(enc.fingerprint(), "encoder") == f"{enc.fingerprint()}-encoder-r2"


@pytest.mark.model
def test_each_precision_keeps_its_own_compiled_model(export_cache, monkeypatch):
    """OpenVINO's cache handed a compile for bfloat16 the model compiled for fp32 from the same IR, and wrong vectors
    came out (or the process crashed): each set of settings now keeps its own."""
    folder = ovb.converted(load_encoder(None, backend="openvino").path, "encoder")
    (folder / ovb.COMPILED).mkdir(exist_ok=True)
    (folder / ovb.COMPILED / "6696935190294111183.blob").write_bytes(b"kept loose by an older version")
    got: dict[str, list[np.ndarray]] = {"fp32": [], "bf16": []}
    for precision in ("fp32", "bf16", "fp32", "bf16"):  # each compiled after the other's model was cached
        got[precision].append(ovb._check(ovb.Runner(ovb.compile_ir(folder, precision)), ovb.reading(folder)))
    for precision, runs in got.items():
        fresh = ovb._check(ovb.Runner(ovb.compile_ir(folder, precision, cache=False)), ovb.reading(folder))
        for v in runs:
            assert np.allclose(v, fresh, atol=1e-4), precision
    kept = list((folder / ovb.COMPILED).iterdir())
    assert len(kept) == 2 and all(p.is_dir() and any(p.glob("*.blob")) for p in kept)  # the loose one is gone
    # a cache folder that cannot be made (a cache the user may only read): compiled all the same, nothing kept
    blocked = folder / ovb.COMPILED / "blocked"
    blocked.write_text("a file where a folder would go", encoding="utf-8")
    monkeypatch.setattr(ovb, "compiled_dir", lambda folder, config: blocked / "key")
    fresh = ovb._check(ovb.Runner(ovb.compile_ir(folder, "fp32", cache=False)), ovb.reading(folder))
    assert np.allclose(ovb._check(ovb.Runner(ovb.compile_ir(folder, "fp32")), ovb.reading(folder)), fresh, atol=1e-4)
    blocked.unlink()


@pytest.mark.model
def test_an_encoder_that_compiled_wrong_is_refused_before_it_encodes(export_cache):
    enc = load_encoder(None, backend="openvino")
    folder = ovb.converted(enc.path, "encoder")
    record = folder / ovb.MARKER
    saved = record.read_text(encoding="utf-8")
    meta = json.loads(saved)
    fp32 = meta["check"]["fp32"]  # fp32's output for a check sentence, recorded when it was converted
    assert len(fp32) == 384 and meta["check"]["text"] == ovb.CHECK
    try:
        record.write_text(json.dumps({**meta, "check": {"text": ovb.CHECK, "fp32": [-v for v in fp32]}}),
                          encoding="utf-8")
        wrong = load_encoder(None, backend="openvino")
        for _ in range(2):  # and again on the next call: nothing encodes with it
            with pytest.raises(BertsearchError, match=r"strays from fp32 \(cosine -1.000.*Remove .*--backend torch"):
                wrong.encode(["a text"])
        # a folder converted before the check was recorded (or with another sentence) gets it on its next load
        record.write_text(json.dumps({**{k: v for k, v in meta.items() if k != "check"}, "probe": [0.0] * 384}),
                          encoding="utf-8")
        assert load_encoder(None, backend="openvino").encode(["a text"]).shape == (1, 384)
        assert np.allclose(json.loads(record.read_text(encoding="utf-8"))["check"]["fp32"], fp32, atol=1e-4)
    finally:
        record.write_text(saved, encoding="utf-8")


@pytest.mark.model
def test_a_lexical_search_does_not_load_the_encoder(tmp_path, export_cache, docs, monkeypatch):
    with bertsearch.open_index(tmp_path / "ix", create=True, backend="openvino") as ix:
        ix.add(docs)

    def no_model(self):
        raise BertsearchError("the encoder was loaded")

    monkeypatch.setattr(ovb.OpenVINOEncoder, "_load", no_model)
    with bertsearch.open_index(tmp_path / "ix") as ix:
        assert ix.search("penicillin", mode="lexical", k=3)  # BM25 alone: no model
        with pytest.raises(BertsearchError, match="the encoder was loaded"):
            ix.search("penicillin", mode="dense", k=3)


@pytest.mark.model
def test_reranker_scores_follow_torch(export_cache):
    ov, torch = load_reranker(backend="openvino"), load_reranker(precision="fp32")
    assert isinstance(ov, ovb.OpenVINOReranker)
    assert (ov.max_length, ov.stride) == (torch.max_length, torch.stride)
    assert ov.windows(QUESTION, PASSAGES) == torch.windows(QUESTION, PASSAGES)
    assert len(ov.windows(QUESTION, PASSAGES)[2]) > 1
    a, b = ov.score(QUESTION, PASSAGES), torch.score(QUESTION, PASSAGES)
    assert a.shape == b.shape == (len(PASSAGES),)
    assert _spearman(a, b) >= 0.9 and int(np.argmax(a)) == int(np.argmax(b)) == 0
    assert np.abs(a - b).max() < 0.5  # the same logits, to bfloat16's precision
    many = ov.score_batch([QUESTION, "what causes auroras"], [PASSAGES, PASSAGES[:2]])
    assert np.allclose(many[0], a, atol=1e-4) and int(np.argmax(many[1])) == 1


@pytest.mark.model
def test_the_tokenizer_stands_in_for_transformers(export_cache):
    """Pieces gives what the reranker and the reader read of a transformers fast tokenizer, to the token."""
    from transformers import AutoTokenizer

    reader = load_reader(backend="openvino")
    hf = AutoTokenizer.from_pretrained(str(reader.path))
    ours = reader.tokenizer
    kwargs = {"truncation": "only_second", "max_length": 64, "stride": 16, "return_overflowing_tokens": True,
              "return_offsets_mapping": True, "return_token_type_ids": True}
    a = ours([QUESTION] * 3, PASSAGES[:3], **kwargs)
    b = hf([QUESTION] * 3, PASSAGES[:3], **kwargs)
    assert len(a["input_ids"]) > 3  # the long passage overflowed into several windows
    for key in ("input_ids", "attention_mask", "token_type_ids", "overflow_to_sample_mapping"):
        assert list(a[key]) == list(b[key]), key
    assert [list(map(tuple, o)) for o in a["offset_mapping"]] == [list(map(tuple, o)) for o in b["offset_mapping"]]
    assert all(a.sequence_ids(w) == b.sequence_ids(w) for w in range(len(a["input_ids"])))
    single = ours(PASSAGES, add_special_tokens=False)
    assert single.word_ids(2) == hf(PASSAGES, add_special_tokens=False).word_ids(2)
    assert ours.num_special_tokens_to_add(pair=True) == hf.num_special_tokens_to_add(pair=True) == 3


@pytest.mark.model
def test_the_reader_finds_the_same_answers(export_cache):
    ov, torch = load_reader(backend="openvino"), load_reader(precision="fp32")
    a, b = ov.read(QUESTION, PASSAGES, per_passage=2), torch.read(QUESTION, PASSAGES, per_passage=2)
    assert a[0].text == b[0].text == "Alexander Fleming" and a[0].passage == b[0].passage == 0
    assert [(s.passage, s.start, s.end) for s in a[:3]] == [(s.passage, s.start, s.end) for s in b[:3]]
    assert abs(a[0].score - b[0].score) < 0.5 and abs(a[0].null_score - b[0].null_score) < 0.5


@pytest.mark.model
def test_an_index_records_its_backend_and_refuses_the_other(tmp_path, export_cache, docs, monkeypatch):
    monkeypatch.delenv("BERTSEARCH_QUERY_BACKEND", raising=False)
    with bertsearch.open_index(tmp_path / "ix", create=True, backend="openvino") as ix:
        ix.add(docs)
        assert ix.info()["backend"] == "openvino"
        assert ix.search("what causes the northern lights", k=1, mode="dense")[0].doc_id == "aurora"
    with bertsearch.open_index(tmp_path / "ix") as ix:  # the index's own backend, unnamed
        assert ix.config.backend == "openvino"
        hits = ix.search("penicillin mould", k=2, rerank=True)
        assert hits[0].doc_id == "penicillin" and isinstance(ix.reranker.inner, ovb.OpenVINOReranker)
        result = ix.ask("who discovered penicillin")
        assert isinstance(ix.reader.inner, ovb.OpenVINOReader)
        assert result.answers and "Fleming" in result.answers[0].text
    for other in ("torch", "onnx"):
        with pytest.raises(ModelMismatch, match="openvino backend computed"):
            bertsearch.open_index(tmp_path / "ix", backend=other)


def test_the_query_backend_is_chosen_by_argument_then_environment_then_index(monkeypatch):
    monkeypatch.delenv("BERTSEARCH_QUERY_BACKEND", raising=False)
    assert query_backend() == query_backend(None, "onnx") == "torch"
    assert query_backend(None, "openvino") == "openvino" and query_backend("torch", "openvino") == "torch"
    monkeypatch.setenv("BERTSEARCH_QUERY_BACKEND", "openvino")
    assert query_backend() == "openvino" and query_backend("torch") == "torch"
    monkeypatch.setenv("BERTSEARCH_QUERY_BACKEND", "tensorrt")
    with pytest.raises(ModelNotFound, match="BERTSEARCH_QUERY_BACKEND"):
        query_backend()


def test_bad_settings_are_refused_before_anything_loads(tmp_path):
    with pytest.raises(BadArgument, match="runs on the CPU"):
        load_reranker(backend="openvino", device="cuda")
    with pytest.raises(BadArgument, match="precision"):
        load_encoder(None, backend="openvino", precision="int4")
    with pytest.raises(BadArgument, match="unknown reader backend"):
        load_reader(backend="onnx")
    with pytest.raises(BadArgument, match="precision"):
        ovb.precision_hint("fp16")


def test_batches_go_shortest_first_within_their_limits():
    lengths = [5, 300, 40, 41, 200, 7, 39]
    batches = ovb.length_batches(lengths, max_rows=3, max_tokens=100)
    assert sorted(i for b in batches for i in b.tolist()) == list(range(len(lengths)))  # each input once
    flat = [lengths[i] for b in batches for i in b.tolist()]
    assert flat == sorted(lengths)
    for b in batches:
        rows = [lengths[i] for i in b.tolist()]
        assert len(rows) <= 3 and (len(rows) == 1 or len(rows) * max(rows) <= 100)
    assert [len(b) for b in batches] == [2, 2, 1, 1, 1]  # (5, 7), (39, 40), (41), (200), (300): one past the limit alone
    inputs = ovb.padded([[101, 7, 102], [101, 102]], [[0, 0, 1], [0, 1]])
    assert inputs["input_ids"].shape == (2, ovb.PAD_TO) and inputs["attention_mask"].sum(1).tolist() == [3, 2]
    assert inputs["token_type_ids"][0, :4].tolist() == [0, 0, 1, 0]


def test_auto_picks_openvino_on_a_cpu_and_torch_where_it_cannot_run(monkeypatch):
    import importlib.util

    from bertsearch.models import auto_backend

    monkeypatch.delenv("BERTSEARCH_BACKEND", raising=False)
    assert auto_backend() == "openvino"  # here: a CPU, openvino installed (and CUDA absent)
    assert auto_backend("hashing") == auto_backend("hashing:32") == "torch"  # no runtime to choose
    assert auto_backend(None, "cuda") == auto_backend(None, "cuda:1") == "torch"
    assert auto_backend(None, "cpu") == "openvino"
    import bertsearch.models as models

    monkeypatch.setattr(models, "_cuda", lambda: True)  # a GPU torch can use
    assert auto_backend() == "torch"
    monkeypatch.undo()
    monkeypatch.delenv("BERTSEARCH_BACKEND", raising=False)
    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else find(name, *a))
    assert auto_backend() == "torch"
    monkeypatch.setattr(importlib.util, "find_spec", find)
    monkeypatch.setenv("BERTSEARCH_BACKEND", "onnx")
    assert auto_backend() == "onnx"
    monkeypatch.setenv("BERTSEARCH_BACKEND", "tensorrt")
    with pytest.raises(ModelNotFound, match="BERTSEARCH_BACKEND"):
        auto_backend()


@pytest.mark.model
def test_a_new_index_runs_on_openvino_by_default_and_a_query_imports_no_torch(tmp_path, export_cache, corpus_file,
                                                                               monkeypatch):
    import json
    import subprocess
    import sys

    monkeypatch.delenv("BERTSEARCH_BACKEND", raising=False)
    monkeypatch.delenv("BERTSEARCH_QUERY_BACKEND", raising=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "bertsearch", *map(str, args)], env=env, capture_output=True,
                              text=True, timeout=600)

    ix = tmp_path / "ix"
    done = cli("index", corpus_file, "--index", ix)
    assert done.returncode == 0, done.stderr
    assert json.loads(cli("info", "--index", ix, "--json").stdout)["backend"] == "openvino"
    # a one-shot query on it: the encoder, the reranker and the reader on OpenVINO, and torch never imported
    probe = ("import sys, bertsearch; ix = bertsearch.open_index(sys.argv[1]); "
             "r = ix.ask('who discovered penicillin'); assert 'Fleming' in r.answers[0].text, r; "
             "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules))")
    for _ in range(2):  # the first converts the reranker and the reader (that needs torch, once per machine)
        done = subprocess.run([sys.executable, "-c", probe, str(ix)], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    # --query-backend torch runs the reranker on torch for this one command; the answer is the same
    done = cli("search", "penicillin mould", "--index", ix, "--rerank", "--query-backend", "torch", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hits"][0]["doc_id"] == "penicillin"
    # --backend auto on the existing index is its own backend, not a mismatch; naming another is refused
    assert cli("index", corpus_file, "--index", ix, "--backend", "auto").returncode == 0
    done = cli("index", corpus_file, "--index", ix, "--backend", "torch")
    assert done.returncode != 0 and "openvino backend computed" in done.stderr


@pytest.mark.model
def test_a_model_openvino_cannot_convert_falls_back_to_torch_for_auto_only(tmp_path, export_cache, monkeypatch, caplog):
    monkeypatch.delenv("BERTSEARCH_BACKEND", raising=False)

    def broken(*args, **kwargs):
        raise RuntimeError("Cannot export the operator XYZ")

    monkeypatch.setattr(ovb, "converted", broken)
    monkeypatch.setattr(ovb, "quantized", broken)  # where "auto" means int8 (a CPU with VNNI, no native bf16)
    with caplog.at_level("WARNING"), bertsearch.open_index(tmp_path / "auto", create=True) as ix:
        assert ix.config.backend == "torch"
        assert ix.encoder.encode(["a text"]).shape == (1, 384)
    assert "could not run on openvino" in caplog.text and "XYZ" in caplog.text
    with pytest.raises(RuntimeError, match="XYZ"):  # named outright: the failure is the user's to see
        bertsearch.open_index(tmp_path / "named", create=True, backend="openvino")
    assert not (tmp_path / "named").exists()  # and no half-made index is left
    # a cache folder that cannot be written: the warning says where the converted models go, and how to move them
    caplog.clear()
    monkeypatch.setattr(ovb, "converted", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "denied")))
    monkeypatch.setattr(ovb, "quantized", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "denied")))
    with caplog.at_level("WARNING"), bertsearch.open_index(tmp_path / "unwritable", create=True) as ix:
        assert ix.config.backend == "torch"
    assert f"kept in {export_cache}: set $BERTSEARCH_CACHE to a folder you can write" in caplog.text


@pytest.mark.model
def test_a_reranker_openvino_cannot_convert_runs_on_torch_unless_openvino_was_asked_for(tmp_path, export_cache, docs,
                                                                                      monkeypatch, caplog):
    from bertsearch.models.reranker import CrossEncoderReranker

    monkeypatch.delenv("BERTSEARCH_QUERY_BACKEND", raising=False)
    with bertsearch.open_index(tmp_path / "ix", create=True, backend="openvino") as ix:
        ix.add(docs)
    real = ovb.converted

    def broken(path, role, *args, **kwargs):
        if role == "encoder":
            return real(path, role, *args, **kwargs)
        raise RuntimeError("Cannot export the operator XYZ")

    monkeypatch.setattr(ovb, "converted", broken)
    with caplog.at_level("WARNING"), bertsearch.open_index(tmp_path / "ix") as ix:
        assert ix.search("penicillin mould", k=2, rerank=True)[0].doc_id == "penicillin"
        assert type(ix.reranker.inner) is CrossEncoderReranker
    assert "could not run on openvino" in caplog.text
    with bertsearch.open_index(tmp_path / "ix") as ix:  # asked for by name: the failure is the user's to see
        ix.query_backend = "openvino"
        with pytest.raises(RuntimeError, match="XYZ"):
            ix.search("penicillin mould", k=2, rerank=True)


def test_auto_takes_int8_only_where_vnni_runs_it_and_bf16_is_not_native(monkeypatch):
    assert ovb.auto_precision(bf16=True, flags={"avx512_vnni", "amx_bf16"}) == "bf16"
    assert ovb.auto_precision(bf16=False, flags={"avx512f", "avx512_vnni"}) == "int8"  # Cascade Lake, Ice Lake
    assert ovb.auto_precision(bf16=False, flags={"avx2", "avx_vnni"}) == "int8"  # Alder Lake and after
    assert ovb.auto_precision(bf16=False, flags={"avx2", "fma"}) == "fp32"  # no int8 dot products: int8 is slower
    assert ovb.auto_precision(bf16=False, flags=set()) == "fp32"  # flags unknown (not Linux)
    with pytest.raises(BadArgument, match="needs a CPU with VNNI"):
        ovb.require_vnni({"avx2", "fma"})
    ovb.require_vnni({"avx2", "avx_vnni"})
    ovb.require_vnni(set())  # unknown: tried
    import importlib.util

    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else find(name, *a))
    assert ovb.auto_precision(bf16=False, flags={"avx512_vnni"}) == "fp32"  # nothing to quantise with
    import platform
    from pathlib import Path

    if Path("/proc/cpuinfo").is_file() and platform.machine() == "x86_64":
        assert {"sse2", "avx2"} <= ovb.cpu_flags()  # this machine's, read from Linux's list


def test_int8_is_refused_where_it_cannot_run_before_anything_is_made(tmp_path, corpus_file):
    from click.testing import CliRunner

    from bertsearch.cli import cli

    r = CliRunner().invoke(cli, ["index", str(corpus_file), "--index", str(tmp_path / "ix"), "--backend", "torch",
                                 "--precision", "int8"])
    assert r.exit_code == 1 and "runs on the openvino backend" in r.output and not (tmp_path / "ix").exists()
    with bertsearch.open_index(tmp_path / "h", create=True, model="hashing", backend="torch") as ix:
        ix.add([{"id": "a", "text": "aurora"}])
    with pytest.raises(ModelMismatch, match="int8 runs on the openvino backend"):
        bertsearch.open_index(tmp_path / "h", precision="int8")


@pytest.mark.model
def test_an_int8_index_keeps_int8_for_its_queries_and_refuses_float_ones(tmp_path, export_cache, docs, monkeypatch):
    monkeypatch.delenv("BERTSEARCH_BACKEND", raising=False)
    fp32 = load_encoder(None, backend="openvino", precision="fp32").encode(TEXTS)
    enc = load_encoder(None, backend="openvino", precision="int8")
    q = enc.encode(TEXTS)
    assert q.shape == (4, 384) and np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    cos = (q * fp32).sum(1)
    assert cos.min() > 0.99 and not np.allclose(q, fp32, atol=1e-4)  # int8: close, not equal
    assert (ovb.quantized(enc.path) / ovb.IR).is_file() and enc.vector_precision == "int8"
    # an int8 model that compiled wrong is refused when it loads, before it can index anything
    record = ovb.quantized(enc.path) / ovb.MARKER
    saved = record.read_text(encoding="utf-8")
    meta = json.loads(saved)
    record.write_text(json.dumps({**meta, "check": {"text": ovb.CHECK, "fp32": [-v for v in meta["check"]["fp32"]]}}),
                      encoding="utf-8")
    try:
        with pytest.raises(BertsearchError, match="strays from fp32"):
            load_encoder(None, backend="openvino", precision="int8").encode(["a text"])
    finally:
        record.write_text(saved, encoding="utf-8")
    # a new index on a CPU with VNNI and no native bf16 takes int8 by itself, and says so
    monkeypatch.setattr(ovb, "native_bf16", lambda: False)
    monkeypatch.setattr(ovb, "cpu_flags", lambda: {"avx512f", "avx512_vnni"})
    with bertsearch.open_index(tmp_path / "ix", create=True) as ix:
        ix.add(docs)
        assert ix.config.backend == "openvino" and ix.info()["precision"] == "int8"
        assert ix.search("what causes the northern lights", k=1, mode="dense")[0].doc_id == "aurora"
    monkeypatch.undo()
    monkeypatch.delenv("BERTSEARCH_BACKEND", raising=False)
    with bertsearch.open_index(tmp_path / "ix") as ix:  # here (bf16 or not), its queries stay int8
        assert ix.encoder.inner.precision == "int8"
        assert ix.search("what causes the northern lights", k=1, mode="dense")[0].doc_id == "aurora"
        assert ix.ask("who discovered penicillin").answers  # the reranker and reader (never int8) load
    for other in ("fp32", "bf16"):
        with pytest.raises(ModelMismatch, match="holds int8 vectors"):
            bertsearch.open_index(tmp_path / "ix", precision=other)
    with bertsearch.open_index(tmp_path / "f", create=True, precision="fp32") as ix:
        assert ix.info()["precision"] == "fp32"
    with pytest.raises(ModelMismatch, match="holds fp32 vectors"):
        bertsearch.open_index(tmp_path / "f", precision="int8")
    # `reindex` changes a float index to int8 with the same model (it said "nothing to re-index")
    from bertsearch import reindex as rx

    with bertsearch.open_index(tmp_path / "f") as ix:
        ix.add(docs)
        model = ix.config.model
    with pytest.raises(BadArgument, match=r"nothing to re-index \(to encode it in int8, add --precision int8\)"):
        rx.reindex(tmp_path / "f", model, precision="fp32")  # ("auto" is int8 on a CPU with VNNI and no bf16)
    assert rx.reindex(tmp_path / "f", model, precision="int8")["documents"] == len(docs)
    with bertsearch.open_index(tmp_path / "f") as ix:
        assert ix.info()["precision"] == "int8"
        assert ix.search("what causes the northern lights", k=1, mode="dense")[0].doc_id == "aurora"


@pytest.mark.model
def test_the_first_int8_index_keeps_stdout_for_its_json(tmp_path, export_cache, corpus_file):
    """NNCF logs a table and draws progress bars while it compresses the weights: none of it reaches stdout."""
    import shutil
    import subprocess
    import sys

    from bertsearch.models import DEFAULT_ENCODER, resolve_model_path

    shutil.rmtree(ovb.quantized(resolve_model_path(DEFAULT_ENCODER)))  # made again by the command below
    command = [sys.executable, "-m", "bertsearch", "index", str(corpus_file), "--index", str(tmp_path / "ix"),
               "--backend", "openvino", "--precision", "int8", "--json"]
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "BERTSEARCH_CACHE": str(export_cache)})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["added"] >= 3 and "compressing the encoder's weights" in run.stderr
