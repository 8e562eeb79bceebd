"""`adapt`: pseudo-queries from the corpus's chunks, negatives from the index, then in-batch contrastive
loss or cross-encoder margins with MarginMSE; each step a file of its own, skipped when present; held-out
pseudo-queries ranked before and after; optional masked-LM pre-training."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner

import bertsearch
from bertsearch.cli import cli
from bertsearch.training import adapt as ad

DOCS = {
    "mars": "Mars is the fourth planet from the Sun. Its red colour comes from iron oxide on the surface. "
            "Olympus Mons on Mars is the tallest volcano in the solar system.",
    "venus": "Venus is the second planet from the Sun. A thick atmosphere of carbon dioxide traps its heat. "
             "Venus spins backwards compared with most planets.",
    "moon": "The Moon is the only natural satellite of the Earth. Its gravity raises the tides of the oceans. "
            "Astronauts first walked on the Moon in 1969.",
    "comet": "A comet is a ball of ice and dust that orbits the Sun. Near the Sun it grows a glowing tail. "
             "Halley's Comet returns about every 76 years.",
}


@pytest.fixture
def index(tmp_path):
    path = tmp_path / "ix"
    with bertsearch.open_index(path, create=True, model="hashing") as ix:
        ix.add([{"id": k, "title": k.title(), "text": v} for k, v in DOCS.items()])
    return path


@pytest.fixture(scope="module")
def tiny_ce(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from bertsearch.models import DEFAULT_ENCODER, resolve_model_path

    tok = AutoTokenizer.from_pretrained(str(resolve_model_path(DEFAULT_ENCODER)))
    path = tmp_path_factory.mktemp("tiny-ce")
    torch.manual_seed(1)
    BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64, num_labels=1)).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def test_a_pseudo_query_is_a_sentence_or_a_window_of_one():
    rng = random.Random(0)
    text = DOCS["mars"]
    for _ in range(20):
        q = ad.crop_queries(text, rng, max_words=6)
        assert q is not None and len(q.split()) <= 6 and q in text
    assert ad.crop_queries("Too short.", rng) is None


def test_a_pseudo_query_is_cut_from_its_positive_across_newlines_and_double_spaces(tmp_path):
    path = tmp_path / "spaced"
    with bertsearch.open_index(path, create=True, model="hashing") as ix:
        ix.add([{"id": k, "text": v.replace(". ", ".\n").replace(" the ", "  the\n")} for k, v in DOCS.items()])
    ad.adapt(path, tmp_path / "cut", steps=("queries",), remove_query=1.0, queries_per_doc=3)
    rows = [json.loads(line) for line in (tmp_path / "cut" / "work" / "queries.jsonl").open()]
    assert len(rows) == 12 and all("\n" in r["positive"] for r in rows)
    assert all(" ".join(r["query"].split()) not in " ".join(r["positive"].split()) for r in rows)


def test_a_checkpoint_of_a_run_with_other_settings_is_refused_and_the_same_run_resumes(index, tmp_path, tiny_encoder,
                                                                                      monkeypatch):
    import shutil

    rmtree = shutil.rmtree
    monkeypatch.setattr(shutil, "rmtree", lambda p, *a, **k: None if p == out / "checkpoints" else rmtree(p, *a, **k))
    out = tmp_path / "adapted"
    kw = {"base": str(tiny_encoder), "batch_size": 4, "negatives": 1, "holdout": 0}
    ad.adapt(index, out, steps=("queries", "mine", "train"), **kw)
    assert [c.name for c in (out / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]  # as a run cut short
    rmtree(out / "work" / "trained")
    with pytest.raises(bertsearch.BertsearchError, match=r"other settings: lr=2e-05 \(now 0.0001\).* another --out"):
        ad.adapt(index, out, steps=("train",), lr=1e-4, **kw)
    r = ad.adapt(index, out, steps=("train",), epochs=2, **kw)  # more epochs go on from the checkpoint
    assert r["steps"]["train"]["resumed_from"].endswith("checkpoint-2") and r["steps"]["train"]["steps"] == 4


def test_each_step_writes_its_file_and_a_rerun_skips_it(index, tmp_path, tiny_ce):
    out = tmp_path / "adapted"
    r = ad.adapt(index, out, steps=("queries", "mine"), negatives=1, seed=3)
    queries = [json.loads(line) for line in (out / "work" / "queries.jsonl").open()]
    triples = [json.loads(line) for line in (out / "work" / "triples.jsonl").open()]
    assert r["steps"]["queries"]["queries"] == len(queries) == 8  # 2 a document
    assert all(q["query"] in DOCS[q["doc_id"]][q["start"]:q["end"]] for q in queries)  # cropped from a chunk
    assert len(triples) == 8 and all(t["negative_id"] != t["doc_id"] for t in triples)
    assert "label" not in r["steps"]
    before = (out / "work" / "queries.jsonl").read_text()
    again = ad.adapt(index, out, steps=("queries", "mine", "label"), reranker=str(tiny_ce), loss="margin-mse",
                     negatives=1, seed=3)
    assert (out / "work" / "queries.jsonl").read_text() == before  # not redone
    labelled = [json.loads(line) for line in (out / "work" / "labelled.jsonl").open()]
    assert len(labelled) == 8 and all(isinstance(t["margin"], float) for t in labelled)
    assert set(again["steps"]) == {"queries", "mine", "label"}  # the report keeps earlier steps


def test_a_rerun_with_other_settings_is_refused_rather_than_reusing_the_old_work(index, tmp_path, tiny_ce):
    """A rerun with a new --pseudo-queries, --limit or --lr skipped the steps whose files existed, ignored the new
    settings in silence, and reported the old run's figures as its own."""
    out = tmp_path / "adapted"
    ad.adapt(index, out, steps=("queries", "mine"), negatives=1, seed=3)
    before = (out / "work" / "queries.jsonl").read_text()
    with pytest.raises(bertsearch.BertsearchError, match=r"queries.jsonl was made by an adapt run with other settings: "
                                                         r"query_source='sentences' \(now 'titles'\).*delete"):
        ad.adapt(index, out, steps=("queries", "mine"), negatives=1, seed=3, query_source="titles")
    with pytest.raises(bertsearch.BertsearchError, match=r"triples.jsonl .* negatives=1 \(now 2\)"):
        ad.adapt(index, out, steps=("mine",), negatives=2, seed=3)
    assert (out / "work" / "queries.jsonl").read_text() == before
    ad.adapt(f"{index}/", out, steps=("queries", "mine", "label"), reranker=str(tiny_ce), loss="margin-mse",
             negatives=1, seed=3)  # the same settings (the index spelled otherwise): reused, and the next step runs


