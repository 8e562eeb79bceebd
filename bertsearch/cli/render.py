"""Rendering for the terminal (rich, to stdout for data and stderr for progress) and as JSON."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.segment import Segment
from rich.text import Text

from ..search.fusion import query_words
from ..snippets import snippet
from ..types import Answer, AskResult, Hit

# control characters of the text shown (a document's, an id, a query), each as a character of its own width that
# shows it: C0 as its control picture (ESC as "␛"), DEL as "␡", C1 as U+FFFD; newlines and tabs stay
_CONTROLS = {c: 0x2400 + c for c in range(0x20) if c not in (0x09, 0x0A)} | {0x7F: 0x2421} | {
    c: 0xFFFD for c in range(0x80, 0xA0)}


def shown(text: str) -> str:
    """`text` with its control characters made visible, one character for one (offsets into it still hold)."""
    return text.translate(_CONTROLS)


class SafeConsole(Console):
    """A console that writes no control character of the text it is given: a document holding escape sequences
    ("\x1b[31m", a bell) sent them to the terminal, which ran them (found 2026-12-06). rich's own control codes
    (styles, cursor moves) are not text and pass."""

    def _render_buffer(self, buffer: Any) -> str:
        return super()._render_buffer(
            seg if seg.control else Segment(shown(seg.text), seg.style, seg.control) for seg in buffer)


def console(*, stderr: bool = False) -> SafeConsole:
    """A console for stdout (or stderr): piped or redirected, lines are not cut at 80 columns (a grep, a log file
    would get broken lines); on a terminal they fit its width."""
    stream = sys.stderr if stderr else sys.stdout
    return SafeConsole(stderr=stderr, highlight=False, soft_wrap=not stream.isatty())


out = console()
err = console(stderr=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


PROGRESS_LINE_SECONDS = 30.0
"""Where stderr is not a terminal (a log file, a pipe), progress is a line this often instead of a bar."""


@contextmanager
def progress(description: str, total: int | None, unit: str = "docs") -> Iterator[Any]:
    """A progress bar on stderr with count, rate and ETA; yields `advance(n)`. Where stderr is not a terminal
    (a run in the background with its stderr in a file), a plain line every PROGRESS_LINE_SECONDS instead."""
    if not err.is_terminal:
        with _progress_lines(description, total, unit) as advance:
            yield advance
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal,
    )
    task = bar.add_task(description, total=total, rate="")

    def advance(n: int) -> None:
        bar.advance(task, n)
        done = bar.tasks[task].completed
        if total is not None and done > (bar.tasks[task].total or 0):  # (a total counted before writes that came in)
            bar.update(task, total=done)
        speed = bar.tasks[task].finished_speed or bar.tasks[task].speed
        if speed:
            bar.update(task, rate=f"{speed:.1f} {unit}/s")

    with bar:
        yield advance


@contextmanager
def _progress_lines(description: str, total: int | None, unit: str) -> Iterator[Any]:
    start = last = time.monotonic()
    done = 0

    def line(now: float) -> str:
        rate = done / (now - start) if now > start else 0.0
        text = f"{description}: {done}" + (f"/{total} {unit} ({100 * done / total:.0f}%)" if total else f" {unit}")
        text += f", {rate:.1f} {unit}/s" if rate >= 1 else f", {1 / rate:.1f} s each" if rate > 0 else ""
        text += f", {_duration(now - start)} elapsed"
        if total and rate > 0 and done < total:
            text += f", eta {_duration((total - done) / rate)}"
        return text

    def advance(n: int) -> None:
        nonlocal done, last, total
        done += n
        total = max(total, done) if total is not None else None  # (counted before writes that came in meanwhile)
        now = time.monotonic()
        if now - last >= PROGRESS_LINE_SECONDS:
            last = now
            sys.stderr.write(line(now) + "\n")
            sys.stderr.flush()

    yield advance
    now = time.monotonic()
    if now - start >= PROGRESS_LINE_SECONDS:  # a quick step stays quiet; a long one says when it ended
        sys.stderr.write(line(now) + ", done\n")
        sys.stderr.flush()


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def info(data: dict[str, Any], console: Console | None = None) -> None:
    """What `Index.info` says, a line a key (the shell's :info and `bertsearch info`)."""
    console = console or out
    for key, value in data.items():
        if key == "size_bytes":
            key, value = "size", f"{value / 2**20:.1f} MiB"
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items() if v is not None)
        console.print(f"[bold]{key:>14}[/bold]  {escape(str(value))}")


