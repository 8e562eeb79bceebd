"""SQLite store (the standard library's sqlite3, one connection a thread). Every write is one transaction; triggers log
the chunks it changed to the change feed (`changes`) in that transaction, and the vector backends follow the feed
(`feed_head`, `changes_since`). Writes also bump `generation`, a number for callers that want to know that the store
changed at all."""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..config import IndexConfig
from ..errors import BertsearchError, IndexBusy, IndexClosed, IndexReplaced, ReadOnlyIndex, from_sqlite
from ..filters import Filter
from ..types import Chunk, Document
from .migrations import SCHEMA_VERSION, migrate

_WORD = re.compile(r"\w+", re.UNICODE)
log = logging.getLogger(__name__)


@dataclass
class ChunkRows:
    """Chunks read from the store: ids (n,) ascending, vectors (n, dim) float32, and on request each one's
    document id and metadata."""

    ids: np.ndarray
    vectors: np.ndarray
    doc_ids: list[str] | None = None
    metadata: list[dict[str, Any]] | None = None


@dataclass
class Changes:
    """The feed from a position up to `head`: chunks to upsert (`live`) and chunk ids to delete (`gone`)."""

    head: int
    live: ChunkRows
    gone: np.ndarray

    def __len__(self) -> int:
        return len(self.live.ids) + len(self.gone)


class FeedGap(BertsearchError):
    """The feed no longer holds the entries after a backend's position: it loads afresh instead of replaying."""

    def __init__(self, seq: int, start: int) -> None:
        super().__init__(f"the change feed starts at {start}, after position {seq}")


@dataclass
class StoredDocument:
    """A document ready to write: its content hash, chunks and one vector per chunk."""

    doc: Document
    hash: str
    chunks: list[Chunk]
    vectors: np.ndarray  # (len(chunks), dim) float32


def fts_query(text: str) -> str | None:
    """An FTS5 query matching any of the words of `text` (each quoted, so no operator syntax leaks in)."""
    words = _WORD.findall(text)
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


