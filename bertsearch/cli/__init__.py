"""The command line: each command parses, makes one library call, and renders."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import sys
import warnings
from typing import Any

import click

from ..errors import BadArgument, BertsearchError, CorpusError, CorruptIndex, from_sqlite
from ..search.fusion import MAX_K
from .options import (
    ann_option,
    backend_option,
    corpus_options,
    gpu_option,
    index_option,
    json_option,
    k_option,
    min_confidence_option,
    mode_option,
    model_option,
    precision_option,
    query_backend_option,
    ray_option,
    reader_option,
    reranker_option,
    vectors_option,
    where_option,
)

log = logging.getLogger("bertsearch.cli")


class _ShownFormatter(logging.Formatter):
    """Formats as `inner` does, with control characters shown (see `render.shown`); newlines and tabs stay."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        from .render import shown

        return shown(self.inner.format(record))


_leave = {"at_once": False}  # set by a command whose runtime threads may still be inside a model call at its end


def leave_at_once() -> None:
    """Have `main` end the process without the interpreter's shutdown once the command returns (see `main`)."""
    _leave["at_once"] = True


class Group(click.Group):
    """Turns a bertsearch error into one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        index = _index_arg(ctx)  # (click consumes the arguments as it invokes)
        try:
            return super().invoke(ctx)
        except BertsearchError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except sqlite3.DatabaseError as e:  # the store failed under a command: damage, a full disk, read-only
            err = from_sqlite(e, os.path.join(index, "store.db"))
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            goes_on = ctx.invoked_subcommand in ("index", "add", "reindex", "train", "adapt") or ctx.info_name == "train"
            click.echo("interrupted" + ("; what was done is kept: run the same command again to go on from there"
                                        if goes_on else ""), err=True)
            ctx.exit(130)


def _index_arg(ctx: click.Context) -> str:
    """The --index a command line names (for messages about a failure that carries no path)."""
    with warnings.catch_warnings():  # click 8.2 deprecates protected_args (9.0 folds them into args)
        warnings.simplefilter("ignore", DeprecationWarning)
        args = [*getattr(ctx, "protected_args", []), *ctx.args]
    for i, a in enumerate(args):
        if a == "--index" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--index="):
            return a.partition("=")[2]
    return os.environ.get("BERTSEARCH_INDEX", "indexes/default")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bertsearch")
@click.option("-v", "--verbose", count=True, help="Log more to stderr (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Offline semantic search: index documents, then search them (dense + BM25 hybrid).

    \b
    bertsearch index corpora/wiki-demo/docs.jsonl --index indexes/demo
    bertsearch search "what causes the northern lights" --index indexes/demo
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # a log line names documents and files: no control character of
        handler.setFormatter(_ShownFormatter(handler.formatter))  # theirs may drive the terminal
    for noisy in ("faiss.loader", "sentence_transformers", "transformers", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if "transformers" in sys.modules:  # imported before the variables above were set (a host program, tests)
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def _index(source: str, index_path: str, *, create: bool, prune: bool = False, model: str | None = None,
           ann: str | None = None, fmt: str = "auto", id_field: str = "id", text_field: str = "text",
           title_field: str = "title", on_error: str = "stop", batch_size: int = 128, as_json: bool = False,
           precision: str = "auto", backend: str | None = None, vectors: str | None = None,
           ray: str | None = None) -> None:
    import shutil

    from ..engine import Index
    from ..readers import Fields, check_corpus, count_records
    from . import render

    fmt_arg = None if fmt == "auto" else fmt
    fields = Fields(id=id_field, text=text_field, title=title_field)
    check_corpus(source, fmt_arg, fields=fields, on_error=on_error)  # a bad corpus is found before a model loads
    total = count_records(source, fmt_arg)
    ix = Index.open(index_path, model=model, ann=ann, create=create, precision=precision, backend=backend,
                    vectors=vectors, ray=ray)
    try:
        held, generation = ix.store.counts()["documents"], ix.store.generation()
        with render.progress("indexing", total) as advance:
            report = ix.add_corpus(source, format=fmt_arg, fields=fields, on_error=on_error, batch_size=batch_size,
                                   on_progress=advance, prune=prune)
        counts = ix.store.counts()
    except CorpusError:  # a bad record stops the run: the batches before it are committed, and the user is told so
        now = None
        with contextlib.suppress(BertsearchError, sqlite3.Error):
            now = ix.store.counts()["documents"]
            if ix.store.generation() != generation:  # some batches were written
                log.warning("the documents read before the bad record were indexed: %s holds %d documents (it held "
                            "%d); fix the record and run the same command again, and what is indexed already is not "
                            "embedded again", index_path, now, held)
        ix.close()
        if ix.created and now == 0:
            shutil.rmtree(index_path, ignore_errors=True)
        raise
    except BaseException:
        try:
            empty = ix.created and ix.store.counts()["documents"] == 0
        except (BertsearchError, sqlite3.Error):  # the store itself failed: leave the folder for `check`
            empty = False
        ix.close()
        if empty:  # this command made the index and committed nothing: it leaves no empty folder behind
            shutil.rmtree(index_path, ignore_errors=True)
        raise
    ix.close()
    if report.read == 0:
        log.warning("%s held no documents, so nothing was indexed (%s holds %d); check the path, its --format, and "
                    "the --text-field and --id-field names", source, index_path, counts["documents"])
    if as_json:
        render.print_json({**report.to_dict(), "index": {"path": index_path, **counts}})
        return
    render.err.print(
        f"read {report.read} documents in {report.seconds:.1f}s ({report.docs_per_second:.1f} docs/s): "
        f"{report.added} added, {report.replaced} replaced, {report.unchanged} unchanged, "
        f"{report.chunks} chunks embedded; {index_path} holds {counts['documents']} documents, {counts['chunks']} chunks"
    )
    for label, n in (("skipped as malformed", report.skipped), ("empty, not indexed", report.empty),
                     ("with metadata updated only", report.metadata_updated),
                     ("deleted (no longer in the corpus, or now empty)", report.deleted),
                     ("duplicate ids in the corpus (the last kept)", report.duplicates),
                     ("chunks longer than the model reads (it reads their start)", report.truncated),
                     ("titles too long to embed with each chunk", report.long_titles),
                     ("indexed documents kept as they were: their files cannot be read now", report.kept_stale)):
        if n:
            render.err.print(f"  {n} {label}")
    if report.skipped_files:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(report.skipped_files.items()))
        render.err.print(f"  {sum(report.skipped_files.values())} files skipped, with no text bertsearch could read ({kinds})")
    for encoding, names in report.decoded_as.items():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        render.err.print(f"  {len(names)} files not UTF-8, read as {encoding}: {shown}")
    for e in report.errors:
        render.err.print(f"  {e}")


@cli.command()
@click.argument("source", type=click.Path(path_type=str))
@index_option
@model_option
@ann_option
@vectors_option
@corpus_options
@click.option("--prune", is_flag=True, help="Delete documents that are no longer in SOURCE (after reading all of it).")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Documents per write transaction.")
@precision_option
@backend_option
@ray_option
@json_option
def index(source: str, index_path: str, **kwargs: Any) -> None:
    """Index a corpus: a JSONL or CSV/TSV file, a folder of .txt/.md/.html/.pdf/.docx/.epub files, or a BEIR folder.

    Creates the index if needed. Re-indexing is incremental: documents whose text is unchanged cost
    no encoder work, changed ones are replaced, and with --prune vanished ones are deleted.

    \b
    bertsearch index corpora/wiki-demo/docs.jsonl --index indexes/demo
    bertsearch index notes/ --index indexes/notes --prune
    bertsearch index data.csv --text-field body --id-field key --on-error skip
    bertsearch index big.jsonl --index indexes/big --ray ray://head:10001
    """
    _index(source, index_path, create=True, **kwargs)


@cli.command()
@click.argument("source", type=click.Path(path_type=str))
@index_option
@corpus_options
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Documents per write transaction.")
@precision_option
@ray_option
@json_option
def add(source: str, index_path: str, **kwargs: Any) -> None:
    """Add documents to an existing index: new ids are added, existing ids replaced.

    \b
    bertsearch add new_docs.jsonl --index indexes/mine
    bertsearch add new_docs.jsonl --index indexes/mine --ray
    """
    _index(source, index_path, create=False, **kwargs)


@cli.command()
@click.option("--id", "ids", multiple=True, help="A document id to delete (repeatable).")
@where_option
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@index_option
@json_option
def delete(ids: tuple[str, ...], where: str | None, dry_run: bool, index_path: str, as_json: bool) -> None:
    """Delete documents by id, or by a metadata filter (one or the other, not both).

    \b
    bertsearch delete --id doc-17 --id doc-18 --index indexes/mine
    bertsearch delete --where "source = 'old-feed'" --index indexes/mine --dry-run
    bertsearch delete --where "source = 'old-feed'" --index indexes/mine
    """
    from ..engine import Index
    from . import render

    if not ids and where is None:
        raise BadArgument("nothing to delete: give --id ID (repeatable) or --where FILTER")
    if ids and where is not None:
        raise BadArgument("give --id or --where, not both: run one delete for the ids and another for the filter "
                          "(--dry-run shows what each would delete)")
    if any(not i.strip() for i in ids):
        raise BadArgument("an empty --id names no document; give each document's id")
    with Index.open(index_path) as ix:
        missing = [i for i in dict.fromkeys(ids) if ix.get(i) is None]  # (ids asked for that are not stored)
        if dry_run:
            gone = ix.to_delete(list(ids), where=where)
            n = 0
        else:
            n = ix.delete(list(ids), where=where)
        counts = ix.store.counts()
    if as_json:
        out: dict[str, Any] = {"deleted": n, "index": {"path": index_path, **counts}}
        if ids:
            out["not_found"] = missing
        if dry_run:
            out.update(dry_run=True, would_delete=len(gone), ids=gone)
        render.print_json(out)
        return
    absent = (f"; not stored: {', '.join(missing[:10])}" + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
              if missing else "")
    if dry_run:  # the answer to the question asked: on stdout, as a listing
        shown = ", ".join(gone[:10]) + (f" and {len(gone) - 10} more" if len(gone) > 10 else "")
        render.out.print(f"would delete {len(gone)} of {counts['documents']} document{_s(counts['documents'])}"
                         f"{': ' + shown if gone else ''} (dry run: nothing deleted){absent}", markup=False)
    else:
        render.err.print(f"deleted {n} document{_s(n)}; {index_path} holds {counts['documents']} "
                         f"document{_s(counts['documents'])}{absent}", markup=False)


def _s(n: int) -> str:
    return "" if n == 1 else "s"


@cli.command()
@click.argument("query", nargs=-1, required=True)
@index_option
@model_option
@mode_option
@k_option(10)
@where_option
@click.option("--rerank", is_flag=True, help="Re-score the top candidates with the cross-encoder.")
@reranker_option
@query_backend_option
@gpu_option
@precision_option
@json_option
def search(
    query: tuple[str, ...],
    index_path: str,
    model: str | None,
    mode: str,
    k: int,
    where: str | None,
    rerank: bool,
    reranker: str | None,
    gpu: bool | None,
    precision: str,
    as_json: bool,
) -> None:
    """Search an index; prints the best documents, each with its best-matching chunk.

    \b
    bertsearch search "what causes the northern lights" --index indexes/demo
    bertsearch search "penicillin" --index indexes/demo --mode lexical -k 3 --json
    bertsearch search "volcanoes" --index indexes/demo --where "topic = 'Geography'"
    bertsearch search "who discovered penicillin" --index indexes/demo --rerank
    """
    from ..engine import Index
    from . import render

    q = " ".join(query)
    with Index.open(index_path, model=model, gpu=gpu, reranker=reranker, precision=precision) as ix:
        if q.strip():
            q, kept = ix.cut_query(q, mode)
        hits = ix.search(q, k=k, mode=mode, where=where, rerank=rerank or reranker is not None)
        timings = hits.timings
    if as_json:
        render.print_json(
            {"query": q, "mode": mode, "k": k, "where": where, "rerank": "rerank" in timings, "timings": timings,
             "hits": [h.to_dict() for h in hits], **({"query_cut_to_words": kept} if q.strip() and kept else {})}
        )
    else:
        render.hits(q, hits, "rerank" if "rerank" in timings else mode)


@cli.command()
@click.argument("question", nargs=-1, required=True)
@index_option
@model_option
@mode_option
@click.option("-k", "--k", type=click.IntRange(1, MAX_K), default=3, show_default=True, help="Answers to show.")
@click.option("--passages", type=click.IntRange(1, MAX_K), default=5, show_default=True, help="Top passages the reader reads.")
@where_option
@click.option("--no-rerank", is_flag=True, help="Read the first-stage results without cross-encoder reranking.")
@reranker_option
@query_backend_option
@reader_option
@min_confidence_option
@json_option
def ask(
    question: tuple[str, ...],
    index_path: str,
    model: str | None,
    mode: str,
    k: int,
    passages: int,
    where: str | None,
    no_rerank: bool,
    reranker: str | None,
    reader: str | None,
    min_confidence: float | None,
    as_json: bool,
) -> None:
    """Answer a question from an index: retrieve, rerank, and extract answer spans.

    Prints the best answers with their scores and documents, each passage with the answer
    highlighted, or says plainly that no answer was found.

    \b
    bertsearch ask "who discovered penicillin" --index indexes/demo
    bertsearch ask "what causes the northern lights" --index indexes/demo --json
    """
    from ..engine import Index
    from . import render

    q = " ".join(question)
    with Index.open(index_path, model=model, reranker=reranker, reader=reader) as ix:
        result = ix.ask(q, k=k, passages=passages, mode=mode, where=where, rerank=not no_rerank,
                        min_confidence=min_confidence)
    if as_json:
        render.print_json(result.to_dict())
    else:
        render.answers(result)


@cli.command()
@index_option
@model_option
@mode_option
@k_option(10)
@where_option
@click.option("--rerank/--no-rerank", default=True, show_default=True, help="Start with cross-encoder reranking on or off.")
@click.option("--answer/--no-answer", default=True, show_default=True, help="Start with answer extraction on or off.")
@reranker_option
@query_backend_option
@reader_option
@click.option("--history", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="History file (default: $BERTSEARCH_HISTORY or $XDG_STATE_HOME/bertsearch/history).")
@min_confidence_option
@gpu_option
@precision_option
def shell(
    index_path: str,
    model: str | None,
    mode: str,
    k: int,
    where: str | None,
    rerank: bool,
    answer: bool,
    reranker: str | None,
    reader: str | None,
    history: str | None,
    min_confidence: float | None,
    gpu: bool | None,
    precision: str,
) -> None:
    """Query an index interactively: the models load once, then each line is a query or a :command.

    Shows the best answer (or "no answer found"), then the top documents with highlighted snippets
    and each stage's time. :help lists the commands (:mode, :k, :rerank, :answer, :where, :open N,
    :json, :info); history persists between sessions. With stdin not a terminal, reads one line per
    query, so `bertsearch shell --index indexes/demo < questions.txt` works too.

    \b
    bertsearch shell --index indexes/demo
    bertsearch shell --index indexes/demo --mode dense --no-rerank
    bertsearch shell --index indexes/demo --min-confidence 0   # answer whenever the reader finds a span
    """
    from pathlib import Path

    from ..filters import parse
    from . import interactive as sh
    from . import render

    if where is not None:
        parse(where)  # a bad --where fails before the models load
    console = render.console()
    ix, why, seconds = sh.load(index_path, render.err, model=model, reranker=reranker, reader=reader, rerank=rerank,
                               answer=answer, precision=precision, gpu=gpu)
    with ix:
        if where is not None:
            ix.retriever.filter(where)  # and names fields the index has: else every query would fail on it
        settings = sh.Settings(mode=mode, k=k, rerank=rerank, answer=answer, where=where, min_confidence=min_confidence)
        session = sh.Shell(ix, console, settings,
                           can_rerank=why["rerank"], can_answer=why["answer"])
        sh.banner(ix, why, seconds, console)
        sh.run(session, history=Path(history) if history else sh.history_path())


@cli.command()
@index_option
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str), help="Folder for the adapted encoder (its work files go to OUT/work).")
@click.option("--steps", default="queries,mine,label,train,average", show_default=True, help="Which steps to run, comma-separated; a step whose file exists is skipped (average always runs).")
@click.option("--queries-per-doc", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--pseudo-queries", "query_source", type=click.Choice(["sentences", "titles", "both", "findings"]),
              default="sentences", show_default=True,
              help="sentences: cropped from the chunks (inverse cloze); titles: each document's title against its "
                   "first chunk; both; findings: claim-like sentences from the later half of each document, their "
                   "lead-ins ('These results suggest that') cut off.")
@click.option("--remove-query", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="Share of sentence pseudo-queries cut out of their positive passage (the rest stay in it).")
@click.option("--negatives", type=click.IntRange(min=1), default=2, show_default=True, help="Mined negatives per pseudo-query.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use a seeded sample of N documents.")
@reranker_option
@click.option("--base", default=None, metavar="PATH_OR_ID", help="Encoder to adapt (default: the index's).")
@click.option("--mlm", is_flag=True, help="Masked-language-model pre-training on the corpus first (15%; 80/10/10).")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, max=0.01, min_open=True), default=2e-5, show_default=True)
@click.option("--loss", type=click.Choice(["mnrl", "margin-mse"]), default="mnrl", show_default=True,
              help="mnrl: in-batch contrastive loss on the pseudo-pairs (no teacher); margin-mse: GPL, the "
                   "cross-encoder's margins (needs the label step).")
@click.option("--holdout", type=click.IntRange(min=0), default=200, show_default=True,
              help="Documents whose pseudo-queries are kept out of training and ranked before and after it (0: none).")
@click.option("--margin-scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Multiply the cross-encoder's margins by this before training (default: match their spread to "
                   "the encoder's own margins).")
@click.option("--average", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="The adapted encoder is this share of the trained weights plus the rest of the start model's "
                   "(1: the trained weights alone). Default: the uniform average of the N trained runs (this one "
                   "and each --with) and the start model, N/(N+1): 0.5 for one run. Rerun with --steps average to "
                   "try another share without training again.")
@click.option("--with", "with_runs", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=str),
              metavar="RUN",
              help="Another adapt run (its --out folder) trained from the same start model, to average in: the "
                   "trained weights become the mean of this run's and each RUN's (a model soup), and the default "
                   "--average becomes N/(N+1) for N runs. Repeatable.")
@click.option("--seed", type=int, default=42, show_default=True,
              help="Seed of the pseudo-queries, negatives, held-out documents and training order; runs with other "
                   "seeds make other encoders to average together (--with).")
@click.option("--bf16", is_flag=True, help="bfloat16 autocast (about twice as fast on CPUs with AVX-512).")
@json_option
def adapt(index_path: str, steps: str, as_json: bool, **kwargs: Any) -> None:
    """Adapt the bi-encoder to an index's corpus with no labels (GPL-style).

    Crops pseudo-queries from the corpus's chunks, mines negatives from the index, and trains the
    encoder on them: by default with in-batch contrastive loss (no teacher), or with --loss margin-mse
    on margins the cross-encoder labels (GPL). Held-out pseudo-queries are ranked before and after
    training, and a warning says when the adapted model ranks them worse (passing is no proof of better
    search: evaluate on real queries before swapping). Each step's result is a file
    in OUT/work: run steps one at a time with --steps to inspect them; a rerun skips finished steps.

    \b
    bertsearch adapt --index indexes/mine --out models/mine-adapted --bf16
    bertsearch adapt --index indexes/mine --out models/mine-adapted --steps queries,mine
    bertsearch reindex --index indexes/mine --model models/mine-adapted
    """
    import contextlib
    import logging
    import sys

    from ..training.adapt import adapt as run
    from . import render

    train_log = logging.getLogger("bertsearch.training")
    if train_log.level == logging.NOTSET:
        train_log.setLevel(logging.INFO)
    with contextlib.redirect_stdout(sys.stderr):
        report = run(index_path, steps=tuple(s.strip() for s in steps.split(",") if s.strip()),
                     progress=render.progress, **kwargs)
    if as_json:
        render.print_json(report)
        return
    for name, info in report["steps"].items():
        render.out.print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in info.items() if k != "holdout"))
    held = report["steps"].get("train", {}).get("holdout")
    if held:
        b, a = held["before"]["ndcg@10"], held["after"]["ndcg@10"]
        averaged = report["steps"].get("average", {})
        worse = held["worse"]
        line = f"  held-out pseudo-queries ({held['queries']}): nDCG@10 {b:.4f} -> {a:.4f}"
        if "holdout" in averaged and averaged["average"] < 1:
            worse = averaged["worse"]
            runs = len(averaged.get("runs", [])) or 1
            line = (f"{line} trained, {averaged['holdout']['ndcg@10']:.4f} averaged ({averaged['average']:.3g}"
                    + (f", {runs} runs" if runs > 1 else "") + ")")
        verdict = ("WORSE: do not swap it into an index" if worse else
                   "not worse; this is no proof of better search: evaluate it on real queries before swapping")
        render.out.print(f"{line}, {verdict}")


@cli.command()
@index_option
@click.option("--model", required=True, metavar="PATH_OR_ID", help="The encoder to re-embed with: a folder or model id.")
@precision_option
@json_option
def reindex(index_path: str, model: str, precision: str, as_json: bool) -> None:
    """Re-embed an index with another encoder, swapping the new vectors in only when complete.

    Until the swap the index keeps serving with its old model. An interrupted run resumes where it
    stopped when run again; writes made meanwhile are carried over at the swap.

    \b
    bertsearch reindex --index indexes/mine --model models/mine-adapted
    """
    from ..reindex import reindex as run
    from . import render

    with render.progress("re-embedding", _count_docs(index_path), "docs") as advance:
        report = run(index_path, model, precision=precision, on_progress=advance)
    if as_json:
        render.print_json(report)
        return
    render.out.print(
        f"{report['index']}: {report['documents']} documents, {report['chunks']} chunks re-embedded with "
        f"{report['to_model']} (was {report['from_model']}) in {report['seconds']:.1f}s"
    )


def _count_docs(index_path: str) -> int | None:
    """How many documents the index holds (for a progress bar), without loading its model."""
    from pathlib import Path

    from ..store import Store

    db = Path(index_path) / Store.FILE
    if not db.exists():
        return None
    store = Store(db)
    try:
        return store.counts()["documents"]
    finally:
        store.close()


@cli.command()
@index_option
@click.option("--repair", is_flag=True, help="Rebuild what is derived (full-text and vector indexes) and drop orphans.")
@json_option
def check(index_path: str, repair: bool, as_json: bool) -> None:
    """Check an index's consistency; exits 1 if a problem remains.

    \b
    bertsearch check --index indexes/mine
    bertsearch check --index indexes/mine --repair
    """
    from ..engine import Index
    from . import render

    salvaged: list[str] = []
    try:
        try:
            with Index.open(index_path) as ix:
                report = ix.check(repair=repair)
        except CorruptIndex as e:
            if not repair:
                raise
            from ..store.backup import salvage

            # damage in what is derived (the full-text index, an SQL index) made every command fail: the tables'
            # rows are copied into a new store, and what is derived built again
            try:
                done = salvage(index_path)
            except BertsearchError as refused:  # the tables themselves damaged: nothing was changed
                if not as_json:
                    raise
                render.print_json({"ok": False, "problems": [str(refused)], "repairable": False})
                raise SystemExit(1) from None
            salvaged.append(f"{e.db} was damaged; its {done['documents']} documents and {done['chunks']} chunks were "
                            "copied into a new store, and its full-text and SQL indexes built again")
            with Index.open(index_path) as ix:
                report = ix.check(repair=True)
            report["repaired"] = salvaged + report.get("repaired", [])
    except CorruptIndex as e:  # what check is for: say what is wrong, and what to do (which repair cannot)
        if not as_json:
            raise
        render.print_json({"ok": False, "problems": [str(e)], "repairable": None})  # (unknown until --repair tries)
        raise SystemExit(1) from None
    if as_json:
        render.print_json(report)
    else:
        render.out.print(f"{index_path}: {report['documents']} documents, {report['chunks']} chunks, vectors {report['vectors']}")
        for p in report.get("repaired", []):
            render.out.print(f"  repaired: {p}")
        for p in report["problems"]:
            render.out.print(f"  problem: {p}")
        render.out.print("ok" if report["ok"] else "problems found; run 'bertsearch check --repair' to fix what is derived")
    if not report["ok"]:
        raise SystemExit(1)


@cli.command()
@index_option
@json_option
def info(index_path: str, as_json: bool) -> None:
    """Show what an index holds: documents, chunks, model, vector index, size, last update.

    \b
    bertsearch info --index indexes/demo
    """
    from ..engine import Index
    from . import render

    with Index.open(index_path) as ix:
        data = ix.info()
    if as_json:
        render.print_json(data)
        return
    render.info(data)


@cli.group(cls=Group)
def eval() -> None:
    """Measure retrieval quality on standard benchmarks."""


@cli.group(cls=Group)
def train() -> None:
    """Train bertsearch's models: the bi-encoder, the cross-encoder reranker and the extractive reader."""


