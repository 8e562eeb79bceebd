"""Milvus as the vector backend: milvus-lite embedded in the index folder (`<index>/milvus.db`), or a Milvus server
or cluster by URI (`http://host:19530`; credentials as `http://user:password@host:19530`).

The store stays the truth. One collection per index, named from the store's epoch (`bertsearch_<epoch>_<n>`), so a
restored or re-indexed store never trusts a collection of another history; the collection and the feed position it
holds are recorded in the store's meta (`milvus_position`) once Milvus has acknowledged the writes. `sync` applies the
change feed since that position (live chunks upserted, never inserted: a server would keep duplicates; gone ones
deleted by primary key), and loads everything afresh, into a new collection swapped in when complete, when the
collection is missing, of another epoch or Milvus, behind a pruned feed, or holds another number of rows than the
store after a restart. A crash between Milvus's acknowledgement and the meta write replays the feed: idempotent.

Fields: `id` (INT64, the chunk id, primary key), `doc_id` (VARCHAR), `metadata` (JSON, the document's metadata as
stored), `typed` (JSON, the metadata flattened by type, for filters: see below) and `vector` (FLOAT_VECTOR, metric IP).

The index type comes from the index's `ann` setting:

    flat   FLAT (exact)                       hnsw   HNSW, M=16, efConstruction=200; searched with ef=max(128, 2k)
    ivf    IVF_FLAT, nlist=1024, nprobe=64     ivfpq  IVF_SQ8 (milvus-lite refuses IVF_PQ), same nlist and nprobe
    milvus:TYPE[:{JSON}]                      any Milvus index type with its build parameters; a "search" key holds
                                              the search parameters: milvus:HNSW:{"M":32,"search":{"ef":256}}

Only FLAT and BRUTE_FORCE are `exact`; the engine re-scores the candidates of the others from the stored vectors.
Other FAISS factory strings are refused.

Filters are evaluated by Milvus with the store's semantics (`bertsearch.filters`: type-strict, a missing key or a
null never matches a comparison, `not` is plain negation). Milvus compares JSON values loosely (`meta["x"] == 1` holds
for `true`, `!=` holds across types, and a missing key makes a predicate unknown, so `not (x > 3)` drops documents
without x), so each chunk also carries `typed`: one key per metadata path and type (`n_`, `s_`, `b_` for numbers,
strings and booleans, `v_` for any value that is not null; path parts hex-encoded), and a comparison reads only the
key of its literal's type, guarded by `exists`. The `id` column is the `doc_id` field; `title` and `updated_at` are not
stored in Milvus: a filter naming them (or holding a string Milvus cannot spell) is searched as `id in [the matching
chunk ids]`. Approximate indexes lose recall, and can return fewer than k hits, under a selective filter (it thins
the graph HNSW walks): when the engine passes the matching ids, ef and nprobe are widened by the inverse of the share
of rows that match (ef = 2k / share: 2,000 at 1%); a row still short is searched again exhaustively (ef or nprobe at
their maximum), then exactly over the matching chunks' stored vectors, so k hits come back whenever k chunks match.
What remains approximate is which k: recall@10 at 100k rows was 0.998 under a 1% filter (measured, see
docs/measurements/milvus.md); the engine searches filters matching at most 20,000 chunks exactly itself.

Differences between milvus-lite and a server that matter here (see docs/measurements/milvus.md): milvus-lite serves
one process per folder (others use `milvus-lite server --data-dir <index>/milvus.db` and the URI); it overwrites on
insert; its write-ahead log is not fsynced per batch (a power cut can lose acknowledged rows: the next process's first
sync counts the rows and reloads when they differ from the store); it releases collections on reopen.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..errors import BadArgument, BertsearchError, MissingDependency, VectorsUnavailable
from ..filters import And, Between, Compare, Field, Filter, In, IsNull, Not, Or
from .base import Applied, VectorBackend

log = logging.getLogger(__name__)

META_KEY = "milvus_position"
LITE_FILE = "milvus.db"
BATCH = 2000
"""Rows a call upserts or deletes (2000 x 384 float32 is about 3 MB of gRPC message)."""
CONNECT_TIMEOUT = 5.0
MAX_EF = 32768
EXACT_TYPES = ("FLAT", "BRUTE_FORCE")
LITE_TYPES = ("FLAT", "BRUTE_FORCE", "AUTOINDEX", "HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8")
"""What milvus-lite 3.2 builds; it accepts IVF_PQ, DISKANN and SCANN at creation, then fails to build or load them."""
IVF_NLIST = 1024
IVF_NPROBE = 64

_lite_users: dict[str, int] = {}  # milvus-lite data folder -> backends of this process using its server
_lite_lock = threading.Lock()


def index_settings(ann: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(Milvus index type, build parameters, search parameters) for an `ann` setting."""
    if ann == "flat":
        return "FLAT", {}, {}
    if ann == "hnsw":
        return "HNSW", {"M": 16, "efConstruction": 200}, {}
    if ann == "ivf":
        return "IVF_FLAT", {"nlist": IVF_NLIST}, {"nprobe": IVF_NPROBE}
    if ann == "ivfpq":
        log.info("ann ivfpq on Milvus is IVF_SQ8: milvus-lite refuses IVF_PQ (name it with milvus:IVF_PQ on a server)")
        return "IVF_SQ8", {"nlist": IVF_NLIST}, {"nprobe": IVF_NPROBE}
    if ann.startswith("milvus:"):
        kind, _, params = ann[len("milvus:"):].partition(":")
        if not kind.replace("_", "").isalnum():
            raise BadArgument(f"bad ANN setting {ann!r}: write milvus:TYPE or milvus:TYPE:{{JSON}}, e.g. milvus:HNSW:{{\"M\":32}}")
        try:
            build = json.loads(params) if params else {}
        except json.JSONDecodeError as e:
            raise BadArgument(f"bad ANN setting {ann!r}: the parameters are not JSON ({e})") from None
        if not isinstance(build, dict) or not isinstance(build.get("search", {}), dict):
            raise BadArgument(f"bad ANN setting {ann!r}: the parameters must be a JSON object (\"search\": an object)")
        search = build.pop("search", {})
        return kind.upper(), build, search
    raise BadArgument(f"the Milvus backend takes ann flat, hnsw, ivf, ivfpq or milvus:TYPE[:{{JSON}}], not {ann!r}")


