"""The interactive search shell: models and index load once, then every line is a query or a `:command`.

`Shell` holds the settings and the last result and turns one line into output (`Shell.execute`); `run`
drives it from a prompt_toolkit prompt (line editing, persistent history, completion of the shell's own
commands) or, when stdin is not a terminal, from plain lines, so that `bertsearch shell < queries.txt` works.
An error in one line is printed as one line and the shell goes on; Ctrl-C cancels a running query.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from ..errors import BertsearchError, from_sqlite
from ..filters import parse as parse_filter
from ..search.fusion import MAX_K, MODES, query_words
from ..snippets import match_spans
from ..types import AskResult, Hit

log = logging.getLogger(__name__)

ON_OFF = ("on", "off")
MODEL_OF = {"rerank": "reranker", "answer": "reader"}  # setting -> the Index property that loads its model


@dataclass(frozen=True)
class Command:
    name: str
    args: str
    help: str
    choices: tuple[str, ...] = ()


COMMANDS = {
    c.name: c
    for c in (
        Command("mode", "hybrid|dense|lexical", "how candidates are found", MODES),
        Command("k", "N", "how many documents to show"),
        Command("rerank", "on|off", "re-score the candidates with the cross-encoder", ON_OFF),
        Command("answer", "on|off", "extract an answer span with the reader", ON_OFF),
        Command("where", "FILTER|off", "filter by metadata, e.g. :where year >= 2020; ':where off' clears it"),
        Command("open", "N", "show the whole document of hit N of the last query"),
        Command("json", "", "print the last result as JSON"),
        Command("info", "", "what the index holds"),
        Command("settings", "", "show the current settings"),
        Command("help", "", "this list"),
        Command("quit", "", "leave the shell (also :exit, :q or Ctrl-D)"),
    )
}
ALIASES = {"exit": "quit", "q": "quit", "h": "help", "?": "help"}


@dataclass
class Settings:
    mode: str = "hybrid"
    k: int = 10
    rerank: bool = True
    answer: bool = True
    where: str | None = None
    passages: int = 5
    min_confidence: float | None = None  # answer when the answer's confidence reaches it (None: the calibration's)


class Shell:
    """One interactive session over an open index.

    `can_rerank` / `can_answer` say whether a reranker and a reader loaded; when one did not, turning it
    on prints why instead. `execute` returns False when the line asks to leave.
    """

    def __init__(
        self,
        index: Any,
        console: Console,
        settings: Settings | None = None,
        *,
        can_rerank: str | None = None,
        can_answer: str | None = None,
    ) -> None:
        self.index = index
        self.console = console
        self.settings = settings or Settings()
        self.unavailable = {"rerank": can_rerank, "answer": can_answer}  # name -> why it is off (None: available)
        for name, why in self.unavailable.items():
            if why is not None:
                setattr(self.settings, name, False)
        self.last: dict[str, Any] | None = None
        self.last_hits: list[Hit] = []
        self.last_query = ""

    # -- one line ---------------------------------------------------------------------------------

    def execute(self, line: str) -> bool:
        line = line.strip()
        if not line:
            return True
        try:
            self._follow()
            if line.startswith(":"):
                return self.command(line[1:])
            self.query(line)
        except KeyboardInterrupt:
            self.console.print("[yellow]cancelled[/yellow]")
        except BertsearchError as e:
            self.console.print(f"[red]error:[/red] {escape(str(e))}")
        except sqlite3.DatabaseError as e:  # the store damaged under the shell: what to do, as the commands say
            self.console.print(f"[red]error:[/red] {escape(str(from_sqlite(e, str(self.index.store.path))))}")
        except Exception as e:
            log.debug("query failed", exc_info=True)
            self.console.print(f"[red]error:[/red] {type(e).__name__}: {escape(str(e))} (run with -vv for the traceback)")
        return True

    def _follow(self) -> None:
        """Open the index again when another process replaced its folder (`bertsearch reindex`, `restore`), as
        `serve` does: every query failed with IndexReplaced until the shell was restarted, and :info showed the
        old index (found 2026-12-06)."""
        from ..engine import Index
        from ..errors import IndexReplaced

        try:
            self.index.store.check_live()
        except IndexReplaced:
            old = self.index
            self.index = Index.open(old.path, reranker=old._reranker_name, reader=old._reader_name)
            old.close()
            info = self.index.info()
            self.console.print(f"[yellow]the index was replaced by another process (re-indexed or restored); opened "
                               f"the new one:[/yellow] {info['documents']} documents, {escape(str(info['model']))}")

    def command(self, text: str) -> bool:
        name, _, arg = text.strip().partition(" ")
        name, arg = ALIASES.get(name.lower(), name.lower()), arg.strip()
        if name not in COMMANDS:
            close = difflib.get_close_matches(name, [*COMMANDS, *ALIASES], n=1)
            hint = f"did you mean :{ALIASES.get(close[0], close[0])}? " if close else ""
            self.hint(f"unknown command :{name}; {hint}:help lists the commands")
            return True
        if name == "quit":
            return False
        getattr(self, f"cmd_{name}")(arg)
        return True

    def hint(self, message: str) -> None:
        self.console.print(f"[yellow]{escape(message)}[/yellow]")

    # -- commands ---------------------------------------------------------------------------------

    def cmd_mode(self, arg: str) -> None:
        if arg not in MODES:
            self.hint(f":mode takes one of {', '.join(MODES)} (now {self.settings.mode})")
            return
        self.settings.mode = arg
        self.console.print(f"mode {arg}")

    def cmd_k(self, arg: str) -> None:
        if not (arg.isascii() and arg.isdigit()) or not 1 <= int(arg) <= MAX_K:  # ("²" is a digit, not a number)
            self.hint(f":k takes a whole number from 1 to {MAX_K:,}, e.g. :k 20 (now {self.settings.k})")
            return
        self.settings.k = int(arg)
        self.console.print(f"k {self.settings.k}")

    def _switch(self, name: str, arg: str) -> None:
        if arg not in ON_OFF:
            self.hint(f":{name} takes on or off (now {'on' if getattr(self.settings, name) else 'off'})")
            return
        if arg == "on":
            try:  # a model left unloaded at start loads now (or says again why it cannot), not in the next query
                getattr(self.index, MODEL_OF[name])
            except BertsearchError as e:
                self.hint(f":{name} is not available: {str(e).splitlines()[0]}")
                return
            self.unavailable[name] = None
        setattr(self.settings, name, arg == "on")
        self.console.print(f"{name} {arg}")

    def cmd_rerank(self, arg: str) -> None:
        self._switch("rerank", arg)

    def cmd_answer(self, arg: str) -> None:
        self._switch("answer", arg)

    def cmd_where(self, arg: str) -> None:
        if not arg:
            self.console.print(f"where {self.settings.where or '(none)'}", markup=False)
            return
        if arg.lower() in ("off", "none", "clear"):
            self.settings.where = None
            self.console.print("where cleared")
            return
        try:
            parse_filter(arg)
            self.index.retriever.filter(arg)  # and fields the index has: else every query would fail on it
        except BertsearchError as e:
            self.hint(str(e).splitlines()[0])
            return
        self.settings.where = arg
        self.console.print(f"where {arg}", markup=False)

    def cmd_open(self, arg: str) -> None:
        if not self.last_hits:
            self.hint(":open N shows hit N of the last query; run a query first")
            return
        if not arg.isdigit() or not 1 <= int(arg) <= len(self.last_hits):
            self.hint(f":open takes a hit number from 1 to {len(self.last_hits)}")
            return
        hit = self.last_hits[int(arg) - 1]
        doc = self.index.get(hit.doc_id)
        if doc is None:
            self.hint(f"document {hit.doc_id} is no longer in the index")
            return
        render_document(doc, query_words(self.last_query), self.console)

    def cmd_json(self, arg: str) -> None:
        if self.last is None:
            self.hint(":json prints the last result; run a query first")
            return
        self.console.print_json(json.dumps(self.last, ensure_ascii=False))

    def cmd_info(self, arg: str) -> None:
        from .render import info

        info(self.index.info(), self.console)

    def cmd_settings(self, arg: str) -> None:
        s = self.settings
        parts = [f"mode {s.mode}", f"k {s.k}", f"rerank {'on' if s.rerank else 'off'}",
                 f"answer {'on' if s.answer else 'off'}", f"where {s.where or '(none)'}"]
        self.console.print("  ".join(parts), markup=False)
        for name, why in self.unavailable.items():
            if why is not None:
                self.console.print(f"[dim]{name} unavailable: {escape(why)}[/dim]")

    def cmd_help(self, arg: str) -> None:
        self.console.print("Type a question or keywords and press Enter. Commands:")
        width = max(len(f":{c.name} {c.args}") for c in COMMANDS.values())
        for c in COMMANDS.values():
            line = Text("  ")
            line.append(f":{c.name}", style="bold")
            line.append(f" {c.args}".ljust(width - len(c.name) - 1) + "  ")
            line.append(c.help)
            self.console.print(line)
        self.console.print("Ctrl-C cancels a running query; Ctrl-D or :quit leaves.")

    # -- queries ----------------------------------------------------------------------------------

    def query(self, text: str) -> None:
        s = self.settings
        self.last_query = text
        if s.answer:
            result = self.index.ask(text, k=3, passages=s.passages, hits=s.k, mode=s.mode, where=s.where, rerank=s.rerank,
                                    min_confidence=s.min_confidence)
            hits, timings = result.hits, result.timings
            render_answer(result, self.console)
        else:
            hits = self.index.search(text, k=s.k, mode=s.mode, where=s.where, rerank=s.rerank)
            timings, result = hits.timings, None
        self.last_hits = hits
        self.last = {
            "query": text,
            "settings": asdict(s),
            "timings": {name: round(v, 6) for name, v in timings.items()},
            "answers": [a.to_dict() for a in result.answers] if result else None,
            "abstained": result.abstained if result else None,
            "hits": [h.to_dict() for h in hits],
        }
        from . import render

        render.hits(text, hits, "rerank" if "rerank" in timings else s.mode, self.console)
        render.stage_times(timings, self.console)


def render_answer(result: AskResult, console: Console) -> None:
    """The best answer with its span highlighted in its passage, other answers on one line each; or an
    honest "no answer found"."""
    from .render import answer_in_context, confidence_words, heading, no_answer_line

    if result.abstained or not result.answers:
        lower = "start the shell with --min-confidence to lower the bar"
        console.print(no_answer_line(result, lower) + (" [dim]the closest documents follow[/dim]" if result.hits else ""))
        return
    best, *others = result.answers
    head = Text()
    head.append("answer: ", style="bold")
    head.append(best.text, style="bold green")
    head.append(f"  ({heading(best)}, {confidence_words(best)})", style="dim")
    console.print(head)
    console.print(answer_in_context(best))
    for a in others:
        console.print(Text(f"  also: {a.text}  ({heading(a)}, {confidence_words(a)})", style="dim"))
    console.print()


def render_document(doc: dict[str, Any], words: set[str], console: Console) -> None:
    """A whole stored document: title, id, metadata, then its text with the query's words highlighted."""
    head = Text()
    head.append(doc.get("title") or doc["id"], style="bold cyan")
    head.append(f"  [{doc['id']}]", style="dim")
    console.print(head)
    if doc.get("metadata"):
        console.print(Text("  " + json.dumps(doc["metadata"], ensure_ascii=False), style="dim"))
    body = Text(doc["text"])
    for a, b in match_spans(doc["text"], words):
        body.stylize("bold yellow", a, b)
    console.print(body)


