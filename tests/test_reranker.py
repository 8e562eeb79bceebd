"""The cross-encoder reranker (windowing, scoring, loading) and its training (data, a few steps, CLI).

A tiny random BERT cross-encoder with the packaged MiniLM tokenizer stands in for a trained model, so
these tests check the plumbing, not the quality.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from bertsearch.errors import BadArgument, BadQuery, CorpusError, ModelNotFound
from bertsearch.models import DEFAULT_ENCODER, resolve_model_path
from bertsearch.models import reranker as reranker_module
from bertsearch.models.reranker import (
    CrossEncoderReranker,
    check_cross_encoder,
    load_reranker,
    window_spans,
)
from bertsearch.training import reranker as training
from bertsearch.training.layers import layer_decay_optimizer

ARTICLES = {
    "Aurora": [
        (("An aurora is a natural light display in the sky, seen mostly in polar regions. Auroras are caused by "
          "charged particles of the solar wind striking the upper atmosphere."),
         [("What causes auroras in the polar sky?", "the solar wind")]),
        (("The aurora borealis is also known as the northern lights. Its southern counterpart is the aurora "
          "australis, visible from Antarctica and Tasmania."),
         [("What is the aurora borealis also known as?", "the northern lights")]),
        (("Auroral colours depend on the gas: oxygen glows green or red, and nitrogen glows blue or purple in "
          "the aurora."),
         [("Which gas makes an aurora glow green?", "oxygen")]),
        ("Photographers travel to Norway and Iceland in winter to capture the aurora over dark landscapes.",
         [("Where do photographers travel to capture the aurora?", "Norway and Iceland")]),
    ],
    "Penicillin": [
        (("Penicillin was discovered in 1928 by Alexander Fleming, who noticed mould killing bacteria in a "
          "Petri dish at St Mary's Hospital in London."),
         [("Who discovered penicillin in 1928?", "Alexander Fleming")]),
        (("Mass production of penicillin began during the Second World War, saving many soldiers from "
          "infected wounds."),
         [("When did mass production of penicillin begin?", "during the Second World War")]),
        ("Some bacteria have become resistant to penicillin, producing enzymes that break the antibiotic down.",
         [("How do bacteria resist penicillin?", "producing enzymes")]),
    ],
    "Volcano": [
        (("A volcano is a rupture in the crust of a planet that lets lava, ash and gases escape from a magma "
          "chamber. The solar system's largest volcano is Olympus Mons on Mars."),
         [("What is the largest volcano in the solar system?", "Olympus Mons")]),
        (("Volcanic ash can ground aircraft: in 2010 an eruption in Iceland closed much of European airspace, "
          "and photographers flocked to see it."),
         [("What did the 2010 eruption in Iceland close?", "much of European airspace")]),
        ("Lava temperatures range from 700 to 1200 degrees Celsius when a volcano erupts.",
         [("How hot is lava?", "700 to 1200 degrees Celsius")]),
    ],
}


def _squad_json() -> dict:
    data = []
    n = 0
    for title, paragraphs in ARTICLES.items():
        paras = []
        for context, qas in paragraphs:
            items = []
            for question, answer in qas:
                start = context.index(answer)
                items.append({"id": f"q{n}", "question": question, "answers": [{"text": answer, "answer_start": start}]})
                n += 1
            paras.append({"context": context, "qas": items})
        data.append({"title": title, "paragraphs": paras})
    return {"version": "1.1", "data": data}


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_model_path(DEFAULT_ENCODER)))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tokenizer) -> Path:
    """A randomly initialised 2-layer BERT with a one-logit head, and the packaged MiniLM tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-cross-encoder")
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=1, max_position_embeddings=512,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def squad_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("squad") / "tiny-squad.json"
    path.write_text(json.dumps(_squad_json()))
    return path


def _long_passage(n: int = 120, marker: str = "") -> str:
    filler = " ".join(f"Sentence {i} talks about weather, history and unrelated things." for i in range(n))
    return filler + (f" The {marker} is here at the end." if marker else "")


# -- windowing -------------------------------------------------------------------------------------


