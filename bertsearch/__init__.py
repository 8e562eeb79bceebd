"""bertsearch: offline semantic search. Index documents, search them with dense + BM25 hybrid retrieval.

    import bertsearch
    ix = bertsearch.open_index("indexes/demo", create=True)
    ix.add([{"id": "a", "title": "Aurora", "text": "An aurora is a natural light display ..."}])
    for hit in ix.search("what causes the northern lights", k=5):
        print(hit.rank, hit.doc_id, hit.score)
"""

from __future__ import annotations

from typing import Any

from .errors import BertsearchError
from .types import Answer, AskResult, Document, Hit, Hits, IndexReport

__version__ = "0.1.0"
__all__ = ["Answer", "AskResult", "BertsearchError", "Document", "Hit", "Hits", "Index", "IndexReport", "connect", "open_index",
           "__version__"]


def open_index(path: str, **kwargs: Any) -> Any:
    """Open the index at `path` (see `Index.open` for the options, e.g. `create=True`, `model=...`)."""
    from .engine import Index

    return Index.open(path, **kwargs)


def connect(url: str, *, key: str | None = None, **kwargs: Any) -> Any:
    """A remote index served by `bertsearch serve` at `url`, with the calls of `Index` (search, batch_search, ask,
    get, add, delete, info); `key` is the write key, or the read key when reads need one."""
    from .service.client import RemoteIndex

    return RemoteIndex(url, key=key, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "Index":  # imported lazily so that `import bertsearch` stays light
        from .engine import Index

        return Index
    raise AttributeError(name)
