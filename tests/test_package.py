"""The package as a user gets it: `python -m build` makes an sdist and a wheel that carry the shipped models and the
search page, and the wheel, installed into a clean virtualenv, indexes the demo corpus, searches it and answers a
question offline, run from a folder outside the repository.

Marked `slow` (minutes: the build copies ~85 MB of weights twice, and pip installs every dependency into the new
environment, from its cache where it can) and run only when selected: `pytest -m slow` (`make test-package`, which CI
runs after `make test`). pip needs its index for the dependencies; the commands themselves run with the Hugging Face
hub offline. torch goes in first, pinned to the CPU build the Makefile installs (an unpinned torch would pull CUDA).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"
QUESTION = "when did Alexander Fleming discover penicillin"


@pytest.fixture(autouse=True)
def _only_when_selected(request):
    expr = request.config.getoption("markexpr") or ""
    if "slow" not in expr or "not slow" in expr:
        pytest.skip("builds and installs the package (minutes): run with -m slow (make test-package)")


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: int = 900) -> str:
    r = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out, err = r.stdout[-4000:], r.stderr[-4000:]
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"
    return r.stdout


def _shipped_files() -> set[str]:
    """Every file of the shipped models, and the search page, as paths inside the package."""
    files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "bertsearch" / "weights").rglob("*") if p.is_file()}
    assert any(f.endswith("reader/model.safetensors") for f in files), "no reader weights in bertsearch/weights"
    assert any(f.endswith("reranker/model.safetensors") for f in files), "no reranker weights in bertsearch/weights"
    return files | {"bertsearch/service/page.html"}


@pytest.fixture
def scratch(tmp_path):
    """tmp_path, emptied afterwards: the virtualenv takes about 2 GB."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_built_wheel_installs_into_a_clean_venv_and_runs_the_demo_offline(scratch):
    tmp_path = scratch
    if importlib.util.find_spec("build") is None:
        reason = "the 'build' package is missing: pip install build (make test-package installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)

    # 1. Build the sdist, and the wheel from it, as `python -m build` does for a release.
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], cwd=ROOT)
    (sdist,) = dist.glob("bertsearch-*.tar.gz")
    (wheel,) = dist.glob("bertsearch-*.whl")

    # 2. Both carry the shipped models and the search page.
    shipped = _shipped_files()
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert not shipped - in_wheel, f"missing from the wheel: {sorted(shipped - in_wheel)}"
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert not shipped - in_sdist, f"missing from the sdist: {sorted(shipped - in_sdist)}"
    assert {"README.md", "pyproject.toml", "tests/conftest.py", "corpora/wiki-demo/docs.jsonl"} <= in_sdist

    # 3. A clean virtualenv (no system site-packages), CPU torch first, then the wheel and its dependencies.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    pip_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    _run([str(python), "-m", "pip", "install", "-q", TORCH], cwd=tmp_path, env=pip_env, timeout=1200)
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)], cwd=tmp_path, env=pip_env, timeout=1800)

    # 4. The demo, offline, from a folder outside the repository, with the installed package and nothing else.
    work = tmp_path / "work"
    work.mkdir()
    # the runtime a user gets (the suite's own BERTSEARCH_BACKEND=torch left out), converted afresh as on a new machine
    env = {**{k: v for k, v in pip_env.items() if k not in ("BERTSEARCH_BACKEND", "BERTSEARCH_QUERY_BACKEND")},
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "BERTSEARCH_HISTORY": str(tmp_path / "history"), "BERTSEARCH_CACHE": str(tmp_path / "cache")}
    where = _run([str(python), "-c", "import bertsearch, bertsearch.models; print(bertsearch.__file__)"], cwd=work,
                 env=env)
    assert Path(where.strip()).is_relative_to(venv), f"imported bertsearch from {where.strip()}, not the venv"
    bertsearch = str(venv / "bin" / "bertsearch")
    corpus = str(ROOT / "corpora" / "wiki-demo" / "docs.jsonl")

    report = json.loads(_run([bertsearch, "index", corpus, "--index", "demo", "--json"], cwd=work, env=env))
    assert report["added"] == 1500, report
    assert json.loads(_run([bertsearch, "info", "--index", "demo", "--json"], cwd=work, env=env))["backend"] == "openvino"

    hits = json.loads(_run([bertsearch, "search", "what causes the northern lights", "--index", "demo", "-k", "5",
                            "--json"], cwd=work, env=env))["hits"]
    assert "aurora" in [h["doc_id"] for h in hits], hits

    # Answer whenever a span is found (as `make demo` asks): the shipped cut-off abstains on this question. The
    # option is --threshold 0 or, where answers carry a calibrated confidence, --min-confidence 0.
    help_text = _run([bertsearch, "ask", "--help"], cwd=work, env=env)
    answer_always = ["--min-confidence", "0"] if "--min-confidence" in help_text else ["--threshold", "0"]
    result = json.loads(_run([bertsearch, "ask", QUESTION, "--index", "demo", *answer_always, "--json"], cwd=work,
                             env=env))
    assert result["answers"] and "1928" in result["answers"][0]["text"], result["answers"]
    assert result["answers"][0]["doc_id"] == "alexander-fleming"
