from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"

# A new index's encoder runtime ("auto" picks OpenVINO on a CPU where it is installed): the suite runs on torch,
# whose results its figures were written for, unless the environment names one, so that the same tests run on
# each backend: BERTSEARCH_BACKEND=openvino pytest -m model. test_backend_choice.py tests the choice itself.
os.environ.setdefault("BERTSEARCH_BACKEND", "torch")

DOCS = [
    {"id": "aurora", "title": "Aurora", "text": "An aurora, also called the northern lights, is a natural light display in "
     "the sky. Auroras are caused by disturbances in the magnetosphere by the solar wind.", "topic": "science"},
    {"id": "penicillin", "title": "Penicillin", "text": "Penicillin is a group of antibiotics. Alexander Fleming "
     "discovered penicillin in 1928 when he noticed mould killing bacteria.", "topic": "medicine", "year": 1928},
    {"id": "volcano", "title": "Volcano", "text": "A volcano is a rupture in the crust of a planet that allows hot lava, "
     "volcanic ash and gases to escape from a magma chamber below the surface.", "topic": "science"},
    {"id": "piano", "title": "Piano", "text": "The piano is a keyboard instrument. Pressing a key makes a hammer strike "
     "strings, and the sound is sustained by a pedal.", "topic": "music"},
]


@pytest.fixture
def run():
    """`bertsearch` in-process through click's runner: run("index", path, "--index", ix) -> the result."""
    from click.testing import CliRunner

    from bertsearch.cli import cli

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def docs() -> list[dict]:
    return [dict(d) for d in DOCS]


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    p = tmp_path / "docs.jsonl"
    p.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    return p


@pytest.fixture
def index(tmp_path: Path, docs):
    import bertsearch

    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing")
    ix.add(docs)
    yield ix
    ix.close()


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory):
    """A randomly initialised 2-layer BERT with mean pooling and the packaged MiniLM tokenizer."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from bertsearch.models import DEFAULT_ENCODER, resolve_model_path

    tok = AutoTokenizer.from_pretrained(str(resolve_model_path(DEFAULT_ENCODER)))
    raw = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=512)).save_pretrained(str(raw))
    tok.save_pretrained(str(raw))
    st = SentenceTransformer(modules=[models.Transformer(str(raw), max_seq_length=64), models.Pooling(32, "mean")])
    out = tmp_path_factory.mktemp("tiny-st")
    st.save(str(out))
    return out


@pytest.fixture
def recorded_progress():
    """A progress factory that records (description, total, steps advanced) for each bar opened."""
    from contextlib import contextmanager

    bars: list[list] = []

    @contextmanager
    def progress(description, total, unit="docs"):
        bar = [description, total, 0]
        bars.append(bar)

        def advance(n):
            bar[2] += n

        yield advance

    progress.bars = bars
    return progress


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory, request):
    """$BERTSEARCH_CACHE pointed at a fresh folder for one test module (the ONNX and OpenVINO exports go there)."""
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("bertsearch-cache")
    mp.setenv("BERTSEARCH_CACHE", str(folder))
    yield folder
    mp.undo()