# -- the prompt -------------------------------------------------------------------------------------


def history_path() -> Path:
    """$BERTSEARCH_HISTORY, else $XDG_STATE_HOME/bertsearch/history (~/.local/state/bertsearch/history)."""
    if os.environ.get("BERTSEARCH_HISTORY"):
        return Path(os.environ["BERTSEARCH_HISTORY"]).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "bertsearch" / "history"


def complete(text: str) -> list[str]:
    """Completions for the text before the cursor: command names after ':', then a command's choices."""
    if not text.startswith(":"):
        return []
    name, space, arg = text[1:].partition(" ")
    if not space:
        return [f":{c}" for c in COMMANDS if c.startswith(name.lower())]
    command = COMMANDS.get(ALIASES.get(name.lower(), name.lower()))
    return [c for c in command.choices if c.startswith(arg.strip())] if command else []


def _prompt_lines(history: Path | None) -> Iterator[str]:
    """Lines typed at a prompt_toolkit prompt; KeyboardInterrupt at the prompt yields an empty line."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import Completer, Completion
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    class _Commands(Completer):
        def get_completions(self, document: Any, complete_event: Any) -> Iterable[Completion]:
            before = document.text_before_cursor
            word = before.rsplit(" ", 1)[-1] if " " in before else before
            for c in complete(before):
                yield Completion(c, start_position=-len(word))

    store: Any = InMemoryHistory()
    if history is not None:
        try:
            history.parent.mkdir(parents=True, exist_ok=True)
            history.touch(exist_ok=True)
            store = FileHistory(str(history))
        except OSError as e:
            log.warning("history will not be kept: cannot write %s (%s)", history, e.strerror)
    session: Any = PromptSession(history=store, completer=_Commands(), complete_while_typing=False)
    while True:
        try:
            yield session.prompt("> ")
        except (KeyboardInterrupt, asyncio.CancelledError):
            # Ctrl-C that lands while the prompt's event loop starts or stops cancels the loop's task
            # instead of raising KeyboardInterrupt; either way it only clears the line
            yield ""


def _plain_lines(stream: Any) -> Iterator[str]:
    for line in stream:
        yield line.rstrip("\n")


def run(shell: Shell, *, history: Path | None, interactive: bool | None = None) -> None:
    """Read lines until Ctrl-D, end of input or :quit, and execute each."""
    interactive = sys.stdin.isatty() and sys.stdout.isatty() if interactive is None else interactive
    lines = _prompt_lines(history) if interactive else _plain_lines(sys.stdin)
    while True:
        try:
            line = next(lines)
        except (EOFError, StopIteration):
            break
        except KeyboardInterrupt:
            continue
        if not shell.execute(line):
            break


def load(
    index_path: str,
    console: Console,
    *,
    model: str | None = None,
    reranker: str | None = None,
    reader: str | None = None,
    rerank: bool = True,
    answer: bool = True,
    precision: str = "auto",
    gpu: bool | None = None,
) -> tuple[Any, dict[str, str | None], float]:
    """Open the index and load every model it will use, showing each step; returns the index, why a
    model is unavailable (name -> reason, None when it loaded) and the seconds it all took."""
    from ..engine import Index
    from ..errors import ModelNotFound

    t0 = time.perf_counter()
    why: dict[str, str | None] = {"rerank": None, "answer": None}
    with console.status("opening the index and loading the encoder ...") as status:
        ix = Index.open(index_path, model=model, reranker=reranker, reader=reader, precision=precision, gpu=gpu)
        try:
            ix.search("warm up", k=1)  # loads the vectors and the encoder's weights
            for name, wanted in (("rerank", rerank), ("answer", answer)):
                if not wanted:
                    continue  # loads on ':{name} on'
                attr = MODEL_OF[name]
                status.update(f"loading the {attr} ...")
                try:
                    model_ = getattr(ix, attr)
                    if attr == "reader":
                        model_.read("warm up", ["warm up"], top_k=1)
                    else:
                        model_.score("warm up", ["warm up"])
                except ModelNotFound as e:
                    why[name] = str(e).splitlines()[0]
        except BaseException:
            ix.close()
            raise
    return ix, why, time.perf_counter() - t0


def banner(index: Any, why: dict[str, str | None], seconds: float, console: Console) -> None:
    info = index.info()
    parts = [f"{info['documents']} documents", f"{info['chunks']} chunks", info["model"]]
    console.print(f"[bold]{escape(info['path'])}[/bold]: {escape(', '.join(str(p) for p in parts))}  "
                  f"[dim](ready in {seconds:.1f} s)[/dim]")
    for name, reason in why.items():
        if reason is not None:
            console.print(f"[yellow]{name} off:[/yellow] {escape(reason)}")
    console.print("[dim]Type a query; :help lists commands; Ctrl-D leaves.[/dim]")
