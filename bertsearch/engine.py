"""The engine: `Index`, the one facade a program uses. It composes the parts (store, vector cache, ingestion,
retrieval, rerank, answers) and holds no SQL and no tensor code; those live in `store`, `vectors` and `models`.

One `Index` serves any number of threads: each thread reads its own snapshot of the store, writes take turns,
the vector index is rebuilt beside the one being searched and swapped in whole, every per-request setting is an
argument, and each model is called from one worker thread that batches the calls of concurrent requests.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from .config import IndexConfig
from .errors import (
    BadArgument,
    BertsearchError,
    CorruptIndex,
    IndexClosed,
    IndexNotFound,
    ModelMismatch,
    ModelNotFound,
    VectorsUnavailable,
    from_sqlite,
)
from .filters import Filter
from .ingest import DocLike, Ingest, Progress, as_id, content_hash
from .models import Encoder, load_encoder
from .models.shared import SharedEncoder, SharedReader, SharedReranker
from .search import qa
from .search import rerank as reranking
from .search.qa import ANSWER_SCORINGS, rank_answers
from .search.rerank import rerank_order
from .search.retrieve import PAGE_STARTS, Retriever, check_count, page_at
from .store import Store
from .store.sqlite import DAMAGED_PAGES, FOLDERS_KEY
from .store.swap import recover
from .types import AskResult, Document, Hits, IndexReport
from .vectors import open_backend, vectors_setting
from .vectors.faiss_backend import FaissBackend

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_UNLOADED: Any = object()


CLOSE_WAIT = 10  # seconds `Index.close` waits for the calls in flight, twice (see there)


class _Gate:
    """Counts the calls in flight on an `Index`, so that `close` waits for them (closing a store connection that
    another thread was using crashed the process), and refuses new ones once closing."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._in = 0
        self._mine = threading.local()  # this thread's own calls in flight (a close from inside one waits not on it)
        self.closed = False

    @contextmanager
    def enter(self) -> Iterator[None]:
        with self._cond:
            if self.closed:
                raise IndexClosed(self.path)
            self._in += 1
        self._mine.n = getattr(self._mine, "n", 0) + 1
        try:
            yield
        finally:
            self._mine.n -= 1
            with self._cond:
                self._in -= 1
                self._cond.notify_all()

    def close(self, timeout: float) -> bool:
        """Refuse new calls; True once the calls of other threads are done, False if `timeout` passed first."""
        own = getattr(self._mine, "n", 0)
        with self._cond:
            self.closed = True
            return self._cond.wait_for(lambda: self._in <= own, timeout)


def _gated(method: F) -> F:
    @functools.wraps(method)
    def call(self: Index, *args: Any, **kwargs: Any) -> Any:
        with self._gate.enter():
            return method(self, *args, **kwargs)

    return call  # type: ignore[return-value]


