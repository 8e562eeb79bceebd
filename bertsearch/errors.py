"""Typed errors. Each one says what went wrong and how to fix it; the CLI prints it as one line."""

from __future__ import annotations


class BertsearchError(Exception):
    """Base class for every error bertsearch raises on purpose (a user mistake or bad input)."""

    exit_code = 1


class IndexNotFound(BertsearchError):
    def __init__(self, path: str) -> None:
        super().__init__(
            f"no index at {path}; run 'bertsearch index CORPUS --index {path}' first"
        )


class IndexBusy(BertsearchError):
    """Another process holds the index's write lock for longer than we wait."""


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
        super().__init__(
            f"{source}:{line}: {problem} "
            "(fix the record, or pass --on-error skip to skip and count bad records)"
        )


class BadQuery(BertsearchError):
    pass


class BadArgument(BertsearchError):
    pass


class MissingDependency(BertsearchError):
    def __init__(self, package: str, feature: str) -> None:
        super().__init__(f"{feature} needs the package {package}; install it with 'pip install {package}'")
