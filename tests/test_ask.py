"""Rerank and ask through the engine and CLI, with small fakes for the cross-encoder and reader."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from fakes import WordReader, WordReranker

from bertsearch.errors import BadArgument


def test_rerank_reorders_the_top_candidates_and_keeps_provenance(index):
    index._reranker = WordReranker("piano")
    plain = index.search("what is this about", k=4)
    reranked = index.search("what is this about", k=4, rerank=True)
    assert reranked[0].doc_id == "piano" and reranked[0].scores["rerank"] == 2.0  # title and text
    assert reranked[0].ranks["rerank"] == 1 and "hybrid" in reranked[0].scores  # first-stage scores kept
    assert {h.doc_id for h in reranked} == {h.doc_id for h in plain}
    assert set(reranked.timings) == {"retrieve", "rerank"} and set(plain.timings) == {"retrieve"}


def test_rerank_depth_limits_what_the_cross_encoder_sees(index):
    index._reranker = reranker = WordReranker("volcano")
    hits = index.search("the", k=4, rerank=True, mode="dense", rerank_depth=2)
    assert reranker.calls == [2]
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    assert all("rerank" not in h.scores for h in hits[2:])
    # the index's depth below k: the k hits shown are all re-scored (past the depth, a hit kept its first-stage
    # score, out of scale with the logits above it, under the label "rerank")
    index.rerank_depth = 2
    hits = index.search("the", k=4, rerank=True, mode="dense")
    assert reranker.calls[-1] == 4 and all("rerank" in h.scores for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_ask_locates_answers_in_the_original_document(index):
    index._reranker = WordReranker("fleming")
    index._reader = WordReader("Alexander Fleming")
    result = index.ask("who discovered penicillin", k=2)
    assert not result.abstained and result.answers
    a = result.answers[0]
    assert a.doc_id == "penicillin" and a.text == "Alexander Fleming"
    assert index.get("penicillin")["text"][a.start : a.end] == "Alexander Fleming"
    assert a.context[a.start - a.context_start : a.end - a.context_start] == "Alexander Fleming"
    assert set(result.timings) == {"retrieve", "rerank", "read"}


def test_ask_says_no_answer_instead_of_inventing_one(index):
    index._reranker = WordReranker("x")
    index._reader = WordReader("Napoleon")
    result = index.ask("who won at waterloo")
    assert result.abstained and result.answers == [] and result.hits


def test_ask_can_return_more_hits_than_it_reads(index):
    index._reranker = WordReranker("fleming")
    index._reader = reader = WordReader("Alexander Fleming")
    seen = []
    read = reader.read
    reader.read = lambda q, passages, **kw: seen.append(len(passages)) or read(q, passages, **kw)
    result = index.ask("who discovered penicillin", passages=1, hits=4)
    assert seen == [1] and len(result.hits) == 4
    assert result.answers[0].doc_id == result.hits[0].doc_id == "penicillin"


def test_cli_ask_and_search_rerank(tmp_path, corpus_file, monkeypatch):
    from bertsearch import engine

    runner = CliRunner()
    ix = tmp_path / "ix"
    runner.invoke(cli(), ["index", str(corpus_file), "--index", str(ix), "--model", "hashing"])
    monkeypatch.setattr(engine.Index, "reranker", property(lambda self: WordReranker("lava", scale=10.0)))
    monkeypatch.setattr(engine.Index, "reader", property(lambda self: WordReader("magma chamber")))
    r = runner.invoke(cli(), ["search", "what", "is", "it", "--index", str(ix), "--rerank", "--json"])
    data = json.loads(r.stdout)
    assert data["hits"][0]["doc_id"] == "volcano" and data["rerank"] is True
    r = runner.invoke(cli(), ["ask", "where", "does", "lava", "come", "from", "--index", str(ix), "--json"])
    out = json.loads(r.stdout)
    assert out["answers"][0]["text"] == "magma chamber" and out["answers"][0]["doc_id"] == "volcano"
    r = runner.invoke(cli(), ["ask", "where", "does", "lava", "come", "from", "--index", str(ix)])
    assert r.exit_code == 0 and "magma chamber" in r.stdout
    monkeypatch.setattr(engine.Index, "reader", property(lambda self: WordReader("no such words")))
    r = runner.invoke(cli(), ["ask", "anything", "--index", str(ix)])
    assert r.exit_code == 0 and "no answer found" in r.stdout


def cli():
    from bertsearch.cli import cli as command

    return command


def test_eval_beir_scores_several_rerank_depths_from_one_pass(tmp_path, monkeypatch):
    from bertsearch import engine
    from bertsearch.evaluation.beir import evaluate_beir

    d = tmp_path / "mini"
    (d / "qrels").mkdir(parents=True)
    docs = {
        "d1": "red apples and red cherries and red berries",  # lexically best for "red fruit"
        "d2": "red fruit grows in an orchard of red trees",
        "d3": "a green fruit called lime, gold star fruit",  # what the fake reranker likes
    }
    (d / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items()))
    (d / "queries.jsonl").write_text('{"_id": "q1", "text": "red fruit"}\n{"_id": "q2", "text": "fruit"}\n')
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td3\t1\nq2\td3\t1\n")
    monkeypatch.setattr(engine.Index, "reranker", property(lambda self: WordReranker("gold")))
    kw = {"index_path": tmp_path / "ix", "model": "hashing", "mode": "lexical"}
    plain = evaluate_beir(d, **kw)
    m = evaluate_beir(d, rerank=True, rerank_depth=[1, 3], rerank_penalty=[0.0, 1000.0], **kw)
    assert m["first_stage"] == {key: plain[key] for key in ("ndcg@10", "recall@100", "mrr@10")}
    assert m["by_depth"][1] == m["first_stage"]  # re-scoring only the first candidate changes nothing
    assert m["by_depth"][3]["mrr@10"] == 1.0 > m["first_stage"]["mrr@10"]
    assert m["ndcg@10"] == m["by_depth"][3]["ndcg@10"] and m["rerank_depth"] == 3 and m["rerank_penalty"] == 0.0
    assert m["by_penalty"][0.0] == m["by_depth"][3] and m["by_penalty"][1000.0] == m["first_stage"]
    with pytest.raises(BadArgument, match="penalties"):
        evaluate_beir(d, rerank=True, rerank_penalty=[-1.0], **kw)
    one = evaluate_beir(d, rerank=True, limit=1, **kw)
    assert one["queries"] == 1 and one["sampled_from"] == 2 and "by_depth" not in one


def test_a_rerank_penalty_lets_a_confident_cross_encoder_decide_and_an_unsure_one_defer(index):
    from bertsearch.engine import rerank_order

    staged = index.search("lava volcano magma", k=4, mode="dense")
    place = [h.doc_id for h in staged].index("piano")
    assert staged[0].doc_id == "volcano" and place >= 2
    for h in staged:
        h.scores["rerank"] = {"piano": 1.0, "volcano": 0.5}.get(h.doc_id, 0.0)
    assert [h.doc_id for h in rerank_order(list(staged), 0.0)][:2] == ["piano", "volcano"]
    assert "fused" not in staged[0].scores and staged[0].score == 0.5  # the cross-encoder's order alone
    # a gap of half a logit is worth less than `place` places at 0.5 each: the first stage's top stays
    unsure = rerank_order(list(staged), 0.5)
    assert unsure[0].doc_id == "volcano" and unsure[0].score == unsure[0].scores["fused"] == 0.5
    assert [h.scores["fused"] for h in unsure] == sorted((h.scores["fused"] for h in unsure), reverse=True)
    assert next(h for h in unsure if h.doc_id == "piano").scores["fused"] == 1.0 - 0.5 * place
    for h in staged:  # a gap of 10 logits outweighs a few places
        if h.doc_id == "piano":
            h.scores["rerank"] = 10.0
    assert rerank_order(list(staged), 0.5)[0].doc_id == "piano"
    alone = rerank_order(list(staged), 0.0)  # ordering the same hits again leaves no stale fused score
    assert all("fused" not in h.scores and h.score == h.scores["rerank"] for h in alone)
    for h in staged:  # a tie keeps the first stage's order, whatever the ids, under any penalty
        h.scores["rerank"] = 0.0
    for penalty in (0.0, 0.5, 3.0):
        assert [h.doc_id for h in rerank_order(list(staged), penalty)] == [h.doc_id for h in staged]
    with pytest.raises(BadArgument, match="penalty"):
        rerank_order(list(staged), -1.0)
    index._reranker = WordReranker("piano")
    index.rerank_penalty = 1000.0
    again = index.search("lava volcano magma", k=4, mode="dense", rerank=True)
    assert [h.doc_id for h in again] == [h.doc_id for h in staged]


def test_rank_answers_puts_passages_on_one_scale():
    from bertsearch.engine import rank_answers
    from bertsearch.types import Hit, Span

    hits = [Hit(rank=i + 1, doc_id=f"d{i}", score=0.0, title="", text="", chunk_id=i, start=0, end=0,
                scores={"rerank": r}) for i, r in enumerate([0.0, 4.0])]
    loud = Span(passage=0, start=0, end=3, text="big", score=9.0, null_score=8.5)  # leads its passage by 0.5
    sure = Span(passage=1, start=0, end=4, text="sure", score=6.0, null_score=1.0)  # leads by 5
    assert [s.text for s in rank_answers([loud, sure], hits, scoring="span")] == ["big", "sure"]
    by_margin = rank_answers([loud, sure], hits, scoring="margin")
    assert [s.text for s in by_margin] == ["sure", "big"] and by_margin[0].score == 5.0
    assert by_margin[0].null_score - by_margin[0].score == sure.null_score - sure.score  # abstention unchanged
    boosted = rank_answers([loud, sure], hits, scoring="span", passage_weight=1.0)
    assert [s.text for s in boosted] == ["sure", "big"] and boosted[0].score == 10.0


def test_eval_ask_scores_answers_end_to_end(tmp_path, monkeypatch):
    from bertsearch import engine
    from bertsearch.evaluation.ask import evaluate_ask

    d = tmp_path / "qa"
    (d / "qrels").mkdir(parents=True)
    paragraphs = {"p1": "Penicillin was discovered by Alexander Fleming in 1928.",
                  "p2": "The piano was invented by Bartolomeo Cristofori in Italy."}
    (d / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in paragraphs.items()))
    (d / "queries.jsonl").write_text('{"_id": "q1", "text": "who discovered penicillin"}\n'
                                     '{"_id": "q2", "text": "who invented the piano"}\n')
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tp1\t1\nq2\tp2\t1\n")
    squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": paragraphs["p1"], "qas": [{"id": "q1", "question": "who discovered penicillin",
                                               "answers": [{"text": "Alexander Fleming", "answer_start": 29}]}]},
        {"context": paragraphs["p2"], "qas": [{"id": "q2", "question": "who invented the piano",
                                               "answers": [{"text": "Bartolomeo Cristofori", "answer_start": 26}]}]}]}]}
    answers = tmp_path / "dev.json"
    answers.write_text(json.dumps(squad))
    monkeypatch.setattr(engine.Index, "reader", property(lambda self: WordReader("Alexander Fleming")))
    r = evaluate_ask(d, answers, index_path=tmp_path / "ix", model="hashing", passages=1, rerank=False)
    assert r["questions"] == 2 and r["gold_paragraph_read"] == 1.0
    span = r["variants"][0]
    assert span["scoring"] == "span" and span["exact_match"] == 50.0  # right for q1; q2 has no Fleming: abstains
    assert span["abstained"] == 0.5 and span["exact_match_never_abstaining"] == 50.0  # q2 has nothing to answer
