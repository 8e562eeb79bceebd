"""`bertsearch train reranker`: fine-tune a cross-encoder reranker (one call to train_reranker)."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

import click

from .options import json_option, time_limit_option

_PATH = click.Path(dir_okay=False, path_type=str)


@click.command("reranker")
@click.option("--train", "train_path", required=True, type=_PATH,
              help="SQuAD JSON (.json; hard negatives are mined from it) or pairs (.jsonl, .csv, .tsv: query, positive, negatives).")
@click.option("--dev", "dev_squad", type=_PATH, default=None, help="SQuAD JSON scored after every epoch; the best epoch by nDCG@10 is kept.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str), help="Folder for the trained reranker.")
@click.option("--base", default="sentence-transformers/all-MiniLM-L6-v2", show_default=True, help="Encoder to start from: a folder or model id.")
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="(query, passage) rows per step.")
@click.option("--lr", type=click.FloatRange(min=0, max=0.01, min_open=True), default=3e-5, show_default=True, help="Peak learning rate (AdamW).")
@click.option("--warmup-ratio", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True, help="Share of steps warming up linearly.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.01, show_default=True)
@click.option("--max-grad-norm", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Clip the gradient to this norm (0: no clipping).")
@click.option("--max-length", type=click.IntRange(min=32, max=512), default=256, show_default=True, help="Word pieces per input (query + passage).")
@click.option("--stride", type=click.IntRange(min=0), default=64, show_default=True, help="Word pieces shared by neighbouring windows of a long passage.")
@click.option("--negatives", "negatives_per_query", type=click.IntRange(min=1), default=3, show_default=True, help="Hard negatives per question.")
@click.option("--no-bm25-negatives", is_flag=True, help="Take SQuAD negatives from the same article only (skips BM25 mining).")
@click.option("--no-same-article-negatives", is_flag=True, help="Take SQuAD negatives from BM25 only.")
@click.option("--random-negatives", type=click.IntRange(min=0), default=1, show_default=True,
              help="Add N paragraphs of other articles per SQuAD question: easy negatives that get the new head learning.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Train on a seeded random sample of N questions.")
@click.option("--dev-limit", type=click.IntRange(min=1), default=500, show_default=True, help="Score a seeded sample of N dev questions.")
@click.option("--bf16", is_flag=True, help="bfloat16 autocast (about twice as fast on CPUs with AVX-512).")
@click.option("--layer-lr-decay", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Each layer down learns at this factor of the one above (e.g. 0.9).")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--eval-steps", type=click.IntRange(min=1), default=None, help="Evaluate and checkpoint every N steps instead of every epoch.")
@click.option("--no-resume", is_flag=True, help="Delete OUT/checkpoints and start over instead of resuming.")
@click.option("--keep-checkpoints", is_flag=True, help="Keep OUT/checkpoints after the final save.")
@time_limit_option
@json_option
def reranker_command(
    train_path: str, no_bm25_negatives: bool, no_same_article_negatives: bool, no_resume: bool, as_json: bool, **kwargs: Any
) -> None:
    """Fine-tune a cross-encoder reranker (query + passage -> relevance score).

    From SQuAD, each question's paragraph is its positive and its hard negatives come from the same
    article and from BM25; a pairs file brings its own. Checkpoints go to OUT/checkpoints after every
    epoch; run the same command again to resume a stopped run. OUT ends up holding float16 weights,
    the tokenizer, bertsearch.json, report.json and a model card; any --reranker option accepts it.

    \b
    bertsearch train reranker --train ../shared/data/squad/train-v1.1.json \\
        --dev ../shared/data/squad/dev-v1.1.json --out models/reranker --bf16
    bertsearch train reranker --train pairs.jsonl --out models/mine --epochs 1 --json
    """
    from ..training.reranker import detect_train_format, train_reranker
    from . import render

    fmt = detect_train_format(train_path)
    train_log = logging.getLogger("bertsearch.training")
    if train_log.level == logging.NOTSET:
        train_log.setLevel(logging.INFO)  # data counts, loss and dev scores as it goes, on stderr
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the result
        report = train_reranker(
            train_squad=train_path if fmt == "squad" else None,
            train_pairs=train_path if fmt == "pairs" else None,
            bm25_negatives=not no_bm25_negatives,
            same_article_negatives=not no_same_article_negatives,
            resume=not no_resume,
            progress=render.progress,
            **kwargs,
        )
    if as_json:
        render.print_json(report)
        return
    render.out.print(
        f"saved the reranker to {report['model']}: {report['steps']} steps in {report['train_seconds']:.0f}s "
        f"({report['seconds_per_step']} s/step), training loss {report['train_loss']:.3f}"
    )
    data = report["data"]
    render.out.print(f"  data: {data['train_queries']} queries, {data['train_rows']} rows ({data['negatives']} negatives)")
    if report["dev"]:
        d = report["dev"]
        render.out.print(f"  dev: nDCG@10 {d['ndcg@10']:.4f}  MRR@10 {d['mrr@10']:.4f}  MAP {d['map']:.4f}  ({data['dev_queries']} questions)")
