"""`bertsearch serve` as a real process: it starts, answers, refuses what it must, and SIGTERM lets requests finish."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(index, port, env=None):
    env = {**os.environ, **(env or {})}
    env.pop("BERTSEARCH_READ_KEY", None)
    return subprocess.Popen([sys.executable, "-m", "bertsearch", "serve", "--index", str(index), "--port", str(port)],
                            env=env, stderr=subprocess.PIPE, text=True)


def _wait_ready(base, proc, timeout=180):
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("not ready")


@pytest.fixture
def built(tmp_path, corpus_file):
    ix = tmp_path / "ix"
    subprocess.run([sys.executable, "-m", "bertsearch", "index", str(corpus_file), "--index", str(ix), "--model", "hashing"],
                   check=True, capture_output=True)
    return ix


def test_serve_refuses_a_missing_index_and_a_bad_key_before_listening(tmp_path, built):
    r = subprocess.run([sys.executable, "-m", "bertsearch", "serve", "--index", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no index at" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "bertsearch", "serve", "--index", str(built)], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "BERTSEARCH_WRITE_KEY": "short"})
    assert r.returncode == 1 and "at least 16" in r.stderr


def test_serve_takes_the_users_reranker_and_reader(tmp_path, built):
    """serve had no --reranker or --reader: a user's trained models could be used by every command but the service."""
    from pathlib import Path

    import bertsearch

    weights = Path(bertsearch.__file__).parent / "weights"
    r = subprocess.run([sys.executable, "-m", "bertsearch", "serve", "--index", str(built), "--reranker",
                        str(tmp_path / "nosuch")], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1 and "nosuch" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "bertsearch", "serve", "--index", str(built), "--reader",
                        str(weights / "reranker")], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "reader" in r.stderr  # (a reranker as the reader)
    port = _port()
    proc = subprocess.Popen([sys.executable, "-m", "bertsearch", "serve", "--index", str(built), "--port", str(port),
                             "--reranker", str(weights / "reranker"), "--reader", str(weights / "reader")],
                            stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, proc)
        info = httpx.get(f"{base}/info").json()
        assert (info["reranker"], info["reader"]) == (str(weights / "reranker"), str(weights / "reader"))
        assert httpx.post(f"{base}/ask", json={"question": "who discovered penicillin"}).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_serve_refuses_a_port_in_use_a_bad_host_and_a_file_before_claiming_to_serve(tmp_path, built, corpus_file):
    def serve(*args):
        return subprocess.run([sys.executable, "-m", "bertsearch", "serve", "--index", str(built), *args],
                              capture_output=True, text=True, timeout=60, check=False)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = serve("--port", str(taken.getsockname()[1]))
    assert r.returncode == 1 and "is in use" in r.stderr and "--port" in r.stderr, r.stderr
    assert "serving" not in r.stderr and "Traceback" not in r.stderr
    r = serve("--host", "999.1.1.1")
    assert r.returncode == 1 and "cannot listen on '999.1.1.1'" in r.stderr and "serving" not in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "bertsearch", "serve", "--index", str(corpus_file)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1 and "is a file, not an index folder" in r.stderr, r.stderr


@pytest.mark.model
def test_sigterm_lets_requests_in_flight_finish(built):
    port = _port()
    base = f"http://127.0.0.1:{port}"
    key = "k" * 24
    proc = _serve(built, port, {"BERTSEARCH_WRITE_KEY": key})
    try:
        _wait_ready(base, proc)  # the shipped reranker and reader are loaded: an ask takes a while
        r = httpx.put(f"{base}/documents", json=[{"id": "glacier", "text": "Glaciers carve valleys."}],
                      headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json()["added"] == 1
        codes: list[int] = []

        def ask():
            codes.append(httpx.post(f"{base}/ask", json={"question": "when did Fleming discover penicillin", "passages": 4},
                                    timeout=120).status_code)

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join()
        assert proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down cleanly
        assert codes == [200, 200, 200, 200]
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_short_load_test_on_loopback_has_no_errors(built, tmp_path):
    """scripts/loadtest.py --quick: 1 and 4 clients for search and ask, capped in count and time (docs/service.md
    has the full run's figures)."""
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "loadtest.py"
    out = tmp_path / "load.json"
    r = subprocess.run([sys.executable, str(script), "--index", str(built), "--quick", "--clients", "1,4",
                        "--endpoints", "search", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    results = json.loads(out.read_text())["results"]
    assert len(results) == 2 and all(x["errors"] == 0 and x["requests"] > 0 for x in results)
