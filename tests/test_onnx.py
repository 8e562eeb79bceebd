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
