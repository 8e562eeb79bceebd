"""`bertsearch train reader`: fine-tune an extractive reader on SQuAD (one call to train_reader)."""

from __future__ import annotations

import logging
from typing import Any

import click

from .options import json_option, time_limit_option


@click.command("reader")
@click.option(
    "--train",
    "train_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="SQuAD JSON to train on.",
)
@click.option(
    "--dev",
    "dev_path",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="SQuAD JSON scored after every epoch; the best epoch by F1 is kept.",
)
@click.option(
    "--v2-dev",
    "v2_dev_path",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="SQuAD v2.0 JSON on which to choose the no-answer threshold.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Folder for the trained reader.",
)
@click.option(
    "--base",
    default="sentence-transformers/all-MiniLM-L6-v2",
    show_default=True,
    help="Encoder to start from: a folder or model id.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, max=0.01, min_open=True),
    default=5e-5,
    show_default=True,
    help="Peak learning rate (AdamW).",
)
@click.option(
    "--warmup-ratio",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    show_default=True,
    help="Share of steps warming up linearly.",
)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.01, show_default=True)
@click.option("--max-grad-norm", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Clip the gradient to this norm (0: no clipping).")
@click.option(
    "--max-length",
    type=click.IntRange(min=16),
    default=384,
    show_default=True,
    help="Word pieces per window (question + passage).",
)
@click.option(
    "--stride",
    type=click.IntRange(min=0),
    default=128,
    show_default=True,
    help="Word pieces shared by neighbouring windows.",
)
@click.option(
    "--layer-lr-decay",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Each layer down learns at this factor of the one above (e.g. 0.9).",
)
@click.option(
    "--gradual-unfreeze", is_flag=True, help="Train the head first, then unfreeze one layer at a time from the top."
)
@click.option("--bf16", is_flag=True, help="bfloat16 autocast (about twice as fast on CPUs with AVX-512).")
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Train on a seeded random sample of N questions."
)
@click.option(
    "--unseen",
    is_flag=True,
    help="With a --base reader bertsearch trained: leave out the questions it trained on (its report.json "
    "says which), so that it goes on learning from new ones.",
)
@click.option(
    "--dev-limit", type=click.IntRange(min=1), default=1000, show_default=True, help="Score the first N dev questions."
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--eval-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Evaluate and checkpoint every N steps instead of every epoch.",
)
@click.option(
    "--unanswerable",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="For this fraction of the questions, also train on a copy paired with a context that cannot answer "
    "it (its answer's sentence cut out, or another paragraph of the article), labelled no answer; 0 trains "
    "on the questions alone.",
)
@click.option("--no-resume", is_flag=True, help="Delete OUT/checkpoints and start over instead of resuming.")
@click.option("--keep-checkpoints", is_flag=True, help="Keep OUT/checkpoints after the final save.")
@time_limit_option
@json_option
def reader_command(no_resume: bool, gradual_unfreeze: bool, as_json: bool, **kwargs: Any) -> None:
    """Fine-tune an extractive reader (question + passage -> answer span) on SQuAD.

    Checkpoints go to OUT/checkpoints after every epoch; run the same command again to resume a
    stopped run (with a larger --epochs to train on). OUT ends up holding float16 weights, the
    tokenizer, bertsearch.json, report.json and a model card; any --reader option accepts it.

    \b
    bertsearch train reader --train ../shared/data/squad/train-v1.1.json --dev ../shared/data/squad/dev-v1.1.json \\
        --out models/reader --max-length 256 --bf16
    bertsearch train reader --train ../shared/data/squad/train-v1.1.json --out models/try --limit 640 --epochs 1 --json
    """
    from ..training.reader import train_reader
    from . import render

    train_log = logging.getLogger("bertsearch.training")
    if train_log.level == logging.NOTSET:
        train_log.setLevel(logging.INFO)  # loss and dev scores as it goes, on stderr
    report = train_reader(resume=not no_resume, unfreeze_schedule=gradual_unfreeze, progress=render.progress, **kwargs)
    if as_json:
        render.print_json(report)
        return
    render.out.print(
        f"saved the reader to {report['model']}: {report['steps']} steps in {report['train_seconds']:.0f}s "
        f"({report['seconds_per_step']} s/step), training loss {report['train_loss']:.3f}"
    )
    if report["dev"]:
        d = report["dev"]
        render.out.print(f"  dev: EM {d['exact_match']:.2f}  F1 {d['f1']:.2f}  ({d['total']} questions)")
    if report["v2_dev"]:
        v = report["v2_dev"]
        render.out.print(
            f"  v2 dev: best F1 {v['best_f1']:.2f} at no-answer threshold {v['best_f1_thresh']:.3f} (saved)"
        )
