"""torch.compile (inductor, bfloat16) against the OpenVINO encoder on the chunks bertsearch indexes (issue #21).

The inputs are the chunks of the first --docs SciFact abstracts, batched as the OpenVINO encoder batches them
(shortest first, at most 32 rows and 1024 padded pieces, padded to 16). Each round encodes all of them once with:
  openvino        the default runtime's compiled model (bfloat16 where the CPU has it)
  eager-bf16      the packaged model in torch, weights cast to bfloat16, SDPA attention
  compiled-bf16   the same under torch.compile (dynamic shapes, frozen weights; --mode picks inductor's mode)
Only the model's forward pass is timed (no tokenizing, no pooling). Prints the compile time, each round's seconds
and each variant's speed as a ratio to openvino's median.

    python scripts/probe_torch_compile.py --docs 600 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mode", default="default", help="torch.compile mode (default, max-autotune-no-cudagraphs)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import openvino as ov
    import probe_openvino
    import torch
    from transformers import AutoModel

    from bertsearch.models import DEFAULT_ENCODER, resolve_model_path
    from bertsearch.models import openvino as ovm

    rows, folder = probe_openvino.chunk_rows(probe_openvino.SCIFACT, args.docs)
    config = {"INFERENCE_PRECISION_HINT": ovm.precision_hint("auto"), "PERFORMANCE_HINT": "THROUGHPUT",
              "INFERENCE_NUM_THREADS": ovm.cpus()}
    runner = ovm.Runner(ov.Core().compile_model(str(folder / ovm.IR), "CPU", config))
    batches = ovm.length_batches([len(r) for r in rows], 32, ovm.ENCODER_TOKENS)
    inputs = [ovm.padded([rows[j] for j in idx], pad_to=16) for idx in batches]
    names = ("input_ids", "attention_mask", "token_type_ids")
    tensors = [{k: torch.from_numpy(v) for k, v in x.items() if k in names} for x in inputs]

    model = AutoModel.from_pretrained(str(resolve_model_path(DEFAULT_ENCODER)), attn_implementation="sdpa")
    model = model.eval().to(torch.bfloat16)
    torch._inductor.config.freezing = True
    compiled = torch.compile(model, dynamic=True, mode=args.mode)

    def forward(m):
        def run() -> None:
            with torch.inference_mode():
                for x in tensors:
                    m(**x)
        return run

    t = time.perf_counter()
    forward(compiled)()
    compile_s = time.perf_counter() - t
    variants = {"openvino": lambda: runner.run(inputs, lambda i, o: None), "eager-bf16": forward(model),
                "compiled-bf16": forward(compiled)}
    for run in variants.values():
        run()
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        order = list(variants)[r % 3:] + list(variants)[: r % 3]
        for name in order:
            t = time.perf_counter()
            variants[name]()
            seconds[name].append(time.perf_counter() - t)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in seconds.items()), flush=True)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    print(f"{len(rows)} chunks, {sum(len(r) for r in rows)} word pieces; torch.compile ({args.mode}) and its first "
          f"pass {compile_s:.1f} s; load average {os.getloadavg()[0]:.1f} at the end")
    print("speed to openvino (medians): " + ", ".join(f"{k} {median['openvino'] / v:.3f}" for k, v in median.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
