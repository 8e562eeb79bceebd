"""The encoder on ONNX Runtime (int8): close to the torch encoder's vectors, recorded by the index, exported once."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import bertsearch
from bertsearch.errors import ModelMismatch, ModelNotFound
from bertsearch.models import load_encoder
from bertsearch.models import onnx as ox

TEXTS = ["Aurora\nAn aurora is a natural light display in the sky caused by the solar wind.",
         "Alexander Fleming discovered penicillin in 1928.", "short", "A volcano " * 150]


@pytest.mark.model
def test_onnx_vectors_are_close_to_torch_and_the_tokenizer_agrees(export_cache):
    onnx, torch = load_encoder(None, backend="onnx"), load_encoder(None, precision="fp32")
    a, b = onnx.encode(TEXTS), torch.encode(TEXTS)
    assert a.shape == b.shape == (4, 384) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert (a * b).sum(1).min() > 0.98  # int8 weights: close, not equal
    one = onnx.encode(TEXTS, batch_size=1)  # a batch at a time, in length order (int8 activations are quantised
    assert (one * a).sum(1).min() > 0.97  # over their batch, so batches of other texts change them a little)
    assert onnx.token_spans(TEXTS) == torch.token_spans(TEXTS) and onnx.input_tokens(TEXTS) == torch.input_tokens(TEXTS)
    assert (onnx.dim, onnx.max_tokens, onnx.special_tokens) == (384, 256, 2)
    assert onnx.fingerprint() == torch.fingerprint()
    folder = ox.exported(onnx.path)  # made once, found again
    stamp = (folder / ox.EXPORT).stat().st_mtime_ns
    assert ox.exported(onnx.path) == folder and (folder / ox.EXPORT).stat().st_mtime_ns == stamp


@pytest.mark.model
def test_an_index_records_its_backend_and_refuses_the_other(tmp_path, export_cache, docs):
    with bertsearch.open_index(tmp_path / "ix", create=True, backend="onnx") as ix:
        ix.add(docs)
        assert ix.info()["backend"] == "onnx"
        assert ix.search("what causes the northern lights", k=1, mode="dense")[0].doc_id == "aurora"
    with bertsearch.open_index(tmp_path / "ix") as ix:  # the index's own backend, unnamed
        assert ix.config.backend == "onnx" and ix.search("penicillin mould", k=1, mode="dense")[0].doc_id == "penicillin"
    with pytest.raises(ModelMismatch, match="onnx backend computed"):
        bertsearch.open_index(tmp_path / "ix", backend="torch")


def test_a_model_without_a_pooling_module_is_refused_with_the_fix(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound, match="--backend torch"):
        ox._pooling(tmp_path)
    with pytest.raises(ModelNotFound, match="unknown backend"):
        load_encoder(None, backend="tensorrt")


def test_pooling_is_read_from_both_sentence_transformers_formats(tmp_path):
    import json

    from bertsearch.models.onnx import _pooling

    def folder(name, config):
        (tmp_path / name / "1_Pooling").mkdir(parents=True)
        (tmp_path / name / "1_Pooling" / "config.json").write_text(json.dumps(config))
        return tmp_path / name

    assert _pooling(folder("v5", {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
                                  "pooling_mode_max_tokens": False})) == "mean"
    assert _pooling(folder("v5cls", {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})) == "cls"
    assert _pooling(folder("v6", {"embedding_dimension": 32, "pooling_mode": "mean", "include_prompt": True})) == "mean"
    assert _pooling(folder("v6cls", {"pooling_mode": "cls"})) == "cls"
    for name, config in (("max", {"pooling_mode": "max"}), ("both", {"pooling_mode": ["mean", "max"]}),
                         ("v5both", {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True})):
        with pytest.raises(ModelNotFound, match="mean or CLS only"):
            _pooling(folder(name, config))


def test_the_window_is_read_as_sentence_transformers_reads_it(tmp_path):
    import json

    from bertsearch.models.onnx import _window

    def folder(name, **files):
        (tmp_path / name).mkdir()
        for file, config in files.items():
            (tmp_path / name / f"{file}.json").write_text(json.dumps(config))
        return tmp_path / name

    assert _window(folder("v5", sentence_bert_config={"max_seq_length": 256}, config={"max_position_embeddings": 512},
                          tokenizer_config={"model_max_length": 512})) == 256
    # sentence-transformers 6 keeps it in the tokenizer's config (a model saved by `bertsearch train encoder`)
    assert _window(folder("v6", sentence_bert_config={"module_output_name": "token_embeddings"},
                          tokenizer_config={"model_max_length": 64}, config={"max_position_embeddings": 512})) == 64
    assert _window(folder("nolimit", tokenizer_config={"model_max_length": 10**30},
                          config={"max_position_embeddings": 128})) == 128
    assert _window(folder("capped", sentence_bert_config={"max_seq_length": 1024},
                          config={"max_position_embeddings": 512})) == 512


def test_torch_models_run_in_half_precision_where_it_pays():
    import torch

    from bertsearch.models.sentence import autocast, bf16_is_fast, half_dtype

    assert half_dtype("cuda", "auto") is torch.float16 and half_dtype("cuda:0", "bf16") is torch.bfloat16
    assert half_dtype("cuda", "fp32") is None and half_dtype("cpu", "fp32") is None
    assert half_dtype("cpu", "bf16") is torch.bfloat16
    assert half_dtype(torch.device("cpu"), "auto") is (torch.bfloat16 if bf16_is_fast() else None)
    with autocast("cpu", "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.bfloat16
    with autocast("cpu", "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.float32


def test_counted_ids_serve_one_encode_and_are_forgotten_past_the_cap(monkeypatch, tmp_path):
    class Encoding:  # what tokenizers gives: ids, [CLS] and [SEP] around one piece a word
        def __init__(self, text):
            self.ids = [101] + [len(w) for w in text.split()] + [102]

    calls = []

    class Tokenizer:
        def encode_batch(self, texts, add_special_tokens=True):
            calls.append(list(texts))
            return [Encoding(t) for t in texts]

    enc = ox.OnnxEncoder("m", tmp_path)
    enc._tokenizer, enc._meta = Tokenizer(), {"max_seq_length": 4}
    monkeypatch.setattr(ox, "COUNTED", 10)
    assert enc.input_tokens(["a bb", "c dd eee"]) == [4, 5]
    assert enc.input_ids(["c dd eee", "ffff"]) == [[101, 1, 2, 102], [101, 4, 102]]  # cut to the window, [SEP] kept
    assert calls == [["a bb", "c dd eee"], ["ffff"]]  # only the text not counted was tokenized again
    enc.input_ids(["a bb"])  # the counts served one call: tokenized afresh now
    assert calls[-1] == ["a bb"]
    enc.input_tokens(["a b c d e f g h"])  # 10 pieces kept: at the cap, not past it
    enc.input_tokens(["x"])
    assert set(enc._counted) == {"a b c d e f g h", "x"}
    enc.input_tokens(["y"])  # past the cap: what was counted and never encoded is forgotten
    assert set(enc._counted) == {"y"}
