"""The interactive shell: its commands in-process (with fakes for the reader and reranker), and a real
`bertsearch shell` driven through a pseudo-terminal the way a person types into it."""

from __future__ import annotations

import json
import os
import sys

import pytest
from fakes import WordReader, WordReranker
from rich.console import Console

from bertsearch.cli import interactive as sh
from bertsearch.cli.interactive import Settings, Shell


@pytest.fixture
def console() -> Console:
    return Console(record=True, width=100, color_system=None, force_terminal=False)


@pytest.fixture
def session(index, console) -> Shell:
    index._reranker = WordReranker("fleming")
    index._reader = WordReader("Alexander Fleming")
    return Shell(index, console, Settings(k=3))


def said(console: Console) -> str:
    return console.export_text(clear=True)


def test_a_query_shows_the_answer_first_then_the_hits_and_stage_times(session, console):
    assert session.execute("who discovered penicillin")
    out = said(console)
    assert out.index("answer: Alexander Fleming") < out.index(" 1. Penicillin")
    assert "(Penicillin, confidence " in out and "retrieve " in out and "rerank " in out and "read " in out
    assert session.last_hits[0].doc_id == "penicillin" and len(session.last_hits) == 3


def test_no_answer_is_said_plainly_and_the_hits_still_show(session, console):
    session.index._reader = WordReader("Napoleon")
    session.execute("who won at waterloo")
    out = said(console)
    assert "no answer found" in out and "answer:" not in out and " 1. " in out


def test_settings_commands_change_what_the_next_query_does(session, console):
    session.execute(":mode lexical")
    session.execute(":k 1")
    session.execute(":answer off")
    session.execute(":rerank off")
    assert session.settings == Settings(mode="lexical", k=1, rerank=False, answer=False)
    session.execute("lava magma")
    out = said(console)
    assert " 1. Volcano" in out and " 2. " not in out and "lexical " in out and "answer:" not in out
    assert session.last["hits"][0]["doc_id"] == "volcano" and "rerank" not in session.last["timings"]


def test_where_filters_the_results_and_a_bad_filter_keeps_the_old_one(session, console):
    session.execute(":answer off")
    session.execute(":where year >= 1900")
    session.execute(":where year >>> 3")
    out = said(console)
    assert "bad filter" in out and "column" in out
    assert session.settings.where == "year >= 1900"
    session.execute("light lava piano penicillin")
    assert [h.doc_id for h in session.last_hits] == ["penicillin"]
    session.execute(":where off")
    session.execute("light lava piano penicillin")
    assert len(session.last_hits) == 3
    session.execute(":where topic = '[bold]x'")  # printed as typed, not read as markup
    assert "where topic = '[bold]x'" in said(console)


@pytest.mark.parametrize(
    ("line", "hint"),
    [
        (":mdoe dense", "did you mean :mode?"),
        (":frobnicate", "unknown command :frobnicate; :help"),
        (":mode fast", ":mode takes one of hybrid, dense, lexical"),
        (":k zero", ":k takes a whole number"),
        (":k 0", ":k takes a whole number"),
        (":k ²", ":k takes a whole number"),
        (":k 100001", ":k takes a whole number from 1 to 100,000"),
        (":rerank maybe", ":rerank takes on or off"),
        (":open 1", "run a query first"),
        (":json", "run a query first"),
    ],
)
def test_a_mistyped_command_prints_a_one_line_hint(session, console, line, hint):
    before = Settings(**vars(session.settings))
    assert session.execute(line)
    out = said(console).strip()
    assert hint in out and "\n" not in out
    assert session.settings == before


def test_open_shows_the_whole_document_of_a_hit(session, console):
    session.execute("discovered penicillin")
    said(console)
    session.execute(":open 1")
    out = said(console)
    assert "Penicillin  [penicillin]" in out and "noticed mould killing bacteria." in out and '"year": 1928' in out
    session.execute(":open 4")
    assert "from 1 to 3" in said(console)


def test_json_prints_the_last_result(session, console):
    session.execute("who discovered penicillin")
    said(console)
    session.execute(":json")
    data = json.loads(said(console))
    assert data["query"] == "who discovered penicillin" and data["answers"][0]["text"] == "Alexander Fleming"
    doc = session.index.get(data["answers"][0]["doc_id"])
    assert doc["text"][data["answers"][0]["start"] : data["answers"][0]["end"]] == "Alexander Fleming"
    assert data["hits"][0]["doc_id"] == "penicillin" and set(data["timings"]) == {"retrieve", "rerank", "read"}


