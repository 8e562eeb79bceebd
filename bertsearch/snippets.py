"""Short snippets of a hit's text around the query's words, and where those words are."""

from __future__ import annotations

import re

# Question words: they barely move BM25 (and FTS5 ran three times faster without their long posting lists when
# mining SQuAD train for the reranker: 18 ms instead of 55 ms a question on 2 cores), and where one first stands in
# a chunk says nothing of where the question's subject is (a hit's page followed "the" to page 1).
_STOPWORD_TEXT = (
    "a about after an and are as at be been before by can could did do does during for from had has have he her "
    "him his how i if in into is it its many much of on or other she so some than that the their them then there "
    "these they this those to too was we were what when where which while who whom whose why will with would you"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def match_spans(text: str, words: set[str]) -> list[tuple[int, int]]:
    """Character spans in `text` of words whose lower case is in `words` (or shares a 4+ letter stem)."""
    stems = {w[:5] for w in words if len(w) >= 4}
    spans = []
    for m in re.finditer(r"\w+", text):
        w = m.group().lower()
        if w in words or (len(w) >= 4 and w[:5] in stems):
            spans.append(m.span())
    return spans


def snippet(text: str, words: set[str], width: int = 240) -> tuple[str, list[tuple[int, int]]]:
    """Up to `width` characters of `text` around its first match, and the matches' spans within it."""
    text = " ".join(text.split())
    spans = match_spans(text, words)
    if len(text) <= width:
        return text, spans
    first = spans[0][0] if spans else 0
    start = max(0, first - width // 4)
    if start > 0:
        space = text.find(" ", start)
        start = space + 1 if 0 <= space < first else start
    end = min(len(text), start + width)
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > start else end
    prefix = "…" if start > 0 else ""
    suffix = "…" if end < len(text) else ""
    out = prefix + text[start:end] + suffix
    shift = len(prefix) - start
    return out, [(a + shift, b + shift) for a, b in spans if a >= start and b <= end]
