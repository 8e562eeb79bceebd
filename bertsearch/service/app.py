"""The HTTP service: one shared `Index` behind a FastAPI app, its search page at `/`.

Reads (search, ask, documents, info) are open unless a read key is set; writes need the write key, and are
refused when none is set. Keys come from the environment (`BERTSEARCH_WRITE_KEY`, `BERTSEARCH_READ_KEY`) or a
file, never the command line, and are compared in constant time. Every error, 4xx or 5xx, has one shape:
``{"error": {"status", "code", "message"}}``. Requests beyond `max_pending` at once are answered 503 with
`Retry-After` instead of piling up.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..errors import (
    BadArgument,
    BertsearchError,
    CorruptIndex,
    DiskFull,
    IndexBusy,
    IndexClosed,
    IndexNotFound,
    IndexReplaced,
    ModelNotFound,
    ReadOnlyIndex,
    VectorsUnavailable,
)
from ..ingest import as_id
from ..search.retrieve import blank
from . import schemas as s

log = logging.getLogger(__name__)

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         408: "timeout", 409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "bad_request",
         500: "internal", 501: "not_available", 503: "overloaded", 507: "disk_full"}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": s.ErrorResponse, "description": CODES[status].replace("_", " ")}
    for status in (400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 500, 501, 503, 507)
}
NDJSON = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines", "application/ndjson")


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None,
                 kind: str | None = None):
        self.status, self.message, self.code, self.headers = status, message, code or CODES.get(status, "error"), headers
        self.kind = kind


class Keys:
    """The read and write keys: from the environment or a file of ``read=...`` / ``write=...`` lines."""

    def __init__(self, write: str | None = None, read: str | None = None) -> None:
        self.write = write or None
        self.read = read or None

    @classmethod
    def load(cls, environ: dict[str, str], key_file: str | Path | None = None) -> Keys:
        write, read = environ.get("BERTSEARCH_WRITE_KEY"), environ.get("BERTSEARCH_READ_KEY")
        if key_file is not None:
            try:
                lines = Path(key_file).read_text().splitlines()
            except OSError as e:
                raise BadArgument(f"cannot read the key file {key_file} ({e.strerror or e})") from None
            for n, line in enumerate(lines, start=1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                name, sep, value = line.partition("=")
                if not sep or name.strip() not in ("read", "write") or not value.strip():
                    raise BadArgument(f"{key_file}:{n}: expected 'read=KEY' or 'write=KEY'")
                if name.strip() == "write":
                    write = value.strip()
                else:
                    read = value.strip()
        for name, key in (("write", write), ("read", read)):
            if key is not None and len(key) < 16:
                raise BadArgument(f"the {name} key is {len(key)} characters; use at least 16 (e.g. "
                                  "python -c 'import secrets; print(secrets.token_urlsafe(24))')")
        return cls(write, read)


def _matches(given: str, key: str | None) -> bool:
    return key is not None and hmac.compare_digest(given.encode(), key.encode())


class _DocId(Convertor):
    """A document id in a path: any characters, "/" and newlines too (Starlette's `path` stops at a newline, so
    an id holding one could not be fetched, replaced or deleted)."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("docid", _DocId())


