"""Re-index with another encoder: build the new index beside the old one, then swap it in when complete.

Until the swap the old index serves searches (and takes writes) as before. The new one is built in a
hidden sibling folder, `.NAME.reindex`, from the documents stored in the old one (re-chunked for the new
model's window), so an interrupted run resumes: documents already embedded there are unchanged and
cost nothing. The swap holds the old index's write lock, brings the new one up to date with any write
made meanwhile, marks the old store retired (a writer still holding it open gets a clear error instead
of writing into a discarded file), and renames the folders. A crash between the two renames is repaired
the next time the index is opened (`recover`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from .errors import BadArgument, IndexNotFound, ModelMismatch
from .store.sqlite import FOLDERS_KEY
from .store.swap import COMPLETE, recover, retired_path, staging_path

log = logging.getLogger(__name__)

def reindex(
    path: str | Path,
    model: str,
    *,
    precision: str = "auto",
    batch_size: int = 128,
    on_progress: Callable[[int], None] | None = None,
    before_swap: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Re-embed every document of the index at `path` with `model` and swap the result in.

    Returns a report: documents, chunks, the old and new model, seconds. `before_swap` runs after the
    copy and before the swap (tests use it to write to the old index meanwhile).
    """
    from .store import Store

    path = Path(path)
    recover(path)
    stage = staging_path(path)
    t0 = time.perf_counter()
    if not (path / Store.FILE).is_file():
        raise IndexNotFound(str(path))
    # the old index's store only: its encoder is not needed (and may be gone) to copy its documents out
    with closing(Store(path / Store.FILE)) as store:
        config = store.config
        if config is None:
            raise IndexNotFound(str(path))
        old_model = config.model
        new = _open_staging(stage, model, config, precision)
        try:
            int8 = [c.precision == "int8" for c in (config, new.config)]
            if new.config.fingerprint == config.fingerprint and int8[0] == int8[1]:  # (float precisions agree)
                if new.created:  # (an empty staging index of this run: nothing to resume, so not left behind)
                    new.close()
                    shutil.rmtree(stage, ignore_errors=True)
                floats = (f"; its vectors are {config.precision}, and {precision} would give the same to within "
                          "rounding" if precision not in ("auto", "int8") and precision != config.precision else "")
                raise BadArgument(f"{path} already holds vectors of {model}"
                                  + (" in int8" if int8[0] else "") + f"{floats}; nothing to re-index"
                                  + ("" if int8[0] else " (to encode it in int8, add --precision int8)"))
            report = new.add(_documents(store), batch_size=batch_size, on_progress=on_progress, prune=True)
            if before_swap is not None:
                before_swap()
            with store.transaction(bump=False) as c:  # no writer gets in from here to the swap
                caught_up = _catch_up(store, new)
                row = c.execute("SELECT value FROM meta WHERE key = ?", (FOLDERS_KEY,)).fetchone()
                if row is not None:  # the folders read into the index go with it (a prune's guard; it lost them)
                    new.store.set_meta(FOLDERS_KEY, row[0])
                new.refresh_vectors()
                counts = new.store.counts()
                new_model = new.config.model
                new.close()
                (stage / COMPLETE).write_text(json.dumps({"from": old_model, "to": new_model}) + "\n")
                c.execute(
                    "INSERT INTO meta(key, value) VALUES ('retired', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (f"re-indexed with {new_model}",),
                )
                path.rename(retired_path(path))
                stage.rename(path)
        except BaseException:
            new.close()
            raise
    (path / COMPLETE).unlink(missing_ok=True)
    shutil.rmtree(retired_path(path), ignore_errors=True)
    return {
        "index": str(path),
        "from_model": old_model,
        "to_model": new_model,
        **counts,
        "embedded_chunks": report.chunks,
        "caught_up": caught_up,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _open_staging(stage: Path, model: str, config: Any, precision: str) -> Any:
    """The staging index for `model`: resumed when an earlier run left one for the same model."""
    from .engine import Index
    from .models import is_hashing

    for attempt in (1, 2):
        try:
            # a new model, nothing else: the same vector index, vector store and runtime as the old one (the
            # hashing encoder runs on torch alone: to or from it, the runtime is the new model's own choice)
            hashing = is_hashing(config.model) or is_hashing(model)
            return Index.open(stage, model=model, create=True, ann=config.ann, vector_dtype=config.vector_dtype,
                              precision=precision, vectors=config.vectors, backend=None if hashing else config.backend)
        except ModelMismatch:
            if attempt == 2:
                raise
            log.info("discarding %s: it was started for another model", stage)
            shutil.rmtree(stage)
    raise AssertionError("unreachable")


def _documents(store: Any, batch: int = 500) -> Iterator[Any]:
    """Every stored document as a record for `Index.add` (streamed in rowid order)."""
    rowids = [r for (r,) in store.conn.execute("SELECT rowid FROM documents ORDER BY rowid")]
    for i in range(0, len(rowids), batch):
        docs = store.documents(rowids[i : i + batch])
        for r in rowids[i : i + batch]:
            if r in docs:  # deleted meanwhile: the catch-up settles it
                d = docs[r]
                yield _doc(d)


def _doc(d: dict[str, Any]) -> Any:
    from .types import Document

    return Document(id=d["id"], text=d["text"], title=d["title"], metadata=d["metadata"])


def _catch_up(old: Any, new: Any) -> int:
    """Make `new` hold exactly the documents of `old` (writes made during the copy); returns how many changed."""
    def state(store: Any) -> dict[str, tuple[str, str]]:
        return {i: (h, m) for i, h, m in store.conn.execute("SELECT id, hash, metadata FROM documents")}

    before, after = state(old), state(new.store)
    changed = [i for i, s in before.items() if after.get(i) != s]
    gone = [i for i in after if i not in before]
    for i in range(0, len(changed), 500):
        part = changed[i : i + 500]
        rowids = [r for (r,) in old.conn.execute(f"SELECT rowid FROM documents WHERE id IN ({','.join('?' * len(part))})", part)]
        new.add([_doc(d) for d in old.documents(rowids).values()])
    if gone:
        new.delete(gone)
    return len(changed) + len(gone)