def test_an_out_folder_holding_another_model_or_a_reranker_as_base_is_refused(index, tmp_path, tiny_encoder, tiny_ce):
    """`adapt --out` a folder holding a trained encoder replaced it without a word; `--base` a reranker was adapted
    as an encoder (its head dropped), where `train encoder --base` and `index --model` refuse it."""
    import shutil

    taken = tmp_path / "mine"
    shutil.copytree(tiny_encoder, taken)
    files = {p.name: p.read_bytes() for p in taken.iterdir() if p.is_file()}
    with pytest.raises(bertsearch.BertsearchError, match="already holds a model .* that adapt did not make"):
        ad.adapt(index, taken, steps=("queries",))
    assert {p.name: p.read_bytes() for p in taken.iterdir() if p.is_file()} == files and not (taken / "work").exists()
    with pytest.raises(bertsearch.BertsearchError, match="not an embedding model"):
        ad.adapt(index, tmp_path / "x", base=str(tiny_ce), steps=("queries",))
    with pytest.raises(bertsearch.BertsearchError, match="no index at"):
        ad.adapt(tmp_path / "nosuch", tmp_path / "y", steps=("queries",))
    for bad in (float("nan"), 3e5):
        with pytest.raises(bertsearch.BertsearchError, match="lr must be a positive number up to 0.01"):
            ad.adapt(index, tmp_path / "z", lr=bad, steps=("queries",))
    with pytest.raises(bertsearch.BertsearchError, match="no adapt steps given"):
        ad.adapt(index, tmp_path / "z", steps=())
    assert not any((tmp_path / n).exists() for n in ("x", "y", "z"))


