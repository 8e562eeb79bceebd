"""Back up an index and restore one: a consistent copy of its store, put in place only when complete.

A backup is itself an index folder: `store.db` and `config.json`, plus `backup.json` saying where and when
it was taken. `bertsearch search --index BACKUP` works on it, and restoring is the same copy the other way.
The FAISS file is left out: it is derived, and an index without one rebuilds it from the stored vectors on
first search (no encoder work).

The store is copied with SQLite's online backup API in a single step, which reads inside one transaction:
in WAL mode writers carry on meanwhile, and the copy holds exactly the last state committed before it
began. The copy is written into a hidden folder beside the destination, checked (`PRAGMA quick_check`, a
readable config), flushed to disk and only then renamed to the destination's name, so a folder under that
name is always complete: a copy cut off by a crash or a full disk is a hidden `.NAME.copy-PID.tmp` that the
next backup or restore into the same place removes.

Replacing an existing index (`force`) swaps the two folders in one rename where the filesystem can
(renameat2 RENAME_EXCHANGE), holding the old store's write lock across the swap and marking it retired, as
a re-index does: a process still holding the old index open gets a clear error instead of writing into a
discarded file. The restored store's generation is moved past the old one's, so a vector file built by such
a process from the old store is never taken for the new store's.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import secrets
import shutil
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..config import IndexConfig
from ..errors import BertsearchError, IndexNotFound
from .migrations import SCHEMA_VERSION
from .sqlite import immutable, writable_folder

log = logging.getLogger(__name__)

STORE = "store.db"
CONFIG = "config.json"
MANIFEST = "backup.json"
_TMP_TAG = ".copy-"


class BackupError(BertsearchError):
    """A backup or restore that cannot be made; the message says what to do instead."""


def backup(index: str | Path, out: str | Path, *, force: bool = False, timeout: float = 30.0) -> dict[str, Any]:
    """Copy the index at `index` to the folder `out`, consistently, while writers may be running.

    `out` must not exist (or be an empty folder) unless `force`, which replaces what is there. Returns a
    report: source, path, documents, chunks, generation, model, bytes, replaced, seconds.
    """
    index, out = Path(index), Path(out)
    _recover(index)
    if not (index / STORE).is_file():
        raise IndexNotFound(str(index))
    _refuse_same(index, out, f"back up {index} into {out}: one holds the other; choose an OUT folder beside the index")
    _refuse_foreign(out, "a backup")
    if _occupied(out) and not force:
        raise BackupError(f"{out} already holds a backup or an index; choose a new folder for the backup, or pass "
                          "--force to replace it")
    fix = f"restore it from an earlier backup with 'bertsearch restore BACKUP --index {index} --force'"
    return _copy(index, out, manifest=True, force=force, timeout=timeout, fix=fix)


def restore(source: str | Path, index: str | Path, *, force: bool = False, timeout: float = 30.0) -> dict[str, Any]:
    """Make the index at `index` a copy of the backup (or any index folder) at `source`.

    An existing index is replaced only with `force`; it stays as it was if the restore fails at any
    point. The vector file is rebuilt from the store on first search. Returns the same report as `backup`.
    """
    source, index = Path(source), Path(index)
    if not (source / STORE).is_file():
        raise BackupError(f"no backup at {source} (it has no {STORE}); give a folder written by 'bertsearch backup'")
    _recover(index)
    _refuse_same(source, index, f"restore {source} into {index}: one holds the other; keep backups outside the index folder")
    _refuse_foreign(index, "the restored index")
    if _occupied(index) and not force:
        raise BackupError(
            f"{index} already holds an index; pass --force to replace it with {source}, or restore into a new folder"
        )
    return _copy(source, index, manifest=False, force=force, timeout=timeout, fix="restore from another backup")


def salvage(index: str | Path, *, timeout: float = 30.0) -> dict[str, Any]:
    """Replace the damaged store of the index at `index` with a new one holding every row its tables still give:
    its documents, chunks (their vectors too), metadata and history, copied table by table, with the full-text index
    and the SQL indexes built again instead of read (damage in those, which are derived, made the whole index
    unusable: `check --repair` could not mend it; found 2026-12-06). The new store takes the old one's place as a
    restore does (the old one marked retired where it can still be written); its vectors are loaded afresh. Raises
    BackupError when a table itself cannot be read: then only a backup or the corpus can bring the index back."""
    index = Path(index)
    _recover(index)
    if not (index / STORE).is_file():
        raise IndexNotFound(str(index))
    fix = (f"restore it from a backup ('bertsearch restore BACKUP --index {index} --force') or re-index the corpus "
           "into a new folder")
    _sweep(index)
    tmp = index.parent / f".{index.name}{_TMP_TAG}{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        counts = _salvage_store(index / STORE, tmp / STORE, fix)
        _set_meta(tmp / STORE, "epoch", secrets.token_hex(8))  # (its vectors are loaded afresh, as a restore's are)
        info = _verify(tmp / STORE, index, fix)
        _write(tmp / CONFIG, info["config"].to_json() + "\n")
        _fsync(tmp)
        _, info["generation"] = _put(tmp, index, info["generation"], force=True, timeout=timeout)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"path": str(index), **counts, "generation": info["generation"]}


def _salvage_store(src: Path, dst: Path, fix: str) -> dict[str, int]:
    """Copy the tables of the store at `src` into a new store at `dst`, building its indexes, triggers and full-text
    index afresh (see `salvage`); the rows copied of each kept table."""
    conn = sqlite3.connect(Path(dst).resolve().as_uri(), uri=True, isolation_level=None)
    try:  # (URIs of their own: a folder name with "?" or "#" in it is no query or fragment)
        conn.execute("ATTACH DATABASE ? AS old", (Path(src).resolve().as_uri() + "?mode=ro",))
        try:
            schema = conn.execute("SELECT type, name, sql FROM old.sqlite_master WHERE sql IS NOT NULL").fetchall()
            version = conn.execute("PRAGMA old.user_version").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise BackupError(f"{src} is damaged beyond its derived parts (its schema cannot be read: {e}); {fix}") from None
        virtual = [name for kind, name, sql in schema if kind == "table" and sql.upper().startswith("CREATE VIRTUAL")]
        shadow = {name for kind, name, _ in schema if kind == "table" and any(name.startswith(f"{v}_") for v in virtual)}
        tables = [(name, sql) for kind, name, sql in schema
                  if kind == "table" and name not in shadow and not name.startswith("sqlite_")]
        copied: dict[str, int] = {}
        conn.execute("BEGIN")
        for name, sql in tables:
            conn.execute(sql)  # (a virtual table makes its shadow tables empty)
        for name, sql in tables:
            if name in virtual or name in DERIVED_TABLES:
                continue
            cols = ", ".join(f'"{c[1]}"' for c in conn.execute(f'PRAGMA old.table_info("{name}")'))
            rowid = "" if "WITHOUT ROWID" in sql.upper() or _has_rowid_alias(conn, name) else "rowid, "
            try:
                conn.execute(f'INSERT INTO main."{name}"({rowid}{cols}) SELECT {rowid}{cols} FROM old."{name}"')
            except sqlite3.DatabaseError as e:
                raise BackupError(f"{src} is damaged beyond its derived parts (the table {name} cannot be read: {e}); "
                                  f"{fix}") from None
            copied[name] = conn.execute(f'SELECT count(*) FROM main."{name}"').fetchone()[0]
        if any(name == "sqlite_sequence" for _, name, _ in schema):  # (AUTOINCREMENT: chunk ids are never reused)
            conn.execute("DELETE FROM main.sqlite_sequence")
            conn.execute("INSERT INTO main.sqlite_sequence SELECT * FROM old.sqlite_sequence")
        for kind, name, sql in schema:
            if kind in ("index", "trigger") and not name.startswith("sqlite_"):
                conn.execute(sql)
        for name in virtual:  # full-text indexes over their content tables, built again
            conn.execute(f"INSERT INTO main.\"{name}\"(\"{name}\") VALUES ('rebuild')")
        for name, build in DERIVED_TABLES.items():
            if any(name == t for t, _ in tables):
                conn.execute(build)
        conn.execute(f"PRAGMA main.user_version = {int(version)}")
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE old")
        conn.execute("PRAGMA journal_mode = WAL")
    except BaseException:
        conn.close()
        raise
    conn.close()
    return {"documents": copied.get("documents", 0), "chunks": copied.get("chunks", 0)}


DERIVED_TABLES = {
    # the metadata keys any document has had (migration 2): what the documents' metadata gives, built again
    "fields": "INSERT OR IGNORE INTO main.fields(name) SELECT j.key FROM main.documents d, json_each(d.metadata) j",
}
"""Tables a salvage builds again from the others instead of copying (damage there loses nothing)."""


def _has_rowid_alias(conn: sqlite3.Connection, table: str) -> bool:
    """Whether `table` has an INTEGER PRIMARY KEY (its rowid under another name, copied with the columns)."""
    pk = [c for c in conn.execute(f'PRAGMA old.table_info("{table}")') if c[5]]
    return len(pk) == 1 and pk[0][2].upper() == "INTEGER"


# -- the copy -------------------------------------------------------------------------------------


def _copy(src: Path, dst: Path, *, manifest: bool, force: bool, timeout: float, fix: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    if dst.exists() and not dst.is_dir():
        raise BackupError(f"{dst} is a file, not a folder; choose another destination")
    dst.parent.mkdir(parents=True, exist_ok=True)
    _sweep(dst)
    tmp = dst.parent / f".{dst.name}{_TMP_TAG}{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # our own, from a pid reused after a crash
    tmp.mkdir()
    try:
        info = _copy_store(src, tmp / STORE, timeout=timeout, fix=fix)
        # a history of its own: the copy's vectors are loaded afresh, never shared with the source's (a Milvus
        # collection is named by it) nor taken from a vector file of the folder it replaces
        _set_meta(tmp / STORE, "epoch", secrets.token_hex(8))
        _write(tmp / CONFIG, info["config"].to_json() + "\n")
        if manifest:
            _write(tmp / MANIFEST, json.dumps({
                "source": str(src.resolve()),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "documents": info["documents"],
                "chunks": info["chunks"],
                "generation": info["generation"],
                "model": info["config"].model,
            }, indent=2) + "\n")
        _fsync(tmp)
        replaced, info["generation"] = _put(tmp, dst, info["generation"], force=force, timeout=timeout)
    except sqlite3.OperationalError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if "full" in str(e) or "I/O" in str(e):
            raise BackupError(f"could not write {dst} ({e}); free some disk space or choose another folder") from None
        raise BackupError(f"could not copy {src} to {dst} ({e}); run the command again") from None
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BackupError(
            f"could not write {dst} ({e.strerror or e}); free some space or fix the permissions there, or choose another folder"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "source": str(src),
        "path": str(dst),
        "documents": info["documents"],
        "chunks": info["chunks"],
        "generation": info["generation"],
        "model": info["config"].model,
        "bytes": (dst / STORE).stat().st_size,
        "replaced": replaced,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _copy_store(src: Path, dst: Path, *, timeout: float, fix: str) -> dict[str, Any]:
    """Copy src/store.db to `dst` in one step (one read transaction) and check the copy."""
    for attempt in (1, 2):
        conn = _reading(src / STORE, timeout)
        try:
            target = sqlite3.connect(dst)
            try:
                conn.backup(target)  # pages=-1: everything in one step, so one committed state
            finally:
                target.close()
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise BackupError(f"{src} stayed locked for {timeout:.0f}s; try again when its writer finishes") from None
            if dst.exists() and ("full" in str(e) or "I/O" in str(e)):
                raise  # the destination failed: reported by the caller
            if "malformed" in str(e) or "not a database" in str(e):
                raise _damaged(src, fix) from None
            raise BackupError(f"could not read {src / STORE} ({e}); check the permissions of {src} and its files") from None
        except sqlite3.DatabaseError:
            raise _damaged(src, fix) from None
        finally:
            conn.close()
        info = _verify(dst, src, fix)
        if info["retired"] is None:
            return info
        if attempt == 1:  # copied the old store of a re-index that swapped meanwhile: copy the new one
            for p in (dst, dst.with_name(dst.name + "-wal"), dst.with_name(dst.name + "-shm")):
                p.unlink(missing_ok=True)
            continue
        _set_meta(dst, "retired", None)  # a folder left retired (given by hand): its copy is a live index
        info["retired"] = None
    return info


def _reading(db: Path, timeout: float) -> sqlite3.Connection:
    """A connection to read the store `db` (which exists: checked by the caller). In a folder this process cannot
    write, SQLite's write-ahead log cannot be opened, so the store is read as immutable, as a search reads it; one
    with writes not yet folded in from its log is refused (they would be left out of the copy)."""
    if writable_folder(db.parent):
        return sqlite3.connect(db, timeout=timeout)
    return immutable(db, timeout, then="back it up")


def _verify(db: Path, src: Path, fix: str) -> dict[str, Any]:
    """The copy's config, counts and generation; BackupError if it is not a sound, complete index."""
    conn = sqlite3.connect(db)
    try:
        problems = [r[0] for r in conn.execute("PRAGMA quick_check") if r[0] != "ok"]
        if problems:
            first = " ".join(problems[0].split())  # (one row can hold many lines of SQLite's findings)
            raise BackupError(f"{src / STORE} is damaged ({first[:160]}{'...' if len(first) > 160 else ''}), and so "
                              f"would be a copy; {fix}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise BackupError(f"{src} has schema version {version}, newer than this bertsearch knows; upgrade bertsearch")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        config = IndexConfig.from_json(meta["config"])
        docs = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    except (sqlite3.DatabaseError, KeyError, ValueError, TypeError, BertsearchError) as e:
        if isinstance(e, BackupError):
            raise
        if isinstance(e, KeyError) or (isinstance(e, sqlite3.OperationalError) and "no such table" in str(e)):
            raise BackupError(
                f"{src} is not a complete index (its store has no config); index into it first, or give another folder"
            ) from None
        raise _damaged(src, fix) from None
    finally:
        conn.close()
    return {
        "config": config,
        "documents": docs,
        "chunks": chunks,
        "generation": int(meta.get("generation", 0)),
        "retired": meta.get("retired"),
    }


def _damaged(src: Path, fix: str) -> BackupError:
    return BackupError(f"{src / STORE} is damaged or not an index store; {fix}")


def _set_meta(db: Path, key: str, value: str | None) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        if value is None:
            conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         (key, value))
    finally:
        conn.close()