class Index:
    """A search index in a folder: `store.db` (the truth), `vectors.faiss` (derived), `config.json`.

    >>> ix = Index.open("indexes/demo", create=True)
    >>> ix.add([{"id": "1", "title": "Aurora", "text": "An aurora is a natural light display..."}])
    >>> ix.search("what causes the northern lights", k=5)

    Safe to share between threads (see the module's docstring). The attributes `rerank_depth`, `rerank_penalty`,
    `answer_scoring` and `answer_passage_weight` are the defaults of the calls that take them as arguments; a
    program serving several users passes them per call instead of changing them.
    """

    VECTORS = FaissBackend.FILE
    CONFIG = "config.json"

    def __init__(
        self,
        path: Path,
        store: Store,
        config: IndexConfig,
        encoder: Encoder,
        *,
        gpu: bool | None = None,
        reranker: str | None = None,
        reader: str | None = None,
        device: str | None = None,
        precision: str = "auto",
    ) -> None:
        self.path = path
        self.store = store
        self.config = config
        self.encoder = encoder if isinstance(encoder, SharedEncoder) else SharedEncoder(encoder)
        self.gpu = gpu
        self.vectors = open_backend(path, store, config, gpu=gpu)
        self.retriever = Retriever(store, self.vectors, self.encoder, config)
        self.ingest = Ingest(path, store, config, self.encoder)
        self.background_rebuild = False  # writes compact the vector index in a background thread (the service)
        # chosen with the shipped cross-encoder on squad-dev-retrieval and SciFact's train claims (docs/measurements/
        # rerank-and-answers.md): the top DEPTH re-scored, each losing PENALTY logits per place it stood below the
        # first stage's top, so that a confident cross-encoder decides and an unsure one defers to the first stage
        self.rerank_depth = 20  # candidates the cross-encoder re-scores
        self.rerank_penalty = 0.75  # logits per first-stage place (0: the cross-encoder's order alone)
        # how answers from different passages compare (see rank_answers), chosen by `eval ask` on squad-dev-retrieval
        # (docs/measurements/rerank-and-answers.md): margin plus half the passage's cross-encoder score, F1 33.7 against
        # 24.7 for raw span scores at the shipped threshold, 59.8 against 44.5 never abstaining
        self.answer_scoring = "margin"
        self.answer_passage_weight = 0.5
        self.query_backend: str | None = None  # the reranker's and reader's runtime; None: see models.query_backend
        self._reranker: Any = None
        self._reader: Any = None
        self._calibration: Any = _UNLOADED
        self._models_lock = threading.Lock()  # a model loads once, whichever thread asks first
        self._reranker_name: str | None = reranker
        self._reader_name: str | None = reader
        self._device = device
        # the reranker's and reader's when they load (int8 is the encoder's alone; they take "auto")
        self._precision = "auto" if precision == "int8" else precision
        self.created = False  # whether Index.open made this index's folder
        self._gate = _Gate(str(path))  # the calls in flight, which `close` waits for

    # -- opening ----------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        model: str | None = None,
        create: bool = False,
        ann: str | None = None,
        overlap: int | None = None,
        vector_dtype: str | None = None,
        device: str | None = None,
        gpu: bool | None = None,
        reranker: str | None = None,
        reader: str | None = None,
        precision: str = "auto",
        backend: str | None = None,
        vectors: str | None = None,
        ray: str | None = None,
    ) -> Index:
        """Open the index at `path`; with `create=True`, make it if it does not exist.

        `model` defaults to the model the index was built with (or, for a new index, the packaged
        all-MiniLM-L6-v2). Naming a different model than the index's vectors came from is an error.
        `gpu`: search FAISS on the GPU; None (the default) uses one when faiss-gpu finds a GPU.
        `reranker` and `reader` name the cross-encoder and the extractive reader (a folder or model
        id; default: the ones shipped with bertsearch); they load on first use. `precision` is every
        model's: "auto" (bfloat16 autocast on CPUs that run it natively), "fp32" or "bf16". `backend` is the
        encoder's for a new index: "auto" (the default, None too: `models.auto_backend`, OpenVINO on a CPU where it
        is installed, else torch), "torch", "onnx" (ONNX Runtime, int8: see `models.onnx`) or "openvino" (see
        `models.openvino`; the reranker and reader then default to it too: `models.query_backend`); an existing
        index uses the backend that made its vectors, and naming another is refused. `vectors` is where the vectors
        are searched: "faiss" (the default, a file in the folder), "milvus" (milvus-lite, embedded in the folder) or
        a Milvus server's URI; the store stays the truth, so an index can move from one to another. `ray`: encode
        through Ray Data, on a Ray started here ("local") or the cluster at this address (`ray://head:10001`); the
        vectors are the same, so the index does not record it (see `models.ray_encoder`). `ann` is the vector
        index: "flat" (exact, the default), "hnsw", "ivf", "ivfpq" or a FAISS factory string; named for an existing
        index, it switches the index to it and is recorded (the vectors are rebuilt from the store).
        """
        path = Path(path)
        if vectors is not None:
            vectors = vectors_setting(vectors)
        recover(path)  # a re-index cut off between its two renames
        db = path / Store.FILE
        made = False  # this call made the folder: a failure removes it again, never leaving a half-made index
        changed, before = False, None  # an existing index's vector settings changed by this call, and what they were
        if not db.exists():
            if not create:
                raise IndexNotFound(str(path))
            if path.exists() and not path.is_dir():
                raise BadArgument(f"{path} is a file, not an index folder; choose another --index path")
            made = not path.exists()
            if not made:
                _warn_foreign(path)
            path.mkdir(parents=True, exist_ok=True)
        try:
            store = Store(db)
        except BaseException:
            if made:
                shutil.rmtree(path, ignore_errors=True)
            raise
        try:
            config = store.config
            if config is None and store.get_meta("config", scan=True) is not None:
                # (the meta table's index damaged: "no index at", and `index` then wrote a second config beside it)
                raise CorruptIndex(str(db), "the index of its meta table is damaged: its config is there, but a "
                                            "lookup does not find it")
            if config is None:
                if not create:  # a store whose creation was cut off before its config was written
                    raise IndexNotFound(str(path))
                encoder, chosen = _new_encoder(model, device=device, precision=precision, backend=backend)
                precision = getattr(encoder, "precision", precision)  # "auto" may have become int8
                config = IndexConfig(
                    model=_recorded(encoder.name),
                    fingerprint=encoder.fingerprint(),
                    dim=encoder.dim,
                    max_tokens=encoder.max_tokens,
                    overlap=overlap if overlap is not None else encoder.max_tokens // 8,
                    ann=ann if ann is not None else "flat",
                    vector_dtype=vector_dtype if vector_dtype is not None else "float32",
                    backend=chosen,
                    precision=getattr(encoder, "vector_precision", ""),
                    vectors=vectors or "faiss",
                )
                store.set_config(config)
            else:
                from .models.onnx import BACKENDS

                if backend not in (None, "auto", *BACKENDS):
                    raise BadArgument(f"unknown backend {backend!r}; use one of auto, {', '.join(BACKENDS)}")
                if backend not in (None, "auto", config.backend):
                    raise ModelMismatch(
                        f"{path} holds vectors the {config.backend} backend computed; the {backend} backend's differ a "
                        f"little and would not search them alike. Leave out --backend, or index into a new folder "
                        f"with --backend {backend}"
                    )
                precision = _search_precision(path, config, precision)
                try:
                    encoder = load_encoder(model if model is not None else config.model, device=device,
                                           precision=precision, backend=config.backend)
                except ModelNotFound:
                    if model is not None:
                        raise
                    # what needs no encoder (a lexical search, info, check, delete, get) still works
                    encoder = MissingEncoder(config.model, ModelNotFound(
                        f"{path} was indexed with the model {config.model}, which is not found here (not a folder "
                        f"from {Path.cwd()}, nor a model in the Hugging Face cache); pass --model with where that "
                        "model is now (the same weights)"
                    ))
                else:
                    _check_model(path, config, encoder, named=model is not None)
                changed, before = False, config.to_json()
                if ann is not None and ann != config.ann:
                    log.info("switching the vector index of %s from %s to %s", path, config.ann, ann)
                    config.ann, changed = ann, True
                if vectors is not None and vectors != config.vectors:
                    log.info("moving the vectors of %s from %s to %s", path, config.vectors, vectors)
                    config.vectors, changed = vectors, True
                for name, value in (("overlap", overlap), ("vector_dtype", vector_dtype)):
                    if value is not None and value != getattr(config, name):
                        raise BadArgument(
                            f"{path} was built with {name}={getattr(config, name)}; it cannot change for an "
                            "existing index: index into a new folder instead"
                        )
                if changed:
                    store.set_config(config)
            if ray is not None:  # the same model, its encode run by Ray actors: joined now, so a bad address fails here
                from .models.ray_encoder import RayEncoder

                encoder = RayEncoder(encoder, address=ray, device=device, precision=precision,
                                     backend=config.backend).start()
        except sqlite3.DatabaseError as e:
            store.close()
            raise from_sqlite(e, str(db)) from None
        except BaseException:
            store.close()
            if made:
                shutil.rmtree(path, ignore_errors=True)
            raise
        ix = None
        try:
            ix = cls(path, store, config, encoder, gpu=gpu, reranker=reranker, reader=reader, device=device,
                     precision=precision)
            if made or changed:  # a bad ANN setting or an unreachable Milvus fails now, before anything is written
                ix.vectors.sync()
        except BaseException:
            if changed and before is not None:  # the index keeps the settings it had
                store.set_config(IndexConfig.from_json(before))
            if ix is not None:
                ix.close()
            else:
                store.close()
            if made:
                shutil.rmtree(path, ignore_errors=True)
            raise
        _mirror_config(path / cls.CONFIG, config)
        ix.created = made
        return ix

    def require_model(self) -> None:
        """Raise the encoder's ModelNotFound when the index's model cannot be found (see `MissingEncoder`): for a
        server, which should not start without it."""
        inner = getattr(self.encoder, "inner", None)
        if isinstance(inner, MissingEncoder):
            raise inner._error

    def close(self) -> None:
        """Close the store and stop the model workers; using the index afterwards raises `IndexClosed`.
        Closing twice is harmless. Calls in flight on other threads finish first (or, still running after
        `CLOSE_WAIT` seconds, have their store statements interrupted); a new one raises `IndexClosed`."""
        if not self._gate.close(CLOSE_WAIT):  # (new calls are refused from here on; those in flight go on)
            log.warning("closing %s: calls on other threads still running after %ds; interrupting them", self.path,
                        CLOSE_WAIT)
            self.store.refuse()
            self.store.interrupt()
            if not self._gate.close(CLOSE_WAIT):
                log.warning("closing %s: calls on other threads still running; their connections are left open",
                            self.path)
                return
        try:
            self.vectors.wait()
        except VectorsUnavailable as e:  # (the vectors follow the store when it is next opened)
            log.warning("closing %s: %s", self.path, e)
        self.vectors.close()
        self.store.close()
        for model in (self.encoder, self._reranker, self._reader):
            close = getattr(model, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def exact_subset(self) -> int:
        """A filtered dense search is exact over the stored vectors when at most this many chunks match."""
        return self.retriever.exact_subset

    @exact_subset.setter
    def exact_subset(self, n: int) -> None:
        self.retriever.exact_subset = n

    # -- writing ----------------------------------------------------------------------------------

    @_gated
    def add(
        self,
        docs: Iterable[DocLike],
        *,
        batch_size: int = 128,
        encode_batch_size: int = 32,
        on_progress: Progress | None = None,
        prune: bool = False,
        keep: set[str] | None = None,
        prune_unrelated: bool = False,
    ) -> IndexReport:
        """Add documents, replacing those whose id is already stored. Unchanged ones cost no encoder work.

        With `prune`, documents stored but absent from `docs` (and from `keep`) are deleted once all of `docs`
        is read (so an interrupted run deletes nothing, and a `docs` that holds nothing deletes nothing: it is
        refused, as is a prune of every document stored before when `docs` held none of their ids, unless
        `prune_unrelated`).
        """
        if isinstance(docs, (dict, Document, str)):  # (a dict would be read as its keys)
            raise BadArgument(f"add takes a list of documents, not one {type(docs).__name__}: add([doc])")
        report = self.ingest.add(docs, batch_size=batch_size, encode_batch_size=encode_batch_size,
                                 on_progress=on_progress, prune=prune, keep=keep, prune_unrelated=prune_unrelated)
        t0 = time.perf_counter()
        self._vectors_changed()
        report.seconds += time.perf_counter() - t0
        return report

    @_gated
    def add_corpus(
        self,
        source: str | Path,
        *,
        format: str | None = None,
        fields: Any = None,
        on_error: str = "stop",
        batch_size: int = 128,
        on_progress: Progress | None = None,
        prune: bool = False,
        prune_unrelated: bool = False,
    ) -> IndexReport:
        """Read a corpus (JSONL, CSV/TSV, a folder of files, or BEIR) as a stream and add it.

        With `prune`, documents no longer in the corpus are deleted from the index.
        """
        from .readers import ReadStats, detect_format, read_corpus

        stats = ReadStats()
        format = None if format == "auto" else format
        if prune and on_error == "skip":
            raise BadArgument("--prune with --on-error skip could delete documents whose records are malformed; use one or the other")
        here = Path(source).resolve()
        folder = here.is_dir() and (format or detect_format(here)) == "folder"  # (ids: paths relative to it)
        folders = json.loads(self.store.get_meta(FOLDERS_KEY) or "[]")
        inside = next((f for f in folders if here != Path(f) and Path(f) in here.parents), None)
        if prune and folder and inside is not None and not prune_unrelated:
            # (a subfolder's relative paths are other ids: every document of the folder above was deleted)
            raise BadArgument(
                f"{source} is inside {inside}, a folder indexed into {self.path}: its files' ids are paths relative "
                f"to {source}, not to {inside}, so --prune would delete the documents read from {inside}; nothing "
                f"was read. Prune with {inside}, or index {source} into an index of its own")
        if folder:  # recorded before reading: a run cut short keeps the documents it added, and the guard with them
            self.store.add_to_meta_list(FOLDERS_KEY, str(here))
        docs = read_corpus(source, format, fields=fields, on_error=on_error, stats=stats)
        # files that are there but could not be read this time (binary now, damaged, a package missing) keep
        # their stored copies: a prune deletes only what the corpus no longer holds
        report = self.add(docs, batch_size=batch_size, on_progress=on_progress, prune=prune, keep=stats.present,
                          prune_unrelated=prune_unrelated)
        if stats.present:  # files there but unreadable now: their indexed copies stay, and are counted as such
            report.kept_stale = len(self.store.existing(sorted(stats.present)))
        report.skipped = stats.skipped
        report.errors = list(stats.errors)
        report.skipped_files = dict(stats.skipped_files)
        report.decoded_as = {k: list(v) for k, v in stats.decoded_as.items()}
        return report

    @_gated
    def delete(self, ids: Iterable[str] = (), *, where: str | Filter | None = None, dry_run: bool = False) -> int:
        """Delete documents by id, or those matching a filter (one or the other, never both); returns how many
        were deleted, or with `dry_run` how many would be (see `to_delete` for which)."""
        if dry_run:
            return len(self.to_delete(ids, where=where))
        ids, flt = self._delete_target(ids, where)
        n = self.store.delete(ids) if ids else self.store.delete_where(flt)  # type: ignore[arg-type]
        self._vectors_changed()
        return n

    @_gated
    def to_delete(self, ids: Iterable[str] = (), *, where: str | Filter | None = None) -> list[str]:
        """The ids of the stored documents `delete` would delete with these arguments (a dry run)."""
        ids, flt = self._delete_target(ids, where)
        return self.store.existing(ids) if ids else self.store.ids_where(flt)  # type: ignore[arg-type]

    def _delete_target(self, ids: Iterable[str], where: str | Filter | None) -> tuple[list[str], Filter | None]:
        """The ids, or the filter parsed and its fields checked: one or the other, never both."""
        if isinstance(ids, str):
            raise BadArgument("give document ids as a list, not one string")
        if not isinstance(ids, Iterable):
            raise BadArgument(f"give document ids as a list, not {type(ids).__name__}")
        ids = [as_id(i) for i in ids]
        if not ids and where is None:
            raise BadArgument("give document ids (a list) or a filter to delete")
        if ids and where is not None:
            raise BadArgument(
                "give ids or a filter, not both (--id or --where): delete by id, then by filter, as two commands; "
                "--dry-run shows what each would delete"
            )
        return ids, self.retriever.filter(where)

    def _vectors_changed(self) -> None:
        """The vector backend brought up to date after a write. The write is committed by then: a backend that cannot
        be reached now (a Milvus server down, a milvus-lite folder another process serves) is warned of, not raised,
        and its vectors follow the store once it is back (the next search, `check`, or the process holding it)."""
        try:
            self.vectors.sync(wait=not self.background_rebuild)
        except VectorsUnavailable as e:
            log.warning("the change is stored; its vectors follow once the vector backend can be reached: %s", e)

    @_gated
    def refresh_vectors(self) -> None:
        """Bring the vector backend up to date with the store now (no encoder work: vectors come from SQLite)."""
        self.vectors.sync()

    # -- searching --------------------------------------------------------------------------------

    def cut_query(self, query: str, mode: str = "hybrid") -> tuple[str, int | None]:
        """`query` cut to what the encoder reads, and how many words were kept (None when nothing was cut)."""
        return self.retriever.cut_query(query, mode)

    @_gated
    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "hybrid",
        *,
        where: str | Filter | None = None,
        rerank: bool = False,
        rerank_depth: int | None = None,
        rerank_penalty: float | None = None,
    ) -> Hits:
        """The top `k` documents for `query`; mode is hybrid (default), dense or lexical.

        `where` restricts the search to documents whose metadata match a filter such as
        ``"year >= 2020 and lang = 'en'"`` (see `bertsearch.filters`); it applies before ranking, so
        k documents come back whenever k match. `rerank` re-scores the top `rerank_depth` candidates
        with the cross-encoder (default: the index's `rerank_depth`, or k when larger, and its `rerank_penalty`);
        hits below a depth given smaller than k follow unscored, with their first-stage scores. The hits come as a
        list whose `timings` hold each stage's time in seconds.
        """
        return self.batch_search([query], k=k, mode=mode, where=where, rerank=rerank, rerank_depth=rerank_depth,
                                 rerank_penalty=rerank_penalty)[0]

    @_gated
    def batch_search(
        self,
        queries: list[str],
        k: int = 10,
        mode: str = "hybrid",
        *,
        where: str | Filter | None = None,
        depth: int = 100,
        rerank: bool = False,
        rerank_depth: int | None = None,
        rerank_penalty: float | None = None,
    ) -> list[Hits]:
        """Search many queries at once (the encoder sees them as one batch).

        `depth` is how many candidates each of dense and lexical contributes to hybrid fusion.
        The search reads one snapshot of the store, so a writer committing meanwhile changes nothing
        it sees half-way. Each query's hits carry the batch's `timings`.
        """
        queries = self.retriever.check_queries(queries, k, mode)
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise BadArgument(f"depth (candidates from each of dense and lexical) must be a whole number above 0, "
                              f"got {depth!r}")
        # unless told, the cross-encoder re-scores at least the k hits returned: past the depth a hit kept its
        # first-stage score (a hybrid 0.019 below logits of -20), under a label that said "rerank"
        rerank_depth = rerank_depth if rerank_depth is not None else max(self.rerank_depth, k)
        rerank_penalty = rerank_penalty if rerank_penalty is not None else self.rerank_penalty
        if rerank:
            check_count("rerank depth", rerank_depth)
        if rerank and not rerank_penalty >= 0:
            raise BadArgument(f"rerank penalty must be >= 0 (logits per first-stage place), got {rerank_penalty}")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        first_k = max(k, rerank_depth) if rerank else k
        results = self.retriever.search(queries, first_k, mode, depth, where)
        timings["retrieve"] = time.perf_counter() - t0
        if rerank:
            t1 = time.perf_counter()
            results = [reranking.rerank(self.reranker, q, hits, rerank_depth, rerank_penalty)[:k]
                       for q, hits in zip(queries, results)]
            timings["rerank"] = time.perf_counter() - t1
        return [Hits(hits, timings) for hits in results]

    @property
    def reranker(self) -> Any:
        """The cross-encoder (the shipped default unless `Index.open(reranker=...)` named one), loaded on first use."""
        if self._reranker is None:
            with self._models_lock:
                if self._reranker is None:
                    from .models.reranker import load_reranker

                    self._reranker = SharedReranker(self._query_model(load_reranker, self._reranker_name, "reranker"))
        return self._reranker

    @property
    def reader(self) -> Any:
        """The extractive reader (the shipped default unless `Index.open(reader=...)` named one), loaded on first use."""
        if self._reader is None:
            with self._models_lock:
                if self._reader is None:
                    from .models.reader import load_reader

                    self._reader = SharedReader(self._query_model(load_reader, self._reader_name, "reader"))
        return self._reader

    def _query_model(self, load: Any, name: str | None, role: str) -> Any:
        """The reranker or reader on its runtime (`models.query_backend`). Where OpenVINO was not asked for but
        follows from the index's encoder, a model it cannot convert runs on torch instead, and the log says why."""
        from .models import QUERY_BACKEND_ENV, query_backend

        backend = query_backend(self.query_backend, self.config.backend)
        model = load(name, device=self._device, precision=self._precision, backend=backend)
        if backend == "torch" or self.query_backend is not None or os.environ.get(QUERY_BACKEND_ENV):
            return model
        try:
            model.model  # converts the model (once per machine) and compiles it  # noqa: B018
        except Exception as e:  # noqa: BLE001 - an operator or a head its export lacks: torch runs them all
            log.warning("the %s %s could not run on %s (%s: %s%s); it runs on torch instead", role, model.name, backend,
                        type(e).__name__, e, _cache_hint(e))
            return load(name, device=self._device, precision=self._precision, backend="torch")
        return model

    @_gated
    def ask(
        self,
        question: str,
        *,
        k: int = 3,
        passages: int = 5,
        mode: str = "hybrid",
        where: str | Filter | None = None,
        rerank: bool = True,
        hits: int | None = None,
        min_confidence: float | None = None,
        rerank_depth: int | None = None,
        rerank_penalty: float | None = None,
    ) -> AskResult:
        """Answer a question from the index: retrieve, rerank, then read the best `passages` chunks.

        Returns up to `k` different answers located in their documents (character offsets), the one most likely
        right first (the calibration's ranker; see `Calibration.order`), each with a `confidence` in [0, 1] (the
        calibrated probability that it is right), the result's `no_answer_probability` (that the corpus holds no
        answer), the hits (the top `hits`, default `passages`, of which the reader read
        the first `passages`), and each stage's time. An answer is given when its confidence reaches
        `min_confidence` (default: the calibration's, chosen on held-apart questions; 0 answers whenever a span
        is found); otherwise `answers` is empty, `abstained` is True, and `best_candidate` says how close the best
        candidate came: an honest "no answer" rather than an invented one.
        """
        for name, n in (("k", k), ("passages", passages), ("hits", hits)):
            if n is not None:
                check_count(name, n)
        if k > qa.MAX_ANSWERS:  # each passage is read for k spans, and their copies are weeded out pairwise
            raise BadArgument(f"k is how many answers to give: at most {qa.MAX_ANSWERS}, got {k} (to see more of "
                              "the index, raise passages or hits instead)")
        if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
            raise BadArgument(f"min_confidence is a probability, from 0 to 1; got {min_confidence}")
        question = self.retriever.check_queries([question], 1, mode)[0]
        found = self.search(question, k=max(passages, hits or passages), mode=mode, where=where, rerank=rerank,
                            rerank_depth=rerank_depth, rerank_penalty=rerank_penalty)
        timings = dict(found.timings)
        read = found[:passages]
        t0 = time.perf_counter()
        reader = self.reader
        n = max(k, qa.CANDIDATES)  # the confidence of an answer does not depend on how many are shown
        spans = reader.read(question, [h.text for h in read], per_passage=n) if read else []
        pool = rank_answers(spans, read, scoring=self.answer_scoring, passage_weight=self.answer_passage_weight)
        calibration = self.calibration
        ranked = qa.shortlist(pool, read, calibration, n)
        timings["read"] = time.perf_counter() - t0
        judged = qa.judge(ranked, read, calibration, min_confidence, pool)
        candidates = [qa.locate(read[sp.passage], sp, confidence=c) for sp, c in zip(ranked[:k], judged.confidences)]
        for a in candidates:
            if any(h.page is not None for h in read):  # documents with pages: the answer's own page
                doc = self.store.document(a.doc_id)
                a.page = page_at((doc or {}).get("metadata", {}).get(PAGE_STARTS), a.start)
        answers = [] if judged.abstained else [a for a in candidates if a.confidence is None or a.confidence >= judged.min_confidence]
        return AskResult(question=question, answers=answers, hits=found[: hits or passages], abstained=judged.abstained,
                         timings=timings, no_answer_probability=judged.no_answer,
                         best_candidate=candidates[0] if judged.abstained and candidates else None,
                         min_confidence=judged.min_confidence)

    @property
    def calibration(self) -> Any:
        """The answers' confidence calibration (beside the reader's weights; see `search.confidence`), or None."""
        if self._calibration is _UNLOADED:
            from .models.reader import DEFAULT_READER, DEFAULT_READER_PATH
            from .search import confidence

            name = self._reader_name
            path = DEFAULT_READER_PATH if name in (None, DEFAULT_READER) else getattr(self.reader, "path", None)
            self._calibration = confidence.load(path)
        return self._calibration

    # -- reading ----------------------------------------------------------------------------------

    @_gated
    def get(self, doc_id: str) -> dict[str, Any] | None:
        """A stored document by id (id, title, text, metadata, updated_at), or None."""
        with self.store.snapshot():
            self.store.check_live()
            doc = self.store.document(as_id(doc_id))
        if doc is not None:
            doc.pop("rowid", None)  # the store's own key
        return doc

    @_gated
    def check(self, *, repair: bool = False) -> dict[str, Any]:
        """Consistency report: store problems (each a string), and whether the vector backend holds every chunk.

        The vector backend follows the store through its change feed, so one behind it is brought up to date
        first (no encoder work); `repair` rebuilds it from the stored vectors, and rebuilds the full-text index.
        """
        try:
            problems = self.store.check(self.config.dim, self.config.vector_dtype)
        except sqlite3.DatabaseError as e:  # damage that SQLite cannot even check around
            raise from_sqlite(e, str(self.store.path)) from None
        if any("malformed" in p or "corrupt" in p or "not a database" in p for p in problems[:1]):
            raise from_sqlite(sqlite3.DatabaseError(problems[0]), str(self.store.path))
        if repair and problems[:1] and problems[0].startswith(DAMAGED_PAGES):
            # (repaired in place, damaged pages failed it, or worse: a damaged index of chunks had every document
            # marked for re-embedding; `bertsearch check --repair` salvages the store instead)
            raise CorruptIndex(str(self.store.path), problems[0])
        self.vectors.sync()
        vector_problems = self.vectors.check()
        problems += vector_problems
        if repair:
            if problems:
                self.store.repair()
            self.vectors.rebuild()
            after = self.store.check(self.config.dim, self.config.vector_dtype)
            vector_problems = self.vectors.check()
            after += vector_problems
        healed = list(getattr(self.vectors, "healed", []))  # (damage a load found and mended, before this check)
        report = {
            "ok": not (after if repair else problems),
            "problems": problems,
            "vectors": "current" if not vector_problems else "out of step (check --repair rebuilds them)",
            **self.store.counts(),
            "generation": self.store.generation(),
        }
        if repair or healed:
            report["repaired"] = healed + (problems if repair else [])
        if repair:
            report["problems"] = after
        return report

    @_gated
    def info(self) -> dict[str, Any]:
        """What the index holds and how it was built."""
        size = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
        vectors = self.vectors.info()
        return {
            "path": str(self.path),
            **self.store.counts(),
            "model": self.config.model,
            "fingerprint": self.config.fingerprint,
            "dim": self.config.dim,
            "max_tokens": self.config.max_tokens,
            "overlap": self.config.overlap,
            "ann": self.config.ann,
            "vector_dtype": self.config.vector_dtype,
            "backend": self.config.backend,
            "precision": self.config.precision or "float (made before it was recorded)",
            "vectors": self.config.vectors,
            # the vectors as saved (FAISS's file; Milvus's acknowledged position) reach the store's last write: a
            # process opening the index now replays nothing. False after a write until the next compaction, while
            # searches still see every write (FAISS searches the chunks written since beside its file)
            "vectors_saved": vectors.get("file_position", vectors.get("position")) == self.store.feed_head(),
            "vectors_info": vectors,
            "generation": self.store.generation(),
            "size_bytes": size,
            "last_updated": self.store.last_updated(),
            "reranker": _model_label(self._reranker_name, "reranker"),
            "reader": _model_label(self._reader_name, "reader"),
        }


