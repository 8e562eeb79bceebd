"""The swap of a re-index: the folder protocol that `reindex` follows and `Index.open` repairs.

A re-index builds the new index in a hidden sibling folder, `.NAME.reindex`, marks it complete, marks the
old store retired, and renames: NAME -> `.NAME.retired`, `.NAME.reindex` -> NAME. A crash between the two
renames leaves no NAME; `recover` finishes the swap (the new folder is complete) or undoes it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

COMPLETE = ".complete"  # written into the staging folder once it holds everything: the swap may finish


def staging_path(path: Path) -> Path:
    return path.parent / f".{path.name}.reindex"


def retired_path(path: Path) -> Path:
    return path.parent / f".{path.name}.retired"


def recover(path: Path) -> None:
    """Finish or undo a swap that a crash cut between its two renames (the index folder is missing), or remove
    the old folder that a crash after the swap left beside the index."""
    old, new = retired_path(path), staging_path(path)
    if path.exists() and old.exists():  # a swap that finished, cut off before it removed the old folder
        log.warning("removing %s, left by a re-index or restore that was cut off after its swap", old)
        shutil.rmtree(old, ignore_errors=True)
        return
    if path.exists() or not old.exists():
        return
    if (new / COMPLETE).exists():
        log.warning("finishing the re-index of %s that was cut off during its swap", path)
        mark_retired(old, "re-indexed")  # before anyone can open the new one: a writer still on the old fails
        new.rename(path)
        (path / COMPLETE).unlink(missing_ok=True)
        shutil.rmtree(old, ignore_errors=True)
    else:
        log.warning("restoring %s: a re-index was cut off during its swap", path)
        old.rename(path)
        mark_retired(path, None)


def mark_retired(path: Path, why: str | None) -> None:
    """Set (or with None, clear) the store's retired mark."""
    from .sqlite import Store

    store = Store(path / Store.FILE)
    try:
        with store.transaction(bump=False, retired_ok=True) as c:
            if why is None:
                c.execute("DELETE FROM meta WHERE key = 'retired'")
            else:
                c.execute("INSERT INTO meta(key, value) VALUES ('retired', ?) "
                          "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (why,))
    finally:
        store.close()
