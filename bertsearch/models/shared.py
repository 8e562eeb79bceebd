"""Models shared by threads: one inference worker per model that batches the calls of concurrent callers.

A fast tokenizer must not be called from two threads at once ("Already borrowed"), and on a CPU one model call
over 16 queries costs far less than 16 calls over one. So every call of a shared model goes to its worker thread:
calls that arrive while the worker is busy are run together, as one model call, when it is free. A caller waits
for its own part of the result; an error is raised in the caller whose input caused it (a failing batch is run
again call by call to find it).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

import numpy as np

from ..errors import BertsearchError, IndexClosed

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


_LIVE: weakref.WeakSet[Batcher[Any, Any]] = weakref.WeakSet()


@atexit.register
def _finish_workers() -> None:
    """At interpreter exit, let each worker finish the model call it is in: a thread stopped inside a native model
    call aborted the process (SIGABRT, exit 134) after its output was printed, as when a filtered search matched
    nothing and returned before its query's vectors were taken, or indexing was interrupted (found 2026-12-06)."""
    for batcher in list(_LIVE):
        batcher.close()
    for batcher in list(_LIVE):
        thread = batcher._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=60)


class WorkerClosed(IndexClosed):
    """A model was called after its index was closed."""

    def __init__(self, message: str) -> None:
        BertsearchError.__init__(self, message)


class Batcher(Generic[In, Out]):
    """Runs `fn(items) -> results` (one result per item) on one worker thread, for every caller.

    `call(items)` queues the items and waits for their results. The worker takes what is queued, up to
    `max_items` items (a larger call runs alone), runs `fn` once over all of it, and hands each caller its
    results. The thread starts on the first call and ends with `close()`."""

    def __init__(self, fn: Callable[[list[In]], Sequence[Out]], *, max_items: int = 64, name: str = "model") -> None:
        self.fn = fn
        self.max_items = max_items
        self.name = name
        self._queue: queue.SimpleQueue[tuple[list[In], Future] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self.calls = 0  # model calls made (for tests and measurements)
        self.batched = 0  # caller calls served

    def call(self, items: list[In]) -> list[Out]:
        return self.submit(items).result() if items else []

    def submit(self, items: list[In]) -> Future:
        """Queue `items` and return at once: the future's result is theirs (the caller may work meanwhile)."""
        fut: Future = Future()
        if not items:
            fut.set_result([])
            return fut
        with self._start_lock:  # (a call queued after close's stop would wait for ever: none is)
            if self._closed:
                raise WorkerClosed(f"the {self.name} is closed (its index was closed); open the index again")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=f"bertsearch-{self.name}", daemon=True)
                self._thread.start()
                _LIVE.add(self)
            self._queue.put((list(items), fut))
        return fut

    def close(self) -> None:
        with self._start_lock:
            self._closed = True
            if self._thread is not None and self._thread.is_alive():
                self._queue.put(None)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            n = len(job[0])
            while n < self.max_items:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                jobs.append(nxt)
                n += len(nxt[0])
            self._serve(jobs)

    def _serve(self, jobs: list[tuple[list[In], Future]]) -> None:
        items = [x for its, _ in jobs for x in its]
        try:
            results = self.fn(items)
            self.calls += 1
        except BaseException as e:  # noqa: BLE001 - handed to the callers, never lost in the worker
            if len(jobs) == 1:
                jobs[0][1].set_exception(e)
                return
            for one in jobs:  # find whose input failed: the others still get their results
                self._serve([one])
            return
        self.batched += len(jobs)
        pos = 0
        for its, fut in jobs:
            fut.set_result(results[pos : pos + len(its)])
            pos += len(its)


