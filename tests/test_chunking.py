import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertsearch.chunking import chunk_spans, sentence_starts


def spans(text):
    return [m.span() for m in re.finditer(r"\S+", text)]


def test_sentences_pack_into_windows_with_overlap():
    text = "One two three. Four five six seven. Eight nine. Ten eleven twelve thirteen fourteen fifteen sixteen."
    chunks = chunk_spans(text, spans(text), max_tokens=6, overlap=2)
    pieces = [text[c.start : c.end] for c in chunks]
    assert pieces[0] == "One two three."
    assert pieces[1] == "Four five six seven. Eight nine."
    assert all(c.n_tokens <= 6 for c in chunks)
    # the long last sentence is cut into token windows that overlap by 2 tokens
    assert pieces[2].startswith("Ten") and pieces[3].split()[:2] == pieces[2].split()[-2:]


def test_short_text_is_one_chunk_and_empty_text_none():
    assert [(c.start, c.end) for c in chunk_spans("Hello there.", spans("Hello there."), 10)] == [(0, 12)]
    assert chunk_spans("", [], 10) == []


def test_sentence_starts():
    assert sentence_starts("A b. C d! E?") == [0, 5, 10]
    assert sentence_starts("Para one\n\nPara two") == [0, 10]


def test_bad_settings_rejected():
    with pytest.raises(ValueError):
        chunk_spans("a b", spans("a b"), 0)
    with pytest.raises(ValueError):
        chunk_spans("a b", spans("a b"), 4, overlap=4)


words = st.text(alphabet="abc .!\n", min_size=0, max_size=400)


@settings(max_examples=300, deadline=None)
@given(text=words, max_tokens=st.integers(2, 12), overlap=st.integers(0, 5))
def test_every_token_is_in_a_chunk_and_windows_fit(text, max_tokens, overlap):
    overlap = min(overlap, max_tokens - 1)
    sp = spans(text)
    chunks = chunk_spans(text, sp, max_tokens, overlap)
    for a, b in sp:  # nothing is dropped
        assert any(c.start <= a and b <= c.end for c in chunks)
    for c in chunks:  # every window fits and its count is right
        assert c.n_tokens <= max_tokens
        assert c.n_tokens == sum(1 for a, b in sp if c.start <= a and b <= c.end)
    starts = [c.start for c in chunks]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # progress, no repeats