def test_an_error_or_ctrl_c_in_a_query_never_ends_the_session(session, console, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(session.index, "ask", boom)
    assert session.execute("anything")
    assert "error: RuntimeError: disk on fire" in said(console)
    monkeypatch.setattr(session.index, "ask", interrupted)
    assert session.execute("anything")
    assert "cancelled" in said(console)
    monkeypatch.undo()
    session.execute("who discovered penicillin")
    assert "answer: Alexander Fleming" in said(console)


def test_the_shell_opens_the_index_again_after_another_process_replaces_it(tmp_path, console, docs):
    """After `bertsearch reindex` (or `restore`) from another terminal, every query failed with IndexReplaced until
    the shell was restarted, and :info showed the old index."""
    import bertsearch
    from bertsearch import reindex as rx

    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing:64")
    ix.add(docs)
    shell = Shell(ix, console, Settings(k=3, rerank=False, answer=False))
    shell.execute("magma chamber")
    said(console)
    rx.reindex(tmp_path / "ix", "hashing:128")  # (as another process would: the folder is swapped under the shell)
    shell.execute("magma chamber")
    out = said(console)
    out = " ".join(out.split())
    assert "opened the new one: 4 documents, hashing:128" in out and "[volcano]" in out and "error" not in out
    shell.execute(":info")
    assert "hashing:128" in said(console)
    shell.index.close()


def test_a_model_that_did_not_load_stays_off_and_says_why(index, console):
    s = Shell(index, console, can_answer="no reader weights are shipped")
    index._reader_name = "/nonexistent/reader"
    assert s.settings.answer is False and s.settings.rerank is True
    s.execute(":answer on")
    assert "not available: model path /nonexistent/reader is not a directory" in said(console)
    assert s.settings.answer is False


def test_turning_on_a_model_left_off_at_start_loads_it_or_says_why(index, console, tmp_path):
    s = Shell(index, console, Settings(rerank=False))
    index._reranker_name = str(tmp_path / "missing")
    s.execute(":rerank on")
    assert "not available" in said(console) and s.settings.rerank is False
    index._reranker = WordReranker("lava")
    s.execute(":rerank on")
    assert s.settings.rerank is True


@pytest.mark.parametrize("line", [":quit", ":q", ":exit", ":QUIT"])
def test_quit_and_its_aliases_end_the_session(session, line):
    assert session.execute(line) is False


def test_completion_covers_commands_and_their_choices():
    assert sh.complete(":mo") == [":mode"]
    assert sh.complete(":") == [f":{c}" for c in sh.COMMANDS]
    assert sh.complete(":mode d") == ["dense"]
    assert sh.complete(":rerank o") == ["on", "off"]
    assert sh.complete("northern lights") == [] and sh.complete(":k ") == []


def test_history_lives_in_the_state_directory_unless_set(monkeypatch, tmp_path):
    monkeypatch.delenv("BERTSEARCH_HISTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert sh.history_path() == tmp_path / "bertsearch" / "history"
    monkeypatch.setenv("BERTSEARCH_HISTORY", str(tmp_path / "h"))
    assert sh.history_path() == tmp_path / "h"


def test_piped_lines_run_without_a_prompt(tmp_path, corpus_file):
    import subprocess

    ix = tmp_path / "ix"
    cli = [sys.executable, "-m", "bertsearch"]
    subprocess.run([*cli, "index", str(corpus_file), "--index", str(ix), "--model", "hashing"], check=True,
                   capture_output=True)
    lines = "lava magma\n:open 1\n:nonsense\n:quit\nnever run\n"
    r = subprocess.run([*cli, "shell", "--index", str(ix), "--no-answer", "--no-rerank", "-k", "2"], input=lines,
                       check=False, capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
    assert r.returncode == 0, r.stderr
    assert " 1. Volcano" in r.stdout and "escape from a magma chamber below the surface." in r.stdout
    assert "unknown command :nonsense" in r.stdout and "never run" not in r.stdout
    assert "\x1b[" not in r.stdout  # NO_COLOR


def test_a_missing_index_fails_before_the_prompt(tmp_path):
    import subprocess

    r = subprocess.run([sys.executable, "-m", "bertsearch", "shell", "--index", str(tmp_path / "nope")],
                       check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "no index" in r.stderr.lower() and "Traceback" not in r.stderr


def test_a_where_naming_a_field_no_document_has_fails_before_the_prompt(run, corpus_file, tmp_path):
    """It started, then every query failed on the filter, and the shell exited 0."""
    run("index", corpus_file, "--index", tmp_path / "ix", "--model", "hashing")
    r = run("shell", "--index", tmp_path / "ix", "--where", "bogus = 1", "--no-answer", "--no-rerank")
    assert r.exit_code == 1 and "no document has the field 'bogus'" in r.stderr


# -- a real shell in a pseudo-terminal ---------------------------------------------------------------

PROMPT = r">(\x08| )"  # prompt_toolkit draws "> " as ">" and a cursor move


def _spawn(args: list[str], tmp_path, width: int = 100):
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "NO_COLOR": "1", "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm",
           "BERTSEARCH_HISTORY": str(tmp_path / "history"), "COLUMNS": str(width), "LINES": "40"}
    child = pexpect.spawn(sys.executable, ["-m", "bertsearch", *args], env=env, encoding="utf-8", timeout=120,
                          dimensions=(40, width))
    return child, pexpect


def test_a_person_at_the_terminal(tmp_path, corpus_file):
    import subprocess

    ix = tmp_path / "ix"
    subprocess.run([sys.executable, "-m", "bertsearch", "index", str(corpus_file), "--index", str(ix),
                    "--model", "hashing"], check=True, capture_output=True)
    child, pexpect = _spawn(["shell", "--index", str(ix), "--no-answer", "--no-rerank", "-k", "3"], tmp_path, 200)
    child.expect("4 documents")
    child.expect(PROMPT)
    child.sendline("lava magma chamber")
    child.expect("Volcano")
    child.expect("retrieve \\d+ ms")
    child.expect(PROMPT)
    child.sendline(":mode lexical")
    child.expect("mode lexical")
    child.sendline("lava magma chamber")
    child.expect("lexical \\d")
    child.expect(PROMPT)
    child.sendline(":open 1")
    child.expect("below the surface")
    child.expect(PROMPT)
    child.sendline(":mdoe dense")
    child.expect("did you mean :mode\\?")
    child.expect(PROMPT)
    child.sendline(":where year >>> 3")
    child.expect("bad filter")
    child.expect(PROMPT)
    child.sendintr()  # Ctrl-C at the prompt clears the line; the shell stays
    child.sendline(":settings")
    child.expect("mode lexical  k 3")
    child.expect(PROMPT)
    child.sendeof()  # Ctrl-D leaves
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    history = (tmp_path / "history").read_text()
    assert "lava magma chamber" in history and ":mode lexical" in history

    # the history is there in the next session: Up recalls the last line
    child, pexpect = _spawn(["shell", "--index", str(ix), "--no-answer", "--no-rerank"], tmp_path)
    child.expect(PROMPT)
    child.send("\x1b[A")
    child.send("\r")
    child.expect("mode hybrid  k 10")  # the recalled line is :settings, run in the new session
    child.expect(PROMPT)
    child.sendline(":q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_a_narrow_terminal_wraps_instead_of_breaking(tmp_path, corpus_file):
    import subprocess

    ix = tmp_path / "ix"
    subprocess.run([sys.executable, "-m", "bertsearch", "index", str(corpus_file), "--index", str(ix),
                    "--model", "hashing"], check=True, capture_output=True)
    child, pexpect = _spawn(["shell", "--index", str(ix), "--no-answer", "--no-rerank"], tmp_path, width=30)
    child.expect(PROMPT)
    child.sendline("piano hammer strings")
    child.expect("Piano")
    child.expect(PROMPT)
    child.sendline(":quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.mark.model
def test_min_confidence_decides_whether_the_shell_answers(tmp_path, corpus_file):
    """The shipped reader under the shell's --min-confidence: 0 answers, 1 abstains and says so, both over the
    same question and index."""
    import subprocess

    ix = tmp_path / "ix"
    cli = [sys.executable, "-m", "bertsearch"]
    subprocess.run([*cli, "index", str(corpus_file), "--index", str(ix)], check=True, capture_output=True)

    def shell(bar: str) -> str:
        r = subprocess.run([*cli, "shell", "--index", str(ix), "--no-rerank", "-k", "1", "--min-confidence", bar],
                           input="who discovered penicillin\n", check=False, capture_output=True, text=True,
                           timeout=200, env={**os.environ, "NO_COLOR": "1"})
        assert r.returncode == 0, r.stderr
        return r.stdout

    always = shell("0")
    assert "answer: " in always and "Fleming" in always
    never = shell("1")
    assert "no answer found" in never and "answer: " not in never


def test_the_shipped_models_answer_in_the_shell(tmp_path, corpus_file):
    """The whole pipeline a user starts with `bertsearch shell`: packaged encoder, shipped reranker and reader;
    a question, its answer and hits, a mode switch, a whole document, a mistyped command, Ctrl-D."""
    import subprocess

    ix = tmp_path / "ix"
    subprocess.run([sys.executable, "-m", "bertsearch", "index", str(corpus_file), "--index", str(ix)], check=True,
                   capture_output=True)
    child, pexpect = _spawn(["shell", "--index", str(ix), "-k", "3"], tmp_path, 200)
    child.expect("ready in")
    child.expect(PROMPT)
    child.sendline("who discovered penicillin")
    child.expect("answer: ")
    child.expect("Fleming")
    child.expect("Penicillin")
    child.expect(r"read \d+ ms")
    child.expect(PROMPT)
    child.sendline(":json")
    child.expect(r'abstained.{0,40}false')  # (highlighting may sit between key and value)
    child.expect(PROMPT)
    child.sendline(":mode dense")
    child.expect("mode dense")
    child.sendline(":open 1")
    child.expect("noticed mould killing bacteria")
    child.expect(PROMPT)
    child.sendline(":opne 1")
    child.expect("did you mean :open")
    child.expect(PROMPT)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
