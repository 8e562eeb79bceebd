"""SQLite store (through sqlite-utils). Every write is one transaction that also bumps `generation`,
the number the derived FAISS file records so that a stale one is noticed and rebuilt."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from ..config import IndexConfig
from ..types import Chunk, Document
from .migrations import migrate

_WORD = re.compile(r"\w+", re.UNICODE)


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
        conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        self.db = sqlite_utils.Database(conn)
        migrate(conn)

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self, *, bump: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock up front. `bump` marks chunks as changed, which
        makes the derived vector index stale."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            if bump:
                self.conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    # -- meta -------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction(bump=False) as c:
            c.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

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

    def update_metadata(self, doc_id: str, metadata: dict[str, Any]) -> bool:
        """Replace a document's metadata (its vectors stay); True if it changed."""
        new = json.dumps(metadata, ensure_ascii=False)
        with self.transaction(bump=False) as c:
            return c.execute("UPDATE documents SET metadata = ? WHERE id = ? AND metadata != ?", (new, doc_id, new)).rowcount > 0

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

    def counts(self) -> dict[str, int]:
        docs = self.conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        chunks = self.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return {"documents": docs, "chunks": chunks}

    def vectors(self, dim: int, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
        """All chunk ids and vectors: (n,) int64 and (n, dim) float32, in id order."""
        n = self.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        ids = np.empty(n, dtype=np.int64)
        xb = np.empty((n, dim), dtype=np.float32)
        i = 0
        for cid, blob in self.conn.execute("SELECT id, vector FROM chunks ORDER BY id"):
            if i == n:  # rows appeared since the count: another writer; the generation check catches it
                break
            ids[i] = cid
            xb[i] = np.frombuffer(blob, dtype=dtype)
            i += 1
        return ids[:i], xb[:i]

    def chunk_vectors(self, chunk_ids: Sequence[int], dim: int, dtype: str = "float32") -> np.ndarray:
        rows = dict(self._in("SELECT id, vector FROM chunks WHERE id IN ({})", chunk_ids))
        return np.stack([np.frombuffer(rows[c], dtype=dtype) for c in chunk_ids]).astype(np.float32).reshape(-1, dim)

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

    def bm25(self, query: str, k: int) -> list[tuple[int, float]]:
        """Top `k` documents by FTS5 BM25 over title and text: [(rowid, score)], higher is better."""
        q = fts_query(query)
        if q is None:
            return []
        rows = self.conn.execute(
            "SELECT rowid, bm25(documents_fts) FROM documents_fts WHERE documents_fts MATCH ? ORDER BY rank LIMIT ?",
            (q, k),
        ).fetchall()
        return [(r, -s) for r, s in rows]

    def last_updated(self) -> str | None:
        return self.conn.execute("SELECT max(updated_at) FROM documents").fetchone()[0]

    def _in(self, sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        values = list(values)
        for i in range(0, len(values), 500):
            part = values[i : i + 500]
            rows.extend(self.conn.execute(sql.format(",".join("?" * len(part))), part).fetchall())
        return rows