def _model_label(name: str | None, kind: str) -> str:
    """The reranker or reader a search would use: the name given, else the shipped one (or that none is)."""
    from .models.reader import DEFAULT_READER_PATH
    from .models.reranker import PACKAGED

    if name is not None and name != "default":
        return name
    shipped = (PACKAGED if kind == "reranker" else DEFAULT_READER_PATH) / "config.json"
    return "bertsearch default (shipped)" if shipped.is_file() else f"none (no weights shipped; see bertsearch train {kind})"


def _mirror_config(path: Path, config: IndexConfig) -> None:
    """Keep config.json (for people and tools; the store holds the truth) in step, atomically."""
    text = config.to_json() + "\n"
    try:
        if path.exists() and path.read_bytes() == text.encode():
            return
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:  # a read-only folder: the store still holds the truth
        log.warning("could not write %s (%s)", path, e)


def _new_encoder(model: str | None, *, device: str | None, precision: str, backend: str | None) -> tuple[Encoder, str]:
    """A new index's encoder and the backend it runs on. `backend` None or "auto" takes `models.auto_backend`'s
    choice; should OpenVINO fail to convert a model it picked (an architecture its export does not handle), the
    index is made on torch instead, and the log says why. A backend named outright fails loudly. On OpenVINO,
    precision "auto" takes `models.openvino.auto_precision`'s choice: int8 on a CPU with VNNI and no native bf16."""
    from .models import auto_backend, is_hashing

    chosen = backend if backend not in (None, "auto") else auto_backend(model, device)
    if chosen == "onnx" and precision not in ("auto", "int8"):
        raise BadArgument(f"the onnx backend runs in int8 only, so --precision {precision} would be ignored: leave out "
                          "--precision, or use --backend openvino (or torch) for it")
    if precision == "int8" and chosen == "torch":
        raise BadArgument("--precision int8 runs on the openvino backend, and this index would be made on torch: add "
                          "--backend openvino, or leave out --precision")
    asked = precision
    if chosen == "openvino" and not is_hashing(model) and precision in ("auto", "int8"):
        from .models.openvino import auto_precision, require_vnni

        if precision == "int8":
            require_vnni()
        else:
            precision = auto_precision()
    encoder = load_encoder(model, device=device, precision=precision, backend=chosen)
    if chosen == "torch" or backend not in (None, "auto"):
        return encoder, chosen
    try:  # (a model that does not exist failed above, in load_encoder)
        encoder.dim  # converts the model (once per machine) and compiles it  # noqa: B018
    except Exception as e:  # a pooling it lacks, an operator its export lacks: torch runs them all (not in int8)
        if asked == "int8":
            raise
        log.warning("%s could not run on %s (%s: %s%s); this index uses torch instead", encoder.name, chosen,
                    type(e).__name__, e, _cache_hint(e))
        return load_encoder(model, device=device, precision=asked, backend="torch"), "torch"
    return encoder, chosen