# -- putting the copy in place --------------------------------------------------------------------


def _put(tmp: Path, dst: Path, generation: int, *, force: bool, timeout: float) -> tuple[bool, int]:
    """Move the complete copy at `tmp` to `dst`: whether it replaced an index there, and its generation."""
    if not _occupied(dst):
        os.rename(tmp, dst)  # atomic; replaces an empty folder
        _fsync(dst.parent)
        return False, generation
    if not force:  # filled by another process since the start
        raise BackupError(f"{dst} was filled by another process meanwhile; choose a new folder, or pass --force")
    old = _lock(dst / STORE, timeout)  # no writer commits into the folder while it is replaced
    try:
        if old is not None:
            old_generation = int(old.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
            if old_generation >= generation:  # past the old one: its vector files never vouch for the new store
                generation = old_generation + 1
                _set_meta(tmp / STORE, "generation", str(generation))
                _fsync(tmp / STORE)
            old.execute("INSERT INTO meta(key, value) VALUES ('retired', 'replaced by a restore') "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        _exchange(tmp, dst)
        if old is not None:
            old.execute("COMMIT")
    finally:
        if old is not None:
            if old.in_transaction:
                old.execute("ROLLBACK")
            old.close()
    _fsync(dst.parent)
    shutil.rmtree(tmp, ignore_errors=True)  # now the old folder
    return True, generation


def _lock(db: Path, timeout: float) -> sqlite3.Connection | None:
    """A connection holding `db`'s write lock, or None where it is no readable store (damaged, missing)."""
    if not db.is_file():
        return None
    conn = sqlite3.connect(db, timeout=timeout, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]
        return conn
    except sqlite3.OperationalError as e:
        conn.close()
        if "locked" in str(e) or "busy" in str(e):
            raise BackupError(f"{db.parent} is being written by another process; try again when it finishes") from None
        log.warning("replacing %s, whose store cannot be read (%s)", db.parent, e)
        return None
    except (sqlite3.DatabaseError, TypeError, ValueError) as e:
        conn.close()
        log.warning("replacing %s, whose store cannot be read (%s)", db.parent, e)
        return None


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders: in one step where the filesystem can, else with two renames (a crash between
    them leaves `b` missing and both complete folders beside it; running the restore again finishes)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) == 0:  # AT_FDCWD, RENAME_EXCHANGE
            return
    except (AttributeError, OSError, TypeError):  # no renameat2 (not Linux, or an old libc)
        pass
    away = b.parent / f".{b.name}{_TMP_TAG}{os.getpid()}.old.tmp"
    os.rename(b, away)
    try:
        os.rename(a, b)
    except BaseException:
        os.rename(away, b)
        raise
    os.rename(away, a)


def _sweep(dst: Path) -> None:
    """Remove copies into `dst` left by processes that died before finishing them."""
    for p in dst.parent.glob(f".{dst.name}{_TMP_TAG}*.tmp"):
        pid = p.name[len(f".{dst.name}{_TMP_TAG}"):].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            log.info("removing %s, a copy cut off before it finished", p)
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- small helpers --------------------------------------------------------------------------------


def _recover(index: Path) -> None:
    """Finish or undo a re-index swap cut off by a crash, so that `index` is where it should be."""
    from .swap import recover

    recover(index)


def _occupied(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


OWN = {STORE, f"{STORE}-wal", f"{STORE}-shm", f"{STORE}-journal", CONFIG, MANIFEST, "vectors.faiss", "vectors.faiss.json",
       "milvus.db", "milvus.lock"}
"""The names of what an index or a backup folder holds (besides the vector file's temporary `*.tmp` files)."""


def _refuse_foreign(dst: Path, what: str) -> None:
    """Refuses, --force or not, a destination that holds files of the user's (anything an index or a backup does
    not): replacing the folder would delete them (found 2026-12-06: `restore --force` into a folder of notes left
    only the index; then the same into a folder of notes that also held an index)."""
    names = sorted(p.name for p in dst.iterdir() if not _own(p.name)) if dst.is_dir() else []
    if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        held = "besides an index " if (dst / STORE).exists() else ""
        raise BackupError(f"{dst} holds files {held}that are not an index's ({shown}); bertsearch replaces only an "
                          f"index or a backup folder, never other files. Choose a new folder for {what}, or move "
                          "those files out")


def _own(name: str) -> bool:
    return name in OWN or (name.startswith("vectors.faiss.") and name.endswith(".tmp"))


def _refuse_same(a: Path, b: Path, what: str) -> None:
    ra, rb = a.resolve(), b.resolve()
    if ra == rb or ra in rb.parents or rb in ra.parents:  # a replaced folder would take the other with it
        raise BackupError(f"cannot {what}")


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    """Flush a file or a folder's entries (and, for a folder, each file in it) to disk."""
    if path.is_dir():
        for p in path.iterdir():
            if p.is_file():
                _fsync(p)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
