"""Options shared by several commands, so that every command spells a flag the same way."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from ..search.fusion import MAX_K, MODES

F = Callable[..., Any]


def index_option(f: F) -> F:
    return click.option(
        "--index",
        "index_path",
        default=lambda: os.environ.get("BERTSEARCH_INDEX", "indexes/default"),
        show_default="$BERTSEARCH_INDEX or indexes/default",
        help="Index folder.",
        metavar="DIR",
        callback=_a_folder,
    )(f)


def _a_folder(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An empty --index would mean the working folder: an index's files among the user's own."""
    if not str(value).strip():
        raise click.BadParameter("give a folder name (an empty one would be the working folder)")
    return value


def model_option(f: F) -> F:
    return click.option(
        "--model",
        default=None,
        help="Encoder: a local folder or model id (default: the index's own model; for a new index the "
        "packaged all-MiniLM-L6-v2).",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(f)


def min_confidence_option(f: F) -> F:
    return click.option(
        "--min-confidence",
        type=click.FloatRange(0, 1),
        default=None,
        metavar="P",
        help="Answer only when the answer's confidence (the calibrated probability that it is right) reaches P; "
        "else say 'no answer' and how close the best candidate came (default: the calibration's, chosen on "
        "held-apart questions; 0 answers whenever a span is found).",
    )(f)


def time_limit_option(f: F) -> F:
    return click.option(
        "--time-limit",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        metavar="MINUTES",
        help="Stop training after this many minutes, evaluated and checkpointed; the same command resumes it.",
    )(f)


def mode_option(f: F) -> F:
    return click.option(
        "--mode", type=click.Choice(MODES), default="hybrid", show_default=True, help="Retrieval: dense + BM25 fused, or one of them."
    )(f)


def k_option(default: int) -> Callable[[F], F]:
    return click.option("-k", "--k", type=click.IntRange(1, MAX_K), default=default, show_default=True, help="Results per query.")


def ann_option(f: F) -> F:
    return click.option(
        "--ann",
        default=None,
        help="Vector index: flat (exact, default for a new index), hnsw, ivf, ivfpq, or a FAISS factory string.",
    )(f)


def vectors_option(f: F) -> F:
    return click.option(
        "--vectors",
        default=None,
        metavar="faiss|milvus|URI",
        help="Where the vectors are searched: faiss (a file in the index folder, the default), milvus (milvus-lite, "
        "embedded in the index folder), or a Milvus server's URI (http://host:19530). The store stays the truth: "
        "naming another for an existing index moves its vectors there.",
    )(f)


def gpu_option(f: F) -> F:
    return click.option(
        "--gpu/--cpu",
        default=None,
        help="Search FAISS on the GPU or the CPU (default: the GPU when faiss-gpu finds one).",
    )(f)


def corpus_options(f: F) -> F:
    for opt in reversed(
        [
            click.option(
                "--format",
                "fmt",
                type=click.Choice(["auto", "jsonl", "csv", "tsv", "folder", "beir"]),
                default="auto",
                show_default=True,
                help="Corpus format; auto detects it from the path.",
            ),
            click.option("--id-field", default="id", show_default=True, help="Key or column of the document id."),
            click.option("--text-field", default="text", show_default=True, help="Key or column of the text."),
            click.option("--title-field", default="title", show_default=True, help="Key or column of the title."),
            click.option(
                "--on-error",
                type=click.Choice(["stop", "skip"]),
                default="stop",
                show_default=True,
                help="On a malformed record: stop with its file and line, or skip it and count it.",
            ),
        ]
    ):
        f = opt(f)
    return f


def where_option(f: F) -> F:
    return click.option(
        "--where",
        default=None,
        metavar="FILTER",
        help="Metadata filter, e.g. \"year >= 2020 and lang = 'en'\" (comparisons, in, between, is null, and/or/not).",
    )(f)


def reranker_option(f: F) -> F:
    return click.option(
        "--reranker", default=None, metavar="PATH_OR_ID", help="Cross-encoder for reranking (default: the one shipped with bertsearch)."
    )(f)


def reader_option(f: F) -> F:
    return click.option(
        "--reader", default=None, metavar="PATH_OR_ID", help="Extractive QA model (default: the one shipped with bertsearch)."
    )(f)


def backend_option(f: F) -> F:
    return click.option(
        "--backend",
        type=click.Choice(["auto", "torch", "onnx", "openvino"]),
        default=None,
        help="The encoder's runtime for a new index. auto (the default): openvino on a CPU (bfloat16 where the CPU "
        "runs it natively; the reranker and reader then run on it too, and a query imports no torch), torch on a GPU "
        "or where openvino is missing ($BERTSEARCH_BACKEND overrides the choice); torch; onnx (ONNX Runtime, int8 "
        "weights; needs onnxruntime); openvino. An existing index keeps the one that made its vectors.",
    )(f)


def _set_query_backend(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        from ..models import QUERY_BACKEND_ENV

        os.environ[QUERY_BACKEND_ENV] = value  # read where the reranker and reader load: models.query_backend


def query_backend_option(f: F) -> F:
    return click.option(
        "--query-backend",
        type=click.Choice(["torch", "openvino"]),
        default=None,
        expose_value=False,
        callback=_set_query_backend,
        help="The reranker's and reader's runtime (default: openvino on an index whose encoder runs on it, else "
        "torch; $BERTSEARCH_QUERY_BACKEND sets it too). The answers are the same to bfloat16's precision.",
    )(f)


def precision_option(f: F) -> F:
    return click.option(
        "--precision",
        type=click.Choice(["auto", "fp32", "bf16", "int8"]),
        default="auto",
        show_default=True,
        help="Encoder arithmetic: auto uses bfloat16 on CPUs that run it natively (about 2x faster); a new OpenVINO "
        "index on a CPU with VNNI and no native bfloat16 takes int8 (1.8x as fast as fp32 there), else fp32. An int8 "
        "index's queries are int8 too; int8 asks for it.",
    )(f)


def ray_option(f: F) -> F:
    return click.option(
        "--ray",
        "ray",
        is_flag=False,
        flag_value="local",
        default=None,
        metavar="[ADDRESS]",
        help="Encode through Ray Data, one model per actor (a GPU each where the cluster has GPUs): alone, on a Ray "
        "started on this machine; with an ADDRESS, on that cluster (ray://HEAD:10001, HEAD:6379, or auto for the one "
        "on this machine). The vectors are the same; searching needs no Ray. Needs 'pip install bertsearch[ray]'.",
    )(f)
