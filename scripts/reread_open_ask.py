"""Re-read the open-corpus `eval ask` records with another reader, keeping their retrieval as it was.

`bertsearch eval ask SQUAD --reader R` collects afresh: it retrieves, reranks and reads every question again
(0.3-0.5 s a question on 2 CPU cores on torch, most of it in the cross-encoder; re-reading takes about 0.05 s).
When only the reader changes, the hits are the same, so this re-reads the recorded hits' passages with the new
reader and writes records that `bertsearch eval ask --records OUT` fits and reports on, as if collected afresh
(`--check N` first re-reads N records with the reader that made them and stops unless their spans come back the
same).

    python scripts/reread_open_ask.py indexes/squad-open-0.records.jsonl models/reader/records.jsonl \
        --index indexes/squad-open-0 --reader models/reader --check 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bertsearch.engine import Index
from bertsearch.evaluation.open_ask import pipeline, read_records, span_records


def reread(ix: Index, records: list[dict], per_passage: int = 3) -> list[dict]:
    docs: dict[str, str] = {}
    made_by = pipeline(ix, max((len(r["hits"]) for r in records), default=5))
    out = []
    for r in records:
        texts = []
        for h in r["hits"]:
            if h["doc_id"] not in docs:
                docs[h["doc_id"]] = ix.get(h["doc_id"])["text"]
            texts.append(docs[h["doc_id"]][h["start"]:h["end"]])
        spans = ix.reader.read(r["question"], texts, per_passage=per_passage) if texts else []
        out.append({**r, "spans": span_records(spans), "pipeline": made_by})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("records", help="the records collected by `bertsearch eval ask`")
    ap.add_argument("out", help="where to write the re-read records (JSONL)")
    ap.add_argument("--index", required=True, help="the index the records were collected from")
    ap.add_argument("--reader", required=True, help="the reader to read with")
    ap.add_argument("--check", type=int, default=0, metavar="N",
                    help="first re-read N records with the reader that made them (--check-reader) and stop on a mismatch")
    ap.add_argument("--check-reader", default="default", help="the reader that made the records (default: shipped)")
    args = ap.parse_args()
    records = read_records(args.records)
    if args.check:
        with Index.open(args.index, reader=args.check_reader) as ix:
            again = reread(ix, records[:args.check])
        for a, b in zip(records, again):
            sa = [(s["passage"], s["text"], round(s["score"], 1)) for s in a["spans"]]
            sb = [(s["passage"], s["text"], round(s["score"], 1)) for s in b["spans"]]
            if sa != sb:
                print(f"record {a['qid']}: spans differ\n  recorded {sa[:3]}\n  re-read  {sb[:3]}", file=sys.stderr)
                return 1
        print(f"checked: {args.check} records re-read the same", file=sys.stderr)
    t0 = time.perf_counter()
    with Index.open(args.index, reader=args.reader) as ix:
        again = reread(ix, records)
    Path(args.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in again), encoding="utf-8")
    print(f"{len(again)} records re-read in {time.perf_counter() - t0:.0f} s -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
