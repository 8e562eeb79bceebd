"""Extractive reader: span choice, windowing of long passages, abstaining, training, CLI.

A tiny BERT (2 layers of 32) with the packaged MiniLM tokenizer stands in for a real reader. One copy is
rigged so that the word "zebra" gets the highest start and end logits wherever it stands, which makes
the reader's answer known in advance.
"""

import json
import logging
import random

import pytest
import torch
from click.testing import CliRunner
from conftest import SHARED

from bertsearch.cli import Group
from bertsearch.cli.eval_squad import squad_command
from bertsearch.cli.train_reader import reader_command
from bertsearch.errors import BadArgument, ModelNotFound
from bertsearch.models import DEFAULT_ENCODER, resolve_model_path
from bertsearch.models import reader as reader_module
from bertsearch.models.reader import ExtractiveReader, best_spans, load_reader
from bertsearch.types import Span

SQUAD = SHARED / "squad"
FILLER = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "and",
    "runs",
    "far",
    "away",
]  # one piece each


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_ENCODER))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer):
    from transformers import BertConfig, BertForQuestionAnswering

    path = tmp_path_factory.mktemp("tiny-reader")
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(0)
    BertForQuestionAnswering(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def zebra_dir(tmp_path_factory, tiny_dir, tokenizer):
    """Layers pass their input through (their output projections are zero), position and segment embeddings
    are zero, and feature 0 of the word embedding is +10 for "zebra" and -1 for every other word piece; the
    span head reads feature 0 for both start and end. So "zebra" scores about +5.5 + 5.5, the rest about -11."""
    from transformers import BertForQuestionAnswering

    path = tmp_path_factory.mktemp("zebra-reader")
    model = BertForQuestionAnswering.from_pretrained(tiny_dir)
    zebra = tokenizer.convert_tokens_to_ids("zebra")
    with torch.no_grad():
        emb = model.bert.embeddings
        emb.position_embeddings.weight.zero_()
        emb.token_type_embeddings.weight.zero_()
        emb.word_embeddings.weight[:, 0] = -1.0
        emb.word_embeddings.weight[zebra, 0] = 10.0
        for layer in model.bert.encoder.layer:
            for dense in (layer.attention.output.dense, layer.output.dense):
                dense.weight.zero_()
                dense.bias.zero_()
        model.qa_outputs.weight.zero_()
        model.qa_outputs.bias.zero_()
        model.qa_outputs.weight[:, 0] = 1.0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def words(n: int) -> list[str]:
    return [FILLER[i % len(FILLER)] for i in range(n)]


# --- span choice as a pure function -------------------------------------------------------------------


def brute_force(start, end, seq, max_answer_tokens):
    spans = [
        (float(start[i] + end[j]), i, j)
        for i in range(len(seq))
        for j in range(i, min(len(seq), i + max_answer_tokens))
        if seq[i] == 1 and seq[j] == 1
    ]
    return sorted(spans, reverse=True)


def test_best_spans_respect_order_length_and_the_passage_part():
    seq = [None, 0, 0, None, 1, 1, 1, 1, None]
    offsets = [(0, 0), (0, 3), (4, 7), (0, 0), (0, 2), (3, 5), (6, 8), (9, 11), (0, 0)]
    start = torch.tensor([9.0, 9, 9, 9, 0, 1, 5, 0, 9])  # question and special tokens score high: never chosen
    end = torch.tensor([9.0, 9, 9, 9, 4, 0, 0, 1, 9])  # the best end (token 4) comes before the best start (6)
    spans = best_spans(start, end, offsets, seq, max_answer_tokens=30, k=3)
    assert spans == [(6, 11, 6.0), (6, 8, 5.0), (0, 2, 4.0)]  # never (start 6, end 4), which would score 9
    singles = best_spans(start, end, offsets, seq, max_answer_tokens=1, k=10)
    assert [s for _, _, s in singles] == [5.0, 4.0, 1.0, 1.0]
    assert {(a, b) for a, b, _ in singles} == {(0, 2), (3, 5), (6, 8), (9, 11)}  # one token each


def test_best_spans_match_brute_force_on_random_logits():
    rng = random.Random(0)
    for _ in range(20):
        t = rng.randint(5, 40)
        q = rng.randint(1, t - 3)
        seq = [None] + [0] * q + [None] + [1] * (t - q - 3) + [None]
        offsets = [(i, i + 1) for i in range(t)]
        start = torch.randn(t)
        end = torch.randn(t)
        m, k = rng.randint(1, 6), rng.randint(1, 8)
        expected = brute_force(start, end, seq, m)[:k]
        got = best_spans(start, end, offsets, seq, max_answer_tokens=m, k=k)
        assert len(got) == len(expected)
        for (a, b, score), (e_score, i, j) in zip(got, expected):
            assert score == pytest.approx(e_score, abs=1e-5)
            assert b - a <= m and a < b


def test_best_spans_without_passage_tokens_is_empty():
    assert best_spans(torch.zeros(4), torch.zeros(4), [(0, 0)] * 4, [None, 0, 0, None], 30, 5) == []


# --- the reader over long passages ------------------------------------------------------------------------


def windows(reader, question, passage):
    enc = reader.tokenizer(
        question,
        passage,
        truncation="only_second",
        max_length=reader.max_length,
        stride=reader.stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    return [
        [o for o, s in zip(enc["offset_mapping"][w], enc.sequence_ids(w)) if s == 1]
        for w in range(len(enc["input_ids"]))
    ]


def test_reader_windows_a_long_passage_and_finds_the_answer_in_the_last_window(zebra_dir):
    reader = load_reader(str(zebra_dir), max_length=64, stride=16, max_answer_tokens=3)
    passage = " ".join(words(400) + ["zebra", "runs"])
    question = "which animal runs?"
    spans = reader.read(question, [passage], top_k=5)
    parts = windows(reader, question, passage)
    assert len(parts) > 5
    assert passage.index("zebra") >= parts[0][-1][1]  # beyond what one window could read
    assert spans[0].text == "zebra" and spans[0].passage == 0
    assert spans[0].score > 8 and spans[0].null_score < -8
    for s in spans:
        assert passage[s.start : s.end] == s.text and s.start < s.end
        assert len(reader.tokenizer(s.text, add_special_tokens=False)["input_ids"]) <= 3
    assert [s.score for s in spans] == sorted((s.score for s in spans), reverse=True)
    assert not reader.abstains(spans)


def test_spans_seen_by_two_windows_are_returned_once(zebra_dir):
    reader = load_reader(str(zebra_dir), max_length=64, stride=16)
    question = "which animal?"
    text = words(150)
    parts = windows(reader, question, " ".join(text))
    overlap = sorted(set(parts[0]) & set(parts[1]))
    assert overlap
    starts = [sum(len(w) + 1 for w in text[:i]) for i in range(len(text))]
    text[starts.index(overlap[len(overlap) // 2][0])] = "zebra"  # a one-piece word for a one-piece word
    passage = " ".join(text)
    spans = reader.read(question, [passage], top_k=10)
    assert spans[0].text == "zebra"
    keys = [(s.passage, s.start, s.end) for s in spans]
    assert len(keys) == len(set(keys)) and keys.count(keys[0]) == 1


def test_reader_ranks_across_passages_skips_empty_ones_and_batches(zebra_dir, caplog):
    reader = load_reader(str(zebra_dir), max_length=64, stride=16)
    with caplog.at_level(logging.DEBUG, logger="bertsearch.models.reader"):
        spans = reader.read("which animal?", ["", "a dog and a fox", "the zebra runs"], top_k=3)
    assert "passage 0 is empty" in caplog.text
    assert spans[0].passage == 2 and spans[0].text == "zebra"
    assert all(s.passage in (1, 2) for s in spans)
    batch = reader.read_batch(["which animal?", "who runs?"], [["the zebra runs"], ["   "]], top_k=2)
    assert len(batch) == 2 and batch[0][0].text == "zebra" and batch[1] == []
    assert reader.abstains(batch[1])
    assert (
        reader.read("which animal?", ["the zebra runs"], top_k=2)
        == reader.read_batch(["which animal?"], [["the zebra runs"]], top_k=2)[0]
    )
    bf16 = load_reader(str(zebra_dir), max_length=64, stride=16, precision="bf16")
    assert bf16.read("which animal?", ["the zebra runs"])[0].text == "zebra"


def test_per_passage_keeps_the_best_spans_of_every_passage(zebra_dir):
    reader = load_reader(str(zebra_dir), max_length=64, stride=16)
    passages = ["the zebra runs", "a dog and a fox", "zebra zebra zebra"]
    spans = reader.read("which animal?", passages, per_passage=2)
    for i in range(3):
        mine = [s for s in spans if s.passage == i]
        assert 1 <= len(mine) <= 2
        best = reader.read("which animal?", [passages[i]], top_k=2)
        assert mine[0].score == best[0].score  # (ties may order differently)
    assert [s.score for s in spans] == sorted((s.score for s in spans), reverse=True)


def test_reader_rejects_bad_input(zebra_dir, caplog):
    reader = load_reader(str(zebra_dir), max_length=64, stride=16)
    with pytest.raises(BadArgument, match="empty question"):
        reader.read("  ", ["some text"])
    with caplog.at_level("WARNING", logger="bertsearch.models.reader"):  # too long: cut to 64 - 16 - 4, not refused
        assert reader.read(" ".join(words(60)), ["some zebra text"])[0].text == "zebra"
    assert "question of 60 word pieces cut to 44" in caplog.text
    with pytest.raises(BadArgument):
        reader.read("q?", ["text"], top_k=0)
    with pytest.raises(BadArgument):
        load_reader(str(zebra_dir), max_length=64, stride=64)
    with pytest.raises(BadArgument):
        load_reader(str(zebra_dir), precision="fp8")


def test_abstains_compares_the_margin_with_the_threshold(tiny_dir):
    reader = ExtractiveReader("tiny", tiny_dir)
    best = [Span(0, 0, 3, "abc", score=2.0, null_score=5.0)]  # margin 3
    assert reader.no_answer_threshold is None and not reader.abstains(best) and reader.abstains([])
    reader.no_answer_threshold = 2.5
    assert reader.abstains(best)
    reader.no_answer_threshold = 3.5
    assert not reader.abstains(best)


def test_settings_come_from_bertsearch_json_unless_given(tmp_path, tiny_dir):
    import shutil

    path = tmp_path / "model"
    shutil.copytree(tiny_dir, path)
    (path / "bertsearch.json").write_text(
        json.dumps({"max_length": 128, "stride": 32, "max_answer_tokens": 10, "no_answer_threshold": 1.5})
    )
    reader = load_reader(str(path))
    assert (reader.max_length, reader.stride, reader.max_answer_tokens, reader.no_answer_threshold) == (
        128,
        32,
        10,
        1.5,
    )
    reader = load_reader(str(path), max_length=256, no_answer_threshold=-1.0)
    assert (reader.max_length, reader.stride, reader.no_answer_threshold) == (256, 32, -1.0)
    plain = load_reader(str(tiny_dir))
    assert (plain.max_length, plain.stride, plain.max_answer_tokens, plain.no_answer_threshold) == (384, 128, 30, None)


def test_fingerprint_changes_with_the_weights(tiny_dir, zebra_dir):
    a, b = load_reader(str(tiny_dir)), load_reader(str(zebra_dir))
    assert a.fingerprint() == load_reader(str(tiny_dir)).fingerprint() != b.fingerprint()
    assert a._model is None  # nothing loaded by the constructor or the fingerprint


def test_load_reader_without_shipped_weights_says_how_to_get_some(monkeypatch, tmp_path):
    monkeypatch.setattr(reader_module, "DEFAULT_READER_PATH", tmp_path / "none")
    with pytest.raises(ModelNotFound, match="no reader weights are shipped") as e:
        load_reader()
    assert "bertsearch train reader --train ../shared/data/squad/train-v1.1.json" in str(e.value)
    assert "--reader PATH_OR_ID" in str(e.value)
    with pytest.raises(ModelNotFound):
        load_reader(str(tmp_path / "missing" / "dir"))


# --- training ---------------------------------------------------------------------------------------------

TRAIN = {
    "dev_path": SQUAD / "dev-v1.1.json",
    "limit": 40,
    "dev_limit": 10,
    "epochs": 1,
    "max_length": 128,
    "stride": 32,
    "unanswerable": 0.0,  # the questions alone, so that step counts are known
}


def _example(i, context, answer, article, paragraph):
    from bertsearch.evaluation.squad import Example

    return Example(
        id=f"q{i}",
        question=f"question {i}?",
        context=context,
        answers=[answer],
        answer_starts=[context.index(answer)],
        article=article,
        paragraph=paragraph,
    )


def test_unanswerable_examples_cut_the_answer_or_take_another_paragraph_and_never_hold_the_answer():
    from bertsearch.training.reader import unanswerable_examples

    p0 = "Fleming found penicillin in 1928. He worked at St Mary's. The mould killed bacteria."
    p1 = "Penicillin was made in bulk in the 1940s. Florey and Chain led the work."
    p2 = "Zebras live in Africa. They have stripes."
    examples = [
        _example(0, p0, "1928", 0, 0),
        _example(1, p0, "St Mary's", 0, 0),
        _example(2, p1, "Florey and Chain", 0, 1),
        _example(3, p1, "1940s", 0, 1),
        _example(4, p2, "Africa", 1, 2),  # its article has no other paragraph, so only the cut applies
        _example(5, "Africa. Africa is large.", "Africa", 2, 3),  # the answer is in every sentence: none
    ]
    made, counts = unanswerable_examples(examples, 1.0, seed=0)
    assert sum(counts.values()) == len(made) == 5 and counts["other_paragraph"] >= 1
    by_id = {ex.id: ex for ex in made}
    assert "q5-unanswerable" not in by_id
    for ex in made:
        source = examples[int(ex.id[1:].split("-")[0])]
        assert ex.is_impossible and ex.answers == [] and ex.question == source.question
        assert source.answers[0].lower() not in ex.context.lower() and ex.context.strip()
    assert by_id["q4-unanswerable"].context == "They have stripes."
    for ex in made:  # each copy names the paragraph its context came from
        assert ex.paragraph == {p0: 0, p1: 1}.get(ex.context, examples[int(ex.id[1:].split("-")[0])].paragraph)
    cut = {ex.context for ex in made if ex.context not in (p0, p1)}
    assert "He worked at St Mary's. The mould killed bacteria." in cut or "Fleming found penicillin in 1928. The mould killed bacteria." in cut

    # a seeded share, the same every time; none at 0
    half, _ = unanswerable_examples(examples, 0.5, seed=3)
    assert len(half) <= 3 and [e.id for e in half] == [e.id for e in unanswerable_examples(examples, 0.5, seed=3)[0]]
    assert unanswerable_examples(examples, 0.0, seed=0) == ([], {"answer_sentences_removed": 0, "other_paragraph": 0})


def test_train_reader_saves_a_loadable_reader_and_resumes(tmp_path, tiny_dir):
    from bertsearch.training.reader import train_reader

    out = tmp_path / "reader"
    report = train_reader(
        SQUAD / "train-v1.1.json",
        out,
        base=str(tiny_dir),
        keep_checkpoints=True,
        v2_dev_path=SQUAD / "dev-v2.0.json",
        **TRAIN,
    )
    for name in ("model.safetensors", "config.json", "tokenizer.json", "bertsearch.json", "report.json", "README.md"):
        assert (out / name).is_file(), name
    assert report["steps"] == 3 and report["train_questions"] == 40 and report["resumed_from"] is None
    assert len(report["dev_per_evaluation"]) == 1 and report["dev"]["total"] == 10
    assert json.loads((out / "report.json").read_text())["steps"] == 3
    settings = json.loads((out / "bertsearch.json").read_text())
    assert settings["max_length"] == 128 and settings["no_answer_threshold"] == report["v2_dev"]["best_f1_thresh"]
    card = (out / "README.md").read_text()
    assert "cc-by-sa-4.0" in card and "bertsearch train reader --train" in card and "--max-length 128" in card
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16
    reader = load_reader(str(out))
    assert reader.max_length == 128 and reader.model.dtype == torch.float32
    spans = reader.read(
        "Who won Super Bowl 50?", ["The Denver Broncos defeated the Carolina Panthers to win Super Bowl 50."]
    )
    assert spans and all(s.text for s in spans)

    # more epochs resume from the checkpoint; other settings are refused
    with pytest.raises(BadArgument, match="other settings"):
        train_reader(SQUAD / "train-v1.1.json", out, base=str(tiny_dir), **{**TRAIN, "epochs": 2, "lr": 1e-4})
    again = train_reader(
        SQUAD / "train-v1.1.json",
        out,
        base=str(tiny_dir),
        **{**TRAIN, "epochs": 2},
        v2_dev_path=SQUAD / "dev-v2.0.json",
    )
    assert again["resumed_from"].endswith("checkpoint-3") and again["steps"] == 6
    assert len(again["dev_per_evaluation"]) == 2
    assert not (out / "checkpoints").exists()


def test_a_reranker_or_an_encoder_is_refused_as_the_reader(tmp_path, tokenizer):
    """Given as --reader, a cross-encoder failed in the first question with a traceback, and a bare encoder answered
    from a head never trained; as the base of `train reader`, a cross-encoder failed the same way."""
    from transformers import BertConfig, BertForSequenceClassification

    from bertsearch.training.reader import train_reader

    cross = tmp_path / "cross"
    BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64, num_labels=1)).save_pretrained(
        cross)
    tokenizer.save_pretrained(cross)
    with pytest.raises(BadArgument, match=r"is a cross-encoder \(a reranker\) \(BertForSequenceClassification\), not an "
                                          "extractive reader"):
        load_reader(str(cross))
    with pytest.raises(BadArgument, match="without a question-answering head"):
        load_reader(DEFAULT_ENCODER)
    with pytest.raises(BadArgument, match="base model .* is a cross-encoder"):
        train_reader(SQUAD / "train-v1.1.json", tmp_path / "out", base=str(cross), **TRAIN)
    assert not (tmp_path / "out").exists()


def test_checkpoints_of_a_run_from_before_unanswerable_resume_with_unanswerable_0(tmp_path):
    from bertsearch.training.common import RUN_FILE, check_same_run
    from bertsearch.training.reader import _BEFORE_UNANSWERABLE

    (tmp_path / RUN_FILE).write_text(json.dumps({"lr": 5e-5}))  # written before the setting existed
    check_same_run(tmp_path, {"lr": 5e-5, "unanswerable": 0.0}, (), _BEFORE_UNANSWERABLE)
    with pytest.raises(BadArgument, match=r"unanswerable=0.0 \(now 0.5\)"):
        check_same_run(tmp_path, {"lr": 5e-5, "unanswerable": 0.5}, (), _BEFORE_UNANSWERABLE)


def test_a_time_limit_stops_the_reader_evaluated_and_resumable(tmp_path, tiny_dir):
    from bertsearch.training.reader import train_reader

    out = tmp_path / "reader"
    stopped = train_reader(SQUAD / "train-v1.1.json", out, base=str(tiny_dir), time_limit=1e-9, **TRAIN)
    assert stopped["stopped_by_time_limit"] and (stopped["steps"], stopped["planned_steps"]) == (1, 3)
    assert [e["step"] for e in stopped["dev_per_evaluation"]] == [1] and stopped["dev"]["total"] == 10
    assert (out / "checkpoints").is_dir()
    passages = ["Nobody knows.", "Somebody might."]
    spans = load_reader(str(out)).read("Who?", passages, top_k=3)  # the saved best reader answers, best first
    assert len(spans) == 3 and [s.score for s in spans] == sorted((s.score for s in spans), reverse=True)
    assert all(s.text and passages[s.passage][s.start : s.end] == s.text for s in spans)
    assert "stopped at its time limit after 1 of 3 planned steps" in (out / "README.md").read_text()

    done = train_reader(SQUAD / "train-v1.1.json", out, base=str(tiny_dir), **TRAIN)  # the limit may change
    assert done["resumed_from"].endswith("checkpoint-1") and done["steps"] == 3 and not done["stopped_by_time_limit"]
    assert not (out / "checkpoints").exists()


def _small_squad(path, n):
    """A SQuAD v1.1 file of the first `n` questions of dev-v1.1.json."""
    data = json.loads((SQUAD / "dev-v1.1.json").read_text(encoding="utf-8"))
    articles, left = [], n
    for article in data["data"]:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            if left <= 0:
                break
            qas = paragraph["qas"][:left]
            left -= len(qas)
            paragraphs.append({**paragraph, "qas": qas})
        if paragraphs:
            articles.append({**article, "paragraphs": paragraphs})
    path.write_text(json.dumps({"version": "1.1", "data": articles}), encoding="utf-8")
    return path


def test_a_reader_goes_on_training_on_questions_it_has_not_seen(tmp_path, tiny_dir):
    from bertsearch.training.reader import train_reader

    train = _small_squad(tmp_path / "train-small.json", 30)
    small = {**TRAIN, "dev_limit": 5, "max_length": 128}
    one = train_reader(train, tmp_path / "one", base=str(tiny_dir), **{**small, "limit": 12})
    assert one["earlier_stages"] == [] and one["train_questions"] == 12

    # stage 2 starts from stage 1's reader, head and all, and trains on the 18 questions stage 1 left
    two = train_reader(train, tmp_path / "two", base=str(tmp_path / "one"), unseen=True, **{**small, "limit": None})
    assert two["train_questions"] == 18
    assert [s["train_questions"] for s in two["earlier_stages"]] == [12]
    card = (tmp_path / "two" / "README.md").read_text()
    assert "## Stages" in card and "30 training questions in all" in card
    assert card.index("# stage 1") < card.index("--limit 12") < card.index("# stage 2") < card.index("--unseen")
    assert f"base_model: {tiny_dir}" in card  # the first stage's base, not the folder stage 1 wrote
    assert f"{two['machine']['torch_threads']} torch thread" in card  # what it ran on, not just the machine

    # stage 3 replays both stages' samples: nothing is left
    with pytest.raises(BadArgument, match="already trained on every question"):
        train_reader(train, tmp_path / "three", base=str(tmp_path / "two"), unseen=True, **{**small, "limit": None})
    # without --unseen it may train on seen questions again; --unseen needs a history and the same file
    with pytest.raises(BadArgument, match="needs a --base reader that bertsearch trained"):
        train_reader(train, tmp_path / "x", base=str(tiny_dir), unseen=True, **small)
    other = _small_squad(tmp_path / "other.json", 30)
    with pytest.raises(BadArgument, match="not .*other.json"):
        train_reader(other, tmp_path / "x", base=str(tmp_path / "one"), unseen=True, **small)


def test_layer_decay_groups_and_gradual_unfreezing(tmp_path, tiny_dir):
    from transformers import BertForQuestionAnswering

    from bertsearch.training.layers import layer_depth, param_groups
    from bertsearch.training.reader import _trainer_classes, train_reader

    model = BertForQuestionAnswering.from_pretrained(tiny_dir)
    assert layer_depth("bert.embeddings.word_embeddings.weight", 2) == 0
    assert layer_depth("bert.encoder.layer.1.output.dense.weight", 2) == 2
    assert layer_depth("qa_outputs.weight", 2) == 3
    groups = param_groups(model, lr=1.0, weight_decay=0.01, no_decay={"qa_outputs.bias"}, layer_lr_decay=0.5)
    lrs = {g["lr"] for g in groups}
    assert lrs == {1.0, 0.5, 0.25, 0.125}  # head, layer 1, layer 0, embeddings
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert any(g["weight_decay"] == 0.0 and g["lr"] == 1.0 for g in groups)
    _, Unfreeze = _trainer_classes()
    unfreeze = Unfreeze(every=2)

    def training():
        return {layer_depth(n, 2) for n, p in model.named_parameters() if p.requires_grad}

    unfreeze._apply(model, 0)
    assert training() == {3}  # the head alone
    unfreeze._apply(model, 3)
    assert training() == {2, 3}  # and the top layer
    unfreeze._apply(model, 100)
    assert training() == {0, 1, 2, 3}  # embeddings last
    report = train_reader(
        SQUAD / "train-v1.1.json",
        tmp_path / "r",
        base=str(tiny_dir),
        layer_lr_decay=0.8,
        unfreeze_schedule=True,
        bf16=True,
        **{**TRAIN, "dev_path": None},
    )
    assert report["steps"] == 3 and report["dev"] is None and (tmp_path / "r" / "model.safetensors").is_file()


# --- CLI --------------------------------------------------------------------------------------------------


@pytest.fixture
def run():
    root = Group("bertsearch")
    train, evaluate = Group("train"), Group("eval")
    train.add_command(reader_command)
    evaluate.add_command(squad_command)
    root.add_command(train)
    root.add_command(evaluate)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(root, [str(a) for a in args], catch_exceptions=False)

    return invoke


def test_cli_eval_squad(run, zebra_dir, monkeypatch, tmp_path):
    r = run("eval", "squad", SQUAD / "dev-v2.0.json", "--reader", zebra_dir, "--limit", 6, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["total"] == 6 and {"exact_match", "f1", "HasAns_f1", "NoAns_f1", "best_f1_thresh"} <= set(data)
    r = run("eval", "squad", SQUAD / "dev-v2.0.json", "--reader", zebra_dir, "--limit", 3, "--threshold", -1000)
    assert r.exit_code == 0 and "exact_match" in r.stdout and "threshold -1000.000" in r.stdout
    r = run("eval", "squad", SQUAD / "dev-v1.1.json", "--reader", zebra_dir, "--limit", 3, "--threshold", -1000)
    assert r.exit_code == 0 and "threshold none" in r.stdout  # v1.1: every question has an answer
    monkeypatch.setattr(reader_module, "DEFAULT_READER_PATH", tmp_path / "none")
    r = run("eval", "squad", SQUAD / "dev-v1.1.json")
    assert r.exit_code == 1 and "no reader weights are shipped" in r.stderr and "Traceback" not in r.output
    r = run("eval", "squad", tmp_path / "missing.json", "--reader", zebra_dir)
    assert r.exit_code == 1 and "no such file" in r.stderr


def test_cli_train_reader(run, tiny_dir, tmp_path):
    out = tmp_path / "cli-reader"
    r = run(
        "train",
        "reader",
        "--train",
        SQUAD / "train-v1.1.json",
        "--out",
        out,
        "--base",
        tiny_dir,
        "--limit",
        20,
        "--epochs",
        1,
        "--max-length",
        128,
        "--stride",
        32,
        "--json",
    )
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["train_questions"] == 20 and (out / "bertsearch.json").is_file()
    made = sum(report["unanswerable_examples"].values())  # --unanswerable 0.5 by default
    assert 5 <= made <= 10 and report["windows_without_answer"] >= made  # each labelled "no answer"
    assert "--unanswerable 0.5" in report["command"] and f"on {made} copies" in (out / "README.md").read_text()
    r = run("train", "reader", "--train", SQUAD / "train-v1.1.json", "--out", out, "--unanswerable", 1.5)
    assert r.exit_code == 2 and "--unanswerable" in r.stderr
    r = run("train", "reader", "--train", tmp_path / "nope.json", "--out", out)
    assert r.exit_code == 1 and "no such file" in r.stderr
    for command in (("train", "reader"), ("eval", "squad")):
        r = run(*command, "--help")
        assert r.exit_code == 0 and "bertsearch " + " ".join(command) in r.stdout


def test_the_reproduce_command_keeps_unanswerable_0_and_a_v1_file_is_refused_as_v2_dev(tmp_path):
    """`--unanswerable 0` was left out of report.json's command (which then trained at the default 0.5); a v1.1 file
    given to --v2-dev crashed with KeyError after the whole training, leaving a half-written model folder."""
    from bertsearch.training.reader import _command, train_reader

    s = {"train_path": "t.json", "out_dir": "m", "base": "b", "dev_path": None, "v2_dev_path": None, "unanswerable": 0.0}
    assert "--unanswerable 0.0" in _command(s)
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps({"data": [{"paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "1", "question": "where is Paris?", "answers": [{"text": "France", "answer_start": 12}]}]}]}]}))
    with pytest.raises(BadArgument, match="holds no unanswerable questions"):
        train_reader(v1, tmp_path / "out", v2_dev_path=v1)
    assert not (tmp_path / "out").exists()