class Store:
    FILE = "store.db"

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._closed = False
        self._closing: int | None = None  # the thread closing the store (see `refuse`)
        self._local = threading.local()  # one connection per thread: a connection is one transaction at a time
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._write_lock = threading.Lock()  # writers of this process take turns before asking SQLite's lock
        self.read_only = False  # set when the folder cannot be written: the store is searched, never written
        # how many documents hold each word BM25 was asked for, and how many there are, at one generation (see
        # `_informative`): counting a common word's doclist costs 10-35 ms at a million documents
        self._df: dict[str, int] = {}
        self._df_docs: int | None = None
        self._df_generation: int | None = None
        self._df_lock = threading.Lock()
        self._file: tuple[int, int] | None = None
        self._local.conn = self._connect(migrate_schema=True)
        self._file = _file_id(self.path)  # the file opened: another in its place means the folder was replaced

    def _connect(self, *, migrate_schema: bool = False) -> sqlite3.Connection:
        if self.read_only:
            return self._register(self._connect_read_only())
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            if migrate_schema:
                migrate(conn)
        except sqlite3.DatabaseError as e:
            conn.close()
            if self.path.exists() and not writable_folder(self.path.parent):  # a read-only folder: the index still reads
                self.read_only = True
                return self._register(self._connect_read_only())
            raise from_sqlite(e, str(self.path)) from None
        except BaseException:
            conn.close()
            raise
        if self._file is not None and _file_id(self.path) != self._file:  # a thread's first connection, made after
            conn.close()  # another process swapped in a new index: it would read the new store under the old index
            raise IndexReplaced(str(self.path.parent), "re-indexed or restored by another process")
        return self._register(conn)

    @property
    def writable(self) -> bool:
        """Whether a write can go to this store now: its folder may be read-only (to root too, on a read-only mount)."""
        return not self.read_only and writable_folder(self.path.parent)

    def _connect_read_only(self) -> sqlite3.Connection:
        """A connection to a store in a folder this process cannot write. SQLite's WAL mode needs to write beside
        the database even to read, so the store is opened as immutable: nobody can change it while the folder is
        read-only. A write-ahead log not yet folded into the database would go unread, so it is refused."""
        conn = immutable(self.path, self.timeout, then="it can be read read-only", isolation_level=None,
                         check_same_thread=False)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as e:
            conn.close()
            raise from_sqlite(e, str(self.path)) from None
        if version < SCHEMA_VERSION:
            conn.close()
            raise BertsearchError(f"{self.path.parent} was made by an older bertsearch and is read-only: make the "
                                  "folder writable once so that its store can be upgraded")
        log.info("%s is read-only: searching it, no writes", self.path.parent)
        return conn

    def _register(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        with self._conns_lock:
            if self._closed:
                conn.close()
                raise IndexClosed(str(self.path.parent))
            self._conns.append(conn)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (made on first use), so that threads sharing the store never share a
        transaction: each reads its own snapshot, and a writer's transaction is its own."""
        if self._closed or (self._closing is not None and self._closing != threading.get_ident()):
            raise IndexClosed(str(self.path.parent))
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    @property
    def closed(self) -> bool:
        return self._closed

    def refuse(self) -> None:
        """For a close that waited in vain for calls in flight (`Index.close`): a new use of the store by another
        thread raises `IndexClosed`, while the statements already running go on (closing a connection another thread
        is using crashed the process); the closing thread itself may still use it (the vector backend saves its
        record as it closes)."""
        self._closing = threading.get_ident()

    def interrupt(self) -> None:
        """Stop the statements running on every connection (they raise; a write's transaction rolls back)."""
        with self._conns_lock:
            for conn in self._conns:
                conn.interrupt()

    def close(self) -> None:
        """Close every thread's connection. Using the store afterwards raises `IndexClosed`."""
        with self._conns_lock:
            if self._closed:
                return
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()

    def check_live(self) -> None:
        """Raise `IndexReplaced` when this store was retired: its folder replaced by a re-index or a restore while
        this process held it open (a search of it served the old documents, in silence)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'retired'").fetchone()
        if row is not None:
            raise IndexReplaced(str(self.path.parent), row[0])
        if not self.read_only and _file_id(self.path) != self._file:
            raise IndexReplaced(str(self.path.parent), "re-indexed or restored by another process")

    @contextmanager
    def transaction(self, *, bump: bool = True, retired_ok: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock up front. `bump` marks chunks as changed, which
        makes the derived vector index stale. A store retired by a re-index (its folder replaced while
        this process held it open) takes no more writes: they would be lost with it. Threads of one
        process take turns (a lock) before SQLite's own lock, which other processes wait on."""
        conn = self.conn
        if self.read_only:
            raise ReadOnlyIndex(f"cannot write to {self.path.parent}: the folder is read-only; make it writable, "
                                "or only search it")
        if conn.in_transaction:  # a read snapshot of this thread: a write cannot start inside it
            raise RuntimeError("a write transaction cannot start inside a read snapshot of the same thread")
        if not self._write_lock.acquire(timeout=self.timeout):
            raise IndexBusy(f"{self.path.parent} is being written by another thread (waited {self.timeout:.0f}s); "
                            "try again when it finishes")
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as e:
                if "locked" in str(e) or "busy" in str(e):
                    raise IndexBusy(
                        f"{self.path.parent} is being written by another process (waited {self.timeout:.0f}s); "
                        "try again when it finishes"
                    ) from None
                raise from_sqlite(e, str(self.path)) from None
            if not retired_ok:
                try:
                    self.check_live()
                except IndexReplaced:
                    conn.execute("ROLLBACK")
                    raise
            try:
                yield conn
                if bump:
                    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
                    conn.execute("INSERT INTO meta(key, value) VALUES ('changed_at', ?) "  # deletes too (`last_updated`)
                                 "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                                 (datetime.now(timezone.utc).isoformat(timespec="seconds"),))
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as e:  # a full disk, a read-only file, damage: said with this store's path
                _rollback(conn)
                raise from_sqlite(e, str(self.path)) from None
            except BaseException:
                _rollback(conn)
                raise
        finally:
            self._write_lock.release()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one state of the store, whatever writers commit meanwhile (WAL)."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    # -- meta -------------------------------------------------------------------------------------

    def get_meta(self, key: str, *, scan: bool = False) -> str | None:
        """The meta value of `key`; with `scan`, read from the table itself, not through its index (which, damaged,
        finds nothing)."""
        sql = "SELECT value FROM meta NOT INDEXED WHERE key = ?" if scan else "SELECT value FROM meta WHERE key = ?"
        row = self.conn.execute(sql, (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction(bump=False) as c:
            c.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def add_to_meta_list(self, key: str, item: str) -> None:
        """Add `item` to the JSON list kept under `key`, in one write transaction: two processes adding at once both
        land (a read, then a write, lost one of them)."""
        with self.transaction(bump=False) as c:
            row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            items = json.loads(row[0]) if row else []
            if item not in items:
                c.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                          "excluded.value", (key, json.dumps([*items, item])))

    @property
    def config(self) -> IndexConfig | None:
        text = self.get_meta("config")
        return IndexConfig.from_json(text) if text else None

    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    # -- writes -----------------------------------------------------------------------------------

    def hashes(self, ids: Sequence[str]) -> dict[str, str]:
        """Content hashes of those of `ids` that are stored."""
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            part = list(ids[i : i + 500])
            q = f"SELECT id, hash FROM documents WHERE id IN ({','.join('?' * len(part))})"
            out.update(self.conn.execute(q, part).fetchall())
        return out

    def write(self, items: Sequence[StoredDocument], *, dtype: str = "float32") -> None:
        """Insert or replace documents (by id) with their chunks and vectors, in one transaction."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.transaction() as c:
            for item in items:
                d = item.doc
                c.execute("DELETE FROM documents WHERE id = ?", (d.id,))
                cur = c.execute(
                    "INSERT INTO documents(id, title, text, metadata, hash, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (d.id, d.title, d.text, json.dumps(d.metadata, ensure_ascii=False), item.hash, now),
                )
                rowid = cur.lastrowid
                xb = item.vectors.astype(dtype, copy=False)
                c.executemany(
                    'INSERT INTO chunks(doc, ord, start, "end", n_tokens, vector) VALUES (?, ?, ?, ?, ?, ?)',
                    [(rowid, n, ch.start, ch.end, ch.n_tokens, xb[n].tobytes()) for n, ch in enumerate(item.chunks)],
                )

    def update_metadata(self, metadata: dict[str, dict[str, Any]]) -> int:
        """Replace documents' metadata by id (their vectors stay), in one transaction; how many changed."""
        rows = [(new, doc_id, new) for doc_id, new in ((i, json.dumps(m, ensure_ascii=False)) for i, m in metadata.items())]
        changed = 0
        with self.transaction(bump=False) as c:
            for row in rows:
                changed += c.execute("UPDATE documents SET metadata = ? WHERE id = ? AND metadata != ?", row).rowcount
        return changed

    def chunk_ids_where(self, where: Filter, among: Sequence[int] | None = None) -> np.ndarray:
        """Ids of the chunks of documents matching a filter (of `among` only, when given), ascending (int64)."""
        cond, params = where.sql(table="d")
        sql = f"SELECT c.id FROM chunks c JOIN documents d ON d.rowid = c.doc WHERE ({cond})"
        if among is not None:
            found: list[int] = []
            for i in range(0, len(among), 500):
                part = [int(x) for x in among[i : i + 500]]
                marks = ",".join("?" * len(part))
                found += [r[0] for r in self.conn.execute(f"{sql} AND c.id IN ({marks})", [*params, *part])]
            return np.array(sorted(found), dtype=np.int64)
        rows = self.conn.execute(f"{sql} ORDER BY c.id", params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def delete_where(self, where: Filter) -> int:
        """Delete the documents matching a filter; returns how many."""
        cond, params = where.sql(table="d")
        with self.transaction() as c:
            return c.execute(f"DELETE FROM documents WHERE rowid IN (SELECT d.rowid FROM documents d WHERE {cond})", params).rowcount

    def ids_where(self, where: Filter) -> list[str]:
        """Ids of the documents matching a filter."""
        cond, params = where.sql(table="d")
        return [r[0] for r in self.conn.execute(f"SELECT d.id FROM documents d WHERE {cond} ORDER BY d.id", params)]

    def existing(self, ids: Sequence[str]) -> list[str]:
        """Those of `ids` that are stored, in the order given."""
        stored = {r[0] for r in self._in("SELECT id FROM documents WHERE id IN ({})", ids)}
        return [i for i in ids if i in stored]

    def fields(self) -> set[str]:
        """Every top-level metadata key a stored document has had."""
        return {r[0] for r in self.conn.execute("SELECT name FROM fields")}

    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id (their chunks go with them); returns how many existed."""
        with self.transaction() as c:
            n = 0
            for i in range(0, len(ids), 500):
                part = list(ids[i : i + 500])
                n += c.execute(f"DELETE FROM documents WHERE id IN ({','.join('?' * len(part))})", part).rowcount
            return n

    def set_config(self, config: IndexConfig) -> None:
        self.set_meta("config", config.to_json())

    # -- reads ------------------------------------------------------------------------------------

    def ids(self) -> Iterator[str]:
        """Every stored document id (streamed)."""
        for (doc_id,) in self.conn.execute("SELECT id FROM documents"):
            yield doc_id

    def counts(self) -> dict[str, int]:
        docs = self.conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        chunks = self.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return {"documents": docs, "chunks": chunks}

    def vectors(self, dim: int, dtype: str = "float32") -> tuple[int, np.ndarray, np.ndarray]:
        """The feed's head and, as of it, all chunk ids and vectors: (n,) int64 and (n, dim) float32."""
        with self.snapshot():  # the head and the vectors of one state
            head = self.feed_head()
            ids, xb = self._vectors(dim, dtype)
        return head, ids, xb

    # -- the change feed ----------------------------------------------------------------------------

    def epoch(self) -> str:
        """A name of this store's history: a copy restored over it, or a re-index, gets another."""
        return self.get_meta("epoch") or ""

    def feed_head(self) -> int:
        """The position of the last change logged (0: none yet). Positions only grow, pruned or not."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return int(row[0]) if row else 0

    def chunks_changed_since(self, seq: int) -> np.ndarray | None:
        """The chunk ids the feed logged after position `seq` (as of this thread's snapshot, within one), or None
        when the feed was pruned past `seq`."""
        if seq + 1 < self.feed_start():
            return None
        rows = self.conn.execute("SELECT DISTINCT chunk FROM changes WHERE seq > ? ORDER BY chunk", (seq,)).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def feed_start(self) -> int:
        """The first position still in the feed: a backend synced to before it cannot replay and loads afresh."""
        return int(self.get_meta("feed_pruned") or 0) + 1

    def changes_since(self, seq: int, dim: int, dtype: str = "float32", *, docs: bool = False) -> Changes:
        """What changed after feed position `seq`, as of one snapshot: the logged chunks that exist now (to
        upsert, with their vectors) and those that do not (to delete). Raises `FeedGap` when entries after `seq`
        were pruned. With `docs`, also each live chunk's document id and metadata (for backends that filter)."""
        with self.snapshot():
            if seq + 1 < self.feed_start():
                raise FeedGap(seq, self.feed_start())
            head = self.feed_head()
            touched = [r[0] for r in self.conn.execute(
                "SELECT DISTINCT chunk FROM changes WHERE seq > ? AND seq <= ? ORDER BY chunk", (seq, head))]
            live = self._chunk_rows(touched, dim, dtype, docs=docs)
        gone = np.array(sorted(set(touched) - set(live.ids.tolist())), dtype=np.int64)
        return Changes(head, live, gone)

    def all_chunks(self, dim: int, dtype: str = "float32", *, docs: bool = False) -> Changes:
        """Every chunk as one change set (a backend loading afresh), as of one snapshot."""
        with self.snapshot():
            head = self.feed_head()
            if docs:
                ids = [r[0] for r in self.conn.execute("SELECT id FROM chunks ORDER BY id")]
                live = self._chunk_rows(ids, dim, dtype, docs=True)
            else:
                ids_, xb = self._vectors(dim, dtype)
                live = ChunkRows(ids_, xb)
        return Changes(head, live, np.zeros(0, dtype=np.int64))

    def _chunk_rows(self, ids: Sequence[int], dim: int, dtype: str, *, docs: bool) -> ChunkRows:
        sql = ("SELECT c.id, c.vector, d.id, d.metadata FROM chunks c JOIN documents d ON d.rowid = c.doc "
               "WHERE c.id IN ({}) ORDER BY c.id") if docs else "SELECT id, vector FROM chunks WHERE id IN ({}) ORDER BY id"
        rows = sorted(self._in(sql, ids))
        xb = np.empty((len(rows), dim), dtype=np.float32)
        for i, r in enumerate(rows):
            xb[i] = np.frombuffer(r[1], dtype=dtype)
        out = ChunkRows(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)), xb)
        if docs:
            out.doc_ids = [r[2] for r in rows]
            out.metadata = [json.loads(r[3]) for r in rows]
        return out

    def prune_feed(self, upto: int) -> None:
        """Forget the feed's entries up to `upto`, once the vector backend has stored everything they say."""
        if self.read_only or self.conn.in_transaction or upto < self.feed_start():
            return  # (inside a read snapshot, or read-only: pruned another time)
        with self.transaction(bump=False) as c:
            c.execute("DELETE FROM changes WHERE seq <= ?", (int(upto),))
            c.execute("INSERT INTO meta(key, value) VALUES ('feed_pruned', ?) ON CONFLICT(key) DO UPDATE "
                      "SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))", (str(int(upto)),))

    def feed_length(self) -> int:
        return self.conn.execute("SELECT count(*) FROM changes").fetchone()[0]

    def _vectors(self, dim: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
        n = self.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        ids = np.empty(n, dtype=np.int64)
        xb = np.empty((n, dim), dtype=np.float32)
        i = 0
        for cid, blob in self.conn.execute("SELECT id, vector FROM chunks ORDER BY id"):
            ids[i] = cid
            xb[i] = np.frombuffer(blob, dtype=dtype)
            i += 1
        return ids, xb

    def chunk_ids(self) -> np.ndarray:
        """Every chunk id, ascending (int64)."""
        return np.fromiter((r[0] for r in self.conn.execute("SELECT id FROM chunks ORDER BY id")), dtype=np.int64)

    def existing_chunks(self, chunk_ids: Sequence[int]) -> list[int]:
        """Those of `chunk_ids` that are stored, ascending."""
        return sorted(r[0] for r in self._in("SELECT id FROM chunks WHERE id IN ({})", chunk_ids))

    def chunk_vectors(self, chunk_ids: Sequence[int], dim: int, dtype: str = "float32") -> np.ndarray:
        rows = dict(self._in("SELECT id, vector FROM chunks WHERE id IN ({})", chunk_ids))
        return np.stack([np.frombuffer(rows[c], dtype=dtype) for c in chunk_ids]).astype(np.float32).reshape(-1, dim)

    def chunk_doc_ids(self, chunk_ids: Sequence[int]) -> dict[int, tuple[int, str]]:
        """chunk id -> (document rowid, document id)."""
        sql = "SELECT c.id, c.doc, d.id FROM chunks c JOIN documents d ON d.rowid = c.doc WHERE c.id IN ({})"
        return {r[0]: (r[1], r[2]) for r in self._in(sql, chunk_ids)}

    def chunk_docs(self, chunk_ids: Sequence[int]) -> dict[int, tuple[int, int, int]]:
        """chunk id -> (document rowid, start, end)."""
        return {r[0]: (r[1], r[2], r[3]) for r in self._in('SELECT id, doc, start, "end" FROM chunks WHERE id IN ({})', chunk_ids)}

    def doc_chunks(self, doc_rowids: Sequence[int]) -> dict[int, list[tuple[int, int, int]]]:
        """document rowid -> [(chunk id, start, end)] in order."""
        out: dict[int, list[tuple[int, int, int]]] = {}
        for cid, doc, a, b in self._in('SELECT id, doc, start, "end" FROM chunks WHERE doc IN ({}) ORDER BY doc, ord', doc_rowids):
            out.setdefault(doc, []).append((cid, a, b))
        return out

    def documents(self, rowids: Sequence[int]) -> dict[int, dict[str, Any]]:
        out = {}
        for r in self._in("SELECT rowid, id, title, text, metadata, updated_at FROM documents WHERE rowid IN ({})", rowids):
            out[r[0]] = {"rowid": r[0], "id": r[1], "title": r[2], "text": r[3], "metadata": json.loads(r[4]), "updated_at": r[5]}
        return out

    def document(self, doc_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT rowid FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return self.documents([row[0]])[row[0]] if row else None

    def bm25(self, query: str, k: int, where: Filter | None = None) -> list[tuple[int, float, str]]:
        """Top `k` documents by FTS5 BM25 over title and text: [(rowid, score, id)], higher is better.
        With `where`, only documents matching that filter."""
        q = fts_query(query)
        if q is None:
            return []
        cond, params = where.sql(table="d") if where is not None else ("1", [])
        sql = ("SELECT f.rowid, f.rank, d.id FROM documents_fts f JOIN documents d ON d.rowid = f.rowid "
               f"WHERE documents_fts MATCH ? AND {cond} ORDER BY f.rank, d.id LIMIT ?")  # ties by id: no insertion order
        informative = self._informative(query)
        if informative is not None:
            rows = self.conn.execute(sql, (informative, *params, k)).fetchall()
            if len(rows) >= k:
                return [(r, -s, i) for r, s, i in rows]
        rows = self.conn.execute(sql, (q, *params, k)).fetchall()
        return [(r, -s, i) for r, s, i in rows]

    def _informative(self, query: str) -> str | None:
        """`query`'s FTS5 query without the words at least half the documents hold; None when it would drop none.

        FTS5's BM25 gives such a word an IDF of 1e-6 (log((N - n + 0.5) / (n + 0.5)) is <= 0; FTS5 clamps it), so it
        moves no score above that, yet it makes nearly every document a match to score: SciFact's claims, 300 of
        them, matched 4,868 of 5,183 abstracts on average, 2,814 without such words; the same top 10 for all 300,
        BM25 in 5.5 ms instead of 10.1. A document that holds only such words drops out, so `bm25` runs the whole
        query again when fewer than k documents match what is left. The counts are kept until the store's next
        write (its generation), so a process that serves many queries counts each word once."""
        words = _WORD.findall(query)  # (a word said twice counts twice in BM25, so it stays twice)
        if len(words) < 2:
            return None
        n_docs, df = self._doc_frequencies({w.lower(): w for w in words})  # each word once (FTS5 folds case too)
        common = {low for low, n in df.items() if 2 * n >= n_docs}
        kept = [w for w in words if w.lower() not in common]
        if len(kept) == len(words) or not kept:
            return None
        return fts_query(" ".join(kept))

    def _doc_frequencies(self, words: dict[str, str]) -> tuple[int, dict[str, int]]:
        """The number of documents, and how many hold each of `words` (lower case -> as written), counted once a
        generation. (A count made while another process commits may be one write newer than the generation it is
        kept under; it only decides which words `_informative` leaves out, and the next write clears it.)"""
        generation = self.generation()
        with self._df_lock:
            if generation != self._df_generation or len(self._df) > 100_000:
                self._df, self._df_docs, self._df_generation = {}, None, generation
            known = {low: self._df[low] for low in words if low in self._df}
            n_docs = self._df_docs
        if n_docs is None:
            n_docs = self.conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        count = "SELECT count(*) FROM documents_fts WHERE documents_fts MATCH ?"  # (walks the word's doclist)
        counted = {low: self.conn.execute(count, (fts_query(w),)).fetchone()[0]
                   for low, w in words.items() if low not in known}
        with self._df_lock:
            if self._df_generation == generation:
                self._df.update(counted)
                self._df_docs = n_docs
        return n_docs, {**known, **counted}

    def check(self, dim: int, dtype: str) -> list[str]:
        """Problems in the store: SQLite integrity, FTS in step with documents, chunks and vectors sane."""
        findings = [" ".join(r[0].split()) for r in self.conn.execute("PRAGMA quick_check") if r[0] != "ok"]
        findings = [f for f in findings if f != "*** in database main ***"]
        problems = []
        if findings:  # (one line: SQLite lists each page it finds damaged, a dozen lines for one page)
            problems.append(f"{DAMAGED_PAGES} ({len(findings)} findings of SQLite's quick_check, first: "
                            f"{findings[0][:120]})")
        try:
            if not self.read_only:  # (FTS5's check is written as an INSERT: a read-only store cannot run it)
                self.conn.execute("INSERT INTO documents_fts(documents_fts, rank) VALUES ('integrity-check', 1)")
        except sqlite3.DatabaseError as e:
            problems.append(f"full-text index out of step with documents ({e})")
        size = dim * np.dtype(dtype).itemsize
        checks = {
            "documents without chunks": "SELECT count(*) FROM documents d WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.doc = d.rowid)",
            "chunks of missing documents": "SELECT count(*) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM documents d WHERE d.rowid = c.doc)",
            "chunks with offsets outside their document": 'SELECT count(*) FROM chunks c JOIN documents d ON d.rowid = c.doc '
            'WHERE c.start < 0 OR c."end" > length(d.text) OR c.start > c."end"',
            "vectors of the wrong size": f"SELECT count(*) FROM chunks WHERE length(vector) != {int(size)}",
        }
        for label, sql in checks.items():
            n = self.conn.execute(sql).fetchone()[0]
            if n:
                problems.append(f"{n} {label}")
        return problems

    def repair(self) -> None:
        """Rebuild what is derived inside SQLite, drop orphans, and mark chunkless documents for re-embedding."""
        with self.transaction() as c:
            c.execute("INSERT INTO documents_fts(documents_fts) VALUES ('rebuild')")
            c.execute("DELETE FROM chunks WHERE NOT EXISTS (SELECT 1 FROM documents d WHERE d.rowid = chunks.doc)")
            c.execute("UPDATE documents SET hash = '' WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.doc = documents.rowid)")

    def last_updated(self) -> str | None:
        """When a write last changed the index: a delete too (a store from before this was recorded: its newest
        document's time)."""
        stamps = [self.get_meta("changed_at"), self.conn.execute("SELECT max(updated_at) FROM documents").fetchone()[0]]
        return max((s for s in stamps if s), default=None)

    def _in(self, sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        values = list(values)
        for i in range(0, len(values), 500):
            part = values[i : i + 500]
            rows.extend(self.conn.execute(sql.format(",".join("?" * len(part))), part).fetchall())
        return rows


FOLDERS_KEY = "folders"
"""The meta key for the folders read into the index (their full paths, a JSON list): a prune from a folder inside one
of them is refused (see `Index.add_corpus`)."""

DAMAGED_PAGES = "store.db has damaged pages"
"""How `Store.check` begins the problem of pages SQLite finds damaged: `check --repair` then salvages the store
(`store.backup.salvage`) rather than repair it in place, which damaged pages defeat."""


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`, or None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is still open (SQLite may have rolled back already, after an I/O error)."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.DatabaseError:
            pass


def immutable(db: Path, timeout: float, *, then: str, **kwargs: Any) -> sqlite3.Connection:
    """A connection that reads the store `db` in a folder this process cannot write (SQLite's write-ahead log needs
    to write beside the database even to read): opened as immutable, as nobody can change it there. A log still
    holding writes not folded into the database would go unread, so it is refused; `then` says what can be done once
    it is folded in."""
    wal = db.with_name(db.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise BertsearchError(f"{db.parent} is read-only and holds writes not yet folded into {db.name} ({wal.name}); "
                              f"make the folder writable and run any bertsearch command on it once, then {then}")
    return sqlite3.connect(f"{db.resolve().as_uri()}?immutable=1", uri=True, timeout=timeout, **kwargs)


def writable_folder(folder: Path) -> bool:
    """Whether this process can create files in `folder` (as root, modes are checked by trying)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False
