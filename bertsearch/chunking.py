"""Token-aware, sentence-aware chunking with overlap.

A chunk is a character span of the document that fits the encoder's window. Sentences are packed
greedily into windows of at most `max_tokens` word pieces; consecutive windows share whole trailing
sentences of up to `overlap` tokens. A sentence longer than a window is cut into token windows that
overlap by `overlap` tokens. Nothing is dropped: every token of the text lies in some chunk.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .types import Chunk

Span = tuple[int, int]

# A sentence ends at ., ! or ? (optionally followed by closing quotes or brackets) before whitespace,
# or at a blank line.
_SENTENCE_END = re.compile(r"""[.!?]["')\]]*\s+|\n\s*\n""")


def sentence_starts(text: str) -> list[int]:
    """Character offsets where sentences begin (always including 0)."""
    starts = [0]
    for m in _SENTENCE_END.finditer(text):
        if m.end() < len(text):
            starts.append(m.end())
    return starts


def chunk_spans(text: str, spans: Sequence[Span], max_tokens: int, overlap: int = 0) -> list[Chunk]:
    """Split `text`, tokenised into character `spans`, into chunks of at most `max_tokens` tokens."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if not 0 <= overlap < max_tokens:
        raise ValueError(f"overlap must be in [0, max_tokens), got {overlap}")
    if not spans:
        return []
    units = _units(text, spans, max_tokens, overlap)  # (first token, end token) half-open ranges
    chunks: list[Chunk] = []
    i = 0
    while i < len(units):
        j = i
        n = 0
        while j < len(units) and n + (units[j][1] - units[j][0]) <= max_tokens:
            n += units[j][1] - units[j][0]
            j += 1
        if j == i:  # cannot happen: units are at most max_tokens long
            j = i + 1
        first, last = units[i][0], units[j - 1][1]
        chunks.append(Chunk(start=spans[first][0], end=spans[last - 1][1], n_tokens=last - first))
        if j >= len(units):
            break
        # Start the next window at the earliest unit that keeps the shared tail within `overlap`.
        nxt = j
        tail = 0
        room = max_tokens - (units[j][1] - units[j][0])  # the next window must reach past unit j
        while nxt - 1 > i and tail + (units[nxt - 1][1] - units[nxt - 1][0]) <= min(overlap, room):
            nxt -= 1
            tail += units[nxt][1] - units[nxt][0]
        i = nxt
    return chunks


def _units(text: str, spans: Sequence[Span], max_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """Token ranges of sentences; a sentence longer than `max_tokens` becomes overlapping windows."""
    starts = sentence_starts(text)
    units: list[tuple[int, int]] = []
    s = 0  # index into starts
    first = 0
    for t, (a, _) in enumerate(spans):
        while s + 1 < len(starts) and a >= starts[s + 1]:
            s += 1
            if t > first:
                units.append((first, t))
            first = t
    units.append((first, len(spans)))
    out: list[tuple[int, int]] = []
    for a, b in units:
        if b - a <= max_tokens:
            out.append((a, b))
            continue
        pos = a
        while True:
            end = min(pos + max_tokens, b)
            if end < b:  # cut where a word starts: a word cut in two tokenizes longer on its own
                end = _word_start_at_or_before(spans, end, pos + 1)
            out.append((pos, end))
            if end == b:
                break
            pos = _word_start_at_or_before(spans, max(pos + 1, end - overlap), pos + 1)
    return out


def _word_start_at_or_before(spans: Sequence[Span], t: int, lowest: int) -> int:
    """The last token at or before `t` (and at least `lowest`) that begins a word (whitespace or nothing before
    it), else `t` itself: a run of pieces with no word start in reach is cut where it must be."""
    for u in range(t, lowest - 1, -1):
        if spans[u][0] > spans[u - 1][1]:
            return u
    return t