def test_windows_cover_every_word_piece_with_the_overlap(tokenizer):
    text = _long_passage(60) + " Antidisestablishmentarianism and pneumonoultramicroscopic words split into many pieces."
    budget, stride = 50, 16
    (spans,) = window_spans(tokenizer, [text], [budget], stride)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    assert len(spans) > 3
    assert spans[0][0] == offsets[0][0] and spans[-1][1] == offsets[-1][1]
    inside = [[i for i, (a, b) in enumerate(offsets) if s <= a and b <= e] for s, e in spans]
    assert sorted(set().union(*map(set, inside))) == list(range(len(offsets)))  # every piece in some window
    for before, after in itertools.pairwise(inside):
        assert len(set(before) & set(after)) >= stride  # neighbours share at least `stride` pieces
        assert after[0] > before[0]
    for s, e in spans:
        window = text[s:e]
        assert window in text
        assert len(tokenizer(window, add_special_tokens=False, verbose=False)["input_ids"]) <= budget


def test_a_passage_that_fits_is_one_window_of_all_of_it(tokenizer):
    assert window_spans(tokenizer, ["  short passage  ", ""], [50, 50], 16) == [[(0, 17)], [(0, 0)]]


@pytest.fixture
def reranker(tiny_model) -> CrossEncoderReranker:
    return CrossEncoderReranker("tiny", tiny_model, device="cpu", max_length=64, stride=16)


