"""`train encoder`: data from BEIR or pairs, hard negatives mined and filtered, a model any --model takes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import bertsearch
from bertsearch.cli import cli
from bertsearch.training import encoder as training
from bertsearch.training.reranker import Example

TOPICS = {
    "cat": "Cats purr, sleep most of the day and hunt mice at night.",
    "dog": "Dogs bark at strangers and fetch sticks thrown in the park.",
    "fish": "Fish swim in rivers and breathe water through their gills.",
    "bird": "Birds build nests in spring and sing at dawn from the trees.",
    "cow": "Cows graze on grass in the meadow and give milk every morning.",
    "bee": "Bees collect nectar from flowers and make honey in the hive.",
    "owl": "Owls hunt at night and turn their heads almost all the way round.",
    "ant": "Ants carry crumbs many times their weight back to the colony.",
}


@pytest.fixture
def beir_dir(tmp_path):
    d = tmp_path / "animals"
    (d / "qrels").mkdir(parents=True)
    (d / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": k.title(), "text": v}) + "\n"
                                            for k, v in TOPICS.items()))
    qs = {f"q{k}": f"which animal {v.split(' ', 1)[1].split(' and ')[0]}" for k, v in TOPICS.items()}
    (d / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in qs.items()))
    (d / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{k}\t{k}\t1\n" for k in TOPICS))
    return d


class Prefers:
    """A stand-in cross-encoder that scores a passage by whether it holds `word`."""

    name = "prefers"

    def __init__(self, word: str) -> None:
        self.word = word

    def score(self, query, passages, *, batch_size=32):
        return np.array([5.0 if self.word in p else 0.0 for p in passages], dtype=np.float32)


def test_mining_skips_positives_and_drops_what_the_cross_encoder_prefers():
    pool = list(TOPICS.values())
    examples = [Example("animals that hunt at night", TOPICS["cat"]), Example("honey and nectar", TOPICS["bee"])]
    stats = training.mine_negatives(examples, n=2, pool=pool, reranker=Prefers("Owls"))
    cat = examples[0]
    assert TOPICS["owl"] not in cat.negatives and cat.positive not in cat.negatives  # owls also hunt at night
    assert stats["dropped_as_false_negatives"] == 1 and stats["without_negatives"] == 2  # nothing else matched
    unfiltered = [Example("animals that hunt at night", TOPICS["cat"])]
    training.mine_negatives(unfiltered, n=2, pool=pool)
    assert TOPICS["owl"] in unfiltered[0].negatives  # BM25's hardest candidate, kept without the filter


def test_mining_from_an_index_uses_its_documents(tmp_path):
    with bertsearch.open_index(tmp_path / "ix", create=True, model="hashing") as ix:
        ix.add([{"id": k, "text": v} for k, v in TOPICS.items()])
    examples = [Example("fetch sticks in the park", TOPICS["dog"])]
    training.mine_negatives(examples, n=1, index=tmp_path / "ix")
    assert len(examples[0].negatives) == 1 and examples[0].negatives[0] in TOPICS.values()
    assert examples[0].negatives[0] != TOPICS["dog"]


def test_train_encoder_on_a_beir_split_evaluates_before_and_after(tiny_encoder, beir_dir, tmp_path,
                                                                 recorded_progress):
    out = tmp_path / "enc"
    report = training.train_encoder(out, beir=beir_dir, base=str(tiny_encoder), epochs=2, batch_size=4,
                                    mini_batch_size=2, dev_fraction=0.25, dev_corpus=10, filter_negatives=False,
                                    progress=recorded_progress)
    assert report["data"]["train_pairs"] == 6 and report["data"]["dev_queries"] == 2
    assert report["steps"] == 4  # 2 epochs x ceil(6 / 4)
    assert ["training", 4, 4] in recorded_progress.bars  # every step shown
    assert set(report["dev_before"]) == set(report["dev_after"]) == {"ndcg@10", "recall@100", "mrr@10"}
    assert len(report["dev_per_evaluation"]) == 2
    assert (out / "report.json").is_file() and (out / "README.md").is_file() and not (out / "checkpoints").exists()
    with bertsearch.open_index(tmp_path / "ix", create=True, model=str(out)) as ix:  # any --model takes it
        ix.add([{"id": k, "text": v} for k, v in TOPICS.items()])
        assert len(ix.search("bees and honey", k=3, mode="dense")) == 3


def test_a_time_limit_stops_the_encoder_evaluated_and_resumable(tiny_encoder, beir_dir, tmp_path):
    out = tmp_path / "enc"
    kw = {"beir": beir_dir, "base": str(tiny_encoder), "epochs": 2, "batch_size": 4, "mini_batch_size": 2,
          "dev_fraction": 0.25, "dev_corpus": 10, "filter_negatives": False}
    stopped = training.train_encoder(out, time_limit=1e-9, **kw)  # up after the first step
    assert stopped["stopped_by_time_limit"] and (stopped["steps"], stopped["planned_steps"]) == (1, 4)
    assert [e["step"] for e in stopped["dev_per_evaluation"]] == [1] and (out / "checkpoints").is_dir()
    assert "stopped at its time limit after 1 of 4 planned steps" in (out / "README.md").read_text()
    done = training.train_encoder(out, **kw)
    assert done["resumed_from"].endswith("checkpoint-1") and done["steps"] == 4 and not done["stopped_by_time_limit"]
    assert not (out / "checkpoints").exists()


def test_every_mined_negative_is_trained_on_and_none_is_a_positive_of_the_same_query(tiny_encoder, beir_dir,
                                                                                      tmp_path, monkeypatch):
    import datasets

    # BM25 finds cat, owl and bird for "hunt at night in the trees" (judged to be about bees); "xyzzy plugh" shares
    # no word with any passage, so both its negatives are filled in, and its own positives, cat and owl, never
    with (beir_dir / "queries.jsonl").open("a") as f:
        f.write(json.dumps({"_id": "qx", "text": "xyzzy plugh"}) + "\n")
        f.write(json.dumps({"_id": "qn", "text": "hunt at night in the trees"}) + "\n")
    (beir_dir / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\nqx\tcat\t1\nqx\towl\t1\nqn\tbee\t1\n" + "".join(f"q{k}\t{k}\t1\n" for k in TOPICS))
    made = []
    from_dict = datasets.Dataset.from_dict
    monkeypatch.setattr(datasets.Dataset, "from_dict", staticmethod(lambda columns, *a, **k: made.append(columns)
                                                                    or from_dict(columns, *a, **k)))
    report = training.train_encoder(tmp_path / "enc", beir=beir_dir, base=str(tiny_encoder), epochs=1, batch_size=4,
                                    mini_batch_size=2, dev_fraction=0, hard_negatives=2, filter_negatives=False)
    (columns,) = [c for c in made if "anchor" in c]
    negative_columns = [name for name in columns if name.startswith("negative")]
    rows = {(q, p): [columns[name][i] for name in negative_columns]
            for i, (q, p) in enumerate(zip(columns["anchor"], columns["positive"]))}
    own = {p for q, p in rows if q == "xyzzy plugh"}
    assert len(own) == 2 and all(not own & set(negs) for (q, _), negs in rows.items() if q == "xyzzy plugh")
    assert len(negative_columns) == 2  # every mined negative is trained on, each in a column of its own
    (mined,) = [negs for (q, _), negs in rows.items() if q.startswith("hunt")]
    assert len(set(mined)) == 2 and {n.split("\n")[0] for n in mined} <= {"Cat", "Owl", "Bird"}
    assert all(len(set(negs)) == 2 and p not in negs for (_, p), negs in rows.items())
    assert report["data"]["negatives_per_pair"] == 2


def test_a_mined_document_that_holds_the_positive_is_no_negative(tmp_path):
    """An index's documents are mined as "title\ntext", a pairs file's positive is the text alone: the two never
    compared equal, and 6 pairs in 10 got their own document as a hard negative."""
    with bertsearch.open_index(tmp_path / "ix", create=True, model="hashing") as ix:
        ix.add([{"id": k, "title": k.title(), "text": v} for k, v in TOPICS.items()])
    examples = [Example("fetch sticks in the park", "  ".join(TOPICS["dog"].split()))]  # (other spacing, too)
    training.mine_negatives(examples, n=len(TOPICS), index=tmp_path / "ix")
    assert examples[0].negatives and not any(TOPICS["dog"] in n for n in examples[0].negatives)


def test_pairs_are_held_out_by_query_with_all_their_positives(tiny_encoder, tmp_path):
    """Pairs were held out one by one: a dev query was trained on through its other pairs, and judged by one of its
    positives only."""
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"query": f"about {k}", "positive": v} for k, v in TOPICS.items()]
    rows += [{"query": f"about {k}", "positive": v + " More about it."} for k, v in TOPICS.items()]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = CliRunner().invoke(cli, ["train", "encoder", "--pairs", str(pairs), "--out", str(tmp_path / "m"), "--base",
                                 str(tiny_encoder), "--epochs", "1", "--batch-size", "4", "--mini-batch-size", "2",
                                 "--no-filter", "--hard-negatives", "0", "--dev-fraction", "0.25", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["data"]["train_pairs"] == 12 and report["data"]["dev_queries"] == 2, report["data"]


def test_cli_train_encoder_from_pairs_and_argument_errors(tiny_encoder, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": f"about {k}", "positive": v}) + "\n" for k, v in TOPICS.items()))
    r = CliRunner().invoke(cli, ["train", "encoder", "--pairs", str(pairs), "--out", str(tmp_path / "m"), "--base",
                                 str(tiny_encoder), "--epochs", "1", "--batch-size", "4", "--mini-batch-size", "2",
                                 "--no-filter", "--dev-fraction", "0.25", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    # 8 passages: every dev query's own is in its top 100, and ranks somewhere in the top 10
    assert report["data"]["train_pairs"] == 6 and report["dev_after"]["recall@100"] == 1.0
    assert 0 < report["dev_after"]["ndcg@10"] <= 1
    r = CliRunner().invoke(cli, ["train", "encoder", "--pairs", str(pairs), "--beir", str(tmp_path), "--out",
                                 str(tmp_path / "x")])
    assert r.exit_code == 1 and "one source" in r.stderr


def _weights(folder):
    from safetensors.numpy import load_file

    (f,) = folder.glob("**/model.safetensors")
    return load_file(str(f))


def test_a_run_of_one_step_learns_and_says_it_is_short(tiny_encoder, beir_dir, tmp_path, caplog):
    """transformers' warmup (a ratio, rounded up) ran a one-step run at a learning rate of 0: the base was saved as
    trained. Rounded down, a run too short for a warmup has none, and the log says how short it is."""
    from bertsearch.training.common import warmup_steps

    assert [warmup_steps(0.1, n) for n in (1, 9, 10, 15, 1000)] == [0, 0, 1, 1, 100]
    out = tmp_path / "enc"
    report = training.train_encoder(out, beir=beir_dir, base=str(tiny_encoder), epochs=1, batch_size=32,
                                    mini_batch_size=4, dev_fraction=0.25, dev_corpus=10, filter_negatives=False)
    assert report["steps"] == 1
    assert "only 1 optimizer step in this run" in caplog.text
    before, after = _weights(tiny_encoder), _weights(out)
    assert max(float(np.abs(after[k].astype(np.float32) - before[k].astype(np.float32)).max()) for k in before) > 0


def test_out_must_not_be_an_index_nor_a_model_saved_before(tiny_encoder, beir_dir, tmp_path):
    from bertsearch.errors import BadArgument

    kw = {"beir": beir_dir, "base": str(tiny_encoder), "epochs": 1, "batch_size": 4, "mini_batch_size": 2,
          "dev_fraction": 0.25, "dev_corpus": 10, "filter_negatives": False}
    with bertsearch.open_index(tmp_path / "ix", create=True, model="hashing") as ix:
        ix.add([{"id": "a", "text": "kept"}])
    with pytest.raises(BadArgument, match="is an index folder"):
        training.train_encoder(tmp_path / "ix", **kw)
    with bertsearch.open_index(tmp_path / "ix") as ix:  # untouched
        assert ix.get("a")["text"] == "kept" and ix.config.model.startswith("hashing")
    out = tmp_path / "enc"
    training.train_encoder(out, **kw)
    first = (out / "model.safetensors").read_bytes()
    with pytest.raises(BadArgument, match="already holds a model .* --no-resume"):
        training.train_encoder(out, **{**kw, "lr": 5e-5})
    assert (out / "model.safetensors").read_bytes() == first
    training.train_encoder(out, resume=False, **{**kw, "lr": 5e-5})  # --no-resume: start over and replace it
    assert (out / "model.safetensors").read_bytes() != first


def test_a_reranker_or_a_reader_is_refused_as_the_encoder(tiny_encoder, tmp_path):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering, BertForSequenceClassification

    from bertsearch.errors import BadArgument

    tok = AutoTokenizer.from_pretrained(str(tiny_encoder))
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    torch.manual_seed(0)
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"id": "a", "text": "Bees make honey."}) + "\n")
    for kind, what in ((BertForSequenceClassification, "a cross-encoder"),
                       (BertForQuestionAnswering, "an extractive reader")):
        folder = tmp_path / kind.__name__
        kind(BertConfig(**config.to_dict(), num_labels=1) if what == "a cross-encoder" else config).save_pretrained(
            folder)
        tok.save_pretrained(folder)
        r = CliRunner().invoke(cli, ["index", str(corpus), "--index", str(tmp_path / "ix"),
                                     "--model", str(folder)])
        assert r.exit_code == 1 and f"is {what}" in r.stderr and "not an embedding model" in r.stderr, r.output
        assert not (tmp_path / "ix").exists()
        with pytest.raises(BadArgument, match="not an embedding model"):
            training.train_encoder(tmp_path / "out", pairs=str(corpus), base=str(folder))


def test_eval_beir_indexes_again_when_the_model_folder_was_retrained(tiny_encoder, beir_dir, tmp_path, monkeypatch,
                                                                     caplog):
    """eval's own index of a model folder keyed on the folder's path: after the folder was trained again, eval failed
    with advice to leave out --model (which evaluates another model)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from bertsearch.errors import ModelMismatch
    from bertsearch.evaluation.beir import evaluate_beir

    monkeypatch.chdir(tmp_path)
    model = tmp_path / "m"
    shutil.copytree(tiny_encoder, model)
    first = evaluate_beir(beir_dir, split="train", mode="dense", model=str(model))
    (weights,) = model.glob("**/model.safetensors")
    save_file({k: v + 0.01 * torch.randn_like(v) for k, v in load_file(str(weights)).items()}, str(weights))
    with caplog.at_level("WARNING"):
        again = evaluate_beir(beir_dir, split="train", mode="dense", model=str(model))
    assert again["index"] == first["index"] and "its weights changed since" in caplog.text
    with pytest.raises(ModelMismatch, match="Leave out --model"):  # (named: another model than the index's)
        evaluate_beir(beir_dir, split="train", mode="dense", model=str(tiny_encoder), index_path=again["index"])
    bertsearch.open_index(again["index"])  # the index opens with its own model
    save_file({k: v + 0.01 for k, v in load_file(str(weights)).items()}, str(weights))
    with pytest.raises(ModelMismatch, match=r"whose weights have changed since indexing .* reindex --model") as err:
        bertsearch.open_index(again["index"]).search("an animal", mode="dense")
    assert "Leave out --model" not in str(err.value)
    with pytest.raises(ModelMismatch, match="whose weights have changed since indexing") as err:  # its folder named
        evaluate_beir(beir_dir, split="train", mode="dense", model=str(model), index_path=again["index"])
    assert "Leave out --model" not in str(err.value)