def _cache_hint(e: BaseException) -> str:
    """What to do when a model's converted copy could not be written or read: it lives in the cache folder."""
    if not isinstance(e, OSError):
        return ""
    from .models.onnx import cache_root

    return f"; the converted models are kept in {cache_root()}: set $BERTSEARCH_CACHE to a folder you can write"


def _search_precision(path: Path, config: IndexConfig, precision: str) -> str:
    """The encoder's precision for an index made before: an int8 index's queries are encoded in int8 ("auto" gives
    it), and float vectors are never searched with int8 queries, nor int8 vectors with float ones."""
    if config.backend == "onnx" and precision not in ("auto", "int8"):
        raise ModelMismatch(f"{path} holds int8 vectors of the onnx backend, which runs in int8 only; leave out "
                            "--precision")
    if config.backend != "openvino":
        if precision == "int8" and config.backend != "onnx":
            raise ModelMismatch(f"{path} holds {config.backend} vectors; --precision int8 runs on the openvino backend. "
                                "Leave out --precision, or index into a new folder with --precision int8")
        return precision
    if config.precision == "int8":
        if precision not in ("auto", "int8"):
            raise ModelMismatch(f"{path} holds int8 vectors, and {precision} queries would not search them alike. "
                                "Leave out --precision, or index into a new folder with --precision "
                                f"{precision}")
        return "int8"
    if precision == "int8":
        raise ModelMismatch(f"{path} holds {config.precision or 'float'} vectors, and int8 queries would not search "
                            "them alike. Leave out --precision, or index into a new folder with --precision int8")
    return precision