class FakePredict:
    """Scores a window 1000 when it holds the marker word, else its length; records each call."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.calls: list[list] = []

    def __call__(self, pairs, **kwargs):
        self.calls.append(list(pairs))
        return np.array([(1000.0 if self.marker in p else 0.0) + len(p) for _, p in pairs], dtype=np.float32)


def test_a_long_passage_scores_the_best_of_its_windows(reranker, monkeypatch):
    fake = FakePredict("zeppelin")
    monkeypatch.setattr(reranker.model, "predict", fake)
    query = "where is the zeppelin"
    long = _long_passage(40, marker="zeppelin")
    passages = ["a short one", long, "zeppelin short", "mid length passage here"]
    scores = reranker.score(query, passages)
    assert scores.dtype == np.float32 and scores.shape == (4,)
    windows = reranker.windows(query, passages)
    assert [len(w) for w in windows] == [1, len(windows[1]), 1, 1] and len(windows[1]) > 2
    expected_long = max((1000.0 if "zeppelin" in long[a:b] else 0.0) + (b - a) for a, b in windows[1])
    assert scores.tolist() == [11.0, expected_long, 1000.0 + 14, 23.0]  # order kept, long one = best window
    assert expected_long > 1000  # the marker sits in the last window only
    assert "zeppelin" not in long[windows[1][0][0] : windows[1][0][1]]
    assert len(fake.calls) == 1 and len(fake.calls[0]) == sum(len(w) for w in windows)  # one batched call
    assert all(p in long or p in passages for _, p in fake.calls[0])


def test_score_batch_matches_score_per_query(reranker):
    queries = ["what causes auroras", "who discovered penicillin"]
    passages = [["Auroras are caused by the solar wind.", _long_passage(30)], ["Fleming found penicillin.", "x", ""]]
    batched = reranker.score_batch(queries, passages)
    for q, ps, got in zip(queries, passages, batched):
        np.testing.assert_allclose(got, reranker.score(q, ps), rtol=1e-5, atol=1e-6)
    assert [len(b) for b in batched] == [2, 3]
    assert reranker.score("anything", []).shape == (0,)


def test_a_long_query_is_cut_so_passages_keep_half_the_window(reranker, monkeypatch):
    fake = FakePredict("never")
    monkeypatch.setattr(reranker.model, "predict", fake)
    reranker.score("why " * 100, ["passage"])
    assert reranker.cut_queries == 1
    query_sent = fake.calls[0][0][0]
    assert len(reranker.model.tokenizer(query_sent, add_special_tokens=False)["input_ids"]) <= (64 - 3) // 2 + 1


def test_bad_inputs_are_user_errors(reranker):
    with pytest.raises(BadQuery):
        reranker.score("  ", ["passage"])
    with pytest.raises(BadArgument):
        reranker.score("query", "not a list")  # type: ignore[arg-type]
    with pytest.raises(BadArgument):
        reranker.score_batch(["one", "two"], [["p"]])
    with pytest.raises(BadArgument):
        CrossEncoderReranker("tiny", Path("."), max_length=4)


def test_settings_come_from_bertsearch_json(tiny_model, tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    (folder / "bertsearch.json").write_text(json.dumps({"max_length": 100, "stride": 20}))
    r = load_reranker(str(folder))
    assert (r.max_length, r.stride) == (100, 20)
    assert len(r.fingerprint()) == 16
    assert load_reranker(str(tiny_model)).max_length == 512  # the model's own limit when no settings


# -- loading ---------------------------------------------------------------------------------------


def test_no_shipped_reranker_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setattr(reranker_module, "PACKAGED", tmp_path / "weights" / "reranker")
    with pytest.raises(ModelNotFound, match="no reranker weights are shipped.*bertsearch train reranker"):
        load_reranker()


def test_a_bi_encoder_is_not_a_reranker():
    with pytest.raises(BadArgument, match="not a cross-encoder.*bi-encoder"):
        load_reranker(str(resolve_model_path(DEFAULT_ENCODER)))


def test_a_multi_label_classifier_is_not_a_reranker(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"architectures": ["BertForSequenceClassification"], "id2label": {"0": "a", "1": "b", "2": "c"}}
    ))
    with pytest.raises(BadArgument, match="3 labels"):
        check_cross_encoder("nli", tmp_path)
    with pytest.raises(ModelNotFound):
        load_reranker(str(tmp_path / "missing"))


# -- training data ---------------------------------------------------------------------------------


def _paragraph_article(squad_file) -> dict[str, str]:
    return {ctx: title for title, paras in ARTICLES.items() for ctx, _ in paras}


def test_squad_negatives_come_from_the_article_and_bm25_never_the_positive(squad_file):
    article_of = _paragraph_article(squad_file)
    answers = {q: a for paras in ARTICLES.values() for _, qas in paras for q, a in qas}
    examples = training.squad_examples(squad_file, negatives=3, seed=7)
    assert len(examples) == len(answers)
    assert examples == training.squad_examples(squad_file, negatives=3, seed=7)  # deterministic
    squad = training.read_squad(squad_file)
    mined = training.bm25_candidates(squad.paragraphs, [ex.query for ex in examples], training.BM25_DEPTH + 1)
    for ex, hits in zip(examples, mined):
        assert ex.positive not in ex.negatives
        assert len(ex.negatives) == len(set(ex.negatives)) > 0
        assert all(answers[ex.query].lower() not in n.lower() for n in ex.negatives)  # no likely false negatives
        from_bm25 = {squad.paragraphs[p] for p in hits}
        assert all(article_of[n] == article_of[ex.positive] or n in from_bm25 for n in ex.negatives)
        assert ex.positive[ex.answer[0] : ex.answer[1]] == answers[ex.query]

    same_only = training.squad_examples(squad_file, negatives=3, bm25=False)
    assert all(article_of[n] == article_of[ex.positive] for ex in same_only for n in ex.negatives)
    bm25_only = training.squad_examples(squad_file, negatives=2, same_article=False)
    assert any(article_of[n] != article_of[ex.positive] for ex in bm25_only for n in ex.negatives)
    for ex, hits in zip(bm25_only, mined):
        assert set(ex.negatives) <= {squad.paragraphs[p] for p in hits}


def test_random_negatives_come_from_other_articles_and_are_added_to_the_hard_ones(squad_file):
    article_of = _paragraph_article(squad_file)
    answers = {q: a for paras in ARTICLES.values() for _, qas in paras for q, a in qas}
    hard = training.squad_examples(squad_file, negatives=1, bm25=False, seed=3)
    mixed = training.squad_examples(squad_file, negatives=1, bm25=False, random_negatives=2, seed=3)
    assert mixed == training.squad_examples(squad_file, negatives=1, bm25=False, random_negatives=2, seed=3)
    for h, m in zip(hard, mixed):
        assert m.negatives[: len(h.negatives)] == h.negatives  # the hard ones are kept as they were
        extra = m.negatives[len(h.negatives) :]
        assert len(extra) == 2 and len(set(m.negatives)) == len(m.negatives)
        assert all(article_of[n] != article_of[m.positive] for n in extra)
        assert all(answers[m.query].lower() not in n.lower() for n in extra)
    only_random = training.squad_examples(squad_file, negatives=1, bm25=False, same_article=False, random_negatives=1)
    assert all(len(ex.negatives) == 1 and article_of[ex.negatives[0]] != article_of[ex.positive] for ex in only_random)


def test_bm25_finds_the_paragraph_that_shares_rare_words(squad_file):
    squad = training.read_squad(squad_file)
    (hits,) = training.bm25_candidates(squad.paragraphs, ["Olympus Mons on Mars"], 3)
    assert "Olympus Mons" in squad.paragraphs[hits[0]]


def test_mined_bm25_candidates_are_kept_and_read_back_instead_of_mined_again(squad_file, tmp_path, monkeypatch):
    fresh = training.squad_examples(squad_file, negatives=2, seed=5, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("bm25-*.json"))) == 1
    assert fresh == training.squad_examples(squad_file, negatives=2, seed=5)  # the cache changes nothing

    def no_mining(*args, **kwargs):
        raise AssertionError("mined again")

    monkeypatch.setattr(training, "bm25_candidates", no_mining)
    assert training.squad_examples(squad_file, negatives=2, seed=5, cache_dir=tmp_path) == fresh
    # other questions (another sample) are other candidates: they are mined, not read from the wrong file
    with pytest.raises(AssertionError, match="mined again"):
        training.squad_examples(squad_file, negatives=2, seed=5, limit=3, cache_dir=tmp_path)
    # a damaged cache file is mined again, not trusted
    monkeypatch.undo()
    (cached,) = tmp_path.glob("bm25-*.json")
    for damaged in ("[[1, 2]", json.dumps([[10**6]] * len(fresh)), json.dumps([["a"]] * len(fresh))):
        cached.write_text(damaged, encoding="utf-8")  # cut short; an index out of range; not an index
        assert training.squad_examples(squad_file, negatives=2, seed=5, cache_dir=tmp_path) == fresh


def test_limit_samples_questions_with_the_seed(squad_file):
    a = training.squad_examples(squad_file, negatives=1, limit=4, seed=1, bm25=False)
    b = training.squad_examples(squad_file, negatives=1, limit=4, seed=1, bm25=False)
    assert len(a) == 4 and [e.query for e in a] == [e.query for e in b]


def test_a_long_positive_becomes_the_window_holding_its_answer(tokenizer):
    positive = _long_passage(40) + " The treasure is buried under the old oak."
    start = positive.index("under the old oak")
    ex = training.Example("where is the treasure", positive, [_long_passage(30), "short"], (start, start + 17))
    counts = training.fit_to_window([ex], tokenizer, max_length=64, stride=16, seed=0)
    assert counts["windowed_positives"] == 1 and counts["windowed_negatives"] == 1
    assert ex.positive in positive and "under the old oak" in ex.positive
    assert ex.positive[ex.answer[0] : ex.answer[1]] == "under the old oak"
    assert ex.negatives[1] == "short" and ex.negatives[0] in _long_passage(30)
    assert len(tokenizer(ex.query, ex.positive)["input_ids"]) <= 64


def test_pairs_jsonl_and_csv(tmp_path):
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(
        json.dumps({"query": "q1", "positive": "p1", "negatives": ["n1", "n2"]}) + "\n\n"
        + json.dumps({"query": "q1", "positive": "p1", "negative": "n3"}) + "\n"
        + json.dumps({"query": "q2", "positive": "p2"}) + "\n"
    )
    ex = training.read_pairs(jsonl)
    assert [(e.query, e.positive, e.negatives) for e in ex] == [("q1", "p1", ["n1", "n2", "n3"]), ("q2", "p2", [])]
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text('query,positive,negative,negative_2\nq1,p1,n1,n2\n"q, 2","p2 ""quoted""",,\n')
    ex = training.read_pairs(csv_file)
    assert [(e.query, e.positive, e.negatives) for e in ex] == [("q1", "p1", ["n1", "n2"]), ("q, 2", 'p2 "quoted"', [])]
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("query\tpositive\nq1\tp1\n")
    assert training.read_pairs(tsv)[0].positive == "p1"


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("bad.jsonl", '{"query": "q", "positive": "p"}\n{"query": "q2"}\n', "bad.jsonl:2"),
        ("bad.jsonl", '{"query": "q", "positive": "p"}\n\n{not json\n', "bad.jsonl:3"),
        ("bad.jsonl", '{"query": "q", "positive": "p", "negatives": "n"}\n["a list"]\n', "bad.jsonl:2"),
        ("bad.csv", "query,positive\nq,p\nq2,\n", "bad.csv:3"),
        ("bad.csv", "query,positive\nq,p,extra\n", "bad.csv:2"),
        ("bad.csv", "question,answer\nq,p\n", "bad.csv:1"),
    ],
)
def test_a_malformed_pairs_line_names_file_and_line(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CorpusError, match=where):
        training.read_pairs(path)