def _register() -> None:
    from .backup import backup_command, restore_command
    from .eval_squad import squad_command
    from .serve import serve_command
    from .train_encoder import encoder_command
    from .train_reader import reader_command
    from .train_reranker import reranker_command

    cli.add_command(backup_command)
    cli.add_command(restore_command)
    cli.add_command(serve_command)
    eval.add_command(squad_command)
    train.add_command(reader_command)
    train.add_command(reranker_command)
    train.add_command(encoder_command)


@eval.command("beir")
@click.argument("dataset", type=click.Path(path_type=str))
@click.option("--split", default="test", show_default=True, help="Which qrels/SPLIT.tsv to evaluate.")
@mode_option
@click.option("--index", "index_path", default=None, help="Index folder to build or reuse (default: indexes/beir-DATASET-MODEL).")
@model_option
@ann_option
@click.option("--run-file", type=click.Path(dir_okay=False, writable=True), default=None, help="Also write a TREC run file here.")
@click.option("--compare", type=click.Path(exists=True, dir_okay=False), default=None, metavar="RUNFILE",
              help="A TREC run file of the same queries (another model's --run-file): report the paired difference "
                   "of nDCG@10, its standard error, and the queries each ranks better.")
@click.option("--rerank", is_flag=True, help="Evaluate the reranked pipeline (cross-encoder over the top candidates).")
@click.option("--rerank-depth", default=None, metavar="N[,N...]",
              help="Candidates the cross-encoder re-scores (default: the index's); several, e.g. 10,20,50, are all scored from one pass.")