class SharedEncoder:
    """An encoder (see `models.base.Encoder`) that threads can share: `encode` goes through a batching worker,
    and the tokenizer's calls take the same lock as the worker's model calls."""

    def __init__(self, inner: Any, *, max_items: int = 64) -> None:
        self.inner = inner
        self.name = inner.name
        self._lock = threading.RLock()
        self._cache: dict[str, int] = {}
        self._batcher: Batcher[str, np.ndarray] = Batcher(self._encode, max_items=max_items, name="encoder")

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return self.inner.encode(texts)

    def encode(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        if len(texts) > self._batcher.max_items:  # ingestion: a large call runs alone, in the caller's thread
            with self._lock:
                return self.inner.encode(texts, batch_size=batch_size)
        return self.encode_later(texts, batch_size=batch_size)()

    def encode_later(self, texts: list[str], *, batch_size: int = 32) -> Callable[[], np.ndarray]:
        """`encode` begun now on the worker: returns what waits for its vectors, so that the caller can work
        meanwhile (a hybrid search runs BM25 in SQLite while its query is encoded)."""
        if len(texts) > self._batcher.max_items:
            return lambda: self.encode(texts, batch_size=batch_size)
        fut = self._batcher.submit(list(texts))

        def result() -> np.ndarray:
            rows = fut.result()
            return np.stack(rows) if len(rows) else np.zeros((0, self.dim), dtype=np.float32)

        result.future = fut  # type: ignore[attr-defined]  # (a search that returns early waits on it)
        return result

    def __getattr__(self, name: str) -> Any:  # dim, max_tokens, special_tokens, fingerprint, token_spans, ...
        with self._lock:  # (a property may load the model or call the tokenizer)
            attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return locked

    @property
    def dim(self) -> int:
        return self._fixed("dim")

    @property
    def max_tokens(self) -> int:
        return self._fixed("max_tokens")

    @property
    def special_tokens(self) -> int:
        return self._fixed("special_tokens")

    def _fixed(self, name: str) -> int:
        """A property of the model that never changes, read once (some cost a tokenizer call)."""
        value = self._cache.get(name)
        if value is None:
            with self._lock:
                value = self._cache[name] = getattr(self.inner, name)
        return value

    def close(self) -> None:
        self._batcher.close()


class SharedReranker:
    """A cross-encoder that threads can share: the (query, passages) of concurrent callers are scored in one
    `score_batch` call by its worker."""

    def __init__(self, inner: Any, *, max_items: int = 16) -> None:
        self.inner = inner
        self.name = inner.name
        self._batcher: Batcher[tuple[str, list[str]], np.ndarray] = Batcher(self._score, max_items=max_items,
                                                                           name="reranker")

    def _score(self, jobs: list[tuple[str, list[str]]]) -> list[np.ndarray]:
        score_batch = getattr(self.inner, "score_batch", None)
        if score_batch is None:
            return [self.inner.score(q, ps) for q, ps in jobs]
        return list(score_batch([q for q, _ in jobs], [ps for _, ps in jobs]))

    def score(self, query: str, passages: list[str], *, batch_size: int = 32) -> np.ndarray:
        return self._batcher.call([(query, list(passages))])[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def close(self) -> None:
        self._batcher.close()


class SharedReader:
    """An extractive reader that threads can share: the questions of concurrent callers are read in one
    `read_batch` call by its worker."""

    def __init__(self, inner: Any, *, max_items: int = 8) -> None:
        self.inner = inner
        self.name = inner.name
        self._batcher: Batcher[tuple[str, list[str], int | None], list] = Batcher(self._read, max_items=max_items,
                                                                               name="reader")

    def _read(self, jobs: list[tuple[str, list[str], int | None]]) -> list[list]:
        read_batch = getattr(self.inner, "read_batch", None)
        per = {p for _, _, p in jobs}
        if read_batch is None or len(per) != 1:
            return [self.inner.read(q, ps, per_passage=p) for q, ps, p in jobs]
        return list(read_batch([q for q, _, _ in jobs], [ps for _, ps, _ in jobs], per_passage=per.pop()))

    def read(self, question: str, passages: list[str], *, per_passage: int | None = None, **kwargs: Any) -> list:
        if kwargs:  # settings the worker does not batch over: read directly
            return self.inner.read(question, passages, per_passage=per_passage, **kwargs)
        return self._batcher.call([(question, list(passages), per_passage)])[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def close(self) -> None:
        self._batcher.close()