def test_missing_negatives_are_other_queries_positives():
    examples = [training.Example("q1", "p1"), training.Example("q1", "p1b"), training.Example("q2", "p2", ["a", "b", "c"]),
                training.Example("q3", "p3")]
    added = training.complete_negatives(examples, 2, seed=0)
    assert added == 6
    assert set(examples[0].negatives) <= {"p2", "p3"} and set(examples[1].negatives) <= {"p2", "p3"}  # never p1b
    assert len(examples[2].negatives) == 2 and set(examples[2].negatives) <= {"a", "b", "c"}
    assert "p3" not in examples[3].negatives and len(examples[3].negatives) == 2


def test_format_detection_and_argument_checks(tmp_path, squad_file):
    assert training.detect_train_format("x/train.json") == "squad"
    assert training.detect_train_format("x/pairs.TSV") == "pairs"
    with pytest.raises(BadArgument, match="cannot tell the format"):
        training.detect_train_format("notes.txt")
    with pytest.raises(BadArgument, match="one training file"):
        training.train_reranker(tmp_path / "out")
    with pytest.raises(BadArgument, match="warmup_ratio"):
        training.train_reranker(tmp_path / "out", train_squad=str(squad_file), warmup_ratio=1.0)
    with pytest.raises(CorpusError, match="no file"):
        training.train_reranker(tmp_path / "out", train_squad=str(tmp_path / "missing.json"))


