"""SQuAD scoring by the official v1.1 / v2.0 definitions, checked against hand-computed cases."""

import json

import pytest
from conftest import SHARED

from bertsearch.errors import BadArgument, CorpusError
from bertsearch.evaluation.squad import (
    Example,
    evaluate_squad,
    exact_match,
    f1,
    find_best_thresh,
    load_squad,
    normalize_answer,
    score_predictions,
)
from bertsearch.types import Span

SQUAD = SHARED / "squad"


def ex(id, answers, impossible=None, context="ctx"):
    return Example(
        id=id,
        question=f"q {id}?",
        context=context,
        answers=answers,
        answer_starts=[0] * len(answers),
        is_impossible=impossible,
    )


def test_normalisation_removes_case_punctuation_articles_and_spaces():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theory of the atom") == "theory of atom"  # 'the' only as a word
    assert normalize_answer("  A.  ") == ""


def test_exact_match_and_token_f1():
    assert exact_match("the Denver Broncos", "Denver Broncos!") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0
    assert f1("Denver Broncos won", "Denver Broncos") == pytest.approx(0.8)  # P 2/3, R 1
    assert f1("Denver", "the Denver Broncos") == pytest.approx(2 / 3)  # P 1, R 1/2
    assert f1("broncos broncos", "broncos") == pytest.approx(2 / 3)  # counts are clipped: P 1/2, R 1
    assert f1("Carolina", "Denver") == 0.0
    assert f1("", "") == 1.0 and f1("", "Denver") == 0.0 and f1("the", "") == 1.0  # v2.0: empty matches empty


def test_v1_scores_take_the_best_gold_and_count_missing_predictions_as_wrong():
    examples = [ex("a", ["Broncos", "Denver Broncos"]), ex("b", ["1928"]), ex("c", ["Fleming"])]
    out = score_predictions(examples, {"a": "Denver", "b": "in 1928"})
    # a: EM 0, F1 max(0, 2/3); b: EM 0, F1 P 1/2 R 1 -> 2/3 ("in" is not an article); c: missing -> 0
    assert out["exact_match"] == 0.0
    assert out["f1"] == pytest.approx(100 * (2 / 3 + 2 / 3) / 3)
    assert out["total"] == 3 and out["primary_metric"] == "f1"
    assert "HasAns_f1" not in out and "best_f1" not in out
    assert score_predictions(examples, {"a": "broncos", "b": "1928.", "c": "Fleming"})["exact_match"] == 100.0


V2 = [
    ex("q1", ["Paris"], False),
    ex("q2", [], True),
    ex("q3", [], True),
    ex("q4", ["blue sky", "the blue sky"], False),
]
PRED = {"q1": "Paris", "q2": "", "q3": "London", "q4": "sky"}
MARGINS = {"q1": -2.0, "q2": 1.0, "q3": 0.5, "q4": 0.0}


def test_v2_splits_and_best_threshold_by_hand():
    out = score_predictions(V2, PRED, MARGINS)
    assert out["exact_match"] == pytest.approx(50.0)  # q1, q2
    assert out["f1"] == pytest.approx(100 * (1 + 1 + 0 + 2 / 3) / 4)
    assert (out["HasAns_total"], out["NoAns_total"]) == (2, 2)
    assert out["HasAns_exact"] == pytest.approx(50.0) and out["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert out["NoAns_exact"] == pytest.approx(50.0) and out["NoAns_f1"] == pytest.approx(50.0)
    # abstaining everywhere scores 2/4; answering in order of margin: q1 (+1) -> 3, q4 (+0 EM, +2/3 F1),
    # q3 (wrong answer to a NoAns question, -1), q2 (empty prediction, 0)
    assert out["best_exact"] == pytest.approx(75.0) and out["best_exact_thresh"] == -2.0
    assert out["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4) and out["best_f1_thresh"] == 0.0


def test_best_threshold_below_every_margin_when_abstaining_is_best():
    raw = {"a": 0.0, "b": 0.0}
    score, thresh = find_best_thresh({"a": "x", "b": "y"}, raw, {"a": -5.0, "b": 3.0}, {"a": False, "b": False})
    assert score == 100.0 and thresh < -5.0


def test_v2_without_margins_scores_like_the_official_script_without_probabilities():
    out = score_predictions(V2, PRED)
    assert out["best_f1"] >= out["f1"] and "best_f1_thresh" in out


def test_load_squad_reads_both_versions():
    v1 = load_squad(SQUAD / "dev-v1.1.json")
    assert len(v1) > 10_000 and all(e.is_impossible is None for e in v1[:50])
    first = v1[0]
    for text, start in zip(first.answers, first.answer_starts):
        assert first.context[start : start + len(text)] == text
    v2 = load_squad(SQUAD / "dev-v2.0.json")
    assert any(e.is_impossible for e in v2) and any(e.is_impossible is False for e in v2)
    assert all(not e.answers for e in v2 if e.is_impossible)


def test_load_squad_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        load_squad(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{"title": "x"}]}))
    with pytest.raises(CorpusError, match="not a SQuAD JSON"):
        load_squad(bad)


