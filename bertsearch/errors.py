"""Typed errors. Each one says what went wrong and how to fix it; the CLI prints it as one line."""

from __future__ import annotations

import os
import re


class BertsearchError(Exception):
    """Base class for every error bertsearch raises on purpose (a user mistake or bad input)."""

    exit_code = 1


class IndexNotFound(BertsearchError):
    def __init__(self, path: str) -> None:
        if os.path.isfile(path):
            super().__init__(f"{path} is a file, not an index folder; give --index the folder an index was made in "
                             "('bertsearch index CORPUS --index FOLDER' makes one)")
        else:
            super().__init__(f"no index at {path}; run 'bertsearch index CORPUS --index {path}' first")


class ReadOnlyIndex(BertsearchError):
    """The index's files or folder cannot be written: it can be searched, not changed."""


class DiskFull(BertsearchError):
    """The disk holding the index is full: nothing committed was lost, and nothing more can be written."""


class IndexBusy(BertsearchError):
    """Another process holds the index's write lock for longer than we wait."""


class IndexReplaced(IndexBusy):
    """The index folder was replaced (re-indexed, restored) by another process while this one had it open."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path} was replaced ({why}) while this process had it open; open it again to use the new "
                         "one (run the command again; in Python, bertsearch.open_index; a server: restart it)")


class CorruptIndex(BertsearchError):
    """The index's SQLite store cannot be read: not a database, or damaged pages."""

    def __init__(self, db: str, detail: str) -> None:
        self.db = db
        folder = os.path.dirname(db) or "."
        super().__init__(
            f"{db} is damaged ({detail}); 'bertsearch check --repair --index {folder}' copies what can still be read "
            f"into a new store; else restore the index from a backup ('bertsearch restore BACKUP --index {folder} "
            "--force') or re-index the corpus into a new folder"
        )


class IndexClosed(BertsearchError):
    def __init__(self, path: str) -> None:
        super().__init__(f"the index at {path} is closed; open it again with bertsearch.open_index({path!r})")


class ModelMismatch(BertsearchError):
    """The encoder given does not match the one the index's vectors came from."""


class ModelNotFound(BertsearchError):
    pass


class CorpusError(BertsearchError):
    """A corpus that cannot be read: missing path, unknown format, malformed record."""


class MalformedRecord(CorpusError):
    def __init__(self, source: str, line: int, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        where = f"{source}:{line}" if line else source  # line 0: the file as a whole
        super().__init__(f"{where}: {problem} (fix the record, or pass --on-error skip to skip and count bad records)")


class BadQuery(BertsearchError):
    pass


class BadArgument(BertsearchError):
    pass


FILTER_HINT = "filters look like: year >= 2020 and lang = 'en'"


class BadFilter(BadQuery):
    """A filter expression that does not parse, or names a field no document has; the message quotes it and points
    at the column. A BadQuery too: the filter is part of the query."""

    def __init__(self, expr: str, problem: str, column: int | None = None, detail: str = "") -> None:
        self.expr = expr
        self.problem = problem
        self.column = column
        shown = re.sub(r"[\x00-\x1f\x7f]", " ", expr)
        where = f" at column {column}" if column is not None else ""
        more = f" ({detail})" if detail else ""
        super().__init__(f'bad filter "{shown}": {problem}{where}{more}; {FILTER_HINT}')


class VectorsUnavailable(BertsearchError):
    """The vector backend cannot be reached now: a Milvus server down, a milvus-lite folder another process holds.
    What the store holds is kept; the vectors follow it once the backend is back."""


class MissingDependency(BertsearchError):
    def __init__(self, package: str, feature: str) -> None:
        super().__init__(f"{feature} needs the package {package}; install it with 'pip install {package}'")


def from_sqlite(e: Exception, db: str) -> BertsearchError:
    """The typed error for an SQLite failure on the store `db`: full disk, read-only, busy, or damage."""
    msg = str(e)
    low = msg.lower()
    folder = os.path.dirname(db) or "."
    if "full" in low:
        return DiskFull(f"the disk holding {db} is full ({msg}); nothing committed was lost: free some space "
                               "and run the command again")
    if "readonly" in low or "read-only" in low:
        return ReadOnlyIndex(f"cannot write to {db} ({msg}); make {folder} writable, or only search it")
    if "locked" in low or "busy" in low:
        return IndexBusy(f"{folder} is being written by another process ({msg}); try again when it finishes")
    if "disk i/o" in low:
        return BertsearchError(f"reading or writing {db} failed ({msg}): the disk may be full or failing; nothing "
                               "committed was lost. Free some space, check the disk, and run the command again")
    if "unable to open" in low:
        return BertsearchError(f"cannot open {db} ({msg}); check that {folder} exists and its permissions")
    return CorruptIndex(db, msg)
