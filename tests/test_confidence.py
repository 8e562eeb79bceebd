"""Answers a user can trust: calibrated confidence, distinct answers, spans within a sentence, the open corpus."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakes import WordReader, WordReranker

import bertsearch
from bertsearch.evaluation import open_ask
from bertsearch.models.reader import crosses_sentence
from bertsearch.search import confidence as conf
from bertsearch.search.qa import distinct, judge, shortlist
from bertsearch.types import Hit, Span


def _rows(n: int, rng) -> tuple[list[dict[str, float]], np.ndarray]:
    x = rng.normal(size=(n, len(conf.FEATURES)))
    p = 1 / (1 + np.exp(-(1.5 * x[:, 0] - 1.0 * x[:, 1] + 0.3)))
    y = (rng.random(n) < p).astype(float)
    return [dict(zip(conf.FEATURES, row)) for row in x], y


def test_logistic_fit_recovers_the_model_and_is_calibrated_on_new_data():
    rng = np.random.default_rng(0)
    rows, y = _rows(4000, rng)
    model = conf.Logistic.fit(rows, y.tolist())
    w = np.asarray(model.weights) / np.asarray(model.scale)
    assert w[0] == pytest.approx(1.5, abs=0.15) and w[1] == pytest.approx(-1.0, abs=0.15)
    assert np.abs(w[2:]).max() < 0.15
    new, y2 = _rows(4000, rng)
    pairs = list(zip(model(new).tolist(), y2.tolist()))
    assert open_ask.reliability(pairs)["ece"] < 0.03


def test_reliability_counts_the_gap_between_confidence_and_accuracy():
    pairs = [(0.9, 1.0)] * 5 + [(0.9, 0.0)] * 5 + [(0.1, 0.0)] * 10  # 0.9 said, half right: a gap of 0.4 on half
    r = open_ask.reliability(pairs, bins=10)
    assert r["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.1) and r["questions"] == 20
    assert [b["count"] for b in r["bins"]] == [10, 10]


def test_calibration_round_trips_through_json(tmp_path):
    rng = np.random.default_rng(1)
    rows, y = _rows(300, rng)
    model = conf.Logistic.fit(rows, y.tolist())
    cal = conf.Calibration(confidence=model, no_answer=model, min_confidence=0.3, plain_confidence=model,
                           plain_no_answer=model, fitted_on={"split": "dev"})
    cal.save(tmp_path / "c.json")
    again = conf.Calibration.from_json((tmp_path / "c.json").read_text())
    assert again.min_confidence == 0.3 and np.allclose(again.confidence(rows), cal.confidence(rows))
    bad = json.loads((tmp_path / "c.json").read_text())
    bad["features"] = ["margin"]
    with pytest.raises(ValueError, match="fit it again"):
        conf.Calibration.from_json(json.dumps(bad))


def _span(passage, start, text, score, null=0.0):
    return Span(passage=passage, start=start, end=start + len(text), text=text, score=score, null_score=null)


def test_the_answers_shown_are_not_copies_of_the_first():
    ranked = [_span(0, 10, "in 1928", 9.0), _span(0, 13, "1928", 8.5), _span(1, 4, "In 1928.", 8.0),
              _span(1, 40, "Alexander Fleming", 7.0), _span(2, 0, "1945", 6.0)]
    assert [s.text for s in distinct(ranked)] == ["in 1928", "Alexander Fleming", "1945"]


def test_agreement_counts_the_passages_that_give_the_same_answer_before_the_copies_are_taken_out():
    pool = [_span(0, 10, "in 1928", 9.0), _span(0, 13, "1928", 8.5), _span(1, 4, "In 1928.", 8.0),
            _span(1, 40, "Alexander Fleming", 7.0), _span(2, 0, "1945", 6.0), _span(3, 5, "1945", 5.0)]
    hits = [Hit(rank=i + 1, doc_id=f"d{i}", score=0.0, title="", text="", chunk_id=None, start=0, end=0,
                scores={"rerank": 1.0}) for i in range(4)]
    shown = distinct(pool)
    assert [s.text for s in shown] == ["in 1928", "Alexander Fleming", "1945"]
    rows = conf.features(shown, hits, pool)
    assert [r["agreement"] for r in rows] == [0.5, 0.0, 0.5]  # 1928: passages 0 and 1; 1945: 2 and 3, of 4 read
    assert conf.features(shown, hits)[0]["agreement"] == 0.25  # the copies gone, only its own passage is left


def test_spans_stay_within_a_sentence():
    text = "Fleming discovered penicillin in 1928. He shared the Nobel Prize in 1945 with the U.S. Army's help."
    assert crosses_sentence(text, text.index("1928"), text.index("Prize"))
    assert not crosses_sentence(text, text.index("Fleming"), text.index(" in 1928"))
    assert not crosses_sentence(text, text.index("the U.S."), len(text))


def _hit(rank, rerank=None):
    return Hit(rank=rank, doc_id=f"d{rank}", score=0.0, title="", text="", chunk_id=None, start=0, end=0,
               scores={"rerank": rerank} if rerank is not None else {})


def test_judge_abstains_under_the_bar_and_says_how_close_it_came():
    rng = np.random.default_rng(2)
    rows = [{f: float(v) for f, v in zip(conf.FEATURES, r)} for r in rng.normal(size=(200, len(conf.FEATURES)))]
    labels = [float(r["passage_rerank"] > 0) for r in rows]  # right when the passage's cross-encoder score is high
    model = conf.Logistic.fit(rows, labels)
    cal = conf.Calibration(confidence=model, no_answer=conf.Logistic.fit(rows, [1 - y for y in labels]),
                           min_confidence=0.5)
    sure = judge([_span(0, 0, "1928", 5.0)], [_hit(1, rerank=8.0)], cal, None)
    unsure = judge([_span(0, 0, "1928", 5.0)], [_hit(1, rerank=-8.0)], cal, None)
    assert sure.confidences[0] > 0.9 and not sure.abstained and sure.no_answer < 0.1
    assert unsure.confidences[0] < 0.1 and unsure.abstained and unsure.no_answer > 0.9
    assert not judge([_span(0, 0, "1928", 5.0)], [_hit(1, rerank=-8.0)], cal, 0.0).abstained
    empty = judge([], [_hit(1, rerank=1.0)], cal, None)
    assert empty.abstained and empty.no_answer == 1.0
    assert judge([_span(0, 0, "x", 1.0)], [_hit(1)], None, None).confidences == [None]  # no calibration: answers


def test_ask_carries_confidence_and_an_abstention_says_how_close_it_came(index, monkeypatch):
    rows = [{f: 0.0 for f in conf.FEATURES} | {"passage_rerank": r} for r in np.linspace(-5, 5, 50)]
    labels = [float(r["passage_rerank"] > 0) for r in rows]
    model = conf.Logistic.fit(rows, labels)
    cal = conf.Calibration(confidence=model, no_answer=conf.Logistic.fit(rows, [1 - y for y in labels]),
                           min_confidence=0.5)
    index._calibration = cal
    index._reranker = WordReranker("fleming", scale=5.0)
    index._reader = WordReader("1928")
    yes = index.ask("when did fleming discover penicillin", mode="lexical")
    assert not yes.abstained and yes.answers[0].text == "1928" and yes.answers[0].confidence > 0.5
    assert yes.no_answer_probability < 0.5 and yes.best_candidate is None and yes.min_confidence == 0.5
    index._reranker = WordReranker("nothing-matches", scale=5.0)  # every passage scores 0: an unsure reranker
    no = index.ask("when did fleming discover penicillin", mode="lexical", min_confidence=0.9)
    assert no.abstained and no.answers == [] and no.best_candidate.text == "1928"
    assert no.best_candidate.confidence < 0.9 and no.to_dict()["best_candidate"]["confidence"] < 0.9
    with pytest.raises(bertsearch.BertsearchError, match="probability"):
        index.ask("fleming", min_confidence=1.5)


def test_open_corpus_deals_articles_and_samples_each_case():
    titles = [f"T{i}" for i in range(48)]
    groups = open_ask.deal_articles(titles, seed=0)
    assert sorted(groups.values()).count("dev-indexed") == 12 and len(set(groups.values())) == 4
    assert groups == open_ask.deal_articles(list(reversed(titles)), seed=0)  # the order given does not matter
    v11 = [{"title": t, "paragraphs": [{"context": f"text of {t}", "qas": [
        {"id": f"{t}-q{j}", "question": f"q{j}?", "answers": [{"text": "a"}]} for j in range(5)]}]} for t in titles]
    v20 = [{"title": t, "paragraphs": [{"context": "", "qas": [{"id": f"{t}-x", "question": "x?", "is_impossible": True,
                                                               "answers": []}]}]} for t in titles]
    qs = open_ask.questions(v11, v20, groups, {"answerable": 10, "out_of_corpus": 7, "adversarial": 3})
    by = {}
    for q in qs:
        by.setdefault((q["split"], q["case"]), []).append(q)
        if q["case"] == "answerable":
            assert groups[q["paragraph"].rsplit("_", 1)[0]].endswith("indexed")
    assert {k: len(v) for k, v in by.items()} == {(s, c): n for s in ("dev", "test")
                                                 for c, n in (("answerable", 10), ("out_of_corpus", 7), ("adversarial", 3))}
    every = open_ask.questions(v11, v20, groups, {"answerable": None, "out_of_corpus": 7, "adversarial": 3})
    assert sum(q["case"] == "answerable" for q in every) == 24 * 5  # None: every question of the indexed articles
    assert {q["qid"] for q in qs} <= {q["qid"] for q in every}
    docs = list(open_ask.paragraphs(v11, groups))
    assert len(docs) == 24 and all(groups[d["title"]].endswith("indexed") for d in docs)


def test_open_corpus_records_are_reused_only_by_the_models_that_made_them(index, tmp_path, caplog):
    index._reranker = WordReranker("fleming", scale=5.0)
    index._reader = WordReader("1928")
    qs = [{"qid": "q1", "split": "test", "case": "answerable", "question": "when did fleming discover penicillin",
           "gold": ["1928"], "paragraph": None}]
    out = tmp_path / "not-yet" / "records.jsonl"  # a folder that does not exist yet is made
    first = open_ask.collect(index, qs, out)
    assert first[0]["spans"][0]["text"] == "1928" and first[0]["pipeline"]["reader"] == "word-1928"
    assert open_ask.collect(index, qs, out) == first  # the same models: an interrupted run resumes
    index._reader = WordReader("1945")  # another reader would be reported with the first one's answers
    with pytest.raises(bertsearch.BertsearchError, match="reader word-1928, not word-1945.*--records"):
        open_ask.collect(index, qs, out)
    index._reader = WordReader("1928")
    made = first[0]["pipeline"]["runtime"]
    assert made["reader"] == "WordReader fp32" and made["encoder"].startswith(index.config.backend)
    from bertsearch.models.shared import SharedReranker

    assert open_ask._runtime(SharedReranker(WordReranker("x"))) == "WordReranker fp32"  # the model, not the wrapper
    other = {**first[0], "pipeline": {**first[0]["pipeline"], "runtime": {**made, "reranker": "OpenVINOReranker bf16"}}}
    out.write_text(json.dumps(other) + "\n", encoding="utf-8")  # the same weights on another runtime
    with pytest.raises(bertsearch.BertsearchError, match="runtime .*OpenVINOReranker bf16.*not .*WordReranker fp32"):
        open_ask.collect(index, qs, out)
    unsaid = {**first[0], "pipeline": {k: v for k, v in first[0]["pipeline"].items() if k != "runtime"}}
    out.write_text(json.dumps(unsaid) + "\n", encoding="utf-8")  # records from before the runtime was recorded
    with caplog.at_level("WARNING"):
        assert open_ask.collect(index, qs, out)[0]["spans"] == first[0]["spans"]
    assert "do not say their runtime" in caplog.text
    old = {k: v for k, v in first[0].items() if k != "pipeline"}  # records from before the models were recorded
    out.write_text(json.dumps(old) + "\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        assert open_ask.collect(index, qs, out)[0]["spans"] == first[0]["spans"]
    assert "do not say which models made them" in caplog.text


def test_the_ranker_orders_candidates_by_expected_f1_and_round_trips(tmp_path):
    shown = [_span(0, 0, "1945", 6.0), _span(1, 0, "1928", 5.0), _span(2, 0, "Fleming", 4.0)]
    pool = shown + [_span(3, 0, "in 1928", 3.0), _span(4, 0, "1928.", 2.0)]
    hits = [_hit(i + 1, rerank=1.0) for i in range(5)]
    rows = conf.features(shown, hits, pool)
    assert [r["place"] for r in rows] == [0.0, 1.0, 2.0] and rows[1]["agreement"] == 0.6
    agreeing = conf.Logistic.fit([{f: 0.0 for f in conf.RANK_FEATURES} | {"agreement": a} for a in (0.2, 0.6) * 20],
                                 [0.0, 1.0] * 20, features=conf.RANK_FEATURES)  # expected F1 rises with agreement
    sure = conf.Logistic.fit([{f: 0.0 for f in conf.FEATURES} | {"margin": m} for m in (-2.0, 2.0) * 20], [0.0, 1.0] * 20)
    base = conf.Calibration(confidence=sure, no_answer=sure, min_confidence=0.5)
    assert base.order(shown, hits, pool) == shown  # without a ranker: the reader's order
    cal = conf.Calibration(confidence=sure, no_answer=sure, min_confidence=0.5, ranker=agreeing)
    assert [s.text for s in cal.order(shown, hits, pool)] == ["1928", "1945", "Fleming"]
    plain_hits = [_hit(i + 1) for i in range(5)]  # not reranked, and no plain ranker: the reranked one is used
    assert cal.order(shown, plain_hits, pool)[0].text == "1928"
    cal.save(tmp_path / "c.json")
    again = conf.Calibration.from_json((tmp_path / "c.json").read_text())
    assert again.ranker.features == list(conf.RANK_FEATURES) and again.confidence.features is None
    assert [s.text for s in again.order(shown, hits, pool)] == ["1928", "1945", "Fleming"]
    assert shortlist(pool, hits, again, 2) == [shown[1], shown[0]]  # copies out, ranked, cut to k


def _record(qid, split, case, article, rng):
    """A synthetic open-corpus record: three passages; an answerable question's right answer ("alpha") is read
    from two of them, a wrong one ("beta") from the first with about the same margin, so that the reader's order
    is right about half the time and agreement between passages tells which is right."""
    right, wrong = rng.normal(1.5, 1.0), rng.normal(1.5, 1.0)
    hits = [{"doc_id": f"{article}_{i}", "title": article, "start": 0, "end": 10, "rerank": 2.0, "hybrid": 0.03}
            for i in range(3)]
    if case == "out_of_corpus":
        hits = [{**h, "rerank": -6.0 + rng.normal()} for h in hits]
        spans = [{"passage": i, "text": f"noise{i}", "start": 0, "end": 6, "score": rng.normal(-2.0, 1.0),
                  "null_score": 4.0} for i in range(3)]
    else:
        spans = [{"passage": 0, "text": "beta", "start": 0, "end": 4, "score": wrong, "null_score": 0.0},
                 {"passage": 1, "text": "alpha", "start": 0, "end": 5, "score": right, "null_score": 0.0},
                 {"passage": 2, "text": "alpha", "start": 0, "end": 5, "score": right - 0.5, "null_score": 0.0}]
    return {"qid": qid, "split": split, "case": case, "question": "?", "paragraph": f"{article}_0",
            "gold": ["alpha"] if case == "answerable" else [], "hits": hits, "spans": spans}


def test_fit_learns_a_ranker_that_beats_the_readers_order_and_a_bar_within_the_cap():
    rng = np.random.default_rng(0)
    records = [_record(f"{s}{c}{i}", s, c, f"A{i % 12}" if c == "answerable" else f"B{i % 12}", rng)
               for s in ("dev", "test") for c, n in (("answerable", 600), ("out_of_corpus", 200)) for i in range(n)]
    test = [r for r in records if r["split"] == "test"]
    reader_order = open_ask.measure(test, None)
    cal = open_ask.fit(records)
    m = open_ask.measure(test, cal)
    assert reader_order["answerable"]["f1_never_abstaining"] < 75  # "beta" first about half the time
    assert m["answerable"]["f1_never_abstaining"] > 95  # the ranker puts the answer two passages agree on first
    assert m["answerable"]["abstained"] <= 0.10 and m["out_of_corpus"]["no_answer"] > 0.9
    assert cal.fitted_on["answerable_abstained_90th_percentile"] <= 0.10
    with pytest.raises(bertsearch.BertsearchError, match="no out-of-corpus dev questions.*--per-case"):
        open_ask.fit([r for r in records if r["case"] == "answerable"])


def test_the_abstention_bound_is_over_the_mean_when_articles_differ():
    judged = [{"found": True, "confidence": 0.2 if (a == 0 and i < 30) else 0.9, "em": 1.0, "f1": 1.0}
              for a in range(12) for i in range(100)]
    articles = [f"A{a}" for a in range(12) for _ in range(100)]
    bound = open_ask._abstained_bound(judged, articles)
    mean = 30 / 1200  # one article in twelve leaves 30% of its questions unanswered at a bar of 0.5
    assert bound(0.1) == 0.0 and bound(0.5) >= 2 * mean and bound(0.95) == 1.0


def test_per_case_takes_numbers_or_all(run, tmp_path):
    squad = tmp_path / "dev.json"
    squad.write_text('{"data": []}')
    for bad in ("400,300", "all,-1,2", "many,1,2"):
        r = run("eval", "ask", squad, "--per-case", bad)
        assert r.exit_code == 1 and "--per-case takes three whole numbers or 'all'" in r.stderr, r.output


class TwoAnswers:
    """A reader that finds "1928" in the first passage and "1945" in the second, and nothing more."""

    name = "two-answers"

    def fingerprint(self):
        return "two"

    def read(self, question, passages, *, per_passage=None, **_):
        return [Span(passage=i, start=0, end=4, text=t, score=s, null_score=0.0)
                for i, (t, s) in enumerate((("1928", 5.0), ("1945", 3.0))) if i < len(passages)]


def test_an_answers_confidence_does_not_depend_on_how_many_answers_are_shown(index):
    rows = [{f: 0.0 for f in conf.FEATURES} | {"lead": v} for v in np.linspace(0, 10, 40)]
    model = conf.Logistic.fit(rows, [float(r["lead"] > 5) for r in rows])  # sure only of a clear lead
    index._calibration = conf.Calibration(confidence=model, no_answer=model, min_confidence=0.0)
    index._reranker = WordReranker("penicillin", scale=1.0)
    index._reader = TwoAnswers()
    three = index.ask("when was penicillin discovered", k=3)
    one = index.ask("when was penicillin discovered", k=1)
    assert [a.text for a in three.answers][:2] == ["1928", "1945"] and [a.text for a in one.answers] == ["1928"]
    assert one.answers[0].confidence == three.answers[0].confidence < 0.5  # a lead of 2, not "no other answer"


def test_a_reader_without_its_own_calibration_keeps_its_order(tmp_path, caplog):
    from bertsearch.models.reader import DEFAULT_READER_PATH

    shipped = conf.load(DEFAULT_READER_PATH)
    assert shipped.ranker is not None and shipped.plain_ranker is not None
    with caplog.at_level("WARNING"):
        other = conf.load(tmp_path)  # a reader folder with no confidence.json: the shipped one, approximate
    assert other.confidence == shipped.confidence and other.min_confidence == shipped.min_confidence
    assert other.ranker is None and other.plain_ranker is None  # fitted on the shipped reader's scores: not used
    assert "only approximate" in caplog.text and f"--fit {tmp_path / conf.FILE}" in caplog.text
