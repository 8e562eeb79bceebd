"""The fault soak in its CI size (scripts/soak.py --quick, under a minute): real `python -m bertsearch`
processes killed, starved of disk, denied writes and given damaged files; no committed document may be
lost, and every index must open or be refused with a one-line message."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals, rlimits and prctl of Linux")


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    out = tmp_path_factory.mktemp("soak") / "soak.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "soak.py"), "--quick", "--seed", "0", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert out.exists(), r.stdout + r.stderr
    fig = json.loads(out.read_text())
    fig["_report"] = r.stdout
    return fig


def test_the_soak_injected_faults(figures):
    assert figures["kills"] >= 8, figures["_report"]
    kinds = {k.split(":")[0] for k in figures["faults"]}
    assert {"kill", "disk-full", "corrupt", "corpus"} <= kinds, figures["faults"]


def test_no_committed_document_is_lost(figures):
    assert figures["documents_lost"] == 0, figures["_report"]
    assert figures["documents_altered"] == 0, figures["_report"]
    assert figures["documents_unexpected"] == 0, figures["_report"]


def test_every_index_opens_or_is_refused_in_one_line(figures):
    assert figures["refused_unclean"] == 0, figures["_report"]
    assert figures["opened"] + figures["refused"] > 0
    no_line = [f for f in figures["failures"] if "one-line" in f["what"]]
    assert not no_line, figures["_report"]


def test_no_guarantee_is_broken(figures):
    assert figures["ok"], figures["_report"]