def test_a_bad_pairs_file_is_told_before_the_model_loads(tiny_model, tmp_path, monkeypatch):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"query": "q", "positive": "p"}\n{"query": "q2"}\n')

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the training file was read")

    import sentence_transformers.cross_encoder

    monkeypatch.setattr(sentence_transformers.cross_encoder, "CrossEncoder", no_model)
    with pytest.raises(CorpusError, match="pairs.jsonl:2"):
        training.train_reranker(tmp_path / "out", train_pairs=str(pairs), base=str(tiny_model))
    pairs.write_text('{"query": "q", "positive": "p"}\n' * 40)  # one pair, 40 times: said to turn on SQuAD's options
    with pytest.raises(CorpusError, match="gives no negatives: its 1 distinct .* 'negative' field"):
        training.train_reranker(tmp_path / "out", train_pairs=str(pairs), base=str(tiny_model))


def test_checkpoints_resume_only_the_same_run(tmp_path):
    from bertsearch.training.common import RUN_FILE, check_same_run

    (tmp_path / RUN_FILE).write_text(json.dumps({"lr": 3e-5, "epochs": 1, "limit": 10}))
    check_same_run(tmp_path, {"lr": 3e-5, "epochs": 3, "limit": 10}, training._RESUMABLE)  # more epochs is fine
    with pytest.raises(BadArgument, match="lr=3e-05 .now 0.001."):
        check_same_run(tmp_path, {"lr": 1e-3, "epochs": 1, "limit": 10}, training._RESUMABLE)


# -- training --------------------------------------------------------------------------------------