def _pymilvus() -> Any:
    try:
        import pymilvus
    except ImportError:
        raise MissingDependency('"bertsearch[milvus]"', "the Milvus vector backend") from None
    return pymilvus


MAX_TOPK = 16_384
"""The most results a Milvus server returns for one query."""


class MilvusBackend(VectorBackend):
    """The chunk vectors of one index in a Milvus collection, kept in step with the store's change feed."""

    name = "milvus"

    def __init__(self, folder: Path, store: Any, config: Any, *, uri: str | None = None) -> None:
        self.folder = Path(folder)
        self.store = store
        self.config = config
        if uri is not None and uri.startswith("grpc://"):
            uri = "http://" + uri[len("grpc://"):]
        self.uri = uri
        self.index_type, self.build_params, self.search_params = index_settings(config.ann)
        self.exact = self.index_type in EXACT_TYPES
        self.lite_path = self.folder / LITE_FILE if uri is None else None
        self.target = "lite" if uri is None else _without_password(uri)
        if uri is None and self.index_type not in LITE_TYPES:
            raise BadArgument(f"milvus-lite cannot build {self.index_type} indexes (it builds {', '.join(LITE_TYPES)}); "
                              "set another ann, or use a Milvus server (--vectors http://host:19530)")
        self._lock = threading.RLock()
        self._collection: str | None = None
        self._position = 0
        self._checked = False  # rows counted against the store once per process
        self._held: int | None = None  # rows in the collection, as of the last sync (the store's chunks then)
        self._client: Any = None  # connected on first use: a lexical search never starts Milvus
        self._closed = False
        self._unsaved = False  # a record left to write once this thread is out of its read snapshot (`_save`)
        self._applied = Applied()  # what each sync applied (see `_as_of_snapshot`)
        if uri is not None and not store.read_only:
            self._claim()

    # -- connecting ---------------------------------------------------------------------------------

    def _connect(self) -> Any:
        pymilvus = _pymilvus()
        if self.lite_path is None:
            quiet = logging.getLogger("pymilvus")  # (it logs a traceback before the error this raises says why)
            level = quiet.level
            quiet.setLevel(logging.CRITICAL)
            try:
                client = pymilvus.MilvusClient(uri=self.uri, timeout=CONNECT_TIMEOUT)
                # one call now: on a loaded machine the client can come back before its channel fails, and the
                # failure would then reach the first real call as pymilvus's own error (seen once in the suite)
                client.list_collections(timeout=CONNECT_TIMEOUT)
                return _Guarded(client, self.target)
            except Exception as e:  # noqa: BLE001 - MilvusException, or a gRPC error of its own
                reason = _reason(e)
                if "database" in reason.lower() and "not exist" in reason.lower():
                    raise BadArgument(f"Milvus at {self.target} answered, but has no such database ({reason}): the "
                                      "path of a --vectors URI names a database; leave it out for the default one, or "
                                      "create that database first") from None
                raise VectorsUnavailable(
                    f"cannot reach Milvus at {self.target} ({reason}); start Milvus there or check the address "
                    "(it is Milvus's gRPC port, 19530 by default)") from None
            finally:
                quiet.setLevel(level)
        try:
            import milvus_lite  # noqa: F401  (pymilvus opens a .db path with it)
        except ImportError:
            raise MissingDependency('"bertsearch[milvus]"', "the embedded Milvus backend (milvus-lite)") from None
        path = str(self.lite_path.resolve())
        self.folder.mkdir(parents=True, exist_ok=True)
        quiet = logging.getLogger("milvus_lite")  # (it logs a traceback before the error this raises says why)
        with _lite_lock:
            level = quiet.level
            quiet.setLevel(logging.CRITICAL)
            try:
                client = pymilvus.MilvusClient(uri=path, timeout=CONNECT_TIMEOUT)
            except Exception as e:  # noqa: BLE001 - pymilvus's, or milvus-lite's own while it starts
                if _locked(self.lite_path / "LOCK"):
                    raise VectorsUnavailable(
                        f"{self.lite_path} is open in another process (milvus-lite serves one process per folder): "
                        f"run 'milvus-lite server --data-dir {self.lite_path} --host 127.0.0.1 --port 19530' and open "
                        "the index with --vectors http://127.0.0.1:19530, or use --vectors faiss") from None
                raise BertsearchError(f"cannot open {self.lite_path} with milvus-lite ({_reason(e)}); if it is damaged, "
                                      "'bertsearch check --repair' rebuilds it from the store") from None
            finally:
                quiet.setLevel(level)
            _lite_users[path] = _lite_users.get(path, 0) + 1
        return client

    def close(self) -> None:
        """Close the client; the last backend of this process on a milvus-lite folder stops its server thread
        (which releases the folder to other processes)."""
        with self._lock:
            if self._unsaved and not self.store.closed and not self.store.conn.in_transaction:
                with contextlib.suppress(BertsearchError, sqlite3.Error):  # (else the next process loads afresh)
                    self._save()
            client, self._client, self._closed = self._client, None, True
            if client is None:
                return
            client.close()
            if self.lite_path is not None:
                path = str(self.lite_path.resolve())
                with _lite_lock:
                    _lite_users[path] -= 1
                    if _lite_users[path] == 0:
                        del _lite_users[path]
                        from milvus_lite.server_manager import server_manager_instance

                        server_manager_instance.release_server(path)

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._closed:
                    raise BertsearchError(f"the Milvus backend of {self.folder} is closed")
                if self._client is None:
                    self._client = self._connect()
        return self._client

    # -- following the store ------------------------------------------------------------------------

    def sync(self, *, wait: bool = True) -> int:
        with self._lock, self._sync_lock():
            if self._unsaved and not self.store.conn.in_transaction:
                self._save()
            record = self._record()
            collection, position = record.get("collection"), int(record.get("position", 0))
            if collection == self._collection and position < self._position:
                position = self._position  # (a record read in an older snapshot: the collection holds more)
            self._collection, self._position = collection, position
            self._held = None
            reason = self._why_reload(record)
            if reason is None:
                with self.store.snapshot():  # the changes and the chunk count of one state
                    if self._position + 1 < self.store.feed_start():
                        pending, reason = None, f"the change feed was pruned past position {self._position}"
                    else:
                        pending = self.store.changes_since(self._position, self.config.dim, self.config.vector_dtype,
                                                           docs=True)
                        chunks = self.store.counts()["chunks"]
                if pending is not None:
                    self._applied.add(self._position, pending.head, np.union1d(pending.live.ids, pending.gone))
                    self._apply(self._collection, pending)
                    if not self._checked:
                        held = self._count(self._collection)
                        if held != chunks:
                            reason = f"the collection holds {held} rows and the store {chunks} chunks"
                        self._checked = True
                    if reason is None:
                        self._advance(pending.head)
                        self._held = chunks
            if reason is not None:
                self._load_all(reason)
            if wait:
                self.wait()
            return self._position

    def rebuild(self) -> None:
        with self._lock, self._sync_lock():
            self._load_all("a rebuild was asked for")

    def _why_reload(self, record: dict[str, Any]) -> str | None:
        """Why the recorded collection cannot be followed from its position, or None when it can."""
        name = record.get("collection")
        if not name:
            return "no collection yet"
        if record.get("target") != self.target:
            return f"the collection was made in {record.get('target')}, not {self.target}"
        if not name.startswith(self._prefix()):
            return "the store's epoch changed (restored or re-indexed)"
        if self._position > self.store.feed_head():
            return "the store is behind the collection (restored from an older copy?)"
        if record.get("index") != [self.index_type, self.build_params]:
            return f"the index settings changed to {self.index_type} {self.build_params}"
        if not self.client.has_collection(name):
            return f"the collection {name} is missing"
        try:
            self._load(name)
        except _pymilvus().MilvusException as e:  # damaged, or an index Milvus cannot build
            return f"the collection {name} does not load ({_reason(e)})"
        return None

    def _load_all(self, reason: str) -> None:
        """Everything afresh into a new collection, recorded when complete; the old one is dropped after."""
        old = self._collection
        number = int(old.rsplit("_", 1)[1]) + 1 if old and old.startswith(self._prefix()) else 1
        name = f"{self._prefix()}{number}"
        for other in self.client.list_collections():  # leftovers of a load that did not finish
            if other.startswith(self._prefix()) and other != old:
                self.client.drop_collection(other)
        lost = "missing" in reason or "does not load" in reason or "rows and the store" in reason
        (log.warning if lost else log.info)("loading the vectors into Milvus collection %s (%s)%s", name, reason,
                                            ": loading them again from the store" if lost else "")
        t0 = time.perf_counter()
        self._create(name)
        everything = self.store.all_chunks(self.config.dim, self.config.vector_dtype, docs=True)
        self._applied.add(0, everything.head, None)  # (all of it: searches of older snapshots cannot be mended)
        self._apply(name, everything)
        self.client.flush(name)  # sealed, so that the index is built over all of it (in the background)
        self._collection, self._position, self._checked = name, everything.head, True
        self._held = len(everything.live.ids)
        self._save()
        log.info("loaded %d vectors in %.1fs", len(everything.live.ids), time.perf_counter() - t0)
        if old and old != name and self.client.has_collection(old):
            if old.startswith(self._prefix()) or self.lite_path is not None:
                self.client.drop_collection(old)
            else:
                log.info("Milvus collection %s of an earlier state of this index is left in %s: drop it once no "
                         "copy of that index uses it", old, self.target)

    def _create(self, name: str) -> None:
        pymilvus = _pymilvus()
        DataType = pymilvus.DataType
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=65535)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("typed", DataType.JSON)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.config.dim)
        params = self.client.prepare_index_params()
        params.add_index(field_name="vector", index_type=self.index_type, metric_type="IP", params=self.build_params)
        try:
            self.client.create_collection(name, schema=schema, consistency_level="Strong")
            self.client.create_index(name, params, sync=False)  # (waiting asks for a timestamp milvus-lite lacks)
            self.client.load_collection(name)
        except _pymilvus().MilvusException as e:
            if self.client.has_collection(name):
                self.client.drop_collection(name)
            raise BadArgument(f"Milvus at {self.target} refused a {self.index_type} index with {self.build_params} "
                              f"({_reason(e)}); set another ann") from None

    def _apply(self, name: str, changes: Any) -> None:
        """Upsert the live chunks and delete the gone ones (idempotent: replaying it changes nothing)."""
        live = changes.live
        for a in range(0, len(live.ids), BATCH):
            rows = [{"id": int(live.ids[i]), "doc_id": live.doc_ids[i], "metadata": live.metadata[i],
                     "typed": typed(live.metadata[i]), "vector": live.vectors[i]}
                    for i in range(a, min(a + BATCH, len(live.ids)))]
            self.client.upsert(name, rows)
        for a in range(0, len(changes.gone), BATCH):
            self.client.delete(name, ids=[int(i) for i in changes.gone[a:a + BATCH]])
        if len(changes):
            log.debug("applied %d upserts and %d deletes to %s", len(live.ids), len(changes.gone), name)

    def _advance(self, head: int) -> None:
        if head > self._position:
            self._position = head
            self._save()

    def _save(self) -> None:
        """Record the collection and position in the store (a read-only store keeps them in this process only),
        then forget the feed up to it."""
        if self.store.read_only:
            return
        if self.store.conn.in_transaction:  # within a search's read snapshot: no write can start; the next sync saves
            self._unsaved = True
            return
        self._unsaved = False
        record = self._record()
        if record.get("collection") == self._collection and int(record.get("position", 0)) > self._position:
            self._position = int(record["position"])  # never backwards
            return
        self.store.set_meta(META_KEY, json.dumps(self._state()))
        self.store.prune_feed(self._position)

    def _record(self) -> dict[str, Any]:
        if (self.store.read_only or self._unsaved) and self._collection is not None:
            return self._state()  # (what this process knows and could not write yet)
        text = self.store.get_meta(META_KEY)
        try:
            record = json.loads(text) if text else {}
        except json.JSONDecodeError:
            record = {}
        return record if isinstance(record, dict) else {}

    def _state(self) -> dict[str, Any]:
        return {"collection": self._collection, "position": self._position, "target": self.target,
                "index": [self.index_type, self.build_params], "folder": str(self.folder.resolve())}

    def _claim(self) -> None:
        """A copy of an index folder (`cp -r`) names, in its store, the server's collection of the folder it was
        copied from: each one's writes would move the vectors the other searches. A store recorded by another
        folder that still holds an index is such a copy: it takes an epoch of its own, and so a collection of its
        own, loaded from its store on first use (a moved folder keeps its collection). `bertsearch backup` gives a
        copy its own epoch too."""
        record = self._record()
        here, there = str(self.folder.resolve()), record.get("folder")
        if not record.get("collection") or there in (None, here) or not (Path(there) / "store.db").is_file():
            return
        try:
            self.store.set_meta("epoch", secrets.token_hex(8))
        except BertsearchError as e:  # a copy that cannot be written: it searches the shared collection, as before
            log.warning("%s is a copy of the index at %s and shares its Milvus collection %s; it cannot take one of "
                        "its own (%s)", here, there, record["collection"], e)
            return
        log.warning("%s is a copy of the index at %s, whose vectors are in Milvus collection %s: the copy gets a "
                    "collection of its own, loaded from its store on first use", here, there, record["collection"])

    def _prefix(self) -> str:
        epoch = "".join(c for c in self.store.epoch() if c.isalnum()) or "none"
        return f"bertsearch_{epoch}_"

    def _load(self, name: str) -> None:
        """Load the collection for search (milvus-lite releases collections when it reopens)."""
        state = self.client.get_load_state(name).get("state")
        if getattr(state, "name", str(state)) != "Loaded":
            self.client.load_collection(name)

    @contextmanager
    def _sync_lock(self) -> Iterator[None]:
        """Processes sharing a Milvus server take turns to sync an index: one that read the feed earlier must not
        write older rows over newer ones."""
        try:
            import fcntl
            fd = open(self.folder / "milvus.lock", "a")  # noqa: SIM115 - held for the block below
        except (ImportError, OSError):  # no flock (Windows), or a read-only folder: nobody writes the store
            yield
            return
        with fd:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def wait(self, timeout: float = 3600.0) -> None:
        """Wait until the collection's index covers every row: Milvus builds it in the background after a flush, and
        results of approximate types change until then. A server reports pending rows; milvus-lite reports none, so
        its background worker (in this process) is drained instead."""
        name = self._collection
        if name is None or self._client is None:  # (never connects: nothing was written through it)
            return
        worker = self._lite_collection(name)
        if worker is not None:
            worker._wait_for_bg(timeout=timeout)
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.client.describe_index(name, "vector") or {}
            if int(info.get("pending_index_rows", 0) or 0) == 0 and str(info.get("state", "Finished")) == "Finished":
                return
            time.sleep(0.2)
        log.warning("the index of %s is still building after %.0fs", name, timeout)

    def _lite_collection(self, name: str) -> Any:
        """milvus-lite's own collection object when its server runs in this process (None otherwise, or when
        milvus-lite's insides differ from 3.2's)."""
        if self.lite_path is None:
            return None
        try:
            from milvus_lite.server_manager import server_manager_instance

            _, db, _ = server_manager_instance._servers[str(self.lite_path.resolve())]
            collection = db.get_collection(name)
            return collection if callable(getattr(collection, "_wait_for_bg", None)) else None
        except Exception:  # noqa: BLE001 - a private interface: waiting is best effort
            return None

    # -- searching ----------------------------------------------------------------------------------

    def search(
        self, xq: np.ndarray, k: int, *, allowed: np.ndarray | None = None, where: Filter | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if k < 1:
            raise BadArgument(f"k must be > 0, got {k}")
        xq = np.ascontiguousarray(xq, dtype=np.float32).reshape(-1, self.config.dim)  # (nq, dim)
        k = min(k, MAX_TOPK)  # (a server's limit; the engine asks for more only to find documents of many chunks)
        D = np.full((len(xq), k), -np.inf, dtype=np.float32)
        I = np.full((len(xq), k), -1, dtype=np.int64)
        self._catch_up()
        name = self._collection
        if name is None or not len(xq):
            return D, I
        before = self._position
        expr: str | bool | None = True
        if where is not None:
            expr = compile_filter(where)
        ids = allowed
        if expr is None or (expr is True and allowed is not None and where is None):
            if ids is None:
                ids = self.store.chunk_ids_where(where)
            expr = _id_list(ids)
        if expr is False or (ids is not None and not len(ids)):
            return D, I
        text = "" if expr is True else str(expr)
        share = min(1.0, len(ids) / max(1, self.count())) if ids is not None else 1.0
        self._fill(D, I, np.arange(len(xq)), self._search(name, xq, k, text, self._params(k, share=share)))
        target = min(k, len(ids) if ids is not None else self.count())
        short = np.flatnonzero((I >= 0).sum(axis=1) < target)
        if len(short) and not self.exact:  # an approximate index came up short: look everywhere
            self._fill(D, I, short, self._search(name, xq[short], k, text, self._params(k, exhaustive=True)))
            short = np.flatnonzero((I >= 0).sum(axis=1) < target)
            if len(short) and ids is None:
                ids = self.store.chunk_ids_where(where) if where is not None else self.store.chunk_ids()
                target = min(k, len(ids))
            short = np.flatnonzero((I >= 0).sum(axis=1) < target)
            if len(short) and ids is not None:  # still short: exactly, over the matching chunks' stored vectors
                log.debug("%d queries short of %d hits: exact search over %d stored vectors", len(short), target, len(ids))
                self._exact(D, I, short, xq[short], ids)
        return self._as_of_snapshot(xq, D, I, before, allowed, where)

    def _as_of_snapshot(self, xq: np.ndarray, D: np.ndarray, I: np.ndarray, before: int, allowed: np.ndarray | None,
                        where: Filter | None) -> tuple[np.ndarray, np.ndarray]:
        """The results as the search's snapshot of the store has them. The collection is shared by this process's
        threads and may hold changes the snapshot does not (another thread's writes, synced), or lack some it has
        (another thread syncing them): a document another thread was rewriting dropped out of the results. The
        chunks changed between the two positions are taken out of the results, and those the snapshot holds are
        scored exactly from its vectors. (Another process's syncs of a shared server are not known here.)"""
        if not self.store.conn.in_transaction:
            return D, I  # (not inside a search's snapshot: it reads the store as it is now)
        head, after = self.store.feed_head(), self._position
        if before == head == after:
            return D, I
        parts = []
        if min(before, after) < head:  # the snapshot has changes the collection may lack
            ids = self.store.chunks_changed_since(min(before, after))
            if ids is None:
                return D, I
            parts.append(ids)
        if max(before, after) > head:  # the collection has changes the snapshot lacks
            ids = self._applied.touched(head, max(before, after))
            if ids is None:
                return D, I
            parts.append(ids)
        touched = np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
        if not len(touched):
            return D, I
        I = np.where(np.isin(I, touched), -1, I)
        D = np.where(I >= 0, D, -np.inf)
        held = np.asarray(self.store.existing_chunks(touched.tolist()), dtype=np.int64)
        if allowed is not None:
            held = np.intersect1d(held, allowed)
        elif where is not None and len(held):
            held = self.store.chunk_ids_where(where, held)
        if len(held):
            xb = self.store.chunk_vectors(held.tolist(), self.config.dim, self.config.vector_dtype)  # (n, dim)
            Dp = np.concatenate([D, xq @ xb.T], axis=1)
            Ip = np.concatenate([I, np.broadcast_to(held, (len(xq), len(held)))], axis=1)
            order = np.argsort(-Dp, axis=1, kind="stable")[:, : D.shape[1]]
            D, I = np.take_along_axis(Dp, order, 1), np.take_along_axis(Ip, order, 1)
            I = np.where(np.isfinite(D), I, -1)
        order = np.argsort(-D, axis=1, kind="stable")
        return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)

    def _search(self, name: str, xq: np.ndarray, k: int, expr: str, params: dict[str, Any]) -> list:
        def call(collection: str) -> list:
            return self.client.search(collection, data=[q for q in xq], limit=k, filter=expr, output_fields=["id"],
                                      search_params={"metric_type": "IP", "params": params}, anns_field="vector")

        try:
            return call(name)
        except _pymilvus().MilvusException:
            self.store.check_live()  # replaced by a re-index or a restore, whose load released this collection
            if self.client.has_collection(name):
                raise
            self.sync(wait=False)  # another process loaded the index afresh and dropped this collection
            return call(self._collection or name)

    def _catch_up(self) -> None:
        """Apply what the store's feed holds beyond this backend's position (writes of other processes, or of this
        one through another Index) before a search or a count; a thread finding another syncing searches what is
        there."""
        if self._collection is not None:
            head = self.store.feed_head()
            if self._position == head or (self._position > head and self.store.conn.in_transaction):
                return  # (ahead of a search's snapshot: another thread synced since; `_as_of_snapshot` mends it)
        if self._lock.acquire(blocking=self._collection is None):
            try:
                self.sync(wait=False)
            finally:
                self._lock.release()

    @staticmethod
    def _fill(D: np.ndarray, I: np.ndarray, rows: np.ndarray, hits: list) -> None:
        for r, row_hits in zip(rows, hits):
            pairs = sorted(((float(h["distance"]), int(h["id"])) for h in row_hits), key=lambda p: -p[0])[: D.shape[1]]
            D[r], I[r] = -np.inf, -1
            for j, (score, cid) in enumerate(pairs):
                D[r, j], I[r, j] = score, cid

    def _exact(self, D: np.ndarray, I: np.ndarray, rows: np.ndarray, xq: np.ndarray, ids: np.ndarray) -> None:
        """The exact top k of `xq` (len(rows), dim) over the stored vectors of `ids`, into those rows of D and I."""
        k = D.shape[1]
        best_D = np.full((len(rows), k), -np.inf, dtype=np.float32)
        best_I = np.full((len(rows), k), -1, dtype=np.int64)
        for a in range(0, len(ids), 50_000):
            part = np.asarray(ids[a:a + 50_000], dtype=np.int64)
            xb = self.store.chunk_vectors(part.tolist(), self.config.dim, self.config.vector_dtype)  # (n, dim)
            Dp = np.concatenate([best_D, xq @ xb.T], axis=1)  # (nq, k + n)
            Ip = np.concatenate([best_I, np.broadcast_to(part, (len(rows), len(part)))], axis=1)
            order = np.argsort(-Dp, axis=1, kind="stable")[:, :k]
            best_D, best_I = np.take_along_axis(Dp, order, 1), np.take_along_axis(Ip, order, 1)
        D[rows], I[rows] = best_D, np.where(np.isfinite(best_D), best_I, -1)

    def _params(self, k: int, *, share: float = 1.0, exhaustive: bool = False) -> dict[str, Any]:
        """Search parameters for `k` hits when a `share` of the rows pass the filter: a graph or the lists probed
        are widened by 1/share (a selective filter leaves HNSW few neighbours to walk), or opened up entirely."""
        params = dict(self.search_params)
        if self.index_type.startswith("HNSW") or self.index_type == "AUTOINDEX":
            ef = max(int(params.get("ef", 128)), 2 * k, int(2 * k / max(share, 1e-9)))
            params["ef"] = min(MAX_EF, max(ef, self._count(self._collection)) if exhaustive else ef)
        elif self.index_type.startswith("IVF"):
            nlist = int(self.build_params.get("nlist", 128))
            nprobe = int(int(params.get("nprobe", IVF_NPROBE)) / max(share, 1e-9))
            params["nprobe"] = nlist if exhaustive else max(1, min(nlist, nprobe))
        return params

    # -- state --------------------------------------------------------------------------------------

    def count(self) -> int:
        """Rows searchable: the store's chunk count as of the last sync (no call to Milvus), else counted."""
        self._catch_up()
        if self._held is not None:
            return self._held
        return self._count(self._collection) if self._collection else 0

    def _count(self, name: str | None) -> int:
        if not name:
            return 0
        rows = self.client.query(name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def position(self) -> int:
        return self._position

    def check(self, sample: int = 1000) -> list[str]:
        """Problems: no collection; rows that differ in number from the store's chunks; sampled chunks of the store
        missing in Milvus (or with another document or metadata), sampled rows of Milvus the store no longer has."""
        name = self._collection
        if name is None or not self.client.has_collection(name):
            return [f"no Milvus collection for this index in {self.target}; it is loaded on the next sync"]
        problems = []
        head = self.store.feed_head()
        if self._position < head:
            problems.append(f"Milvus is behind the store ({self._position} of {head} changes applied); it catches "
                            "up on the next sync")
        stored = self.store.chunk_ids()  # (n,) ascending
        held = self._count(name)
        if held != len(stored) and self._position >= head:
            problems.append(f"Milvus holds {held} vectors for {len(stored)} chunks")
        rng = np.random.default_rng(0)
        picked = np.sort(rng.choice(stored, size=min(sample, len(stored)), replace=False)) if len(stored) else stored
        rows = {}
        for a in range(0, len(picked), BATCH):
            part = picked[a:a + BATCH]
            for r in self.client.query(name, filter=f"id in [{','.join(map(str, part.tolist()))}]",
                                       output_fields=["id", "doc_id", "metadata"]):
                rows[int(r["id"])] = r
        missing = [int(c) for c in picked if int(c) not in rows]
        if missing and self._position >= head:  # (else chunks written since may be among them)
            problems.append(f"{len(missing)} of {len(picked)} sampled chunks have no vector in Milvus "
                            f"(e.g. chunk {missing[0]})")
        docs = self.store.chunk_doc_ids(list(rows))
        metadata = {r["id"]: r["metadata"] for r in self.store.documents(sorted({d for d, _ in docs.values()})).values()}
        wrong = [c for c, r in rows.items() if c in docs and (docs[c][1] != r["doc_id"] or
                                                            metadata.get(docs[c][1]) != _as_dict(r["metadata"]))]
        if wrong and self._position >= head:
            problems.append(f"{len(wrong)} sampled chunks have another document or metadata in Milvus (e.g. chunk "
                            f"{wrong[0]})")
        extra = [int(r["id"]) for r in self.client.query(name, filter="id >= 0", output_fields=["id"], limit=sample)]
        known = set(stored.tolist())
        extra = [c for c in extra if c not in known]
        if extra and self._position >= head:
            problems.append(f"Milvus holds vectors of {len(extra)} chunks the store no longer has (e.g. chunk {extra[0]})")
        return problems

    def info(self) -> dict[str, Any]:
        where = f"milvus-lite {self.lite_path}" if self.lite_path is not None else self.target
        record = self._state() if self._collection is not None else self._record()  # (before a sync: the durable one)
        return {"backend": self.name, "where": where, "collection": record.get("collection"),
                "position": int(record.get("position", 0)),
                "index_type": self.index_type, "build_params": self.build_params, "search_params": self.search_params,
                "exact": self.exact, "count": self.count() if self._client is not None else None}  # (info never connects)


# -- metadata flattened by type, and filters compiled against it ----------------------------------------


def typed(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata flattened for filters: for each path, `n_<path>` (a number), `s_<path>` (a string) or
    `b_<path>` (a boolean) holds the value and `v_<path>` is 1 when the value is not null. The path is the hex of
    each key's UTF-8, joined with `_`: any key, quotes and dots included, is a plain name in an expression."""
    out: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}_{str(key).encode('utf-8').hex()}" if prefix else str(key).encode("utf-8").hex()
            if value is None:
                continue
            out[f"v_{path}"] = 1
            if isinstance(value, bool):
                out[f"b_{path}"] = value
            elif isinstance(value, (int, float)):
                if isinstance(value, float) and not math.isfinite(value):
                    continue
                out[f"n_{path}"] = value
            elif isinstance(value, str):
                out[f"s_{path}"] = value
            elif isinstance(value, dict):
                walk(value, path)

    walk(metadata, "")
    return out


_KINDS = {"number": "n", "text": "s", "boolean": "b"}
_OPS = {"=": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def compile_filter(flt: Filter) -> str | bool | None:
    """A Milvus boolean expression over `doc_id` and `typed` that matches exactly the chunks whose document
    `flt.matches`; True or False when it matches every or no document; None when Milvus cannot say it (a `title` or
    `updated_at` column, a string with control characters other than newline, tab and carriage return)."""
    if isinstance(flt, Not):
        inner = compile_filter(flt.operand)
        return inner if inner is None else (not inner) if isinstance(inner, bool) else f"not ({inner})"
    if isinstance(flt, (And, Or)):
        parts = []
        for operand in flt.operands:
            part = compile_filter(operand)
            if part is None:
                return None
            if isinstance(part, bool):
                if part == isinstance(flt, Or):  # True in an or, False in an and: decides it
                    return part
                continue
            parts.append(part)
        if not parts:
            return isinstance(flt, And)
        word = " and " if isinstance(flt, And) else " or "
        return parts[0] if len(parts) == 1 else "(" + word.join(f"({p})" for p in parts) + ")"
    field: Field = flt.field  # type: ignore[attr-defined]
    if field.column is not None and field.column != "id":
        return None
    if isinstance(flt, IsNull):
        if field.column:
            return flt.negated  # a column is never null
        return f'{"" if flt.negated else "not "}exists typed["v_{_path(field)}"]'
    if isinstance(flt, Compare):
        return _compare(field, flt.op, flt.value)
    if isinstance(flt, In):
        return _in(field, flt.values, flt.negated)
    if isinstance(flt, Between):
        low, high = _literal(flt.low), _literal(flt.high)
        if low is None or high is None:
            return None
        name = _name(field, _kind(flt.low))
        if name is None:
            return False
        test = f"({name} < {low} or {name} > {high})" if flt.negated else f"{name} >= {low} and {name} <= {high}"
        return _guard(field, _kind(flt.low), test)
    raise TypeError(f"unknown filter node {type(flt).__name__}")


def _compare(field: Field, op: str, value: Any) -> str | bool | None:
    kind = _kind(value)
    if kind == "boolean":
        wanted = value if op == "=" else not value
        name = _name(field, kind)
        return False if name is None else _guard(field, kind, f"{name} == {'true' if wanted else 'false'}")
    name, literal = _name(field, kind), _literal(value)
    if literal is None:
        return None
    if name is None:
        return False
    return _guard(field, kind, f"{name} {_OPS[op]} {literal}")


def _in(field: Field, values: tuple[Any, ...], negated: bool) -> str | bool | None:
    parts: list[str] = []
    for kind in ("number", "text"):
        same = [v for v in values if _kind(v) == kind]
        name = _name(field, kind)
        if not same or name is None:
            continue
        literals = [_literal(v) for v in same]
        if any(lit is None for lit in literals):
            return None
        if field.column:  # a VARCHAR field takes a list
            parts.append(f"{name} {'not in' if negated else 'in'} [{', '.join(literals)}]")  # type: ignore[arg-type]
        elif negated:
            parts.append(_guard(field, kind, " and ".join(f"{name} != {lit}" for lit in literals)))
        else:  # milvus-lite refuses `in` on a JSON path
            parts.append(_guard(field, kind, "(" + " or ".join(f"{name} == {lit}" for lit in literals) + ")"))
    bools = {v for v in values if _kind(v) == "boolean"}
    wanted = ({True, False} - bools) if negated else bools
    if bools and wanted and not field.column:
        name = _name(field, "boolean")
        parts.append(_guard(field, "boolean", "(" + " or ".join(f"{name} == {'true' if w else 'false'}"
                                                              for w in sorted(wanted)) + ")"))
    if not parts:
        return False
    return parts[0] if len(parts) == 1 else "(" + " or ".join(f"({p})" for p in parts) + ")"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, (int, float)) else "text"


def _path(field: Field) -> str:
    return "_".join(part.encode("utf-8").hex() for part in field.path)


def _name(field: Field, kind: str) -> str | None:
    """The expression naming the field's value of that type, or None when the field never has that type."""
    if field.column:
        return "doc_id" if kind == "text" else None
    return f'typed["{_KINDS[kind]}_{_path(field)}"]'


def _guard(field: Field, kind: str, test: str) -> str:
    """`test` made two-valued: Milvus holds a comparison with a missing key unknown, and `not` of unknown too."""
    if field.column:
        return test
    return f"(exists {_name(field, kind)} and {test})"


def _literal(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if -(2**63) < value < 2**63 else None
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if any(ord(c) < 32 and c not in "\n\t\r" for c in value):
        return None
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return '"' + escaped.replace("\r", "\\r") + '"'


def _id_list(ids: np.ndarray) -> str | bool:
    if not len(ids):
        return False
    return f"id in [{','.join(map(str, np.asarray(ids, dtype=np.int64).tolist()))}]"


# -- small helpers --------------------------------------------------------------------------------------


def _as_dict(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class _Guarded:
    """A MilvusClient whose calls raise VectorsUnavailable, naming the server, when the server cannot be reached
    (it went down after the connection was made); pymilvus's other errors pass as they are."""

    def __init__(self, client: Any, target: str) -> None:
        self._client = client
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except Exception as e:
                if not _unreachable(e):
                    raise
                raise VectorsUnavailable(
                    f"Milvus at {self._target} cannot be reached now ({_reason(e)}); what the index's store holds is "
                    "kept, and its vectors follow once Milvus is back: start it again or check the address") from None

        return call


def _unreachable(e: Exception) -> bool:
    """Whether pymilvus's error `e` says the server cannot be reached (down, or not answering in time)."""
    try:
        import grpc
    except ImportError:  # pragma: no cover - pymilvus needs it
        grpc = None
    pymilvus = _pymilvus()
    if isinstance(e, (pymilvus.exceptions.ConnectError, pymilvus.exceptions.MilvusUnavailableException)):
        return True
    if grpc is not None and isinstance(e, grpc.RpcError) and hasattr(e, "code"):
        return e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    text = _reason(e).lower()
    return isinstance(e, pymilvus.MilvusException) and ("fail connecting to server" in text or "server unavailable"
                                                        in text or "deadline exceeded" in text)


def _reason(e: Exception) -> str:
    message = getattr(e, "message", None) or str(e)
    return " ".join(str(message).split())[:300]


def _without_password(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _locked(path: Path) -> bool:
    """Whether another process holds milvus-lite's lock on its data folder."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        with open(path, "a") as fd:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
    except OSError:
        return False