def test_load_squad_mends_offsets_that_miss_their_answer_and_reads_a_bom(tmp_path, caplog):
    """Offsets 40 characters off trained the reader on the wrong spans (34 of 36) without a word; a file with a
    byte-order mark was "not a SQuAD JSON file"; a file not UTF-8 put the whole file in the error message."""
    context = "Beijing and Shanghai are large cities. The capital is Beijing, in the north."
    qas = [{"id": "1", "question": "which cities?", "answers": [{"text": "Beijing and Shanghai", "answer_start": 40}]},
           {"id": "2", "question": "capital?", "answers": [{"text": "Beijing", "answer_start": 50}]},
           {"id": "3", "question": "river?", "answers": [{"text": "Yangtze", "answer_start": 3}]},
           {"id": "4", "question": "north?", "answers": [{"text": "north", "answer_start": 70}]},
           {"id": "5", "question": "empty?", "answers": [{"text": "", "answer_start": 0}]}]
    path = tmp_path / "s.json"
    path.write_text("\ufeff" + json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}),
                    encoding="utf-8")
    with caplog.at_level("WARNING"):
        got = load_squad(path)
    assert [e.answer_starts[0] for e in got] == [0, 54, -1, 70, -1]  # the nearest occurrence; -1: none, or empty
    assert all(context[e.answer_starts[0]:][: len(e.answers[0])] == e.answers[0] for e in got if e.answer_starts[0] >= 0)
    assert "4 answers' answer_start did not point at their text: 2 found nearby and moved there, 2 not" in caplog.text
    path.write_bytes(json.dumps({"data": []}).encode()[:-1] + b"\xe9" * 5000 + b"}")
    with pytest.raises(CorpusError, match=r"is not UTF-8 text \(byte 11") as err:
        load_squad(path)
    assert len(str(err.value)) < 300


class GoldReader:
    """A fake reader that answers every other question with its first gold answer."""

    name = "gold"

    def __init__(self, examples, threshold=None):
        self.gold = {e.question: (e.answers[0] if e.answers else "") for e in examples}
        self.no_answer_threshold = threshold
        self.seen = 0

    def read_batch(self, questions, passages, *, top_k=5, batch_size=16):
        out = []
        for q, (p,) in zip(questions, passages):
            self.seen += 1
            text = self.gold[q] if self.seen % 2 else "zzz"
            start = max(p.find(text), 0)
            out.append([Span(0, start, start + len(text), text, score=1.0, null_score=0.0)])
        return out

    def abstains(self, spans):
        return not spans or (
            self.no_answer_threshold is not None and spans[0].null_score - spans[0].score > self.no_answer_threshold
        )


def test_evaluate_squad_runs_the_reader_and_reports_speed():
    examples = load_squad(SQUAD / "dev-v1.1.json")[:10]
    result = evaluate_squad(SQUAD / "dev-v1.1.json", GoldReader(examples), limit=10, batch_size=3)
    assert result["total"] == 10 and result["exact_match"] == pytest.approx(50.0)
    assert result["dataset"] == "dev-v1.1.json" and result["threshold_used"] is None
    assert result["questions_per_second"] > 0 and result["reader"] == "gold"
    # v1.1 questions all have answers: the no-answer threshold does not apply to them
    strict = evaluate_squad(SQUAD / "dev-v1.1.json", GoldReader(examples, threshold=-2.0), limit=10)
    assert strict["exact_match"] == pytest.approx(50.0) and strict["threshold_used"] is None
    # on v2.0, a threshold below the margin (0 - 1 = -1) makes the reader abstain everywhere
    v2 = load_squad(SQUAD / "dev-v2.0.json")[:10]
    abstaining = evaluate_squad(SQUAD / "dev-v2.0.json", GoldReader(v2, threshold=-2.0), limit=10)
    assert abstaining["HasAns_exact"] == 0.0 and abstaining["threshold_used"] == -2.0
    with pytest.raises(BadArgument):
        evaluate_squad(SQUAD / "dev-v1.1.json", GoldReader(examples), limit=0)


def test_evaluate_squad_v2_has_the_v2_keys():
    examples = load_squad(SQUAD / "dev-v2.0.json")[:12]
    result = evaluate_squad(SQUAD / "dev-v2.0.json", GoldReader(examples), limit=12)
    for key in (
        "HasAns_exact",
        "HasAns_f1",
        "HasAns_total",
        "NoAns_exact",
        "NoAns_f1",
        "NoAns_total",
        "best_exact",
        "best_exact_thresh",
        "best_f1",
        "best_f1_thresh",
    ):
        assert key in result
    assert result["HasAns_total"] + result["NoAns_total"] == 12