def test_a_model_trained_to_nan_is_not_saved():
    """--lr 3e5 (for 3e-5) trained every weight to NaN, and the model was saved, exit 0: it scored everything NaN."""
    import torch

    from bertsearch.training.common import check_finite

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    check_finite(model, "model")
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    with pytest.raises(bertsearch.BertsearchError, match=r"training diverged: 1 of the model's weight tensors hold NaN "
                                                         r"or infinity \(1.weight, ...\), so nothing was saved"):
        check_finite(model, "model")


def test_a_step_without_its_input_says_which_step_to_run(index, tmp_path):
    with pytest.raises(bertsearch.BertsearchError, match="run the 'mine' step first"):
        ad.adapt(index, tmp_path / "x", steps=("label",), loss="margin-mse")
    with pytest.raises(bertsearch.BertsearchError, match="run the 'mine' step first"):
        ad.adapt(index, tmp_path / "y", steps=("train",))  # mnrl trains on the mined triples
    with pytest.raises(bertsearch.BertsearchError, match="run the 'label' step first"):
        ad.adapt(index, tmp_path / "z", steps=("queries", "mine", "train"), loss="margin-mse")


def test_train_gives_an_encoder_that_reindexes_the_index(index, tmp_path, tiny_ce, tiny_encoder, recorded_progress):
    out = tmp_path / "adapted"
    r = ad.adapt(index, out, reranker=str(tiny_ce), base=str(tiny_encoder), batch_size=4, negatives=1,
                 loss="margin-mse", holdout=0, progress=recorded_progress)
    assert r["steps"]["train"]["steps"] == 2 and (out / "modules.json").is_file()
    assert r["steps"]["train"]["margin_scale"] > 0 and "spread" in r["steps"]["train"]["chosen"]
    assert r["steps"]["train"]["holdout"] == {}  # holdout=0: nothing held out, nothing ranked
    shown = {bar[0]: bar[1:] for bar in recorded_progress.bars}
    assert shown["training"] == [2, 2] and shown["labelling margins"][0] == shown["labelling margins"][1] > 0
    from bertsearch.reindex import reindex

    reindex(index, str(out))
    with bertsearch.open_index(index) as ix:
        assert ix.config.model == str(out) and len(ix.search("tallest volcano", k=2, mode="dense")) == 2


