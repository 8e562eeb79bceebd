#!/usr/bin/env python3
"""Fault soak: inject faults into real `python -m bertsearch` processes and check the index's guarantees
after each one.

    python scripts/soak.py --kills 200 --seed 1 --json soak.json
    python scripts/soak.py --quick                  # CI size, under a minute

Faults:
  kill       SIGKILL at a random moment of `index` (into the index, or into a new folder), `add`, `delete`,
             `index --prune` and `reindex` (between hashing:64 and hashing:32); also of `backup` and
             `restore --force`
  disk-full  the same commands with RLIMIT_FSIZE set in the child (SIGXFSZ ignored, so a write past the
             limit fails with EFBIG, as on a full disk)
  read-only  the index folder and its files made read-only (as root, the child runs without
             CAP_DAC_OVERRIDE, so the modes bind it); a write command, then search, info and check
  corrupt    a truncated, garbage or empty store.db, vectors.faiss, vectors.faiss.json or config.json,
             on a copy of the index; recovery from store damage is `bertsearch restore` of a backup
  corpus     `index --prune` given an empty corpus, or one whose last record is cut off

After each fault the soak checks:
  1. the index opens (`bertsearch check --index DIR --json` answers) or the refusal is one line,
     `error: ...`, with no traceback; a failing command's own error is one line too;
  2. `check` reports the truth: its count and its verdict agree with an independent reading of a copy
     of store.db (integrity_check, FTS, chunks and vectors, each document's text against its hash);
  3. no document committed before the fault is lost or altered: a ledger of id -> hash of (title, text,
     metadata) says which state each document may be in (the old one, or the command's new one for the
     documents it touches);
  4. running the command again finishes the job: the store then holds exactly what it should.

Figures go to stdout, and with --json to a file. Exit status 1 when a guarantee was broken. The commands
run with the fake `hashing` encoder: no model weights, and the time goes to the code under test.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODELS = ("hashing:64", "hashing:32")
KILL_KINDS = ("index", "add", "delete", "prune", "reindex")
STORE_DAMAGE = ("truncate", "garbage-page", "garbage-header", "garbage", "empty")
FILE_DAMAGE = {
    "store.db": STORE_DAMAGE,
    "vectors.faiss": ("truncate", "garbage-page", "garbage", "empty"),
    "vectors.faiss.json": ("truncate", "garbage"),
    "config.json": ("truncate", "garbage", "empty", "wrong"),
}
QUICK_DAMAGE = [("store.db", "truncate"), ("store.db", "garbage-page"), ("vectors.faiss", "garbage"), ("config.json", "garbage")]
LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING) [\w.]+: ")


# -- documents and the ledger ---------------------------------------------------------------------


@dataclass(frozen=True)
class Doc:
    id: str
    title: str
    text: str
    grp: int

    @property
    def digest(self) -> str:
        return digest(self.title, self.text, self.grp)

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "text": self.text, "grp": self.grp}


def digest(title: str, text: str, grp: Any) -> str:
    return hashlib.sha256(json.dumps([title, text, grp]).encode()).hexdigest()[:16]


def vocabulary(rng: random.Random, n: int = 1500) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "do", "fe", "gi", "hu", "ja", "be", "co", "xi", "yo"]
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


@dataclass
class Op:
    """A command, and what the store may hold while it runs and must hold once it has finished."""

    kind: str
    args: list[str]
    path: Path
    before: dict[str, str]  # id -> digest committed before the command
    final: dict[str, str]  # after a complete run
    allowed: dict[str, set[str | None]]  # ids it touches -> the states each may be in meanwhile (None: absent)
    model: str | None = None  # the model the index must have afterwards (reindex)


# -- an independent reading of the store -----------------------------------------------------------


@dataclass
class Reading:
    exists: bool
    readable: bool = False
    error: str = ""
    config: dict[str, Any] | None = None
    docs: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def sound(self) -> bool:
        return self.readable and self.config is not None and not self.problems


def read_store(folder: Path, scratch: Path) -> Reading:
    """What store.db holds, read from a copy (store.db and its WAL) so the index itself is never touched."""
    db = folder / "store.db"
    if not db.is_file():
        return Reading(exists=False)
    with tempfile.TemporaryDirectory(dir=scratch) as t:
        copy = Path(t) / "store.db"
        shutil.copyfile(db, copy)
        if Path(f"{db}-wal").is_file():
            shutil.copyfile(f"{db}-wal", f"{copy}-wal")
        try:
            conn = sqlite3.connect(copy)
            try:
                return _read(conn)
            finally:
                conn.close()
        except (sqlite3.DatabaseError, ValueError, KeyError, TypeError) as e:
            return Reading(exists=True, readable=False, error=f"{type(e).__name__}: {e}")


def _read(conn: sqlite3.Connection) -> Reading:
    problems = [r[0] for r in conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"meta", "documents", "chunks"} <= tables:
        return Reading(exists=True, readable=True, problems=problems)
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    config = json.loads(meta["config"]) if "config" in meta else None
    docs: dict[str, str] = {}
    unhashed = 0
    for doc_id, title, text, metadata, h in conn.execute("SELECT id, title, text, metadata, hash FROM documents"):
        docs[doc_id] = digest(title, text, json.loads(metadata).get("grp"))
        if h and h != hashlib.sha256(f"{title}\x00{text}".encode()).hexdigest():
            unhashed += 1
    checks = {
        "documents without chunks": "SELECT count(*) FROM documents d WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.doc = d.rowid)",
        "chunks of missing documents": "SELECT count(*) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM documents d WHERE d.rowid = c.doc)",
    }
    if config is not None:
        size = int(config["dim"]) * (2 if config.get("vector_dtype") == "float16" else 4)
        checks["vectors of the wrong size"] = f"SELECT count(*) FROM chunks WHERE length(vector) != {size}"
    for label, sql in checks.items():
        n = conn.execute(sql).fetchone()[0]
        if n:
            problems.append(f"{n} {label}")
    if unhashed:
        problems.append(f"{unhashed} documents whose title and text no longer match their stored hash")
    try:
        conn.execute("INSERT INTO documents_fts(documents_fts, rank) VALUES ('integrity-check', 1)")
    except sqlite3.DatabaseError as e:
        problems.append(f"full-text index: {e}")
    return Reading(exists=True, readable=True, config=config, docs=docs, problems=problems)


# -- running bertsearch ----------------------------------------------------------------------------


@dataclass
class Run:
    args: list[str]
    rc: int
    out: str
    err: str
    seconds: float
    changed: float | None = None  # when `watch` first saw the folder change (the command's first write)
    settled: float | None = None  # when it last saw it change

    @property
    def killed(self) -> bool:
        return self.rc == -signal.SIGKILL


class Bertsearch:
    """`python -m bertsearch ARGS` in the soak's folder, optionally killed after `kill_after` seconds."""

    def __init__(self, cwd: Path, timeout: float) -> None:
        self.cwd = cwd
        self.timeout = timeout
        self.env = dict(os.environ, COLUMNS="250", HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
        self.env.pop("BERTSEARCH_INDEX", None)
        self.calls = 0

    def __call__(self, *args: Any, kill_after: float | None = None, preexec: Any = None, watch: Any = None) -> Run:
        """Run one command; `watch`, a function of nothing, is polled while it runs to see when its
        value first changes."""
        argv = [str(a) for a in args]
        self.calls += 1
        changed = settled = None
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            initial = watch() if watch is not None else None
            t0 = time.monotonic()
            p = subprocess.Popen([sys.executable, "-m", "bertsearch", *argv], cwd=self.cwd, env=self.env,
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=err, preexec_fn=preexec)  # noqa: PLW1509 (one thread)
            deadline = t0 + (kill_after if kill_after is not None else self.timeout)
            while True:
                try:
                    p.wait(timeout=max(0.0, min(0.005 if watch is not None else 1e9, deadline - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    if watch is not None:
                        now = watch()
                        if now != initial:
                            settled = time.monotonic() - t0
                            changed = settled if changed is None else changed
                            initial = now
                    if time.monotonic() >= deadline:
                        p.send_signal(signal.SIGKILL)  # a no-op if it has just finished
                        p.wait()
                        if kill_after is None:
                            err.write(f"\n[soak] killed after hanging for {self.timeout:.0f}s\n".encode())
                        break
            seconds = time.monotonic() - t0
            out.seek(0)
            err.seek(0)
            return Run(argv, p.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                       seconds, changed, settled)


def one_line(err: str) -> str | None:
    """The error message if stderr is a single 'error: ...' line (log lines aside), else None."""
    if "Traceback" in err:
        return None
    lines = [ln for ln in err.splitlines() if ln.strip() and not LOG_LINE.match(ln)]
    return lines[0] if len(lines) == 1 and lines[0].startswith("error: ") else None


def last_lines(err: str, n: int = 4) -> list[str]:
    return [ln for ln in err.strip().splitlines() if ln.strip()][-n:]


def limit_file_size(limit: int) -> Any:
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


_LIBC = ctypes.CDLL(None, use_errno=True)


def without_dac_override() -> None:
    """As root, file modes bind only without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: drop both from the
    bounding set before exec (PR_CAPBSET_DROP), so the child's permitted set lacks them."""
    for cap in (1, 2):
        _LIBC.prctl(24, cap, 0, 0, 0)


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


# -- the soak ---------------------------------------------------------------------------------------


class Soak:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.work = Path(tempfile.mkdtemp(prefix="bertsearch-soak-", dir=opts.workdir))
        self.work.chmod(0o755)
        (self.work / "corpora").mkdir()
        (self.work / "tmp").mkdir()
        self.bs = Bertsearch(self.work, opts.timeout)
        self.main = self.work / "ix"
        self.words = vocabulary(self.rng)
        self.ids = [f"d{i:04d}" for i in range(opts.docs)]
        self.known: dict[str, Doc] = {}  # digest -> the document version
        self.versions = collections.Counter[str]()
        self.ledger: dict[str, str] = {}
        self.model = MODELS[0]
        self.snapshot: tuple[dict[str, str], str] | None = None
        self.n = 0  # ops so far: names corpora and folders
        self.step = ""  # what is running, for failure records
        self.windows: dict[str, tuple[float, float]] = {}  # kind -> (its first write, its last), seconds from start
        # figures
        self.faults = collections.Counter[str]()
        self.kills_missed = collections.Counter[str]()
        self.kill_cut = collections.Counter[str]()  # the store after a kill: before, mid (partly written), after
        self.not_bitten = collections.Counter[str]()  # disk-full runs that finished under the limit
        self.opened = 0
        self.refused = 0
        self.unclean = 0
        self.refusals = collections.Counter[tuple[str, str]]()
        self.command_errors = collections.Counter[tuple[str, str]]()
        self.read_only_reads = collections.Counter[str]()
        self.lost = 0
        self.altered = 0
        self.unexpected = 0
        self.searches = 0
        self.reruns_failed = 0
        self.resets = 0
        self.failures: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.not_testable: list[str] = []

    # -- plan ---------------------------------------------------------------------------------------

    def schedule(self) -> list[str]:
        o = self.opts
        if o.quick:
            plan = ["disk-full", "read-only", "corpus:empty", "kill-backup", "kill-restore"]
            plan += [f"corrupt:{f}:{m}" for f, m in QUICK_DAMAGE]
        else:
            rounds = max(1, o.kills // 100)
            plan = ["disk-full"] * max(4, o.kills // 8) + ["read-only"] * max(2, o.kills // 40)
            plan += [f"corrupt:{f}:{m}" for f, modes in FILE_DAMAGE.items() for m in modes] * rounds
            plan += ["corpus:empty", "corpus:cut"] * rounds
            plan += ["kill-backup", "kill-restore"] * max(1, o.kills // 20)
        plan += [f"kill:{KILL_KINDS[i % len(KILL_KINDS)]}" for i in range(o.kills)]  # as many of each command
        self.rng.shuffle(plan)
        return plan

    def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        self.setup()
        plan = self.schedule()
        kills = misses = 0
        i = 0
        while i < len(plan):
            item = plan[i]
            i += 1
            if item.startswith("kill:"):
                if self.kill(item.split(":")[1]):
                    kills += 1
                elif misses < 3 * self.opts.kills:  # finished before the kill: another one, so N land
                    misses += 1
                    plan.insert(self.rng.randint(i, len(plan)), item)
            elif item == "disk-full":
                self.disk_full()
            elif item == "read-only":
                self.read_only()
            elif item.startswith("corrupt:"):
                _, name, mode = item.split(":")
                self.corrupt(name, mode)
            elif item.startswith("corpus:"):
                self.bad_corpus(item.split(":")[1])
            elif item == "kill-backup":
                self.kill_backup()
            elif item == "kill-restore":
                self.kill_restore()
            if self.n % (11 if self.opts.quick else 7) == 0:
                self.search()
            if self.opts.verbose:
                print(f"[{time.monotonic() - t0:6.1f}s] {item}: {len(self.ledger)} documents, "
                      f"{len(self.failures)} distinct failures", file=sys.stderr)
        return self.figures(time.monotonic() - t0)

    def setup(self) -> None:
        self.step = "setup"
        r = subprocess.run([sys.executable, "-c", "import bertsearch; print(bertsearch.__file__)"], env=self.bs.env,
                           cwd=self.work, capture_output=True, text=True, check=False)
        self.package = str(Path(r.stdout.strip()).parent) if r.returncode == 0 else f"not importable: {last_lines(r.stderr, 1)}"
        first = self.rng.sample(self.ids, k=len(self.ids) * 2 // 3)
        docs = [self.new_version(i) for i in first]
        corpus = self.write_corpus(docs)
        r = self.bs("index", corpus, "--index", self.main, "--model", self.model, "--batch-size", "16")
        if r.rc != 0:
            raise SystemExit(f"soak: cannot build the first index:\n{r.err}")
        self.ledger = {d.id: d.digest for d in docs}
        r = self.bs("backup", self.work / "reference", "--index", self.main, watch=self.listing)
        if r.rc != 0:
            raise SystemExit(f"soak: cannot back up the first index:\n{r.err}")
        self.windows["backup"] = self.window(r)
        self.reference = dict(self.ledger)
        for kind in (*KILL_KINDS, "index-new"):  # each command once, unhurt: when it first writes, when it ends
            op = self.make(kind)
            r = self.bs(*op.args, watch=lambda path=op.path: (self.listing(), self.state(path), self.state(self.work / ".ix.reindex")))
            self.windows[kind] = self.window(r)
            self.finish(op, r, "calibration (no fault)")
        target = self.work / "calibrate-restore"
        r = self.bs("restore", self.work / "reference", "--index", target, watch=self.listing)
        self.windows["restore"] = self.window(r)
        shutil.rmtree(target, ignore_errors=True)
        self.ro_testable = self.probe_read_only()
        self.keep_snapshot()

    def probe_read_only(self) -> bool:
        d = self.work / "tmp" / "ro-probe"
        d.mkdir()
        d.chmod(0o555)
        try:
            r = subprocess.run([sys.executable, "-c", f"open({str(d / 'x')!r}, 'w')"], capture_output=True, check=False,
                               preexec_fn=without_dac_override if os.geteuid() == 0 else None)
            ok = r.returncode != 0 and b"PermissionError" in r.stderr
        finally:
            d.chmod(0o755)
            shutil.rmtree(d, ignore_errors=True)
        if not ok:
            self.not_testable.append("read-only: file modes do not stop this user's writes (root without the "
                                     "ability to drop CAP_DAC_OVERRIDE)")
        return ok

    # -- documents and commands -------------------------------------------------------------------

    def new_version(self, doc_id: str, like: Doc | None = None) -> Doc:
        rng = self.rng
        if like is not None and rng.random() < 0.2:  # metadata only: no encoder work, another write path
            doc = Doc(doc_id, like.title, like.text, (like.grp + 1) % 7)
        else:
            self.versions[doc_id] += 1
            n = rng.choice([rng.randint(8, 50)] * 14 + [rng.randint(50, 150)] * 5 + [rng.randint(150, 400)])
            text = " ".join(rng.choice(self.words) for _ in range(n))
            doc = Doc(doc_id, f"{doc_id} version {self.versions[doc_id]}", text, rng.randrange(7))
        self.known[doc.digest] = doc
        return doc

    def write_corpus(self, docs: list[Doc], name: str | None = None) -> Path:
        self.n += 1
        path = self.work / "corpora" / (name or f"{self.n:04d}.jsonl")
        path.write_text("".join(json.dumps(d.record()) + "\n" for d in docs))
        return path

    def make(self, kind: str) -> Op:
        """A command of `kind` against the index, with what it may and must leave."""
        rng, before = self.rng, dict(self.ledger)
        if kind in ("delete", "prune") and len(before) < 40:
            kind = "index"  # keep the index from emptying
        if kind == "reindex":
            target = MODELS[1] if self.model == MODELS[0] else MODELS[0]
            return Op(kind, ["reindex", "--index", str(self.main), "--model", target], self.main, before, before, {}, target)
        if kind == "delete":
            if rng.random() < 0.25:
                grp = rng.randrange(7)
                ids = [i for i, h in before.items() if self.known[h].grp == grp]
                args = ["delete", "--where", f"grp = {grp}"]
            else:
                ids = rng.sample(sorted(before), k=rng.randint(1, min(40, len(before) // 4)))
                args = ["delete", *(a for i in ids for a in ("--id", i))]
                if rng.random() < 0.3:
                    args += ["--id", "never-indexed"]
            final = {i: h for i, h in before.items() if i not in ids}
            return Op(kind, [*args, "--index", str(self.main)], self.main, before, final, {i: {before[i], None} for i in ids})
        path = self.main
        base = before
        if kind == "index-new":
            path = self.work / f"new-{self.n + 1:04d}"
            base = {}
            ids = rng.sample(self.ids, k=rng.randint(40, 120))
        elif kind == "prune":
            absent = [i for i in self.ids if i not in before]
            ids = [i for i in before if rng.random() < 0.85] + rng.sample(absent, k=min(len(absent), rng.randint(0, 30)))
        else:
            ids = rng.sample(self.ids, k=rng.randint(len(self.ids) // 6, len(self.ids) // 2))
        docs = []
        for i in ids:
            old = self.known[base[i]] if i in base else None
            docs.append(old if old is not None and rng.random() < 0.5 else self.new_version(i, old))
        rng.shuffle(docs)
        corpus = self.write_corpus(docs)
        new = {d.id: d.digest for d in docs}
        allowed: dict[str, set[str | None]] = {i: {base.get(i), h} for i, h in new.items()}
        batch = str(rng.choice([1, 1, 2, 2, 4, 8, 16, 64]))  # small batches: many commits to fall between
        command = "add" if kind == "add" else "index"
        args = [command, str(corpus), "--index", str(path), "--batch-size", batch]
        if kind == "prune":
            args.append("--prune")
            allowed.update({i: {h, None} for i, h in base.items() if i not in new})
            final = new
        else:
            final = {**base, **new}
        if kind == "index-new":
            args += ["--model", MODELS[0]]
        return Op(kind, args, path, base, final, allowed)

    # -- faults -----------------------------------------------------------------------------------

    def listing(self) -> list[str]:
        return sorted(os.listdir(self.work))

    @staticmethod
    def state(folder: Path) -> Any:
        try:
            return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())
        except OSError:
            return None

    @staticmethod
    def window(r: Run) -> tuple[float, float]:
        """From a little before the first change the command made to its folders to a little after its last."""
        if r.changed is None or r.settled is None:
            return (0.0, r.seconds)
        return (0.9 * r.changed, min(r.seconds, r.settled + 0.02))

    def delay(self, kind: str) -> float:
        """A random moment of the command's run: a fifth anywhere, the rest while it writes (as measured
        unhurt at the start)."""
        first, last = self.windows.get(kind, (0.0, 1.0))
        if self.rng.random() < 0.2:
            return self.rng.uniform(0.0, last * 1.2)
        return self.rng.uniform(first, last)

    def missed(self, kind: str, seconds: float) -> None:
        """A kill found the command finished: it runs faster now than measured; move its window earlier."""
        self.kills_missed[kind] += 1
        first, last = self.windows.get(kind, (0.0, seconds))
        if seconds < last:
            self.windows[kind] = (first * seconds / last, seconds)

    def kill(self, kind: str) -> bool:
        if kind == "index" and self.rng.random() < 0.2:
            kind = "index-new"
        op = self.make(kind)
        self.step = f"kill:{kind}"
        r = self.bs(*op.args, kill_after=self.delay(kind))
        if not r.killed:
            self.missed(kind, r.seconds)
            self.finish(op, r, "a run the kill missed")
            return False
        self.faults[f"kill:{kind}"] += 1
        self.after_fault(op, r)
        return True

    def disk_full(self) -> None:
        """A command whose writes meet a full disk at a random size; tried again (smaller) when it never did."""
        biggest = max((p.stat().st_size for p in self.main.iterdir() if p.is_file()), default=65536)
        limit = self.rng.randint(4096, int(biggest * 1.3) + 4096)
        for _ in range(4):
            kind = self.rng.choice(KILL_KINDS)
            op = self.make(kind)
            self.step = f"disk-full:{kind}"
            r = self.bs(*op.args, preexec=limit_file_size(limit))
            if not self.done(op, r):
                self.faults[self.step] += 1
                self.after_fault(op, r)
                return
            self.not_bitten[kind] += 1
            self.finish(op, r, "a run under a file-size limit it never reached")
            limit = max(4096, limit // 3)

    def read_only(self) -> None:
        kind = self.rng.choice(KILL_KINDS)
        op = self.make(kind)
        self.step = f"read-only:{kind}"
        if not self.ro_testable:
            self.faults["read-only:not testable"] += 1
            self.finish(op, self.bs(*op.args), "a run without the fault")
            return
        pre = without_dac_override if os.geteuid() == 0 else None
        modes = {p: p.stat().st_mode for p in [self.main, *self.main.iterdir()]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            r = self.bs(*op.args, preexec=pre)
            for read in (("search", *self.query(), "--json"), ("info", "--json"), ("check", "--json")):
                rr = self.bs(read[0], *read[1:], "--index", self.main, preexec=pre)
                if rr.rc == 0:
                    self.read_only_reads[f"{read[0]}: answered"] += 1
                    continue
                msg = one_line(rr.err)
                if msg is None:
                    self.fail("read on a read-only index: no one-line error", read[0], rr.err)
                else:
                    self.read_only_reads[f"{read[0]}: refused: {self.normal(msg)}"] += 1
        finally:
            for p, mode in modes.items():
                if p.exists():
                    p.chmod(mode)
        if r.rc == 0:
            self.fail("wrote into a read-only index", kind, "exit status 0")
        self.faults[self.step] += 1
        self.after_fault(op, r)

    def after_fault(self, op: Op, r: Run) -> None:
        """The guarantees, checked after a fault cut `op` short."""
        if not r.killed:
            msg = one_line(r.err)
            if msg is None:
                self.fail("the failing command gave no one-line error", op.kind, r.err)
            else:
                self.command_errors[(self.step, self.normal(msg))] += 1
        self.check(op.path, expect_sound=True)
        reading = read_store(op.path, self.work / "tmp")
        self.compare(op, reading)
        self.rerun(op)

    def check(self, path: Path, *, expect_sound: bool) -> dict[str, Any] | None:
        """`bertsearch check`: it answers or refuses in one line, and agrees with the store."""
        c = self.bs("check", "--index", path, "--json")
        report = parse_json(c.out) if c.rc in (0, 1) else None
        reading = read_store(path, self.work / "tmp")  # after check: opening may finish a cut-off swap
        if report is None:
            msg = one_line(c.err)
            if msg is None:
                self.unclean += 1
                self.fail("check: no report and no one-line error", "check", c.err)
                return None
            self.refused += 1
            self.refusals[(self.step, self.normal(msg))] += 1
            if expect_sound and reading.sound:
                self.fail("refused an index whose store is sound", "check", msg)
            return None
        self.opened += 1
        if reading.readable and reading.config is not None and report.get("documents") != len(reading.docs):
            self.fail("check counts other documents than the store holds", "check",
                      f"check {report.get('documents')}, store {len(reading.docs)}")
        if report.get("ok") and not reading.sound:
            self.fail("check says ok on a damaged store", "check", reading.error or "; ".join(reading.problems))
        if not report.get("ok") and reading.sound:
            self.fail("check reports problems the store does not have", "check", "; ".join(report.get("problems", [])))
        return report

    def compare(self, op: Op, reading: Reading) -> None:
        """Every document committed before the fault is in a state the command allows."""
        if reading.exists and not reading.readable:
            self.fail("the store cannot be read after the fault", op.kind, reading.error)
            self.lost += len(op.before)
            return
        actual = reading.docs
        lost = [i for i, h in op.before.items() if actual.get(i) not in op.allowed.get(i, {h}) and i not in actual]
        altered = [i for i, h in op.before.items() if i in actual and actual[i] not in op.allowed.get(i, {h})]
        unexpected = [i for i, h in actual.items() if i not in op.before and h not in op.allowed.get(i, set())]
        self.lost += len(lost)
        self.altered += len(altered)
        self.unexpected += len(unexpected)
        if lost or altered or unexpected:
            self.fail("documents lost or altered by the fault", op.kind,
                      f"{len(lost)} lost, {len(altered)} altered, {len(unexpected)} unexpected (e.g. {(lost + altered + unexpected)[:3]})")
        if self.step.startswith("kill"):
            self.kill_cut["before" if actual == op.before else "after" if actual == op.final else "mid"] += 1

    def done(self, op: Op, r: Run) -> bool:
        return r.rc == 0 or (op.kind == "reindex" and r.rc == 1 and "already holds vectors" in r.err)

    def rerun(self, op: Op) -> None:
        """Running the command again finishes the job."""
        r = self.bs(*op.args)
        if not self.done(op, r):
            self.reruns_failed += 1
            self.fail("running the command again did not finish the job", op.kind, r.err)
            self.bs("check", "--index", op.path, "--repair")
            self.finish(op, self.bs(*op.args), "run again after 'check --repair'")
            return
        self.finish(op, r, "run again")

    def finish(self, op: Op, r: Run, context: str) -> None:
        """After a complete run: the store holds exactly `op.final`; the ledger moves on. Otherwise the
        index goes back to the last good copy."""
        if not self.done(op, r):
            self.fail(f"{context}: the command failed", op.kind, r.err)
            self.reset(op)
            return
        reading = read_store(op.path, self.work / "tmp")
        model = (reading.config or {}).get("model")
        if reading.docs != op.final or (op.model is not None and model != op.model):
            missing = [i for i, h in op.final.items() if reading.docs.get(i) != h]
            extra = [i for i in reading.docs if i not in op.final]
            self.lost += len([i for i in missing if op.before.get(i) == op.final[i]])
            self.fail(f"{context}: finished, but the index does not hold what it should", op.kind,
                      f"{len(missing)} missing or different, {len(extra)} extra; model {model} ({reading.error})")
            self.reset(op)
            return
        if op.path == self.main:
            self.ledger = dict(op.final)
            if op.model is not None:
                self.model = op.model
            self.keep_snapshot()
        else:
            shutil.rmtree(op.path, ignore_errors=True)

    def keep_snapshot(self) -> None:
        snap = self.work / "snapshot"
        shutil.rmtree(snap, ignore_errors=True)
        shutil.copytree(self.main, snap)
        self.snapshot = (dict(self.ledger), self.model)

    def reset(self, op: Op) -> None:
        """The index could not be brought back by the command: start again from the last good copy."""
        if op.path != self.main:
            shutil.rmtree(op.path, ignore_errors=True)
            return
        self.resets += 1
        assert self.snapshot is not None
        shutil.rmtree(self.main, ignore_errors=True)
        for leftover in (self.work / ".ix.reindex", self.work / ".ix.retired"):
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.copytree(self.work / "snapshot", self.main)
        self.ledger, self.model = dict(self.snapshot[0]), self.snapshot[1]

    # -- damaged files ----------------------------------------------------------------------------

    def corrupt(self, name: str, mode: str) -> None:
        """Damage one file of a copy of the index, then open, check, search and write to it."""
        self.n += 1
        self.step = f"corrupt:{name}:{mode}"
        copy = self.work / f"damaged-{self.n:04d}"
        shutil.copytree(self.main, copy)
        ledger = dict(self.ledger)
        if name.startswith("vectors") and not (copy / "vectors.faiss").exists():
            self.bs("search", *self.query(), "--index", copy, "--mode", "dense")  # writes the vector file
        backup = self.work / f"damaged-{self.n:04d}-backup"
        if name == "store.db":
            r = self.bs("backup", backup, "--index", copy)
            if r.rc != 0:
                self.fail("backup of a sound index failed", "backup", r.err)
        target = copy / name
        if not target.exists():
            self.not_testable.append(f"{self.step}: the copy has no {name}")
            shutil.rmtree(copy, ignore_errors=True)
            return
        self.damage(target, mode)
        self.faults[self.step] += 1
        derived = name != "store.db"
        self.check(copy, expect_sound=derived)
        reading = read_store(copy, self.work / "tmp")
        survives = derived or (reading.sound and reading.docs == ledger)  # damage SQLite never reads
        s = self.bs("search", *self.query(), "--index", copy, "--json")
        hits = (parse_json(s.out) or {}).get("hits") if s.rc == 0 else None
        if s.rc == 0 and hits is not None:
            self.searches += 1
            stray = [h["doc_id"] for h in hits if h["doc_id"] not in ledger]
            if stray:
                self.fail("search returned documents the index does not hold", "search", str(stray[:3]))
        elif one_line(s.err) is None:
            self.fail("search gave no one-line error", "search", s.err)
        elif survives:
            self.fail(f"search refused after damage to {name}", "search", s.err)
        extra = [self.new_version(f"x{self.n:04d}-{j}") for j in range(3)]
        w = self.bs("add", self.write_corpus(extra), "--index", copy)
        if w.rc != 0:
            if one_line(w.err) is None:
                self.fail("add gave no one-line error", "add", w.err)
            elif survives:
                self.fail(f"add refused after damage to {name}", "add", w.err)
        if survives:
            expected = {**ledger, **{d.id: d.digest for d in extra}} if w.rc == 0 else ledger
            after = read_store(copy, self.work / "tmp")
            gone = [i for i, h in ledger.items() if after.docs.get(i) != h]
            self.lost += len(gone)
            if after.docs != expected:
                self.fail(f"documents lost after damage to {name}", "add", f"{len(gone)} of the ledger lost or altered")
            report = self.check(copy, expect_sound=True) if not self.opts.quick else None
            if report is not None and not report.get("ok"):
                self.fail(f"check not ok after a write repaired damage to {name}", "check", "; ".join(report["problems"]))
        else:
            r = self.bs("restore", backup, "--index", copy, "--force")
            if r.rc != 0:
                self.fail("restore from a backup failed over a damaged store", "restore", r.err)
            else:
                after = read_store(copy, self.work / "tmp")
                if after.docs != ledger or not after.sound:
                    self.fail("restore did not bring back the backup's documents", "restore",
                              f"{len(after.docs)} documents, {len(ledger)} expected; {after.problems[:2]}")
                self.check(copy, expect_sound=True)
        shutil.rmtree(copy, ignore_errors=True)
        shutil.rmtree(backup, ignore_errors=True)

    def damage(self, path: Path, mode: str) -> None:
        data = path.read_bytes()
        rng = self.rng
        if mode == "truncate":
            data = data[: rng.randint(1, max(1, len(data) - 1))]
        elif mode == "garbage-page":  # one page (4 KiB, or a 512-byte block of a small file), never the first
            size = 4096 if len(data) >= 3 * 4096 else 512
            pages = max(2, len(data) // size)
            p = rng.randrange(1, pages)
            data = data[: p * size] + rng.randbytes(size) + data[(p + 1) * size:]
        elif mode == "garbage-header":
            data = rng.randbytes(100) + data[100:]
        elif mode == "garbage":
            data = rng.randbytes(max(len(data), 64))
        elif mode == "empty":
            data = b""
        elif mode == "wrong":  # a well-formed config of another model: the store's must win
            data = json.dumps({"model": "hashing:16", "fingerprint": "hashing-v1-16", "dim": 16, "max_tokens": 64}).encode()
        path.write_bytes(data)

    def bad_corpus(self, mode: str) -> None:
        """`index --prune` with a corpus that is empty or cut off mid-record deletes nothing."""
        self.n += 1
        self.step = f"corpus:{mode}"
        copy = self.work / f"prune-{self.n:04d}"
        shutil.copytree(self.main, copy)
        if mode == "empty":
            corpus = self.write_corpus([])
        else:
            docs = [self.known[h] for h in self.ledger.values()]
            corpus = self.write_corpus(docs)
            text = corpus.read_text()
            corpus.write_text(text[: len(text) - 1 - self.rng.randint(5, len(docs[-1].text) // 2 + 6)])
        self.faults[self.step] += 1
        r = self.bs("index", corpus, "--index", copy, "--prune")
        if r.rc != 0:
            msg = one_line(r.err)
            if msg is None:
                self.fail("index --prune with a bad corpus gave no one-line error", "prune", r.err)
            else:
                self.command_errors[(self.step, self.normal(msg))] += 1
        after = read_store(copy, self.work / "tmp")
        gone = [i for i, h in self.ledger.items() if after.docs.get(i) != h]
        if gone:
            self.lost += len(gone)
            self.fail(f"index --prune with a{'n' if mode == 'empty' else ''} {mode} corpus lost documents", "prune",
                      f"{len(gone)} of {len(self.ledger)} gone; exit status {r.rc}")
        shutil.rmtree(copy, ignore_errors=True)

    # -- backup and restore -----------------------------------------------------------------------

    def kill_backup(self) -> None:
        """A backup killed at a random moment is absent or complete, never half there."""
        self.n += 1
        self.step = "kill:backup"
        out = self.work / f"backup-{self.n:04d}"
        r = self.bs("backup", out, "--index", self.main, kill_after=self.delay("backup"))
        if r.killed:
            self.faults[self.step] += 1
            if out.exists():
                reading = read_store(out, self.work / "tmp")
                if reading.docs != self.ledger or not reading.sound:
                    self.fail("a killed backup left an incomplete folder under its name", "backup",
                              f"{len(reading.docs)} documents of {len(self.ledger)}; {reading.error or reading.problems[:2]}")
            else:
                r = self.bs("backup", out, "--index", self.main)
                if r.rc != 0:
                    self.fail("backup again after a killed one failed", "backup", r.err)
        else:
            self.missed("backup", r.seconds)
        reading = read_store(out, self.work / "tmp")
        if reading.docs != self.ledger or not reading.sound:
            self.fail("the backup does not hold the index's documents", "backup", f"{len(reading.docs)} of {len(self.ledger)}")
        shutil.rmtree(out, ignore_errors=True)

    def kill_restore(self) -> None:
        """A restore over an index, killed at a random moment, leaves the old index or the new, whole."""
        self.n += 1
        self.step = "kill:restore"
        target = self.work / f"restored-{self.n:04d}"
        shutil.copytree(self.main, target)
        old, new = dict(self.ledger), self.reference
        r = self.bs("restore", self.work / "reference", "--index", target, "--force", kill_after=self.delay("restore"))
        if r.killed:
            self.faults[self.step] += 1
            reading = read_store(target, self.work / "tmp")
            if not reading.exists:
                self.fail("a killed restore left no index", "restore", "the index folder is missing")
            elif reading.docs not in (old, new) or not reading.sound:
                self.fail("a killed restore left a half-restored index", "restore",
                          f"{len(reading.docs)} documents (old {len(old)}, backup {len(new)}); {reading.problems[:2]}")
            self.check(target, expect_sound=True)
            r = self.bs("restore", self.work / "reference", "--index", target, "--force")
        else:
            self.missed("restore", r.seconds)
        reading = read_store(target, self.work / "tmp")
        if r.rc != 0 or reading.docs != new:
            self.fail("restore did not finish", "restore", r.err or f"{len(reading.docs)} of {len(new)} documents")
        shutil.rmtree(target, ignore_errors=True)

    # -- searching --------------------------------------------------------------------------------

    def query(self) -> list[str]:
        if not self.ledger:
            return ["anything"]
        doc = self.known[self.rng.choice(sorted(self.ledger.values()))]
        words = doc.text.split()
        return self.rng.sample(words, k=min(3, len(words)))

    def search(self) -> None:
        """Hits come only from documents the index holds (the vector file follows the store)."""
        step, self.step = self.step, "search"
        s = self.bs("search", *self.query(), "--index", self.main, "--json", "-k", "20")
        data = parse_json(s.out) if s.rc == 0 else None
        if data is None:
            self.fail("search of the index failed", "search", s.err)
        else:
            self.searches += 1
            stray = [h["doc_id"] for h in data["hits"] if self.ledger.get(h["doc_id"]) is None]
            if stray:
                self.fail("search returned documents the index does not hold", "search", str(stray[:3]))
        self.step = step

    # -- bookkeeping ------------------------------------------------------------------------------

    def normal(self, text: str) -> str:
        text = text.replace(str(self.work), "<soak>")
        return re.sub(r"\d+", "N", text)

    def fail(self, what: str, command: str, detail: str) -> None:
        lines = last_lines(detail) or [detail]
        exc = re.match(r"^([\w.]+(?:Error|Exception)):", lines[-1])  # one traceback, whatever its details
        key = (what, self.step, command, exc.group(1) if exc else self.normal(lines[-1])[:200])
        rec = self.failures.get(key)
        if rec is None:
            self.failures[key] = rec = {"what": what, "fault": self.step, "command": command, "count": 0,
                                        "stderr": [self.normal(ln)[:300] for ln in lines], "first_op": self.n}
        rec["count"] += 1
        if self.opts.verbose:
            print(f"  FAILURE [{self.step}] {what}: {lines[-1][:200]}", file=sys.stderr)

    def figures(self, seconds: float) -> dict[str, Any]:
        refusals = collections.defaultdict(list)
        for (step, msg), n in self.refusals.items():
            refusals[msg].append(f"{step} x{n}")
        errors = collections.defaultdict(list)
        for (step, msg), n in self.command_errors.items():
            errors[msg].append(f"{step} x{n}")
        failures = sorted(self.failures.values(), key=lambda f: -f["count"])
        return {
            "seed": self.opts.seed,
            "quick": self.opts.quick,
            "package": self.package,
            "seconds": round(seconds, 1),
            "commands_run": self.bs.calls,
            "faults": dict(sorted(self.faults.items())),
            "faults_total": sum(self.faults.values()),
            "kills": sum(n for k, n in self.faults.items() if k.startswith("kill:")),
            "kills_missed": dict(self.kills_missed),
            "kill_left_store": dict(self.kill_cut),
            "disk_full_not_bitten": dict(self.not_bitten),
            "opened": self.opened,
            "refused": self.refused,
            "refused_unclean": self.unclean,
            "refusals": [{"message": m, "after": w} for m, w in sorted(refusals.items())],
            "command_errors": [{"message": m, "after": w} for m, w in sorted(errors.items())],
            "read_only_reads": dict(self.read_only_reads),
            "documents_lost": self.lost,
            "documents_altered": self.altered,
            "documents_unexpected": self.unexpected,
            "searches_checked": self.searches,
            "reruns_failed": self.reruns_failed,
            "resets": self.resets,
            "not_testable": sorted(set(self.not_testable)),
            "failures": failures,
            "ok": not failures and self.lost == 0 and self.altered == 0 and self.unclean == 0,
        }


def render(fig: dict[str, Any]) -> str:
    out = [(f"bertsearch soak, seed {fig['seed']}: {fig['faults_total']} faults ({fig['kills']} kills), "
            f"{fig['commands_run']} commands in {fig['seconds']}s")]
    for kind, n in fig["faults"].items():
        out.append(f"  {kind:<34} {n}")
    out.append(f"kills that found the command finished: {fig['kills_missed']}; store after a kill: {fig['kill_left_store']}")
    out.append(f"opened {fig['opened']}, refused in one line {fig['refused']}, refused otherwise {fig['refused_unclean']}")
    for r in fig["refusals"]:
        out.append(f"  refusal: {r['message']}  ({', '.join(r['after'][:4])})")
    for r in fig["command_errors"]:
        out.append(f"  command error: {r['message']}  ({', '.join(r['after'][:4])})")
    for k, n in fig["read_only_reads"].items():
        out.append(f"  read-only read {k}: {n}")
    out.append(f"documents lost {fig['documents_lost']}, altered {fig['documents_altered']}, "
               f"unexpected {fig['documents_unexpected']}; searches checked {fig['searches_checked']}")
    for n in fig["not_testable"]:
        out.append(f"not testable: {n}")
    out.append(f"{len(fig['failures'])} distinct failures" + (":" if fig["failures"] else ""))
    for f in fig["failures"]:
        out.append(f"  [{f['count']}x] {f['what']}  (fault {f['fault']}, command {f['command']})")
        for ln in f["stderr"][-2:]:
            out.append(f"      {ln}")
    out.append("OK" if fig["ok"] else "GUARANTEES BROKEN")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=200, help="SIGKILLs that must land in a running command (default 200)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="CI size: 8 kills and one of most other faults, under a minute")
    p.add_argument("--docs", type=int, default=300, help="distinct document ids in the synthetic corpora")
    p.add_argument("--json", dest="json_path", default=None, help="write the figures to this file")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a command counts as hung")
    p.add_argument("--workdir", default=None, help="where to make the soak's temporary folder")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("-v", "--verbose", action="store_true")
    opts = p.parse_args(argv)
    if opts.quick:
        opts.kills = min(opts.kills, 8) if "--kills" in (argv or sys.argv) else 8
        opts.docs = min(opts.docs, 150)
    soak = Soak(opts)
    try:
        fig = soak.run()
    finally:
        if opts.keep:
            print(f"soak folder kept: {soak.work}", file=sys.stderr)
        else:
            shutil.rmtree(soak.work, ignore_errors=True)
    print(render(fig))
    if opts.json_path:
        Path(opts.json_path).write_text(json.dumps(fig, indent=2) + "\n")
    return 0 if fig["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
