"""`bertsearch serve`: the HTTP service over one index (see bertsearch.service)."""

from __future__ import annotations

import errno
import os
import socket

import click

from ..errors import BadArgument, MissingDependency
from .options import index_option, model_option, query_backend_option, reader_option, reranker_option


@click.command("serve")
@index_option
@model_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False, path_type=str), default=None,
              help="A file of 'write=KEY' and 'read=KEY' lines (else $BERTSEARCH_WRITE_KEY, $BERTSEARCH_READ_KEY).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Let pages from ORIGIN call the API from a browser (repeatable; default: none).")
@click.option("--max-pending", type=click.IntRange(min=1), default=64, show_default=True,
              help="Requests in progress or waiting at once; beyond, 503 with Retry-After.")
@reranker_option
@reader_option
@query_backend_option
def serve_command(index_path: str, model: str | None, host: str, port: int, key_file: str | None,
                  cors_origins: tuple[str, ...], max_pending: int, reranker: str | None, reader: str | None) -> None:
    """Serve an index over HTTP: search, ask, documents, and a search page at /.

    Reads are open unless a read key is set; writes need the write key and are refused without one.
    Keys come from the environment or --key-file, never from the command line. The API is listed at /docs.

    \b
    bertsearch serve --index indexes/demo
    bertsearch serve --index indexes/mine --reranker models/my-reranker --reader models/my-reader
    BERTSEARCH_WRITE_KEY=... bertsearch serve --index indexes/demo --host 0.0.0.0 --port 8080
    curl -s localhost:8000/search -H 'content-type: application/json' -d '{"query": "northern lights", "k": 5}'
    """
    try:
        import uvicorn
    except ImportError:
        raise MissingDependency("bertsearch[service]", "bertsearch serve") from None
    from ..engine import Index
    from ..service.app import Keys, create_app
    from . import render

    keys = Keys.load(dict(os.environ), key_file)
    _one_thread_per_search()
    # a missing or damaged index fails here, before the server starts
    ix = Index.open(index_path, model=model, reranker=reranker, reader=reader)
    try:
        ix.require_model()  # and so does one whose model cannot be found (a lexical search alone would work)
        for role, name in (("reranker", reranker), ("reader", reader)):
            if name is not None:  # a model the user named is loaded now: a wrong one fails here, not at each /ask
                getattr(ix, role)
        sock = _listen(host, port)  # a port in use, or an address not of this machine, fails here too
        app = create_app(ix, keys=keys, cors_origins=cors_origins, max_pending=max_pending)
        reads = "reads need the read key" if keys.read else "reads open"
        writes = ("writes refused (no write key)" if not keys.write else "writes refused (the index is read-only)"
                  if not ix.store.writable else "writes need the write key")
        render.err.print(f"serving {index_path} on http://{_url_host(host)}:{port}/ ({reads}, {writes}); Ctrl-C stops")
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=30))
        server.run(sockets=[sock])
    finally:
        ix.close()
        from . import leave_at_once

        leave_at_once()  # (the models' warm-up thread may still be loading one: Ctrl-C soon after start aborted)


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port`, for the server to listen on; a clear error when it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise BadArgument(f"cannot listen on {host!r} ({e.strerror}); give --host an address of this machine, such "
                          "as 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart need not wait
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise BadArgument(f"port {port} on {host} is in use (another server, or another bertsearch serve?); stop "
                              "it, or give --port another number") from None
        raise BadArgument(f"cannot listen on {host}:{port} ({e.strerror}); give --host an address of this machine, "
                          "and a --port above 1023 unless running as root") from None
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _one_thread_per_search() -> None:
    """Concurrent requests are the service's parallelism: a FAISS search on many OpenMP threads at once from many
    requests oversubscribes the cores, so each search runs on one (the encoder keeps its own threads)."""
    try:
        import faiss
    except ImportError:
        return
    faiss.omp_set_num_threads(1)