@click.option("--rerank-penalty", default=None, metavar="P[,P...]",
              help="Logits a candidate's cross-encoder score loses per place below the first stage's top (0: the cross-encoder's order alone); several are all scored from one pass.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate a seeded sample of N judged queries.")
@reranker_option
@query_backend_option
@precision_option
@backend_option
@json_option
def eval_beir(
    dataset: str,
    split: str,
    mode: str,
    index_path: str | None,
    model: str | None,
    ann: str | None,
    run_file: str | None,
    compare: str | None,
    rerank: bool,
    rerank_depth: str | None,
    rerank_penalty: str | None,
    limit: int | None,
    reranker: str | None,
    precision: str,
    backend: str | None,
    as_json: bool,
) -> None:
    """Evaluate on a BEIR dataset: nDCG@10, Recall@100 and MRR@10 (pytrec_eval).

    Builds an index of the dataset's corpus the first time (later runs reuse it), runs the
    split's queries and scores them against its qrels.

    \b
    bertsearch eval beir ../shared/data/scifact --mode hybrid
    bertsearch eval beir ../shared/data/scifact --mode dense --json --run-file scifact.run
    bertsearch eval beir ../shared/data/scifact --mode dense --model models/adapted --compare scifact.run
    bertsearch eval beir ../shared/data/squad-dev-retrieval --rerank
    bertsearch eval beir ../shared/data/squad-dev-retrieval --rerank --rerank-depth 10,20,30,50 --limit 300
    """
    from ..evaluation.beir import evaluate_beir
    from . import render

    depths = None
    if rerank_depth is not None:
        try:
            depths = [int(d) for d in rerank_depth.split(",")]
        except ValueError:
            raise BadArgument(f"--rerank-depth takes whole numbers separated by commas, e.g. 10,20,50; got {rerank_depth!r}") from None
        if any(d < 1 for d in depths):
            raise BadArgument(f"--rerank-depth values must be at least 1; got {rerank_depth!r}")
    penalties = None
    if rerank_penalty is not None:
        try:
            penalties = [float(p) for p in rerank_penalty.split(",")]
        except ValueError:
            raise BadArgument(f"--rerank-penalty takes numbers >= 0 separated by commas, e.g. 0,0.5,1; got {rerank_penalty!r}") from None

    result = evaluate_beir(
        dataset,
        split=split,
        mode=mode,
        index_path=index_path,
        model=model,
        ann=ann,
        run_file=run_file,
        compare=compare,
        rerank=rerank or reranker is not None or rerank_penalty is not None or rerank_depth is not None,
        rerank_depth=depths,
        rerank_penalty=penalties,
        reranker=reranker,
        precision=precision,
        backend=backend,
        limit=limit,
        progress=render.progress,
    )
    if as_json:
        render.print_json(result)
        return
    reranked = f", reranked top {result['rerank_depth']}" if result["rerank"] else ""
    render.out.print(
        f"{result['dataset']} ({result['split']}, {result['queries']} queries, mode {mode}{reranked}, index {result['index']})"
    )
    for key in ("ndcg@10", "recall@100", "mrr@10"):
        render.out.print(f"  {key:<11} {result[key]:.4f}")
    if "first_stage" in result:
        render.out.print(f"  without reranking, same queries: nDCG@10 {result['first_stage']['ndcg@10']:.4f}")
    for depth, m in result.get("by_depth", {}).items():
        render.out.print(f"  reranked top {depth:<4} nDCG@10 {m['ndcg@10']:.4f}  MRR@10 {m['mrr@10']:.4f}")
    for penalty, m in result.get("by_penalty", {}).items():
        render.out.print(f"  penalty {penalty:<8} nDCG@10 {m['ndcg@10']:.4f}  MRR@10 {m['mrr@10']:.4f}")
    if "compared" in result:
        c = result["compared"]
        missing = f"; {c['missing']} queries missing from it count as 0" if c["missing"] else ""
        render.out.print(f"  against {c['run']}: nDCG@10 {c['other_ndcg@10']:.4f} -> {c['ndcg@10']:.4f} "
                         f"({c['difference']:+.4f}, standard error {c['standard_error']:.4f}); better on "
                         f"{c['better']}, worse on {c['worse']} of {result['queries']} queries{missing}")
    render.out.print(f"  search: {result['queries_per_second']:.1f} queries/s")


