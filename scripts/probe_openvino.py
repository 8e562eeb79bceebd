"""Where the OpenVINO encoder's indexing time goes, and what the options tried for it give (issue #21).

The inputs are the chunks bertsearch makes of the first --docs SciFact abstracts (title, newline, chunk text), as word
pieces; each variant encodes all of them once a round, in turn, --rounds times, on this process's cores:
  default        the encoder's own batching: shortest first, at most 32 rows and 1024 padded pieces, padded to 16
  pad-32         the same padded to multiples of 32 (the setting before 2026-12-05's evening)
  unfused        the default with OpenVINO's attention fusion off (SNIPPETS_MODE=DISABLE)
  static         one model compiled per padded width (multiples of 32) with a fixed number of rows (1024 // width),
                 the rows left over run on the dynamic model; its compile time and the memory it adds are reported
Only the runtime's work is timed (no tokenizing, no pooling). The medians and their ratios to the default are printed.

    python scripts/probe_openvino.py --docs 600 --rounds 5 --json logs/probe-openvino.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def chunk_rows(corpus: Path, n: int) -> tuple[list[list[int]], Path]:
    """Word-piece ids of every chunk bertsearch encodes for the first `n` documents, and the encoder's IR folder."""
    import bertsearch

    rows = [json.loads(line) for line, _ in zip(corpus.open(encoding="utf-8"), range(n))]
    docs = [{"id": r["_id"], "title": r.get("title", ""), "text": r["text"]} for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        ix = bertsearch.open_index(f"{tmp}/ix", create=True, backend="openvino")
        enc = getattr(ix.encoder, "inner", ix.encoder)
        texts: list[str] = []

        def keep(batch: list[str], **_: object) -> np.ndarray:
            texts.extend(batch)
            return np.tile(np.eye(1, enc.dim, dtype=np.float32), (len(batch), 1))  # unit vectors, never searched

        enc.encode = keep
        ix.add(docs)
        ix.close()
    from bertsearch.models import openvino as ovm

    return enc.input_ids(texts), ovm.converted(enc.path, "encoder", enc.fingerprint())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=SCIFACT)
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.docs < 1 or args.rounds < 1:
        ap.error("--docs and --rounds must be at least 1")
    if not args.corpus.is_file():
        ap.error(f"no corpus at {args.corpus}: name a BEIR corpus.jsonl with --corpus")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import openvino as ov

    from bertsearch.models import openvino as ovm

    rows, folder = chunk_rows(args.corpus, args.docs)
    lengths = [len(r) for r in rows]
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": ovm.precision_hint("auto"), "PERFORMANCE_HINT": "THROUGHPUT",
              "INFERENCE_NUM_THREADS": ovm.cpus()}
    dynamic = ovm.Runner(core.compile_model(str(folder / ovm.IR), "CPU", config))
    unfused = ovm.Runner(core.compile_model(str(folder / ovm.IR), "CPU", {**config, "SNIPPETS_MODE": "DISABLE"}))
    batches = ovm.length_batches(lengths, 32, ovm.ENCODER_TOKENS)
    by_pad = {p: [ovm.padded([rows[j] for j in idx], pad_to=p) for idx in batches] for p in (16, 32)}

    # static: fixed (rows, width) per padded width; what does not fill a batch goes to the dynamic model
    plan: list[tuple[tuple[int, int] | None, dict[str, np.ndarray]]] = []
    by_width: dict[int, list[int]] = {}
    for j in np.argsort(lengths, kind="stable"):
        by_width.setdefault(-(-lengths[j] // 32) * 32, []).append(int(j))
    for width, idx in by_width.items():
        b = max(1, ovm.ENCODER_TOKENS // width)
        for i in range(0, len(idx), b):
            part = idx[i : i + b]
            plan.append(((b, width) if len(part) == b else None, ovm.padded([rows[j] for j in part], pad_to=32)))
    dynamic.run(by_pad[16], lambda i, o: None)  # the dynamic models' buffers, before the static ones are counted
    unfused.run(by_pad[16], lambda i, o: None)
    before, t = rss_mb(), time.perf_counter()
    queues = {}
    for shape in sorted({s for s, _ in plan if s}):
        model = core.read_model(str(folder / ovm.IR))
        model.reshape({i.get_any_name(): list(shape) for i in model.inputs})
        compiled = core.compile_model(model, "CPU", config)
        queues[shape] = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    compile_s = time.perf_counter() - t

    def run_static() -> None:
        for shape, x in plan:
            (queues[shape] if shape else dynamic._queue).start_async(x)
        for q in [*queues.values(), dynamic._queue]:
            q.wait_all()

    variants = {
        "default": lambda: dynamic.run(by_pad[16], lambda i, o: None),
        "pad-32": lambda: dynamic.run(by_pad[32], lambda i, o: None),
        "unfused": lambda: unfused.run(by_pad[16], lambda i, o: None),
        "static": run_static,
    }
    run_static()
    added_mb = rss_mb() - before  # the static models, compiled and run once
    for run in variants.values():  # every shape seen once before the timing
        run()
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for name in list(variants)[r % len(variants) :] + list(variants)[: r % len(variants)]:
            t = time.perf_counter()
            variants[name]()
            seconds[name].append(time.perf_counter() - t)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    out = {
        "machine": f"{ovm.cpus()} cpus, load average {os.getloadavg()[0]:.1f} at the end", "docs": args.docs,
        "chunks": len(rows), "pieces": sum(lengths),
        "padded_pieces": {"default": sum(x["input_ids"].size for x in by_pad[16]),
                          "pad-32": sum(x["input_ids"].size for x in by_pad[32]),
                          "static": sum(x["input_ids"].size for _, x in plan)},
        "static_models": len(queues), "static_compile_s": round(compile_s, 2), "static_added_mb": round(added_mb),
        "seconds": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
        "median_s": {k: round(v, 3) for k, v in median.items()},
        "speed_to_default": {k: round(median["default"] / v, 3) for k, v in median.items()},
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