def create_app(
    index: Any,
    *,
    keys: Keys | None = None,
    cors_origins: tuple[str, ...] | list[str] = (),
    max_pending: int = 64,
    warm: bool = True,
) -> FastAPI:
    """The app over `index`: an open `Index` (the caller closes it) or an index folder (opened here, closed at
    shutdown). `max_pending`: requests in progress or waiting at once before new ones get 503."""
    keys = keys if keys is not None else Keys()
    state: dict[str, Any] = {"ready": False, "models": {}}
    opened: list[Any] = []  # what `reopen` opened, closed at shutdown
    owned = not hasattr(index, "search")

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        ix = _open(index) if owned else index
        ix.background_rebuild = True  # writes never wait for the vector index; searches see them at once
        app.state.index = ix
        if warm:
            threading.Thread(target=_warm, args=(ix, state), name="bertsearch-warm", daemon=True).start()
        else:
            state["ready"] = True
        try:
            yield
        finally:
            if owned:
                ix.close()
            for other in opened:  # indexes opened again after another process replaced the folder
                other.close()

    app = FastAPI(
        title="bertsearch",
        summary="Offline semantic search: hybrid dense + BM25 retrieval, cross-encoder reranking, extractive answers.",
        version=_version(),
        lifespan=lifespan,
        redirect_slashes=False,  # (/documents/ redirected to /documents, which answered 405: now 404, in our shape)
        responses=ERRORS,  # every route may answer these, in the one error shape
    )
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    app.add_middleware(_Limits, max_pending=max_pending)
    if not owned:  # usable without a lifespan too (an ASGI harness that does not run one)
        app.state.index = index
    bearer = HTTPBearer(auto_error=False, description="A read key (when the server has one) or the write key.")

    def open_reads() -> None:  # no read key: reads need none, and the schema says so
        return None

    def keyed_reads(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        _check(credentials, "read", lambda given: _matches(given, keys.read) or _matches(given, keys.write))

    reader = keyed_reads if keys.read is not None else open_reads

    def writer(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if keys.write is None:
            raise ApiError(403, "this server takes no writes: start it with BERTSEARCH_WRITE_KEY set (or a key file) "
                                "to allow them")
        _check(credentials, "write", lambda given: _matches(given, keys.write))
        if not ix().store.writable:
            raise ApiError(403, f"the index at {ix().path} is read-only on this server (its folder cannot be "
                                "written): it can be searched, not changed", code="read_only")

    Read = Depends(reader)
    Write = Depends(writer)

    def ix() -> Any:
        return app.state.index

    swapping = threading.Lock()
    claims = _Claims()  # the ids each write is working on (see `_Claims`)

    def reopen(e: IndexReplaced) -> str:
        """Open the index folder afresh after another process replaced it (`bertsearch reindex` swaps in the new
        index while this server serves the old one), and serve that from now on; the old one closes once its calls
        in flight are done. What the client is told."""
        from ..engine import Index

        with swapping:
            old = ix()
            try:
                old.store.check_live()
                return "the index was just opened again; retry"  # (another request swapped it in already)
            except IndexReplaced:
                pass
            except BertsearchError:  # closed meanwhile
                return "the index was just opened again; retry"
            try:
                new = Index.open(old.path, reranker=old._reranker_name, reader=old._reader_name)  # (the models named)
            except BertsearchError as err:
                log.error("the index at %s was replaced, and opening it again failed: %s", old.path, err)
                return f"{e} Opening it again failed ({err}); restart the server"
            new.background_rebuild = True
            opened.append(new)
            app.state.index = new
            log.warning("the index at %s was replaced by another process; serving the new one (model %s)", old.path,
                        new.config.model)
        mine = old in opened
        if mine:
            opened.remove(old)
        if owned or mine:  # (an index the caller passed in is the caller's to close)
            threading.Thread(target=old.close, name="bertsearch-close-replaced", daemon=True).start()
        if warm:
            threading.Thread(target=_warm, args=(new, state), name="bertsearch-warm", daemon=True).start()
        return f"the index at {old.path} was replaced by another process (re-indexed or restored); the server now " \
               "serves the new one: retry"

    # -- errors -------------------------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.message, e.code, e.headers, kind=e.kind)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return _error(422, _describe(e.errors()), kind="BadArgument")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        headers = dict(e.headers or {})
        if e.status_code == 405:  # name every method the path takes (a path with GET and POST lists both)
            path = request.scope["path"]  # a fixed path's own routes, else those of the templates it fits
            routes = [r for r in app.routes if getattr(r, "path", None) == path] or [
                r for r in app.routes if getattr(r, "path_regex", None) and r.path_regex.match(path)]
            methods = sorted({m for r in routes for m in getattr(r, "methods", ()) or ()})
            headers["Allow"] = ", ".join(methods)
            return _error(405, f"{request.method} is not allowed on {request.url.path}; use {', '.join(methods)}",
                          headers=headers)
        if e.status_code == 404:
            return _error(404, f"no such endpoint: {request.url.path}; the API is listed at /docs")
        detail = e.detail if isinstance(e.detail, str) else json.dumps(e.detail)
        if e.status_code == 400 and detail == "There was an error parsing the body":  # FastAPI's own words
            if isinstance(e.__cause__, (_TooLarge, _SlowBody)):  # (the limits' own, met while FastAPI read the body)
                raise e.__cause__
            return _error(400, "the body could not be read as JSON: it is not UTF-8 text, or it nests arrays or "
                               "objects too deeply; send a JSON object", kind="BadArgument")
        return _error(e.status_code, detail, headers=headers)

    @app.exception_handler(BertsearchError)
    async def engine_error(request: Request, e: BertsearchError) -> JSONResponse:
        message, code, headers = str(e), None, None
        if isinstance(e, IndexReplaced):  # re-indexed or restored by another process: the new index is opened
            status, code, headers = 503, "replaced", {"Retry-After": "1"}
            message = await run_in_threadpool(reopen, e)
        elif isinstance(e, IndexBusy):
            status, code, headers = 503, "busy", {"Retry-After": "2"}
        elif isinstance(e, IndexClosed) and not _closing(ix()):  # a call on the index a swap just replaced
            status, code, headers = 503, "replaced", {"Retry-After": "1"}
            message = "the index was replaced by another process and the server now serves the new one: retry"
        elif isinstance(e, IndexClosed):
            status, code, headers = 503, "not_ready", {"Retry-After": "5"}
            message = "the server is shutting down; try again shortly"
        elif isinstance(e, VectorsUnavailable):  # a Milvus server down: lexical search and writes still work
            status, code, headers = 503, "vectors_unavailable", {"Retry-After": "5"}
            log.warning("%s %s: %s", request.method, request.url.path, e)
        elif isinstance(e, ModelNotFound):
            status = 501
        elif isinstance(e, ReadOnlyIndex):  # the server's state, not the request's fault
            status, code = 403, "read_only"
        elif isinstance(e, DiskFull):
            status = 507
        elif isinstance(e, (CorruptIndex, IndexNotFound)):
            status = 500
        else:
            status = 400
        if status >= 500 and status != 503:
            log.error("%s", e)
        return _error(status, message, code, headers, kind=type(e).__name__)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(e).__name__}); the server's log has the details")

    # -- health ---------------------------------------------------------------------------------------

    @app.get("/health", response_model=s.Health, tags=["health"], summary="Liveness (no key needed)")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", response_model=s.Ready, tags=["health"], summary="Readiness: 503 until the models have loaded",
             responses={503: {"model": s.Ready, "description": "still loading"}})
    def ready() -> Any:
        body = {"status": "ready" if state["ready"] else "loading", "models": dict(state["models"])}
        return body if state["ready"] else JSONResponse(body, status_code=503, headers={"Retry-After": "2"})

    @app.get("/info", response_model=s.Info, tags=["index"], dependencies=[Read], summary="What the index holds")
    def info() -> dict[str, Any]:
        data = ix().info()
        return {**data, "writable": keys.write is not None and ix().store.writable,
                "limits": {"k": s.MAX_K, "query_chars": s.MAX_QUERY_CHARS, "batch": s.MAX_BATCH,
                           "documents_per_write": s.MAX_DOCUMENTS, "body_bytes": s.MAX_BODY_BYTES}}

    # -- search ---------------------------------------------------------------------------------------

    def run_search(req: s.SearchRequest) -> dict[str, Any]:
        index = ix()
        query = _query(req.query)
        hits = index.search(query, k=req.k, mode=req.mode, where=req.where, rerank=req.rerank,
                            rerank_depth=req.rerank_depth, rerank_penalty=req.rerank_penalty)
        return {"query": index.cut_query(query, req.mode)[0], "mode": req.mode, "k": req.k,
                "hits": [h.to_dict() for h in hits], "timings": hits.timings}

    @app.post("/search", response_model=s.SearchResponse, tags=["search"], dependencies=[Read],
              summary="Search: the top k documents, each with its best chunk")
    def search_post(req: s.SearchRequest) -> dict[str, Any]:
        return run_search(req)

    @app.get("/search", response_model=s.SearchResponse, tags=["search"], dependencies=[Read],
             summary="Search, with the query in the URL")
    def search_get(
        q: Annotated[str, Query(min_length=1, max_length=s.MAX_QUERY_CHARS, description="Words to search for.")],
        k: Annotated[int, Query(ge=1, le=s.MAX_K)] = 10,
        mode: s.Mode = "hybrid",
        where: Annotated[str | None, Query(max_length=s.MAX_QUERY_CHARS)] = None,
        rerank: bool = False,
        rerank_depth: Annotated[int | None, Query(ge=1, le=s.MAX_K, description="Candidates the cross-encoder re-scores.")] = None,
        rerank_penalty: Annotated[float | None, Query(ge=0, le=100, description="Logits lost per first-stage place.")] = None,
    ) -> dict[str, Any]:
        return run_search(s.SearchRequest(query=q, k=k, mode=mode, where=where, rerank=rerank, rerank_depth=rerank_depth,
                                          rerank_penalty=rerank_penalty))

    @app.post("/search/batch", response_model=s.BatchSearchResponse, tags=["search"], dependencies=[Read],
              summary=f"Several searches in one call (at most {s.MAX_BATCH})")
    def search_batch(req: s.BatchSearchRequest) -> dict[str, Any]:
        index = ix()
        for q in req.queries:
            if len(q) > s.MAX_QUERY_CHARS:
                raise ApiError(422, f"a query is {len(q)} characters; the limit is {s.MAX_QUERY_CHARS}")
        queries = [_query(q, f" (number {i + 1} of the batch)") for i, q in enumerate(req.queries)]
        results = index.batch_search(queries, k=req.k, mode=req.mode, where=req.where, rerank=req.rerank)
        return {"results": [{"query": index.cut_query(q, req.mode)[0], "mode": req.mode, "k": req.k,
                             "hits": [h.to_dict() for h in hits], "timings": hits.timings}
                            for q, hits in zip(queries, results)]}

    @app.post("/ask", response_model=s.AskResponse, tags=["search"], dependencies=[Read],
              summary="Answer a question: retrieve, rerank, and extract answer spans (or say there is none)")
    def ask(req: s.AskRequest) -> dict[str, Any]:
        result = ix().ask(_query(req.question), k=req.k, passages=req.passages, hits=req.hits, mode=req.mode,
                          where=req.where, rerank=req.rerank, min_confidence=req.min_confidence)
        return result.to_dict()

    # -- documents ------------------------------------------------------------------------------------

    @app.get("/documents/{doc_id:docid}", response_model=s.DocumentOut, tags=["documents"], dependencies=[Read],
             summary="A stored document")
    def get_document(doc_id: str) -> dict[str, Any]:
        doc = ix().get(doc_id)
        if doc is None:
            raise ApiError(404, f"no document with id {doc_id!r}")
        return {k: doc[k] for k in ("id", "title", "text", "metadata", "updated_at")}

    body_doc = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/DocumentsIn"}},
        "application/x-ndjson": {"schema": {"type": "string", "description": "One document (JSON object) per line."}},
    }}}

    @app.post("/documents", response_model=s.WriteReport, tags=["documents"], dependencies=[Write],
              openapi_extra=body_doc, summary="Add documents; an id already stored is refused (409)")
    async def add_documents(request: Request) -> Any:
        docs = await _documents(request)
        return await _in_thread(write, docs, replace=False)

    @app.put("/documents", response_model=s.WriteReport, tags=["documents"], dependencies=[Write],
             openapi_extra=body_doc, summary="Upsert documents: new ids are added, stored ones replaced")
    async def upsert_documents(request: Request) -> Any:
        docs = await _documents(request)
        return await _in_thread(write, docs, replace=True)

    @app.put("/documents/{doc_id:docid}", response_model=s.WriteReport, tags=["documents"], dependencies=[Write],
             summary="Upsert one document")
    def put_document(doc_id: str, body: s.DocumentBody) -> dict[str, Any]:
        fields = body.model_dump()
        if "id" in fields and str(fields["id"]) != doc_id:
            raise ApiError(422, f"the body's id {fields['id']!r} is not the path's {doc_id!r}; leave it out of the body "
                                "(the path names the document)")
        return write([{**fields, "id": doc_id}], replace=True)

    @app.delete("/documents/{doc_id:docid}", response_model=s.DeleteResponse, tags=["documents"], dependencies=[Write],
                summary="Delete one document")
    def delete_document(doc_id: str) -> dict[str, Any]:
        index = ix()
        with claims.hold([doc_id]):
            n = index.delete([doc_id])
        if n == 0:
            raise ApiError(404, f"no document with id {doc_id!r}")
        return {"deleted": n, "documents": index.store.counts()["documents"]}

    @app.post("/documents/delete", response_model=s.DeleteResponse, tags=["documents"], dependencies=[Write],
              summary="Delete by ids or by a filter (one or the other); dry_run says what would go")
    def delete_documents(req: s.DeleteRequest) -> dict[str, Any]:
        index = ix()
        if req.dry_run:
            gone = index.to_delete(req.ids or [], where=req.where)
            return {"deleted": 0, "would_delete": gone, "documents": index.store.counts()["documents"]}
        if req.ids and req.where is not None:
            raise ApiError(400, "give ids or a filter (where), not both: delete by ids, then by the filter, as two "
                                "requests; dry_run shows what each would delete", kind="BadArgument")
        with claims.hold([as_id(i) for i in req.ids or []]):
            n = index.delete(req.ids or [], where=req.where)
        return {"deleted": n, "documents": index.store.counts()["documents"]}

    def write(docs: list[dict[str, Any]], *, replace: bool) -> dict[str, Any]:
        index = ix()
        ids = [as_id(d["id"]) for d in docs]
        empty = [i for i, d in zip(ids, docs) if not (d.get("text") or "").strip() and not (d.get("title") or "").strip()]
        if empty:
            raise ApiError(422, f"{len(empty)} of these documents have neither text nor title ({', '.join(empty[:5])}), "
                                "so nothing would be stored; DELETE /documents/{id} removes a document", kind="BadArgument")
        with claims.hold(ids):  # no other write of these ids between the check and the add: one POST of an id wins
            if not replace:
                taken = index.store.existing(ids)
                if taken:
                    raise ApiError(409, f"{len(taken)} of these ids are already stored ({', '.join(taken[:5])}); "
                                        "PUT /documents replaces stored documents")
            report = index.add(docs)
        return {**{k: getattr(report, k) for k in s.WriteReport.model_fields if hasattr(report, k)},
                "documents": index.store.counts()["documents"]}

    # -- the page -------------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8"))

    return app