@eval.command("ask")
@click.argument("dataset", type=click.Path(exists=True, path_type=str))
@click.option("--answers", "answers_file", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Closed corpus: the SQuAD JSON holding the gold answers of DATASET's questions (by question id).")
@click.option("--adversarial", "squad_v20", default=None, type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="Open corpus: SQuAD v2.0 dev, whose unanswerable questions on indexed articles are a third case.")
@click.option("--fit", "fit_to", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Open corpus: fit the answers' confidence calibration on the dev split and write it here "
                   "(else the reader's own is measured).")
@click.option("--records", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Open corpus: the per-question records (reused when present, so an interrupted run resumes; records other models made are refused).")
@click.option("--reliability", "plot", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Open corpus: draw the test split's reliability diagram to this PNG.")
@click.option("--per-case", default="all,300,200", show_default=True, metavar="A,O,V",
              help="Open corpus: questions per split that are answerable, out of corpus, adversarial (a seeded "
                   "sample of each; 'all' takes every one).")
@click.option("--split", default="test", show_default=True, help="Closed corpus: which qrels/SPLIT.tsv names the questions.")
@mode_option
@click.option("--index", "index_path", default=None, help="Index folder to build or reuse.")
@model_option
@click.option("--passages", type=click.IntRange(1, MAX_K), default=5, show_default=True, help="Top passages the reader reads.")
@click.option("--no-rerank", is_flag=True, help="Closed corpus: read the first-stage results without reranking.")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True,
              help="Closed corpus: evaluate a seeded sample of N questions.")
@reranker_option
@query_backend_option
@reader_option
@precision_option
@json_option
def eval_ask(dataset: str, answers_file: str | None, squad_v20: str | None, fit_to: str | None, records: str | None,
             plot: str | None, per_case: str, no_rerank: bool, as_json: bool, **kwargs: Any) -> None:
    """Evaluate question answering end to end: retrieve, rerank and read over a whole corpus.

    Open corpus (DATASET is SQuAD v1.1 dev's JSON): the articles are dealt into an indexed and an absent half,
    each split into dev and test; questions whose article is indexed are answerable, the others are out of
    corpus. Reports, on the test split, F1 on the answerable (an abstention scores 0), how often each case gets
    "no answer", wrong answers, and the expected calibration error of the answers' confidence; --fit fits that
    calibration (and the default --min-confidence) on the dev split.

    Closed corpus (DATASET is a BEIR folder of SQuAD questions, with --answers): EM and F1 for each way of
    comparing answers across passages, from one reading of the passages.

    \b
    bertsearch eval ask ../shared/data/squad/dev-v1.1.json --adversarial ../shared/data/squad/dev-v2.0.json
    bertsearch eval ask ../shared/data/squad/dev-v1.1.json --fit confidence.json --reliability reliability.png
    bertsearch eval ask ../shared/data/squad-dev-retrieval --answers ../shared/data/squad/dev-v1.1.json
    """
    from . import render

    if dataset.endswith(".json"):
        from ..evaluation.open_ask import evaluate_open_corpus

        try:
            a, o, v = (None if x.strip() == "all" else int(x) for x in per_case.split(","))
            if any(n is not None and n < 0 for n in (a, o, v)):
                raise ValueError
        except ValueError:
            raise BadArgument(f"--per-case takes three whole numbers or 'all', e.g. all,300,200; got {per_case!r}") from None
        index_kwargs = {k: kwargs[k] for k in ("index_path", "model", "reranker", "reader", "precision")}
        r = evaluate_open_corpus(dataset, squad_v20=squad_v20, records=records, fit_to=fit_to, plot=plot,
                                 per_case={"answerable": a, "out_of_corpus": o, "adversarial": v},
                                 progress=render.progress, passages=kwargs["passages"], **index_kwargs)
        if as_json:
            render.print_json(r)
            return
        t = r["test"]
        render.out.print(f"open corpus, test split (min confidence {r['min_confidence']:.2f}; calibration: {r['calibration']})")
        for case in ("answerable", "out_of_corpus", "adversarial"):
            if case in t:
                c = t[case]
                render.out.print(f"  {case:<14} {c['questions']:>4} questions  F1 {c['f1']:5.1f}  EM {c['exact_match']:5.1f}  "
                                 f"no answer {100 * c['no_answer']:5.1f}%  answered wrongly {100 * c['answered_wrongly']:5.1f}%")
        render.out.print(f"  expected calibration error {t['calibration']['ece']:.3f} over {t['calibration']['questions']} questions")
        if r.get("test_before_calibration"):
            b = r["test_before_calibration"]
            render.out.print("  before (the reader's raw margin at " + f"{r['reader_threshold']:.2f}): " + ", ".join(
                f"{case} F1 {c['f1']:.1f} abstained {100 * c['abstained']:.1f}%" for case, c in b.items()))
        if r.get("plot"):
            render.out.print(f"  reliability diagram: {r['plot']}")
        return
    if answers_file is None:
        raise BadArgument(f"{dataset} is a BEIR folder: give --answers SQUAD_JSON with its questions' gold answers "
                          "(or pass SQuAD v1.1 dev's JSON itself for the open-corpus evaluation)")
    from ..evaluation.ask import evaluate_ask

    kwargs["index_path"] = kwargs.pop("index_path")
    r = evaluate_ask(dataset, answers_file, rerank=not no_rerank, progress=render.progress, **kwargs)
    if as_json:
        render.print_json(r)
        return
    render.out.print(f"{r['dataset']}: {r['questions']} questions, {r['passages']} passages each "
                     f"({'reranked' if r['rerank'] else 'not reranked'}); gold paragraph read for "
                     f"{100 * r['gold_paragraph_read']:.1f}%; {r['seconds_per_question']:.2f} s/question")
    for v in r["variants"]:
        ranker = " then ranker" if v.get("ranker") else ""
        render.out.print(f"  {v['scoring']:<7} + {v['passage_weight']:.1f} x passage{ranker}  EM {v['exact_match']:.1f}  "
                         f"F1 {v['f1']:.1f}  abstained {100 * v['abstained']:.1f}%  (never abstaining: "
                         f"EM {v['exact_match_never_abstaining']:.1f}  F1 {v['f1_never_abstaining']:.1f})")


@cli.command()
@click.option("--corpus", type=click.Path(exists=True, path_type=str), default="corpora/wiki-demo/docs.jsonl", show_default=True, help="Corpus to index.")
@click.option("--queries", "queries_path", type=click.Path(exists=True, path_type=str), default="corpora/wiki-demo/queries.tsv", show_default=True, help="Queries: .tsv with a query column, BEIR queries.jsonl, or one per line.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N queries.")
@model_option
@click.option("--ann", default="flat", show_default=True, help="Vector index to benchmark.")
@k_option(10)
@click.option("--ask", is_flag=True, help="Also time reranked search and ask (retrieve, rerank, read), with stage means.")
@click.option("--shell", is_flag=True, help="Also time a real 'bertsearch shell' in a pseudo-terminal: start-up, and Enter to answer.")
@reranker_option
@query_backend_option
@reader_option
@precision_option
@backend_option
@json_option
def bench(
    corpus: str, queries_path: str, limit: int | None, model: str | None, ann: str, k: int, ask: bool, shell: bool,
    reranker: str | None, reader: str | None, precision: str, backend: str | None, as_json: bool,
) -> None:
    """Measure indexing throughput and search latency (p50/p95 per mode) on this machine.

    Indexes CORPUS into a fresh temporary index, then times each query alone in each mode.

    \b
    bertsearch bench
    bertsearch bench --ask --shell
    bertsearch bench --corpus ../shared/data/scifact --queries ../shared/data/scifact/queries.jsonl --limit 300 --json
    """
    from ..benchmark import read_queries, run_benchmark
    from . import render

    queries = read_queries(queries_path)[:limit]
    if not queries:
        raise BadArgument(f"no queries in {queries_path}")
    with render.err.status("benchmarking (indexing, then searching) ..."):
        result = run_benchmark(corpus, queries, model=model, ann=ann, k=k, precision=precision, ask=ask, shell=shell,
                               reranker=reranker, reader=reader, backend=backend)
    if as_json:
        render.print_json(result)
        return
    render.out.print(
        f"{result['documents']} documents, {result['chunks']} chunks in {result['index_s']}s ({result['backend']}, "
        f"{result['precision']}): "
        f"{result['docs_per_s']} docs/s, {result['chunks_per_s']} chunks/s (model load {result['model_load_s']}s)"
    )
    for mode, lat in result["latency"].items():
        render.out.print(f"  {mode:<13} p50 {lat['p50_ms']:.1f} ms  p95 {lat['p95_ms']:.1f} ms  ({result['queries']} queries, k={k})")
    for name, means in result.get("stage_means_ms", {}).items():
        render.out.print(f"  {name} stage means: " + ", ".join(f"{s} {v:.1f} ms" for s, v in means.items()))
    if "shell" in result:
        sh = result["shell"]
        render.out.print(f"  shell: ready in {sh['startup_s']:.1f} s; Enter to answer p50 {sh['enter_to_answer_p50_ms']:.0f} ms, "
                         f"p95 {sh['enter_to_answer_p95_ms']:.0f} ms ({sh['queries']} queries)")
    render.out.print(f"  machine: {result['machine']}")


_register()


def main() -> None:
    try:
        cli(prog_name="bertsearch")
    except SystemExit as e:
        if e.code != 130 and not _leave["at_once"]:
            raise
        # interrupted (Ctrl-C), or a command that asked (serve): what was committed is on disk, and the index was
        # closed on the way out. The interpreter's shutdown is skipped: a runtime thread still in a model call
        # (OpenVINO's) was stopped inside native code and aborted the process (exit 134, "FATAL: exception not
        # rethrown" or "terminate called without an active exception"; found 2026-12-06)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0 if e.code is None else e.code if isinstance(e.code, int) else 1)
