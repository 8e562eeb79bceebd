"""A bounded load test of `bertsearch serve` on loopback: queries/s and latency for search and ask, by clients.

Starts a real server (`python -m bertsearch serve`) on 127.0.0.1 over an index, waits until /ready, then for each
(endpoint, clients) runs that many concurrent clients, each looping over the queries until its request count or
the time budget runs out; it counts every non-200 answer as an error. Prints a table and, with --json, writes the
figures. Nothing but 127.0.0.1 is ever contacted.

    python scripts/loadtest.py --index indexes/demo --clients 1,16 --seconds 30
    python scripts/loadtest.py --index /tmp/ix --seconds 3 --quick     # a few seconds, for CI
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
QUERIES = ROOT / "corpora" / "wiki-demo" / "queries.tsv"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_queries(path: Path) -> list[str]:
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    col = rows[0].index("query") if "query" in rows[0] else 0
    return [r[col] for r in rows[1:] if len(r) > col and r[col].strip()]


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    i = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[i]


async def run(base: str, endpoint: str, clients: int, seconds: float, max_requests: int, queries: list[str],
              body: dict) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def client(n: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            i = n
            for _ in range(max_requests):
                if time.perf_counter() >= deadline:
                    return
                q = queries[i % len(queries)]
                i += clients
                payload = {**body, ("question" if endpoint == "/ask" else "query"): q}
                t = time.perf_counter()
                try:
                    r = await http.post(endpoint, json=payload)
                    ok = r.status_code == 200
                    if not ok:
                        errors.append(f"{r.status_code} {r.text[:120]}")
                except httpx.HTTPError as e:
                    ok = False
                    errors.append(repr(e))
                if ok:
                    latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    wall = time.perf_counter() - t0
    return {
        "endpoint": endpoint, "clients": clients, "requests": len(latencies) + len(errors), "errors": len(errors),
        "error_samples": errors[:3], "seconds": round(wall, 2), "qps": round(len(latencies) / wall, 2),
        "p50_ms": round(1000 * percentile(latencies, 50), 1), "p95_ms": round(1000 * percentile(latencies, 95), 1),
        "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, help="Index folder to serve (built beforehand).")
    ap.add_argument("--clients", default="1,16", help="Concurrent clients to try, comma-separated.")
    ap.add_argument("--seconds", type=float, default=30.0, help="Time budget of each run.")
    ap.add_argument("--max-requests", type=int, default=100_000, help="Cap on each client's requests per run.")
    ap.add_argument("--endpoints", default="search,ask", help="search (hybrid), rerank (hybrid + cross-encoder), ask.")
    ap.add_argument("--queries", type=Path, default=QUERIES)
    ap.add_argument("--quick", action="store_true", help="A few requests per run (for CI): checks errors, not speed.")
    ap.add_argument("--json", type=Path, default=None, help="Write the figures here.")
    args = ap.parse_args()

    queries = read_queries(args.queries)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("BERTSEARCH_WRITE_KEY", None)
    env.pop("BERTSEARCH_READ_KEY", None)
    server = subprocess.Popen([sys.executable, "-m", "bertsearch", "serve", "--index", args.index, "--port", str(port),
                               "--max-pending", "256"], env=env, stderr=subprocess.PIPE, text=True)
    results = []
    try:
        t0 = time.perf_counter()
        while True:
            if server.poll() is not None:
                print(server.stderr.read(), file=sys.stderr)
                return 1
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > 300:
                print("the server did not become ready in 300 s", file=sys.stderr)
                return 1
            time.sleep(0.5)
        ready_s = time.perf_counter() - t0
        bodies = {"search": ("/search", {"k": 10, "mode": "hybrid"}),
                  "rerank": ("/search", {"k": 10, "mode": "hybrid", "rerank": True}),
                  "ask": ("/ask", {})}
        clients = [int(c) for c in args.clients.split(",")]
        seconds = min(args.seconds, 3.0) if args.quick else args.seconds
        cap = 20 if args.quick else args.max_requests
        for name in args.endpoints.split(","):
            endpoint, body = bodies[name]
            asyncio.run(run(base, endpoint, 1, 2.0, 3, queries, body))  # warm-up
            for n in clients:
                r = asyncio.run(run(base, endpoint, n, seconds, cap, queries, body))
                r["name"] = name
                results.append(r)
                print(f"{name:<7} {n:>3} clients: {r['qps']:>7.1f} q/s  p50 {r['p50_ms']:>7.1f} ms  "
                      f"p95 {r['p95_ms']:>7.1f} ms  ({r['requests']} requests, {r['errors']} errors)", flush=True)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    by = {(r["name"], r["clients"]): r for r in results}
    ratio = None
    if ("search", 1) in by and len(clients) > 1:
        top = max(clients)
        ratio = round(by[("search", top)]["qps"] / by[("search", 1)]["qps"], 2) if by[("search", 1)]["qps"] else None
        print(f"hybrid search: {top} clients give {ratio}x the queries/s of one")
    out = {"machine": f"{cpu_model()}, {os.cpu_count()} cpus, {platform.machine()}",
           "index": args.index, "ready_s": round(ready_s, 1), "results": results, "search_scaling": ratio,
           "date": time.strftime("%Y-%m-%d")}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
