"""With the real packaged all-MiniLM-L6-v2 (offline). Marked `model`; run with the rest by default."""

import itertools
import json

import pytest
from click.testing import CliRunner

import bertsearch
from bertsearch.cli import cli

from conftest import ROOT

pytestmark = pytest.mark.model
DEMO = ROOT / "corpora" / "wiki-demo" / "docs.jsonl"


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory):
    wanted = {"aurora", "penicillin", "alexander-fleming", "photosynthesis", "black-hole", "dna", "albert-einstein"}
    with DEMO.open() as f:
        rows = [json.loads(line) for line in f]
    docs = [r for r in rows if r["id"] in wanted] + list(itertools.islice((r for r in rows if r["id"] not in wanted), 60))
    ix = bertsearch.open_index(tmp_path_factory.mktemp("demo") / "ix", create=True)
    report = ix.add(docs)
    assert report.added == len(docs) and report.truncated == 0
    yield ix
    ix.close()


@pytest.mark.parametrize(
    "query, expected",
    [
        ("what causes the northern lights", "aurora"),
        ("how do plants make energy from sunlight", "photosynthesis"),
        ("region of space where gravity lets nothing escape", "black-hole"),
    ],
)
@pytest.mark.parametrize("mode", ["hybrid", "dense"])
def test_real_model_finds_the_right_article(demo_index, query, expected, mode):
    assert demo_index.search(query, k=3, mode=mode)[0].doc_id == expected


def test_index_records_the_packaged_model(demo_index):
    info = demo_index.info()
    assert info["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert info["dim"] == 384 and info["max_tokens"] == 256


def test_long_document_is_chunked_within_the_window(tmp_path):
    ix = bertsearch.open_index(tmp_path / "ix", create=True)
    text = " ".join(f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(300))
    report = ix.add([{"id": "long", "title": "A long document", "text": text}])
    assert report.truncated == 0 and report.chunks > 10
    spans = ix.encoder.token_spans([ix.get("long")["text"][h.start : h.end] for h in ix.search("topic", k=1)])
    assert all(len(s) + 8 <= 256 for s in spans)


def test_cli_with_real_model(tmp_path):
    corpus = tmp_path / "c.jsonl"
    with DEMO.open() as f:
        corpus.write_text("".join(itertools.islice(f, 40)))
    runner = CliRunner()
    r = runner.invoke(cli, ["index", str(corpus), "--index", str(tmp_path / "ix"), "--json"])
    assert r.exit_code == 0, r.output
    first = json.loads(corpus.read_text().splitlines()[3])
    r = runner.invoke(cli, ["search", first["title"], "--index", str(tmp_path / "ix"), "--json", "-k", "3"])
    assert first["id"] in [h["doc_id"] for h in json.loads(r.stdout)["hits"]]


def test_bf16_encoding_matches_fp32(demo_index):
    import numpy as np

    from bertsearch.errors import BadArgument
    from bertsearch.models import load_encoder

    texts = [demo_index.get("aurora")["text"], "what causes the northern lights", "penicillin"]
    x32 = load_encoder(precision="fp32").encode(texts)
    x16 = load_encoder(precision="bf16").encode(texts)
    assert x16.dtype == np.float32 and x16.shape == x32.shape
    assert (x32 * x16).sum(axis=1).min() > 0.999
    with pytest.raises(BadArgument, match="precision"):
        load_encoder(precision="fp8")


def test_a_query_encodes_in_fp32_and_a_batch_at_the_asked_precision(monkeypatch):
    from bertsearch.models import load_encoder, sentence

    seen, real = [], sentence.autocast
    monkeypatch.setattr(sentence, "autocast", lambda device, precision: seen.append(precision) or real(device, precision))
    auto, bf16 = load_encoder(), load_encoder(precision="bf16")
    auto.encode(["what causes the northern lights"])
    auto.encode(["a", "b", "c"])
    bf16.encode(["what causes the northern lights"])  # asked for: kept
    on_cpu = auto.model.device.type == "cpu"  # (on a GPU, float16 autocast pays for a query too)
    assert seen == ["fp32" if on_cpu else "auto", "auto", "bf16"]


# -- the shipped reranker and reader --------------------------------------------------------------


def test_the_shipped_reranker_puts_the_answering_article_first(demo_index):
    hits = demo_index.search("who discovered penicillin", k=5, rerank=True)
    assert hits[0].doc_id in {"alexander-fleming", "penicillin"} and "rerank" in hits[0].scores
    assert demo_index.info()["reranker"] == "bertsearch default (shipped)"


def test_the_shipped_reader_answers_and_locates_the_span(demo_index):
    # min_confidence 0: whatever the confidence, this test checks the span itself
    result = demo_index.ask("when did Alexander Fleming discover penicillin", k=2, min_confidence=0)
    assert not result.abstained
    a = result.answers[0]
    assert "1928" in a.text and demo_index.get(a.doc_id)["text"][a.start : a.end] == a.text


def test_min_confidence_decides_between_an_answer_and_no_answer(tmp_path):
    ix = tmp_path / "ix"
    runner = CliRunner()
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "p", "title": "Penicillin", "text": "Alexander Fleming discovered penicillin "
                                "in 1928 when he noticed mould killing bacteria."}) + "\n")
    assert runner.invoke(cli, ["index", str(docs), "--index", str(ix)]).exit_code == 0
    q = ["ask", "who", "discovered", "penicillin", "--index", str(ix), "--json"]
    sure = json.loads(runner.invoke(cli, [*q, "--min-confidence", "0"]).stdout)
    assert not sure["abstained"] and "Fleming" in sure["answers"][0]["text"]
    p = sure["answers"][0]["confidence"]
    assert 0 < p < 1 and 0 <= sure["no_answer_probability"] <= 1
    never = json.loads(runner.invoke(cli, [*q, "--min-confidence", "1"]).stdout)
    assert never["abstained"] and never["answers"] == []
    assert "Fleming" in never["best_candidate"]["text"] and never["best_candidate"]["confidence"] == p
    r = runner.invoke(cli, q[:-1] + ["--min-confidence", "1"])
    assert "no answer found" in r.stdout and "--min-confidence" in r.stdout


def test_the_shipped_calibration_answers_the_demo_questions_and_declines_what_the_index_does_not_hold(demo_index):
    """The README's questions are answered at the default confidence; one the index cannot answer is declined,
    with its best candidate and the probability that the index holds no answer."""
    fleming = demo_index.ask("when did Alexander Fleming discover penicillin")
    assert not fleming.abstained and fleming.answers[0].text == "1928"
    assert fleming.answers[0].confidence >= fleming.min_confidence > 0 and fleming.no_answer_probability < 0.5
    aurora = demo_index.ask("what causes the northern lights")
    assert not aurora.abstained and "particles" in aurora.answers[0].text
    cup = demo_index.ask("which team won the 1998 FIFA World Cup final")
    assert cup.abstained and cup.answers == [] and cup.no_answer_probability > 0.5
    assert cup.best_candidate is not None and cup.best_candidate.confidence < cup.min_confidence
    texts = [a.text.lower() for a in demo_index.ask("who discovered penicillin", k=3, min_confidence=0).answers]
    assert len(texts) == len(set(texts)) and not any(a in b for a in texts for b in texts if a != b)