def hits(query: str, results: list[Hit], mode: str, console: Console | None = None) -> None:
    """Each hit as a head line (rank, title, id, score, other stages' scores) and a snippet with the query's
    words highlighted; lines wrap at word boundaries to the console's width."""
    console = console or out
    if not results:
        console.print(f"no results for {query!r}", markup=False)
        return
    words = query_words(query)
    for h in results:
        head = Text()
        head.append(f"{h.rank:>2}. ", style="bold")
        head.append(heading(h), style="bold cyan")
        head.append(f"  [{h.doc_id}{page_label(h, ', ')}]", style="dim")
        label = "fused" if mode == "rerank" and "fused" in h.scores else mode  # the score that ordered the hits
        head.append(f"  {label} {h.score:.4f}", style="green")
        stages = " ".join(f"{s}={v:.3f}" for s, v in h.scores.items() if s != label)
        if stages:
            head.append(f"  ({stages})", style="dim")
        console.print(head)
        text, spans = snippet(h.text, words)
        body = Text("    " + text)
        for a, b in spans:
            body.stylize("bold yellow", a + 4, b + 4)
        console.print(body)


TITLE_CHARS = 100
"""A title longer than this is cut in a result's head line (the whole document view shows it whole)."""


def heading(h: Hit | Answer) -> str:
    """The title a result line shows: the document's title, cut to TITLE_CHARS, or its id where it has none."""
    title = " ".join((h.title or "").split())
    if not title:
        return h.doc_id
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1].rstrip() + "…"


def page_label(h: Hit | Answer, sep: str = "") -> str:
    """"page 3" for a hit on a document with pages (after `sep`), else ""."""
    return f"{sep}page {h.page}" if h.page is not None else ""


def answers(result: AskResult, console: Console | None = None, *, closest: int = 3, timings: bool = True) -> None:
    """The answers first, each with its confidence (or an honest "no answer found", how close the best candidate
    came, and the `closest` documents), then timings."""
    console = console or out
    if result.abstained or not result.answers:
        console.print(no_answer_line(result) + ("; the closest documents:" if closest and result.hits else ""))
        for h in result.hits[:closest]:
            where = escape(h.doc_id + page_label(h, ", "))
            console.print(f"  {h.rank}. {escape(heading(h))}  [dim]\\[{where}][/dim]")
    for i, a in enumerate(result.answers, start=1):
        head = Text()
        head.append(f"{i}. ", style="bold")
        head.append(a.text, style="bold green")
        head.append(f"  {confidence_words(a)}", style="dim")
        head.append(f"  from {heading(a)} [{a.doc_id}{page_label(a, ', ')}] chars {a.start}-{a.end}", style="cyan")
        console.print(head)
        console.print(answer_in_context(a, "    "))
    if timings:
        stage_times(result.timings, err)


def confidence_words(a: Answer) -> str:
    return f"confidence {a.confidence:.2f}" if a.confidence is not None else f"score {a.score:.2f}"


def no_answer_line(result: AskResult, lower: str = "--min-confidence lowers the bar") -> str:
    """"no answer found", and why: the best candidate's confidence against the bar, and the option that moves it
    (`lower`)."""
    line = "[bold]no answer found[/bold] in the top passages"
    best = result.best_candidate
    if best is not None and best.confidence is not None:
        places = 2 if f"{best.confidence:.2f}" != f"{result.min_confidence:.2f}" else 3  # not "0.36, under 0.36"
        line += (f" [dim](best candidate {escape(repr(best.text))} at confidence {best.confidence:.{places}f}, under "
                 f"{result.min_confidence:.{places}f}; {lower})[/dim]")
    if result.no_answer_probability is not None:
        line += f" [dim](probability that the index holds none {result.no_answer_probability:.2f})[/dim]"
    return line


def answer_in_context(a: Answer, indent: str = "  ", around: int = 160) -> Text:
    """The answer highlighted in up to `around` characters of its passage on each side."""
    a0, b0 = a.start - a.context_start, a.end - a.context_start
    left, right = max(0, a0 - around), min(len(a.context), b0 + around)
    body = Text(indent + ("…" if left else "") + a.context[left:a0])
    body.append(a.context[a0:b0], style="bold yellow reverse")
    body.append(a.context[b0:right] + ("…" if right < len(a.context) else ""))
    return body


def stage_times(timings: dict[str, float], console: Console | None = None) -> None:
    """One dim line: each stage's time in milliseconds and their total."""
    if timings:
        stages = "  ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in timings.items())
        total = sum(timings.values()) * 1000
        (console or err).print(f"[dim]{stages}  (total {total:.0f} ms)[/dim]")
