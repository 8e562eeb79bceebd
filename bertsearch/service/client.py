"""A program's view of a remote index: the calls of `Index` over the HTTP API of `bertsearch serve`.

>>> ix = bertsearch.connect("http://127.0.0.1:8000")          # or key="..." for writes (or a read key)
>>> ix.search("northern lights", k=5)[0].doc_id
>>> ix.ask("when did Alexander Fleming discover penicillin").answers[0].text
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .. import errors
from ..errors import BertsearchError, MissingDependency
from ..filters import BadFilter
from ..types import Answer, AskResult, Document, Hit, Hits, IndexReport


class RemoteError(BertsearchError):
    """The server refused a request or failed: `status` is its HTTP status (0: no answer), the message its own. Where
    the server names the exception a program would get in process (BadQuery, BadFilter, ...), the error is that one's
    class too: `except BadFilter` catches a bad filter over HTTP as it does in process."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        Exception.__init__(self, f"{message} (HTTP {status})" if status else message)


KINDS = {cls.__name__: cls for cls in (errors.BadQuery, errors.BadArgument, BadFilter, errors.ModelMismatch,
                                        errors.ModelNotFound, errors.IndexBusy, errors.IndexReplaced,
                                        errors.ReadOnlyIndex, errors.DiskFull, errors.CorruptIndex, errors.IndexNotFound,
                                        errors.CorpusError)}
"""The exceptions a server's error can carry over (its `kind`): each is raised as a RemoteError of that class too."""
_REMOTE = {name: type(f"Remote{name}", (RemoteError, cls), {"__module__": __name__}) for name, cls in KINDS.items()}


class RemoteIndex:
    """An index served at `url`. `key`: the write key (for writes) or the read key (when reads need one).
    `client`: an `httpx.Client` to use instead of a new one (tests pass one bound to the app itself)."""

    def __init__(self, url: str, *, key: str | None = None, timeout: float = 60.0, client: Any = None) -> None:
        try:
            import httpx
        except ImportError:
            raise MissingDependency("httpx", "bertsearch.connect") from None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = client if client is not None else httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        self._headers = headers

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------------

    def search(self, query: str, k: int = 10, mode: str = "hybrid", *, where: str | None = None, rerank: bool = False,
               rerank_depth: int | None = None, rerank_penalty: float | None = None) -> Hits:
        body = {"query": query, "k": k, "mode": mode, "where": where, "rerank": rerank, "rerank_depth": rerank_depth,
                "rerank_penalty": rerank_penalty}
        return _hits(self._call("POST", "/search", body))

    def batch_search(self, queries: list[str], k: int = 10, mode: str = "hybrid", *, where: str | None = None,
                     rerank: bool = False, batch_size: int = 32) -> list[Hits]:
        """As `Index.batch_search`; sent `batch_size` queries a request (the server takes at most 32)."""
        if isinstance(queries, str):
            raise errors.BadArgument("batch_search takes a list of queries; use search() for one")
        queries, results = list(queries), []
        for i in range(0, len(queries), batch_size):
            data = self._call("POST", "/search/batch", {"queries": queries[i : i + batch_size], "k": k, "mode": mode,
                                                         "where": where, "rerank": rerank})
            results += [_hits(r) for r in data["results"]]
        return results

    def ask(self, question: str, *, k: int = 3, passages: int = 5, mode: str = "hybrid", where: str | None = None,
            rerank: bool = True, hits: int | None = None, min_confidence: float | None = None) -> AskResult:
        body: dict[str, Any] = {"question": question, "k": k, "passages": passages, "mode": mode, "where": where,
                                "rerank": rerank, "hits": hits, "min_confidence": min_confidence}
        data = self._call("POST", "/ask", body)
        best = data.get("best_candidate")
        return AskResult(question=data["question"], answers=[Answer(**a) for a in data["answers"]],
                         hits=[Hit(**h) for h in data["hits"]], abstained=data["abstained"], timings=data["timings"],
                         no_answer_probability=data.get("no_answer_probability"),
                         best_candidate=Answer(**best) if best else None, min_confidence=data.get("min_confidence"))

    def get(self, doc_id: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", f"/documents/{_quote(doc_id)}")
        except RemoteError as e:
            if e.status == 404:
                return None
            raise

    def info(self) -> dict[str, Any]:
        return self._call("GET", "/info")

    # -- writing ------------------------------------------------------------------------------------

    def add(self, docs: Iterable[Document | dict[str, Any]], *, replace: bool = True, batch_size: int = 500) -> IndexReport:
        """Add documents; stored ids are replaced (with `replace=False` a stored id is refused, and that batch is
        not written). Sent `batch_size` documents a request."""
        total = IndexReport()
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            data = self._call("PUT" if replace else "POST", "/documents", {"documents": batch})
            for name in ("read", "added", "replaced", "unchanged", "metadata_updated", "empty", "duplicates",
                         "deleted", "chunks", "truncated"):
                setattr(total, name, getattr(total, name) + data[name])
            total.seconds += data["seconds"]
            batch.clear()

        for d in docs:
            batch.append(_as_dict(d))
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
        return total

    def delete(self, ids: Iterable[str] = (), *, where: str | None = None, dry_run: bool = False) -> int:
        data = self._call("POST", "/documents/delete", {"ids": list(ids) or None, "where": where, "dry_run": dry_run})
        return len(data["would_delete"]) if dry_run else data["deleted"]

    def to_delete(self, ids: Iterable[str] = (), *, where: str | None = None) -> list[str]:
        data = self._call("POST", "/documents/delete", {"ids": list(ids) or None, "where": where, "dry_run": True})
        return data["would_delete"]

    # -- the wire -----------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if v is not None}
        try:
            r = self._http.request(method, path, json=body, headers=self._headers)
        except httpx.HTTPError as e:
            raise RemoteError(0, f"cannot reach the server ({e}); is 'bertsearch serve' running there?") from None
        if r.status_code >= 400:
            kind = None
            try:
                error = r.json()["error"]
                message, kind = error["message"], error.get("kind")
            except (ValueError, KeyError, TypeError):
                message = r.text[:200] or r.reason_phrase
            raise _REMOTE.get(kind, RemoteError)(r.status_code, message)
        return r.json()


def _hits(data: dict[str, Any]) -> Hits:
    return Hits([Hit(**h) for h in data["hits"]], data["timings"])


def _as_dict(d: Document | dict[str, Any]) -> dict[str, Any]:
    if isinstance(d, Document):
        return {"id": d.id, "text": d.text, "title": d.title, "metadata": d.metadata}
    return json.loads(json.dumps(d, default=str))


def _quote(doc_id: str) -> str:
    from urllib.parse import quote

    quoted = quote(doc_id, safe="")
    return quoted.replace(".", "%2E") if set(doc_id) == {"."} else quoted  # "." and ".." are not path steps