def test_mlm_pretraining_feeds_the_bi_encoder(index, tmp_path, tiny_ce, tiny_encoder):
    out = tmp_path / "adapted"
    r = CliRunner().invoke(cli, ["adapt", "--index", str(index), "--out", str(out), "--reranker", str(tiny_ce),
                                 "--base", str(tiny_encoder), "--mlm", "--batch-size", "4", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["steps"]["mlm"]["model"] == str(out / "mlm") and report["steps"]["train"]["base"] == str(out / "mlm")
    assert (out / "mlm" / "modules.json").is_file() and (out / "modules.json").is_file()


def test_margins_are_rescaled_to_the_encoders_own_spread():
    """The cross-encoder's margins (std 2 here) are scaled to the spread of the bi-encoder's margins
    (std 0.2): a normalised encoder cannot reach logit-sized margins, and chasing them wrecks it."""
    import torch

    class Encoder:  # embeddings chosen so that s(q, p) - s(q, n) is 0.1 * i for triple i
        def encode(self, texts, **kw):
            return torch.tensor([[float(t.split()[1]), 0.0] if t.startswith("p") else
                                 [0.0, 0.0] if t.startswith("n") else [0.1, 0.0] for t in texts])

    rows = [{"query": f"q {i}", "positive": f"p {i}", "negative": f"n {i}", "margin": float(i)} for i in range(10)]
    got = ad.margin_scale_for(Encoder(), rows, sample=10)
    assert got["margin_scale"] == pytest.approx(0.1, rel=1e-4)
    assert got["encoder_margin_std"] == pytest.approx(0.1 * got["teacher_margin_std"], rel=1e-3)
    flat = [{**r, "margin": 1.0} for r in rows]  # no spread to match: margins are left as they are
    assert ad.margin_scale_for(Encoder(), flat, sample=10)["margin_scale"] == 1.0


def test_the_default_loss_needs_no_teacher_and_ranks_held_out_queries(index, tmp_path, tiny_encoder, monkeypatch):
    import bertsearch.models.reranker as rr

    monkeypatch.setattr(rr, "load_reranker", lambda *a, **k: pytest.fail("mnrl must not load a cross-encoder"))
    out = tmp_path / "adapted"
    r = ad.adapt(index, out, base=str(tiny_encoder), batch_size=2, negatives=1, holdout=1)
    train = r["steps"]["train"]
    assert train["loss"] == "mnrl" and "label" not in r["steps"] and not (out / "work" / "labelled.jsonl").exists()
    assert train["triples"] == 6 and train["steps"] == 3  # 8 pseudo-queries less the held-out document's 2
    held = train["holdout"]
    assert held["queries"] == 1 and held["corpus"] >= 2
    assert set(held["before"]) == set(held["after"]) == {"ndcg@10", "recall@10", "mrr@10"}
    assert held["worse"] == (held["after"]["ndcg@10"] < held["before"]["ndcg@10"])
    assert (out / "modules.json").is_file() and "Held-out pseudo-queries (1)" in (out / "README.md").read_text()


def test_held_out_documents_stay_out_of_training_and_are_ranked_against_their_positive():
    rows = [{"query": f"q{d}{i}", "doc_id": f"d{d}", "positive": f"p{d}{i}", "negative": f"n{d}{i}",
             "negative_id": f"d{(d + 1) % 40}"} for d in range(40) for i in range(2)]
    train, check = ad._holdout(rows, 3, 1000, seed=0)
    held = {r["doc_id"] for r in rows} - {r["doc_id"] for r in train}
    assert len(held) == 3 and len(train) == 74
    assert len(ad._holdout(rows, 200, 1000, seed=0)[0]) == 72  # never more than a tenth of the documents
    assert len(check.queries) == 3 and all(len(check.relevant_docs[q]) == 1 for q in check.queries_ids)
    for rel in check.relevant_docs.values():  # each held-out query's own positive is in the corpus
        (pid,) = rel
        assert pid in check.corpus_ids
    negatives = {t for cid, t in zip(check.corpus_ids, check.corpus) if cid.startswith("n:")}
    assert negatives <= {r["negative"] for r in train if r["negative_id"] not in held}
    assert ad._holdout(rows, 0, 1000, seed=0) == (rows, None)


def test_a_model_that_got_worse_on_held_out_queries_is_reported_and_warned_about(
        index, tmp_path, tiny_encoder, monkeypatch, caplog):
    class Check:  # ranks the held-out queries well before training and badly after
        queries, corpus = ["q"], ["p", "n"]
        calls = 0

        def __call__(self, model):
            Check.calls += 1
            v = 0.9 if Check.calls == 1 else 0.4
            return {f"holdout_cosine_{m}": v for m in ("ndcg@10", "recall@10", "mrr@10")}

    monkeypatch.setattr(ad, "_holdout", lambda rows, n, size, seed: (rows, Check()))
    with caplog.at_level("WARNING", logger="bertsearch.training.adapt"):
        r = ad.adapt(index, tmp_path / "adapted", base=str(tiny_encoder), batch_size=4, negatives=1)
    assert r["steps"]["train"]["holdout"]["worse"] is True
    assert "ranks 1 held-out pseudo-queries worse" in caplog.text and "evaluate it before swapping" in caplog.text


def test_an_unknown_loss_is_refused_before_any_work(index, tmp_path):
    with pytest.raises(bertsearch.BertsearchError, match="unknown adapt loss 'mse'; choose from mnrl, margin-mse"):
        ad.adapt(index, tmp_path / "x", loss="mse")
    assert not (tmp_path / "x").exists()
    r = CliRunner().invoke(cli, ["adapt", "--index", str(index), "--out", str(tmp_path / "y"), "--loss", "mse"])
    assert r.exit_code != 0 and "mse" in r.output


def test_the_cli_shows_the_held_out_check(index, tmp_path, tiny_encoder):
    r = CliRunner().invoke(cli, ["adapt", "--index", str(index), "--out", str(tmp_path / "a"), "--base",
                                 str(tiny_encoder), "--batch-size", "4", "--holdout", "1", "--negatives", "1"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "a" / "adapt.json").read_text())
    held = report["steps"]["train"]["holdout"]
    line = f"held-out pseudo-queries (1): nDCG@10 {held['before']['ndcg@10']:.4f} -> {held['after']['ndcg@10']:.4f}"
    assert line in r.stdout and ("WORSE" in r.stdout) == held["worse"]


def test_titles_as_pseudo_queries_point_at_their_documents_first_chunk(tmp_path):
    path = tmp_path / "titled"
    titles = {"mars": "Iron oxide colours the surface of Mars", "venus": "Venus spins backwards",
              "moon": "Lunar gravity raises the ocean tides", "comet": "Comets"}
    with bertsearch.open_index(path, create=True, model="hashing") as ix:
        ix.add([{"id": k, "title": titles[k], "text": v} for k, v in DOCS.items()])
    r = ad.adapt(path, tmp_path / "t", steps=("queries",), query_source="titles")
    rows = [json.loads(line) for line in (tmp_path / "t" / "work" / "queries.jsonl").open()]
    # one a document whose title has four words or more; the positive is the chunk, without the title
    assert {row["doc_id"]: row["query"] for row in rows} == {k: titles[k] for k in ("mars", "moon")}
    assert all(row["positive"] == DOCS[row["doc_id"]][row["start"]:row["end"]] and row["start"] == 0 for row in rows)
    assert r["steps"]["queries"]["source"] == "titles"
    ad.adapt(path, tmp_path / "b", steps=("queries",), query_source="both", queries_per_doc=1)
    both = [json.loads(line) for line in (tmp_path / "b" / "work" / "queries.jsonl").open()]
    assert len(both) == 2 + 4 and sum(row["query"] in titles.values() for row in both) == 2
    with pytest.raises(bertsearch.BertsearchError, match="unknown pseudo-query source 'abstracts'"):
        ad.adapt(path, tmp_path / "x", query_source="abstracts")
    assert not (tmp_path / "x").exists()


ABSTRACT = ("Obesity is common. We studied 657 children over three years. Patients were seen every month. "
            "RESULTS Severe events occurred in 8.5% of the children. "
            "Taken together, these results suggest that younger children are at particular risk of hypoglycemia. "
            "We show that missed meals preceded most events.")


def test_findings_are_later_sentences_with_their_lead_ins_cut_off():
    found = ad.finding_queries(ABSTRACT, random.Random(0), n=5)
    assert sorted(q for q, _, _ in found) == [
        "Missed meals preceded most events.",
        "Severe events occurred in 8.5% of the children.",
        "Younger children are at particular risk of hypoglycemia.",
    ]  # the first half (background, methods) gives none
    for q, a, b in found:  # the span is the whole sentence the claim came from
        assert ABSTRACT[a:b].endswith(q[1:]) and ABSTRACT[a:b].endswith(".")
        assert b == len(ABSTRACT) or ABSTRACT[b] == " "
    assert len(ad.finding_queries(ABSTRACT, random.Random(0), n=1)) == 1
    assert ad.finding_queries("Too short. Far too short.", random.Random(0)) == []
    acronym = "Background comes first here. NADPH oxidase makes superoxide in these cells. CONCLUSIONS: It matters a great deal."
    assert sorted(q for q, _, _ in ad.finding_queries(acronym, random.Random(0), n=2)) == [
        "It matters a great deal.", "NADPH oxidase makes superoxide in these cells."]
    assert ad.finding_queries(ABSTRACT, random.Random(0), n=5, max_words=6) == [
        ("Missed meals preceded most events.", ABSTRACT.index("We show"), len(ABSTRACT))]


def test_findings_as_pseudo_queries_are_cut_from_their_chunk_or_kept_in_it(tmp_path):
    path = tmp_path / "abstracts"
    with bertsearch.open_index(path, create=True, model="hashing") as ix:
        ix.add([{"id": "hypo", "title": "Hypoglycemia in children", "text": ABSTRACT}, *(
            {"id": k, "title": k.title(), "text": v} for k, v in DOCS.items())])
    ad.adapt(path, tmp_path / "cut", steps=("queries",), query_source="findings", queries_per_doc=3, remove_query=1.0)
    rows = [json.loads(line) for line in (tmp_path / "cut" / "work" / "queries.jsonl").open()]
    assert not any(r["query"] == "Hypoglycemia in children" for r in rows)  # no titles asked for
    hypo = [r for r in rows if r["doc_id"] == "hypo"]
    assert len(hypo) == 3 and {r["doc_id"] for r in rows} == {"hypo", *DOCS}
    for r in hypo:
        assert r["positive"].startswith("Hypoglycemia in children\n")
        assert r["query"].rstrip(".")[1:] not in r["positive"] and "Obesity is common." in r["positive"]
    r = CliRunner().invoke(cli, ["adapt", "--index", str(path), "--out", str(tmp_path / "kept"), "--steps", "queries",
                                 "--pseudo-queries", "findings", "--remove-query", "0", "--queries-per-doc", "3"])
    assert r.exit_code == 0, r.output
    kept = [json.loads(line) for line in (tmp_path / "kept" / "work" / "queries.jsonl").open()]
    assert all(row["query"].rstrip(".")[1:] in row["positive"] for row in kept)
    assert CliRunner().invoke(cli, ["adapt", "--index", str(path), "--out", str(tmp_path / "x"),
                                    "--remove-query", "1.5"]).exit_code == 2


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_the_adapted_encoder_averages_the_trained_weights_with_the_start_models(index, tmp_path, tiny_encoder):
    out = tmp_path / "adapted"
    r = ad.adapt(index, out, base=str(tiny_encoder), batch_size=4, negatives=1, holdout=1, average=0.25)
    trained, start, mixed = _weights(out / "work" / "trained"), _weights(tiny_encoder), _weights(out)
    name = next(k for k in trained if k.endswith("query.weight"))
    assert not torch_equal(trained[name], start[name])  # training moved it
    assert (mixed[name] - (0.25 * trained[name] + 0.75 * start[name])).abs().max() < 1e-6
    avg = r["steps"]["average"]
    assert avg["average"] == 0.25 and avg["with"] == str(tiny_encoder) and set(avg["holdout"]) >= {"ndcg@10"}
    assert avg["worse"] == (avg["holdout"]["ndcg@10"] < r["steps"]["train"]["holdout"]["before"]["ndcg@10"])
    assert "0.25 x the trained weights + 0.75 x its own" in (out / "README.md").read_text()
    # another share without training again: the trained weights stay as they were
    steps_before = r["steps"]["train"]
    r = CliRunner().invoke(cli, ["adapt", "--index", str(index), "--out", str(out), "--base", str(tiny_encoder),
                                 "--steps", "average", "--average", "1", "--holdout", "1"])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "adapt.json").read_text())
    assert report["steps"]["train"] == steps_before and report["steps"]["average"]["average"] == 1
    assert all(torch_equal(v, trained[k]) for k, v in _weights(out).items())
    assert "held-out pseudo-queries (1)" in r.stdout
    # the full default run again skips training (its folder exists) and only averages
    again = ad.adapt(index, out, base=str(tiny_encoder), batch_size=4, negatives=1, holdout=1, average=0.5)
    assert again["steps"]["train"] == steps_before and again["steps"]["average"]["average"] == 0.5


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)