def _check(credentials: HTTPAuthorizationCredentials | None, what: str, ok: Callable[[str], bool]) -> None:
    if credentials is None or not credentials.credentials:
        raise ApiError(401, f"this needs the {what} key: send 'Authorization: Bearer KEY'",
                       headers={"WWW-Authenticate": "Bearer"})
    if not ok(credentials.credentials):
        raise ApiError(403, f"the key sent is not the {what} key")


def _query(text: str, which: str = "") -> str:
    """`text`, refused (422, as an empty string is by the schema) when it holds nothing but spaces and control
    characters; `which` names it within a batch."""
    if blank(text):
        raise ApiError(422, f"empty query{which}; give some words to search for", kind="BadQuery")
    return text


async def _documents(request: Request) -> list[dict[str, Any]]:
    """The documents of a write body: JSON ({"documents": [...]} or a list) or NDJSON (one object a line)."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    try:
        raw = await request.body()
    except ClientDisconnect:  # nobody to answer: nothing was written, and it is no error of the server's
        log.info("%s %s: the client closed the connection before sending the whole body", request.method,
                 request.url.path)
        raise ApiError(400, "the connection closed before the whole body came") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, f"the body is not UTF-8 text (byte {e.start})") from None
    if kind in NDJSON:
        items = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ApiError(400, f"line {n} of the body is not JSON ({e.msg})") from None
                except RecursionError:
                    raise ApiError(400, TOO_DEEP, kind="BadArgument") from None
        body: Any = {"documents": items}
    elif kind in ("application/json", "text/json") or kind.endswith("+json"):
        try:
            body = json.loads(text)
        except json.JSONDecodeError as e:
            raise ApiError(400, f"the body is not JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
        except RecursionError:
            raise ApiError(400, TOO_DEEP, kind="BadArgument") from None
        if isinstance(body, list):
            body = {"documents": body}
    else:
        raise ApiError(415, f"send the documents as application/json or application/x-ndjson, not {kind}")
    try:
        docs = _DOCUMENTS.validate_python(body)
        return [{**d.model_dump(exclude={"metadata"}), "metadata": d.metadata} for d in docs.documents]
    except ValidationError as e:
        raise ApiError(422, _describe(e.errors())) from None
    except RecursionError:  # (metadata of lists within lists, thousands deep)
        raise ApiError(400, TOO_DEEP, kind="BadArgument") from None


_DOCUMENTS = TypeAdapter(s.DocumentsIn)
TOO_DEEP = "the body nests arrays or objects too deeply (hundreds of levels); send metadata of a few levels"


async def _in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args, **kwargs)


def _describe(errors: Any) -> str:
    """One line from pydantic's errors: where each is, and what is wrong."""
    parts = []
    for e in list(errors)[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        msg = e.get("msg", "invalid")
        if e.get("type") == "json_invalid":
            where, msg = "body", f"not valid JSON ({e.get('ctx', {}).get('error', 'a syntax error')} at character {e['loc'][-1]})"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts) + ("; ..." if len(list(errors)) > 5 else "")


