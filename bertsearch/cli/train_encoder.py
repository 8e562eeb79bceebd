"""`bertsearch train encoder`: contrastive fine-tuning of the bi-encoder (one call to train_encoder)."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

import click

from .options import json_option, time_limit_option

_FILE = click.Path(dir_okay=False, path_type=str)


@click.command("encoder")
@click.option("--pairs", type=_FILE, default=None, help="Pairs: .jsonl, .csv or .tsv with query, positive and optional negatives.")
@click.option("--beir", type=click.Path(file_okay=False, path_type=str), default=None, help="A BEIR folder; its --split judgements are the pairs.")
@click.option("--split", default="train", show_default=True, help="Which qrels/SPLIT.tsv of --beir to train on.")
@click.option("--dev-split", default=None, help="A qrels split of --beir to evaluate on (default: hold out --dev-fraction of the training queries).")
@click.option("--index", type=click.Path(file_okay=False, path_type=str), default=None, help="Your index: hard negatives are mined from it (default: BM25 over the pairs' passages).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str), help="Folder for the trained encoder.")
@click.option("--base", default="sentence-transformers/all-MiniLM-L6-v2", show_default=True, help="Encoder to start from: a folder or model id.")
@click.option("--reranker", default=None, metavar="PATH_OR_ID", help="Cross-encoder that drops likely false negatives (default: the shipped one).")
@click.option("--no-filter", is_flag=True, help="Keep mined negatives without asking the cross-encoder.")
@click.option("--hard-negatives", type=click.IntRange(min=0), default=1, show_default=True, help="Mined negatives per pair, all trained on; a pair that finds fewer is filled up with random passages, never its query's positives (0: in-batch negatives only).")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Pairs per step; all of a batch's passages are each query's negatives.")
@click.option("--mini-batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Pairs through the model at once (the gradient cache makes up the batch).")
@click.option("--lr", type=click.FloatRange(min=0, max=0.01, min_open=True), default=3e-5, show_default=True, help="Peak learning rate (AdamW).")
@click.option("--warmup-ratio", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.01, show_default=True)
@click.option("--max-grad-norm", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Clip the gradient to this norm (0: no clipping).")
@click.option("--max-length", type=click.IntRange(min=16), default=256, show_default=True, help="Word pieces per text.")
@click.option("--dev-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Train on a seeded sample of N queries (or pairs).")
@click.option("--bf16", is_flag=True, help="bfloat16 autocast (about twice as fast on CPUs with AVX-512).")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--eval-steps", type=click.IntRange(min=1), default=None, help="Evaluate and checkpoint every N steps instead of every epoch.")
@click.option("--no-resume", is_flag=True, help="Delete OUT/checkpoints and start over instead of resuming.")
@click.option("--keep-checkpoints", is_flag=True, help="Keep OUT/checkpoints after the final save.")
@time_limit_option
@json_option
def encoder_command(no_filter: bool, no_resume: bool, as_json: bool, **kwargs: Any) -> None:
    """Fine-tune the bi-encoder on (query, positive) pairs with in-batch and mined hard negatives.

    Evaluates on a dev split before training and after every epoch and keeps the best; checkpoints go
    to OUT/checkpoints, and running the same command again resumes. Use the result with --model, or
    swap it into an index with 'bertsearch reindex'.

    \b
    bertsearch train encoder --beir ../shared/data/scifact --split train --out models/scifact-encoder --bf16
    bertsearch train encoder --pairs my_pairs.jsonl --index indexes/mine --out models/my-encoder
    """
    from ..training.encoder import train_encoder
    from . import render

    train_log = logging.getLogger("bertsearch.training")
    if train_log.level == logging.NOTSET:
        train_log.setLevel(logging.INFO)
    with contextlib.redirect_stdout(sys.stderr):
        report = train_encoder(filter_negatives=not no_filter, resume=not no_resume, progress=render.progress, **kwargs)
    if as_json:
        render.print_json(report)
        return
    b, a = report["dev_before"] or {}, report["dev_after"] or {}
    render.out.print(f"saved the encoder to {report['model']}: {report['steps']} steps in {report['train_seconds']:.0f}s")
    if a:
        render.out.print(f"  dev nDCG@10 {b.get('ndcg@10', float('nan')):.4f} -> {a['ndcg@10']:.4f}, "
                         f"Recall@100 {b.get('recall@100', float('nan')):.4f} -> {a['recall@100']:.4f}")
