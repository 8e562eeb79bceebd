"""Backup and restore: the copy is one committed state, it is an index itself, and nothing half-made is
ever found under the destination's name."""

import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import bertsearch
from bertsearch.errors import BertsearchError, IndexBusy
from bertsearch.store import backup as bk


@pytest.fixture
def built(run, corpus_file, tmp_path):
    ix = tmp_path / "ix"
    r = run("index", corpus_file, "--index", ix, "--model", "hashing")
    assert r.exit_code == 0, r.output
    return ix


def stored(path: Path) -> dict[str, str]:
    """id -> text of the documents in an index folder's store, read directly."""
    conn = sqlite3.connect(f"file:{path / 'store.db'}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT id, text FROM documents"))
    finally:
        conn.close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_backup_is_an_index_and_restores(run, built, tmp_path):
    out = tmp_path / "backups" / "mon"
    r = run("backup", out, "--index", built, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["documents"] == 4 and report["path"] == str(out) and report["replaced"] is False
    assert sorted(p.name for p in out.iterdir()) == ["backup.json", "config.json", "store.db"]
    manifest = json.loads((out / "backup.json").read_text())
    assert manifest["documents"] == 4 and manifest["model"].startswith("hashing") and manifest["source"] == str(built.resolve())
    assert leftovers(out.parent) == []
    # the backup searches as it is (its vectors are rebuilt from the store) and passes check
    r = run("search", "northern", "lights", "--index", out, "--json", "-k", "1")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["hits"][0]["doc_id"] == "aurora"
    assert run("check", "--index", out).exit_code == 0
    # restored into a new folder: the same documents, and a working index
    new = tmp_path / "restored"
    r = run("restore", out, "--index", new)
    assert r.exit_code == 0 and "restored into" in r.stdout
    assert sorted(p.name for p in new.iterdir()) == ["config.json", "store.db"]
    assert stored(new) == stored(built)
    r = run("search", "penicillin", "--index", new, "--json", "-k", "1")
    assert json.loads(r.stdout)["hits"][0]["doc_id"] == "penicillin"


def test_existing_folders_are_replaced_only_with_force(run, built, tmp_path, docs):
    out = tmp_path / "bk"
    assert run("backup", out, "--index", built).exit_code == 0
    before = stored(built)
    with bertsearch.open_index(str(built)) as ix:
        ix.add([{"id": "late", "text": "written after the backup"}])
        ix.delete(["aurora"])
    r = run("backup", out, "--index", built)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "--force" in r.stderr
    assert stored(out) == before  # untouched
    r = run("restore", out, "--index", built)
    assert r.exit_code == 1 and "--force" in r.stderr and "Traceback" not in r.output
    assert "late" in stored(built)
    r = run("restore", out, "--index", built, "--force", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["replaced"] is True
    assert stored(built) == before
    assert leftovers(tmp_path) == []
    assert run("check", "--index", built).exit_code == 0
    # an empty folder is no obstacle
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("backup", empty, "--index", built).exit_code == 0 and stored(empty) == before


def test_force_never_replaces_a_folder_of_other_files(run, built, tmp_path):
    """`restore --force` and `backup --force` into a folder of the user's own files deleted them (and `restore` said
    the folder "already holds an index")."""
    out = tmp_path / "bk"
    assert run("backup", out, "--index", built).exit_code == 0
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("my thesis")
    for args in (("restore", out, "--index", precious), ("restore", out, "--index", precious, "--force"),
                 ("backup", precious, "--index", built, "--force")):
        r = run(*args)
        assert r.exit_code == 1 and "holds files that are not an index's (thesis.txt)" in r.stderr, (args, r.output)
        assert "already holds an index" not in r.stderr
        assert sorted(p.name for p in precious.iterdir()) == ["thesis.txt"]
    # nor a folder of the user's files that also holds an index (the index was made there, among them)
    shutil.copytree(built, precious, dirs_exist_ok=True)
    (precious / "photos").mkdir()
    for args in (("restore", out, "--index", precious, "--force"), ("backup", precious, "--index", built, "--force")):
        r = run(*args)
        assert r.exit_code == 1 and "besides an index that are not an index's (photos, thesis.txt)" in r.stderr, r.output
        assert {"thesis.txt", "photos", "store.db"} <= {p.name for p in precious.iterdir()}
    r = run("index", tmp_path / "none.jsonl", "--index", "")
    assert r.exit_code == 2 and "give a folder name" in r.stderr and not (Path.cwd() / "store.db").exists()


def test_an_index_in_a_read_only_folder_is_backed_up(run, built, tmp_path, monkeypatch):
    """Its backup said the store was damaged, and advised `restore --force` over a sound index."""
    monkeypatch.setattr(bk, "writable_folder", lambda folder: folder != built)  # as a read-only mount is, to root too
    r = run("backup", tmp_path / "bk", "--index", built)
    assert r.exit_code == 0, r.output
    assert stored(tmp_path / "bk") == stored(built)
    (built / "store.db-wal").write_bytes(b"x" * 100)  # writes not yet folded in: they cannot be read, so refused
    r = run("backup", tmp_path / "bk2", "--index", built)
    assert r.exit_code == 1 and "read-only and holds writes not yet folded" in r.stderr and "damaged" not in r.stderr


def test_user_mistakes_are_one_line(run, built, tmp_path):
    cases = [
        (("backup", tmp_path / "x", "--index", tmp_path / "missing"), "no index at"),
        (("restore", tmp_path / "missing", "--index", tmp_path / "new"), "no backup at"),
        (("backup", built / "inside", "--index", built), "one holds the other"),
        (("backup", tmp_path, "--index", built, "--force"), "one holds the other"),
        (("restore", built, "--index", built, "--force"), "one holds the other"),
    ]
    for args, message in cases:
        r = run(*args)
        assert r.exit_code == 1 and message in r.stderr, (args, r.output)
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.output
    assert stored(built)  # still there
    assert not (built / "inside").exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_damaged_backup_is_refused_and_the_index_kept(run, built, tmp_path, damage):
    out = tmp_path / "bk"
    assert run("backup", out, "--index", built).exit_code == 0
    db = out / "store.db"
    data = db.read_bytes()
    if damage == "garbage":
        db.write_bytes(data[:100] + os.urandom(len(data) - 100))
    elif damage == "truncated":
        db.write_bytes(data[: len(data) // 2])
    else:
        db.write_bytes(b"")
    before = stored(built)
    r = run("restore", out, "--index", built, "--force")
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert r.stderr.count("\n") == 1
    assert ("damaged" in r.stderr or "not a complete index" in r.stderr), r.stderr
    assert stored(built) == before and leftovers(tmp_path) == []


def test_damaged_index_is_not_backed_up(run, built, tmp_path):
    db = built / "store.db"
    data = db.read_bytes()
    db.write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    r = run("backup", tmp_path / "bk", "--index", built)
    assert r.exit_code == 1 and "damaged" in r.stderr and "restore" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "bk").exists() and leftovers(tmp_path) == []


def test_a_failed_copy_leaves_nothing_and_stale_copies_are_swept(built, tmp_path, monkeypatch):
    out = tmp_path / "bk"
    stale = tmp_path / f".bk{bk._TMP_TAG}99999999.tmp"  # from a process that died (no such pid)
    stale.mkdir()
    (stale / "store.db").write_bytes(b"half")

    def broken(*args, **kwargs):
        raise bk.BackupError("verification failed")

    monkeypatch.setattr(bk, "_verify", broken)
    with pytest.raises(bk.BackupError):
        bk.backup(built, out)
    assert not out.exists() and leftovers(tmp_path) == []  # the stale copy swept too
    monkeypatch.undo()
    report = bk.backup(built, out)
    assert report["documents"] == 4 and leftovers(tmp_path) == []


def test_disk_full_during_backup_is_one_line_and_leaves_nothing(built, tmp_path):
    """The file size limit makes every write past 8 KiB fail as on a full disk (EFBIG, SIGXFSZ ignored)."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    out = tmp_path / "bk"
    r = subprocess.run([sys.executable, "-m", "bertsearch", "backup", str(out), "--index", str(built)],
                       capture_output=True, text=True, preexec_fn=limit, timeout=120, check=False)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("error: could not write") and r.stderr.count("\n") == 1, r.stderr
    assert not out.exists() and leftovers(tmp_path) == []


def test_restore_retires_an_index_held_open(built, tmp_path):
    out = tmp_path / "bk"
    bk.backup(built, out)
    ix = bertsearch.open_index(str(built))
    try:
        for i in range(3):
            ix.add([{"id": f"n{i}", "text": f"new document {i}"}])
        old_generation = ix.store.generation()
        report = bk.restore(out, built, force=True)
        assert report["replaced"] and report["generation"] > old_generation
        with pytest.raises(IndexBusy, match="replaced"):  # its writes would be lost with the old folder
            ix.add([{"id": "lost", "text": "a write into the replaced store"}])
    finally:
        ix.close()
    assert sorted(stored(built)) == ["aurora", "penicillin", "piano", "volcano"]
    with bertsearch.open_index(str(built)) as again:  # the restored index takes writes
        again.add([{"id": "after", "text": "written after the restore"}])
        assert again.check()["ok"]


WRITER = textwrap.dedent("""
    import sys, bertsearch
    path, batches, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with bertsearch.open_index(path) as ix:
        for b in range(batches):
            ix.add([{"id": f"w{b:04d}-{j}", "text": f"batch {b} document {j} written meanwhile"} for j in range(size)])
            print(b, flush=True)
""")


def check_consistent(run, out: Path, base: int, size: int) -> int:
    """A backup holds the base documents plus whole batches 0..n-1 of the writer: returns n."""
    ids = set(stored(out))
    extra = sorted(i for i in ids if i.startswith("w"))
    assert len(ids) - len(extra) == base
    assert len(extra) % size == 0, f"{len(extra)} writer documents: a batch was split"
    n = len(extra) // size
    assert extra == sorted(f"w{b:04d}-{j}" for b in range(n) for j in range(size))
    r = run("check", "--index", out, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["documents"] == len(ids)
    return n


def test_backup_while_another_process_writes(run, built, tmp_path):
    size, batches = 7, 60
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(built), str(batches), str(size)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "0"  # at least one batch committed
        seen, during = [], 0
        for i in range(6):
            out = tmp_path / f"bk{i}"
            r = run("backup", out, "--index", built, "--json")
            assert r.exit_code == 0, r.output
            during += writer.poll() is None
            seen.append(check_consistent(run, out, 4, size))
        assert writer.wait(timeout=300) == 0, writer.stderr.read()
    finally:
        writer.kill()
    assert during >= 1, "the writer had finished before any backup: nothing tested"
    assert seen == sorted(seen) and seen[0] >= 1
    assert check_consistent(run, built, 4, size) == batches


def test_backup_while_a_thread_writes(built, tmp_path, run):
    size, stop, errors = 5, threading.Event(), []

    def write():
        try:
            with bertsearch.open_index(str(built)) as ix:
                b = 0
                while not stop.is_set() and b < 500:
                    ix.add([{"id": f"w{b:04d}-{j}", "text": f"thread batch {b} doc {j}"} for j in range(size)])
                    b += 1
        except Exception as e:  # noqa: BLE001 - any error in the writer fails the test below
            errors.append(e)

    t = threading.Thread(target=write)
    t.start()
    try:
        time.sleep(0.2)
        counts = [check_consistent(run, Path(bk.backup(built, tmp_path / f"bk{i}")["path"]), 4, size) for i in range(4)]
    finally:
        stop.set()
        t.join()
    assert not errors
    assert counts == sorted(counts)


def test_errors_are_bertsearch_errors():
    assert issubclass(bk.BackupError, BertsearchError)


def _damage_pages_of(db: Path, table: str) -> None:
    """Overwrite the root page of `table` (an index or a table) in the store at `db`, as a bad sector would."""
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page + 8)
        f.write(b"\xff" * 200)


@pytest.mark.parametrize("derived", ["documents_fts_data", "documents_fts_idx", "documents_fts_docsize", "chunks_doc", "fields",
                                     "sqlite_autoindex_meta_1", "sqlite_autoindex_documents_1"])
def test_check_repair_salvages_a_store_whose_derived_parts_are_damaged(run, built, tmp_path, derived):
    """Damage in the full-text index or an SQL index made every command fail, `check --repair` too ("restore from
    a backup"), though every document could still be read: the rows are copied into a new store now."""
    before = stored(built)
    _damage_pages_of(built / "store.db", derived)
    r = run("check", "--index", built)
    assert r.exit_code == 1 and "check --repair" in r.output, r.output
    r = run("check", "--repair", "--index", built)
    assert r.exit_code == 0 and "were copied into a new store" in r.stdout and r.stdout.rstrip().endswith("ok")
    assert stored(built) == before and leftovers(tmp_path) == []
    r = run("search", "penicillin", "--index", built, "--mode", "lexical", "-k", "1", "--json", "--where", "year = 1928")
    assert json.loads(r.stdout)["hits"][0]["doc_id"] == "penicillin"  # (the metadata fields known, and filtered on)
    assert run("check", "--index", built).exit_code == 0


def test_check_repair_of_a_damaged_table_changes_nothing_and_says_so(run, built, tmp_path):
    _damage_pages_of(built / "store.db", "documents")
    data = (built / "store.db").read_bytes()
    r = run("check", "--repair", "--index", built)
    assert r.exit_code == 1 and "damaged beyond its derived parts" in r.stderr and "restore" in r.stderr
    assert (built / "store.db").read_bytes() == data and leftovers(tmp_path) == []