def _error(status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None, *,
           kind: str | None = None) -> JSONResponse:
    """The one error shape. `kind`: the exception a program calling `Index` in-process would get (`connect` raises
    it too)."""
    body: dict[str, Any] = {"status": status, "code": code or CODES.get(status, "error"), "message": message}
    if kind is not None:
        body["kind"] = kind
    return JSONResponse({"error": body}, status_code=status, headers=headers)


class _Limits:
    """ASGI middleware: a body larger than MAX_BODY_BYTES gets 413 (by its Content-Length, or as it streams in),
    and a request beyond `max_pending` in progress at once gets 503 with Retry-After (health checks always pass)."""

    def __init__(self, app: Any, *, max_pending: int) -> None:
        self.app = app
        self.max_pending = max_pending
        self.pending = 0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "HEAD":  # a HEAD is the GET without its body (monitors and `curl -I` send it)
            scope = dict(scope, method="GET")
            send = _headers_only(send)
        if scope["path"] in ("/health", "/ready"):
            await self.app(scope, receive, send)
            return
        try:  # (decoded with replacement characters otherwise: %FF was searched for as U+FFFD, a document id too)
            unquote_to_bytes(scope.get("query_string", b"").decode("latin-1")).decode("utf-8")
            unquote_to_bytes((scope.get("raw_path") or b"").decode("latin-1")).decode("utf-8")
        except UnicodeDecodeError:
            await _error(400, "the URL is not UTF-8 once decoded: percent-encode the UTF-8 bytes of each parameter "
                              "and document id", kind="BadQuery")(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if scope["method"] in ("POST", "PUT", "PATCH"):
            kind = headers.get(b"content-type", b"application/x-www-form-urlencoded").split(b";")[0].strip().lower()
            if kind == b"application/x-www-form-urlencoded":
                # curl -d sends a JSON body as a form unless told otherwise: this API takes no forms, so it reads JSON
                scope = dict(scope, headers=[(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
                             + [(b"content-type", b"application/json")])
            elif not (kind in (b"application/json", b"text/json") or kind.endswith(b"+json")
                      or kind.decode("latin-1") in NDJSON):
                name = kind.decode("latin-1")[:80] or "an empty content type"
                await _error(415, f"send the body as application/json (documents also as application/x-ndjson), "
                             f"not {name}")(scope, receive, send)
                return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > s.MAX_BODY_BYTES:
            await _error(413, f"the body is {int(length)} bytes; the limit is {s.MAX_BODY_BYTES}")(scope, receive, send)
            return
        if self.pending >= self.max_pending:
            await _error(503, f"the server is busy ({self.pending} requests in progress); retry after a second",
                         headers={"Retry-After": "1"})(scope, receive, send)
            return
        self.pending += 1
        seen = 0
        done = scope["method"] not in ("POST", "PUT", "PATCH")  # the body read whole (or none to read)
        deadline = None

        async def limited() -> dict:
            nonlocal seen, done, deadline
            if done:
                return await receive()
            now = asyncio.get_running_loop().time()
            deadline = deadline or now + BODY_SECONDS
            try:  # a body that stops coming frees its place: slow senders cannot hold every one
                message = await asyncio.wait_for(receive(), min(BODY_IDLE_SECONDS, max(deadline - now, 0.001)))
            except TimeoutError:
                raise _SlowBody() from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > s.MAX_BODY_BYTES:
                    raise _TooLarge()
                done = not message.get("more_body", False)
            return message

        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except _TooLarge:
            if not started:
                await _error(413, f"the body is over the limit of {s.MAX_BODY_BYTES} bytes")(scope, receive, send)
        except _SlowBody:
            if not started:
                await _error(408, f"the body did not come in time ({BODY_IDLE_SECONDS:.0f} s without a byte, or "
                                  f"{BODY_SECONDS:.0f} s in all); send it at once, or in smaller requests",
                             headers={"Connection": "close"})(scope, receive, send)
        finally:
            self.pending -= 1


class _TooLarge(Exception):
    pass


class _SlowBody(Exception):
    pass


BODY_IDLE_SECONDS = 30.0
"""How long a request's body may pause, and how long it may take in all: a client that opens requests and sends
their bodies a byte at a time (or never) would otherwise hold every place in `max_pending` (found 2026-12-06)."""
BODY_SECONDS = 120.0


class _Claims:
    """Document ids that a write of this server is working on: a write waits until none of its ids is another's, so
    that a check of what is stored and the write that follows it are one step for those ids (two POSTs of one new
    id: one adds it, the other gets 409; neither overwrites the other)."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._cv = threading.Condition()

    @contextmanager
    def hold(self, ids: list[str], timeout: float = 30.0) -> Iterator[None]:
        """Hold `ids` for the block, once no other write holds any of them; IndexBusy (503) after `timeout` seconds
        (a waiting write holds a worker thread, which reads need too)."""
        mine = set(ids)
        with self._cv:
            if not self._cv.wait_for(lambda: not (mine & self._held), timeout=timeout):
                raise IndexBusy(f"another write of some of these documents has run for {timeout:.0f} s and goes on; "
                                "retry when it finishes")
            self._held |= mine
        try:
            yield
        finally:
            with self._cv:
                self._held -= mine
                self._cv.notify_all()


def _closing(index: Any) -> bool:
    """Whether the index served now is closing or closed (the server shutting down)."""
    gate = getattr(index, "_gate", None)
    return bool(gate.closed) if gate is not None else index.store.closed


def _headers_only(send: Callable) -> Callable:
    """`send` with the response's body left out (its headers, Content-Length included, kept): HEAD's answer."""

    async def headers_only(message: dict) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return headers_only


def _open(path: Any) -> Any:
    from ..engine import Index

    return Index.open(path)


def _warm(ix: Any, state: dict[str, Any]) -> None:
    """Load the models before the first request needs them: the encoder, and the reranker and reader when the
    index has them. /ready answers 200 once done."""
    try:
        ix.encoder.encode(["warm up"])
        state["models"]["encoder"] = ix.config.model
        for role, warm in (("reranker", lambda: ix.reranker.score("warm", ["up"])),
                           ("reader", lambda: ix.reader.read("warm?", ["up"]))):
            try:
                warm()
                state["models"][role] = getattr(getattr(ix, role), "name", role)
            except ModelNotFound as e:
                state["models"][role] = f"none ({e})"
    except Exception as e:  # noqa: BLE001 - the server stays up and says so on /ready
        log.error("loading the models failed: %s", e)
        state["models"]["error"] = str(e)
        return
    state["ready"] = True


def _version() -> str:
    from .. import __version__

    return __version__