def test_averaging_needs_a_trained_encoder_of_the_same_shape(index, tmp_path, tiny_encoder):
    with pytest.raises(bertsearch.BertsearchError, match="run the 'train' step first"):
        ad.adapt(index, tmp_path / "x", steps=("queries", "mine", "average"), base=str(tiny_encoder))
    out = tmp_path / "a"
    ad.adapt(index, out, base=str(tiny_encoder), batch_size=4, negatives=1, holdout=0, steps=("queries", "mine", "train"))
    assert (out / "work" / "trained" / "modules.json").is_file() and not (out / "modules.json").exists()
    # a start model of another shape (the packaged MiniLM): the message names the way out
    from bertsearch.models import DEFAULT_ENCODER

    with pytest.raises(bertsearch.BertsearchError, match="cannot be averaged; use --average 1"):
        ad.adapt(index, out, steps=("average",), base=DEFAULT_ENCODER, holdout=0)
    assert not (out / "modules.json").exists()
    assert ad.adapt(index, out, steps=("average",), average=1.0, holdout=0)["steps"]["average"]["average"] == 1.0
    assert (out / "modules.json").is_file()
    for bad in ("0", "1.5"):
        assert CliRunner().invoke(cli, ["adapt", "--index", str(index), "--out", str(out), "--average", bad]).exit_code == 2


