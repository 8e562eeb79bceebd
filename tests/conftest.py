from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"

DOCS = [
    {"id": "aurora", "title": "Aurora", "text": "An aurora, also called the northern lights, is a natural light display in "
     "the sky. Auroras are caused by disturbances in the magnetosphere by the solar wind.", "topic": "science"},
    {"id": "penicillin", "title": "Penicillin", "text": "Penicillin is a group of antibiotics. Alexander Fleming "
     "discovered penicillin in 1928 when he noticed mould killing bacteria.", "topic": "medicine", "year": 1928},
    {"id": "volcano", "title": "Volcano", "text": "A volcano is a rupture in the crust of a planet that allows hot lava, "
     "volcanic ash and gases to escape from a magma chamber below the surface.", "topic": "science"},
    {"id": "piano", "title": "Piano", "text": "The piano is a keyboard instrument. Pressing a key makes a hammer strike "
     "strings, and the sound is sustained by a pedal.", "topic": "music"},
]


@pytest.fixture
def docs() -> list[dict]:
    return [dict(d) for d in DOCS]


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    p = tmp_path / "docs.jsonl"
    p.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    return p


@pytest.fixture
def index(tmp_path: Path, docs):
    import bertsearch

    ix = bertsearch.open_index(tmp_path / "ix", create=True, model="hashing")
    ix.add(docs)
    yield ix
    ix.close()