def test_a_few_training_steps_make_a_loadable_reranker(tiny_model, squad_file, tmp_path, monkeypatch):
    from safetensors import safe_open

    made = []
    monkeypatch.setattr(training, "layer_decay_optimizer", lambda *a: made.append(layer_decay_optimizer(*a)) or made[-1])
    out = tmp_path / "reranker"
    report = training.train_reranker(
        out, train_squad=str(squad_file), dev_squad=str(squad_file), base=str(tiny_model), epochs=1, batch_size=8,
        limit=6, dev_limit=4, negatives_per_query=2, max_length=64, stride=16, layer_lr_decay=0.9,
    )
    assert report["steps"] == 3  # 6 questions x (1 + 2 hard + 1 random) rows / 8 per step
    # the trainer's schedule ran on the layer-decayed optimizer: head, layer 1, layer 0, embeddings
    assert sorted({g["initial_lr"] for g in made[0].param_groups}) == pytest.approx([3e-5 * 0.9**k for k in (3, 2, 1, 0)])
    assert report["data"]["train_rows"] == 24 and report["loss"]["pos_weight"] == 3.0
    assert set(report["dev"]) == {"ndcg@10", "mrr@10", "map"} and 0 < report["dev"]["ndcg@10"] <= 1
    assert len(report["dev_per_evaluation"]) == 1
    for name in ("model.safetensors", "config.json", "tokenizer.json", "bertsearch.json", "report.json", "README.md"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists()
    assert json.loads((out / "bertsearch.json").read_text())["max_length"] == 64
    assert json.loads((out / "report.json").read_text())["command"] == report["command"]
    card = (out / "README.md").read_text()
    assert "cc-by-sa-4.0" in card and "bertsearch train reranker --train" in card
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict == {"torch.float16"}

    r = load_reranker(str(out))
    assert (r.max_length, r.stride) == (64, 16)
    assert str(next(r.model.parameters()).dtype) == "torch.float32"
    scores = r.score("what causes auroras", ["Auroras are caused by the solar wind.", _long_passage(20)])
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_a_time_limit_stops_training_keeps_what_resumes_it_and_the_same_call_finishes(tiny_model, squad_file, tmp_path):
    out = tmp_path / "reranker"
    settings = {
        "train_squad": str(squad_file), "dev_squad": str(squad_file), "base": str(tiny_model), "epochs": 1,
        "batch_size": 4, "limit": 6, "dev_limit": 4, "negatives_per_query": 2, "max_length": 64, "stride": 16,
    }
    with pytest.raises(BadArgument, match="time_limit"):
        training.train_reranker(out, time_limit=0, **settings)
    stopped = training.train_reranker(out, time_limit=1e-9, **settings)  # up after the first step
    assert stopped["stopped_by_time_limit"] and stopped["steps"] == 1 and stopped["planned_steps"] == 6
    assert [e["step"] for e in stopped["dev_per_evaluation"]] == [1]  # evaluated where it stopped
    assert (out / "model.safetensors").is_file()  # the best so far is saved and usable
    assert (out / "checkpoints").is_dir() and list((out / training.WORK_DIR).glob("bm25-*.json"))
    assert "stopped at its time limit after 1 of 6 planned steps" in (out / "README.md").read_text()
    assert "--time-limit 1e-09" in stopped["command"]

    done = training.train_reranker(out, **settings)
    assert done["resumed_from"].endswith("checkpoint-1") and done["steps"] == 6 and not done["stopped_by_time_limit"]
    assert not (out / "checkpoints").exists() and not (out / training.WORK_DIR).exists()
    assert "time limit" not in (out / "README.md").read_text()


def test_cli_trains_from_pairs_and_reports_json(tiny_model, tmp_path):
    from bertsearch.cli import Group
    from bertsearch.cli.train_reranker import reranker_command

    @click.group(cls=Group)
    def train() -> None:
        pass

    train.add_command(reranker_command)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(
        json.dumps({"query": f"question {i}", "positive": f"answer passage {i}", "negatives": [f"other {i}"]}) + "\n"
        for i in range(8)
    ))
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(train, ["reranker", "--train", str(pairs), "--out", str(out), "--base", str(tiny_model),
                                   "--epochs", "1", "--batch-size", "8", "--negatives", "1", "--max-length", "64", "--stride", "16", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["steps"] == 2 and report["data"]["format"] == "pairs" and report["dev"] is None
    assert load_reranker(str(out)).score("question 1", ["answer passage 1"]).shape == (1,)

    bad = runner.invoke(train, ["reranker", "--train", str(tmp_path / "notes.txt"), "--out", str(out)])
    assert bad.exit_code == 1 and "cannot tell the format" in bad.stderr and bad.stdout == ""
    assert "bertsearch train reranker --train" in runner.invoke(train, ["reranker", "--help"]).stdout