def test_two_encoders_in_folders_of_the_same_name_get_indexes_of_their_own(tmp_path):
    """`adapt` leaves OUT/work/trained in every run: evaluating two runs' trained encoders must not share one
    index (the second would be refused for its model, or worse, scored on the first one's vectors)."""
    from bertsearch.evaluation.beir import default_index_path

    a, b = tmp_path / "a" / "work" / "trained", tmp_path / "b" / "work" / "trained"
    a.mkdir(parents=True), b.mkdir(parents=True)
    pa, pb = default_index_path("corpora/scifact", str(a)), default_index_path("corpora/scifact", str(b))
    assert pa != pb and pa.name.startswith("beir-scifact-trained-") and pa == default_index_path("corpora/scifact", str(a))
    assert default_index_path("corpora/scifact", None).name == "beir-scifact-default"
    assert default_index_path("corpora/scifact", "org/some-model").name == "beir-scifact-some-model"  # a hub id


def test_averaging_again_after_a_reindex_uses_the_model_training_started_from(tmp_path, tiny_encoder):
    path = tmp_path / "ix"
    with bertsearch.open_index(path, create=True, model=str(tiny_encoder)) as ix:
        ix.add([{"id": k, "title": k.title(), "text": v} for k, v in DOCS.items()])
    out = tmp_path / "adapted"
    r = ad.adapt(path, out, batch_size=4, negatives=1, holdout=0)
    assert r["steps"]["train"]["adapted_from"] == str(tiny_encoder)
    from bertsearch.reindex import reindex

    reindex(path, str(out))  # the index now serves OUT, the average of the first run
    served = _weights(out)
    with pytest.raises(bertsearch.BertsearchError, match="copy .* to a new folder"):
        ad.adapt(path, out, steps=("average",), average=0.25, holdout=0)
    assert all(torch_equal(v, served[k]) for k, v in _weights(out).items())  # the served encoder is untouched
    import shutil

    shutil.copytree(out, tmp_path / "again")
    r = ad.adapt(path, tmp_path / "again", steps=("average",), average=0.25, holdout=0)
    assert r["steps"]["average"]["with"] == str(tiny_encoder)  # not the index's model (OUT) now
    again = tmp_path / "again"
    trained, start, mixed = _weights(again / "work" / "trained"), _weights(tiny_encoder), _weights(again)
    assert all((mixed[k] - (0.25 * trained[k] + 0.75 * start[k])).abs().max() < 1e-6 for k in mixed)