def _warn_foreign(path: Path) -> None:
    """Warn when a new index goes into a folder of other files (`--index ~/Documents`, say): its files go beside
    them, and `backup`/`restore --force` refuse such a folder rather than delete them."""
    from .store.backup import OWN

    try:
        names = sorted(p.name for p in path.iterdir() if p.name not in OWN)
    except OSError:
        return
    if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        log.warning("%s already holds files that are not an index's (%s); the index's files go beside them. An "
                    "empty folder of its own keeps them apart (backup and restore --force refuse a folder with "
                    "other files)", path, shown)


class MissingEncoder:
    """Stands in for an index's encoder that cannot be found: every use of it raises `error`, which says how to
    point at the model."""

    def __init__(self, name: str, error: ModelNotFound) -> None:
        self.name = name
        self._error = error

    def close(self) -> None:
        pass

    def __getattr__(self, attr: str) -> Any:
        raise self._error




def _recorded(model: str) -> str:
    """The model name a new index records: a local folder as its absolute path, so that the index opens from any
    working directory (a relative one only opened from the folder it was indexed in)."""
    folder = Path(model).expanduser()
    return str(folder.resolve()) if folder.is_dir() else model


def _check_model(path: Path, config: IndexConfig, encoder: Encoder, *, named: bool) -> None:
    fp = encoder.fingerprint()
    if fp != config.fingerprint:
        if named and _recorded(encoder.name) != config.model:  # (the index's own folder named: changed, as below)
            raise ModelMismatch(
                f"{path} holds vectors of {config.model} (fingerprint {config.fingerprint}); the model {encoder.name} "
                f"(fingerprint {fp}) cannot search them. Leave out --model to use the index's own model, index into a "
                f"new folder with the new model, or re-embed this one with 'bertsearch reindex --model MODEL --index "
                f"{path}'")
        raise ModelMismatch(  # (leaving out --model, as the message above says, changes nothing here)
            f"{path} holds vectors of {config.model} (fingerprint {config.fingerprint}), whose weights have changed since "
            f"indexing (fingerprint {fp} now: trained or averaged again?), so they cannot search them. Re-embed the "
            f"index with them ('bertsearch reindex --model {config.model} --index {path}'), or put the old weights back")


__all__ = ["ANSWER_SCORINGS", "BertsearchError", "Index", "content_hash", "rank_answers", "rerank_order"]
