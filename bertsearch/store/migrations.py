"""Numbered schema migrations. The database's PRAGMA user_version is the number applied last."""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: documents, chunks with their vectors, FTS5 over documents kept in step by triggers.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE documents (
        rowid INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        title TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        hash TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE chunks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        doc INTEGER NOT NULL REFERENCES documents(rowid) ON DELETE CASCADE,
        ord INTEGER NOT NULL,
        start INTEGER NOT NULL,
        "end" INTEGER NOT NULL,
        n_tokens INTEGER NOT NULL,
        vector BLOB NOT NULL
    );
    CREATE INDEX chunks_doc ON chunks(doc);
    CREATE VIRTUAL TABLE documents_fts USING fts5(
        title, text, content='documents', content_rowid='rowid', tokenize='porter unicode61'
    );
    CREATE TRIGGER documents_ai AFTER INSERT ON documents BEGIN
        INSERT INTO documents_fts(rowid, title, text) VALUES (new.rowid, new.title, new.text);
    END;
    CREATE TRIGGER documents_ad AFTER DELETE ON documents BEGIN
        INSERT INTO documents_fts(documents_fts, rowid, title, text) VALUES ('delete', old.rowid, old.title, old.text);
    END;
    CREATE TRIGGER documents_au AFTER UPDATE ON documents BEGIN
        INSERT INTO documents_fts(documents_fts, rowid, title, text) VALUES ('delete', old.rowid, old.title, old.text);
        INSERT INTO documents_fts(rowid, title, text) VALUES (new.rowid, new.title, new.text);
    END;
    INSERT INTO meta(key, value) VALUES ('generation', '0');
    """,
    # 2: the top-level metadata keys any document has had, so that a filter naming a key no document has is
    # reported instead of matching nothing in silence.
    """
    CREATE TABLE fields (name TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE TRIGGER documents_fields_ai AFTER INSERT ON documents BEGIN
        INSERT OR IGNORE INTO fields(name) SELECT key FROM json_each(new.metadata);
    END;
    CREATE TRIGGER documents_fields_au AFTER UPDATE OF metadata ON documents BEGIN
        INSERT OR IGNORE INTO fields(name) SELECT key FROM json_each(new.metadata);
    END;
    INSERT OR IGNORE INTO fields(name) SELECT DISTINCT j.key FROM documents d, json_each(d.metadata) j;
    """,
    # 3: the change feed. Every chunk written or deleted, and every chunk of a document whose metadata changed, is
    # logged by triggers in the transaction that changed it, so a vector backend applies only what changed since
    # it last synced, and a crash between the store's commit and a backend's sync is repaired by replaying the
    # feed (a replay is idempotent: a logged chunk that still exists is upserted, one that is gone is deleted).
    # `epoch` names this store's history: a vector file of another (a restored backup, a re-index) never vouches.
    """
    CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, chunk INTEGER NOT NULL);
    CREATE TRIGGER chunks_feed_ai AFTER INSERT ON chunks BEGIN
        INSERT INTO changes(chunk) VALUES (new.id);
    END;
    CREATE TRIGGER chunks_feed_ad AFTER DELETE ON chunks BEGIN
        INSERT INTO changes(chunk) VALUES (old.id);
    END;
    CREATE TRIGGER documents_feed_au AFTER UPDATE OF metadata ON documents BEGIN
        INSERT INTO changes(chunk) SELECT id FROM chunks WHERE doc = new.rowid;
    END;
    INSERT OR REPLACE INTO meta(key, value) VALUES ('epoch', lower(hex(randomblob(8))));
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database has not seen, each in its own transaction.

    The version is read again under the write lock, so two processes opening a new index at once
    do not both apply a migration.
    """
    from ..errors import BertsearchError

    while True:
        if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise BertsearchError(
                    f"this index has schema version {version}, newer than this bertsearch knows "
                    f"({SCHEMA_VERSION}); upgrade bertsearch"
                )
            return SCHEMA_VERSION
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                for statement in _statements(MIGRATIONS[version]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    """Split a script into complete statements (trigger bodies hold semicolons of their own)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