def test_other_runs_are_averaged_in_with_their_own_seeds(index, tmp_path, tiny_encoder):
    """`--with RUN`: a model soup. The trained weights are the mean of this run's and each other run's, then
    averaged with the start model as before; runs from another start model, or named twice, are refused."""
    a, b = tmp_path / "a", tmp_path / "b"
    common = {"base": str(tiny_encoder), "batch_size": 4, "negatives": 1, "holdout": 1}
    ad.adapt(index, a, **common)
    ad.adapt(index, b, seed=7, steps=("queries", "mine", "train"), **common)
    ta, tb, start = _weights(a / "work" / "trained"), _weights(b / "work" / "trained"), _weights(tiny_encoder)
    name = next(k for k in ta if k.endswith("query.weight"))
    assert not torch_equal(ta[name], tb[name])  # another seed, another encoder
    r = CliRunner().invoke(cli, ["adapt", "--index", str(index), "--out", str(b), "--base", str(tiny_encoder),
                                 "--seed", "7", "--steps", "average", "--average", "0.6", "--with", str(a),
                                 "--holdout", "1"])
    assert r.exit_code == 0, r.output
    soup = _weights(b)
    assert all((soup[k] - (0.6 * (ta[k] + tb[k]) / 2 + 0.4 * start[k])).abs().max() < 1e-6 for k in soup)
    avg = json.loads((b / "adapt.json").read_text())["steps"]["average"]
    assert avg["runs"] == [str(b / "work" / "trained"), str(a / "work" / "trained")] and "note" in avg
    assert "2 runs" in r.stdout and "mean of 2 runs'" in (b / "README.md").read_text()
    # a plain model folder counts as a run too (here a's average, which is a's trained weights at --average 1)
    ad.adapt(index, a, steps=("average",), average=1.0, **common)
    ad.adapt(index, b, steps=("average",), average=1.0, with_runs=(str(a),), **common)  # a's work/trained is used
    # the default share is the uniform average of the runs and the start model: 2/3 for two runs
    assert ad.adapt(index, b, steps=("average",), with_runs=(str(a),), **common)["steps"]["average"]["average"] == 2 / 3
    soup = _weights(b)
    assert all((soup[k] - ((ta[k] + tb[k]) / 3 + start[k] / 3)).abs().max() < 1e-6 for k in soup)
    # refused: a folder with no encoder, the same run twice, and a run trained from another start model
    with pytest.raises(bertsearch.BertsearchError, match="no trained encoder there"):
        ad.adapt(index, b, steps=("average",), with_runs=(str(tmp_path),), **common)
    with pytest.raises(bertsearch.BertsearchError, match="no trained encoder there"):  # before any work is done
        ad.adapt(index, tmp_path / "c", with_runs=(str(tmp_path),), **common)
    assert not (tmp_path / "c" / "work" / "queries.jsonl").exists()
    with pytest.raises(bertsearch.BertsearchError, match="already in the average"):
        ad.adapt(index, b, steps=("average",), with_runs=(str(b),), **common)
    import shutil

    ad.adapt(index, b, steps=("average",), average=1.0, **common)  # b's OUT: its trained weights alone
    shutil.copytree(b, tmp_path / "averaged", ignore=shutil.ignore_patterns("work"))  # trained weights gone
    ad.adapt(index, a, steps=("average",), with_runs=(str(tmp_path / "averaged"),), **common)  # b at --average 1: fine
    report = json.loads((tmp_path / "averaged" / "adapt.json").read_text())
    report["steps"]["average"]["average"] = 0.5  # as if it were an average of trained and start weights
    (tmp_path / "averaged" / "adapt.json").write_text(json.dumps(report))
    with pytest.raises(bertsearch.BertsearchError, match="holds an averaged encoder"):
        ad.adapt(index, a, steps=("average",), with_runs=(str(tmp_path / "averaged"),), **common)
    report = json.loads((a / "adapt.json").read_text())
    report["steps"]["train"]["adapted_from"] = "sentence-transformers/all-MiniLM-L6-v2"
    (a / "adapt.json").write_text(json.dumps(report))
    before = _weights(b)
    with pytest.raises(bertsearch.BertsearchError, match="only encoders trained from the same start model"):
        ad.adapt(index, b, steps=("average",), with_runs=(str(a),), **common)
    assert all(torch_equal(v, before[k]) for k, v in _weights(b).items())  # nothing overwritten
