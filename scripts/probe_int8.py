"""The ways to run the encoder in int8 on OpenVINO: how close each stays to fp32, and how fast it runs (issue #21).

Each variant encodes --docs wiki-demo passages (title, newline, text; those not used to calibrate) and the demo's
queries; what it gives is compared with OpenVINO fp32 on the same inputs:
  static          NNCF's post-training quantisation for transformers (SmoothQuant, int8 weights and activations,
                  activation ranges calibrated on every fifth wiki-demo passage, 300)
  static-ffn      the same, the feed-forward output layers (whose inputs follow GELU) left in fp32
  weights-dqN     int8 weights (NNCF's weight compression, asymmetric, no data), the activations quantised as they
                  come in groups of N values (OpenVINO's DYNAMIC_QUANTIZATION_GROUP_SIZE); bertsearch's int8 is
                  weights-dq128 (`models.openvino.INT8_GROUP`)
Printed per variant: the mean and 1st percentile of the cosine to fp32 over the passages, the mean over the queries,
the overlap of each query's top 10 passages with fp32's, and the median seconds of the runtime's work (no tokenizing)
against fp32's, alternating, --rounds rounds. To run as a CPU without bfloat16 would, limit OpenVINO's kernels:

    ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI python scripts/probe_int8.py --json logs/probe-int8.json

With --hint bf16 every variant (and the baseline, "fp32" in the output) is compiled for bfloat16: on a CPU with AMX,
whether int8 beats bfloat16 (2026-12-06 on the Xeon: static int8 1.03x, weights-dq128 0.71x).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WIKI = ROOT / "corpora" / "wiki-demo"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default="static,static-ffn,weights-dq32,weights-dq64,weights-dq128,weights-dq384")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--hint", choices=("f32", "bf16"), default="f32",
                    help="what the variants, and the baseline their speed is taken against, are compiled for (bf16: to "
                         "compare int8 with bfloat16 on a CPU that runs it natively); the cosines are always to fp32")
    args = ap.parse_args()
    if args.docs < 10 or args.rounds < 1:
        ap.error("--docs must be at least 10 and --rounds at least 1")
    names = [v for v in args.variants.split(",") if v]
    bad = [v for v in names if v not in ("static", "static-ffn") and not (v.startswith("weights-dq") and v[10:].isdigit())]
    if bad:
        ap.error(f"unknown variants {bad}; use static, static-ffn or weights-dqN")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import nncf
    import openvino as ov
    from tokenizers import Tokenizer

    from bertsearch.models import DEFAULT_ENCODER, resolve_model_path
    from bertsearch.models import openvino as ovm
    from bertsearch.models.onnx import mean_pool

    logging.getLogger("nncf").setLevel(logging.WARNING)
    folder = ovm.converted(resolve_model_path(DEFAULT_ENCODER), "encoder")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)
    rows = [json.loads(line) for line in (WIKI / "docs.jsonl").open(encoding="utf-8")]
    texts = [f"{r['title']}\n{r['text']}" for r in rows]
    calibration = texts[::5][:300]
    held = [t for i, t in enumerate(texts) if i % 5][: args.docs]
    queries = [line.split("\t")[0] for line in (WIKI / "queries.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    core = ov.Core()

    def runner(model: object, group: int = 0, hint: str = "") -> ovm.Runner:
        config = {"INFERENCE_PRECISION_HINT": hint or args.hint, "PERFORMANCE_HINT": "THROUGHPUT",
                  "INFERENCE_NUM_THREADS": ovm.cpus()}
        if group:
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = group
        return ovm.Runner(core.compile_model(model, "CPU", config))

    def inputs(batch: list[str]) -> tuple[list[np.ndarray], list[dict]]:
        ids = [e.ids for e in tok.encode_batch(batch)]
        batches = ovm.length_batches([len(r) for r in ids], 32, ovm.ENCODER_TOKENS)
        return batches, [ovm.padded([ids[j] for j in b], pad_to=ovm.ENCODER_PAD_TO) for b in batches]

    passages, queries_in = inputs(held), inputs(queries)

    def encode(r: ovm.Runner, which: tuple[list[np.ndarray], list[dict]], n: int) -> np.ndarray:
        batches, xs = which
        out = np.zeros((n, 384), dtype=np.float32)

        def pool(i: int, o: list[np.ndarray]) -> None:
            v = mean_pool(o[0], xs[i]["attention_mask"])
            out[batches[i]] = v / np.linalg.norm(v, axis=1, keepdims=True)

        r.run(xs, pool)
        return out

    def sample(e: object) -> dict[str, np.ndarray]:
        ids = np.array([e.ids], dtype=np.int64)  # type: ignore[attr-defined]
        return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}

    def build(name: str) -> ovm.Runner:
        fresh = core.read_model(str(folder / ovm.IR))
        with contextlib.redirect_stdout(sys.stderr):
            if name.startswith("weights-dq"):
                return runner(nncf.compress_weights(fresh, mode=nncf.CompressWeightsMode.INT8_ASYM), int(name[10:]))
            ignored = nncf.IgnoredScope(patterns=[r".*layer\.\d+/output/dense/MatMul.*"]) if name == "static-ffn" else None
            data = nncf.Dataset(tok.encode_batch(calibration), sample)
            return runner(nncf.quantize(fresh, data, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration),
                                        **({"ignored_scope": ignored} if ignored else {})))

    reference = runner(core.read_model(str(folder / ovm.IR)), hint="f32")
    fp32 = runner(core.read_model(str(folder / ovm.IR)))  # the speed's baseline: compiled for --hint
    ref, ref_q = encode(reference, passages, len(held)), encode(reference, queries_in, len(queries))
    ref_top = np.argsort(-(ref_q @ ref.T), axis=1)[:, :10]
    out: dict = {"isa_limit": os.environ.get("ONEDNN_MAX_CPU_ISA", "none"), "hint": args.hint, "passages": len(held),
                 "queries": len(queries), "date": time.strftime("%Y-%m-%d"), "variants": {}}
    for name in names:
        r = build(name)
        d, q = encode(r, passages, len(held)), encode(r, queries_in, len(queries))
        cos, cos_q = (d * ref).sum(1), (q * ref_q).sum(1)
        top = np.argsort(-(q @ d.T), axis=1)[:, :10]
        seconds: dict[str, list[float]] = {"fp32": [], name: []}
        for k in range(args.rounds):
            for who, rr in ((("fp32", fp32), (name, r)) if k % 2 == 0 else ((name, r), ("fp32", fp32))):
                t = time.perf_counter()
                rr.run(passages[1], lambda i, o: None)
                seconds[who].append(time.perf_counter() - t)
        speed = statistics.median(seconds["fp32"]) / statistics.median(seconds[name])
        row = {"cosine_mean": round(float(cos.mean()), 5), "cosine_p1": round(float(np.percentile(cos, 1)), 5),
               "query_cosine_mean": round(float(cos_q.mean()), 5),
               "top10_overlap": round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, ref_top)])), 3),
               "seconds": {k: [round(x, 3) for x in v] for k, v in seconds.items()}, "speed_to_fp32": round(speed, 2)}
        out["variants"][name] = row
        print(name, json.dumps({k: v for k, v in row.items() if k != "seconds"}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
