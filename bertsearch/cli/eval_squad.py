"""`bertsearch eval squad`: score an extractive reader on SQuAD (one call to evaluate_squad)."""

from __future__ import annotations

import click

from .options import json_option, precision_option


@click.command("squad")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--reader",
    "reader_name",
    default=None,
    metavar="PATH_OR_ID",
    help="Reader: a folder or model id (default: the reader shipped in the package).",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Score only the first N questions.")
@click.option(
    "--threshold",
    type=float,
    default=None,
    help='Answer "" when null score - best span score exceeds this (default: the reader\'s bertsearch.json).',
)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Questions per batch.")
@precision_option
@json_option
def squad_command(
    file: str,
    reader_name: str | None,
    limit: int | None,
    threshold: float | None,
    batch_size: int,
    precision: str,
    as_json: bool,
) -> None:
    """Evaluate an extractive reader on SQuAD v1.1 or v2.0: exact match and F1 (official definitions).

    Each question is read in its own paragraph. On v2.0 files the scores are also split into answerable
    (HasAns) and unanswerable (NoAns) questions, with the no-answer threshold that would score best.

    \b
    bertsearch eval squad ../shared/data/squad/dev-v1.1.json --reader models/reader --limit 1000
    bertsearch eval squad ../shared/data/squad/dev-v2.0.json --reader models/reader --json
    """
    from ..evaluation.squad import evaluate_squad
    from ..models.reader import load_reader
    from . import render

    reader = load_reader(reader_name, no_answer_threshold=threshold, precision=precision)
    result = evaluate_squad(file, reader, limit=limit, batch_size=batch_size, progress=render.progress)
    if as_json:
        render.print_json(result)
        return
    render.out.print(f"{result['dataset']} ({result['total']} questions, reader {result['reader']})")
    for key in ("exact_match", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1"):
        if key in result:
            render.out.print(f"  {key:<13} {result[key]:.2f}")
    if "best_f1" in result:
        render.out.print(
            f"  best_f1       {result['best_f1']:.2f} at no-answer threshold {result['best_f1_thresh']:.3f}"
        )
    used = result["threshold_used"]
    render.out.print(
        f"  threshold {'none' if used is None else f'{used:.3f}'}; {result['questions_per_second']:.1f} questions/s"
    )
