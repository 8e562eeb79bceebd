"""Draw the documentation's plots (docs/img/*.png) from the figures as measured.

    pip install matplotlib
    python scripts/plots.py            # writes docs/img/*.png; commit them

The figures live below, each set with the docs page that reports it (and, through that page, the command and the
machine that measured it). They are written as the page prints them, as strings, so that tests/test_docs.py can
check that every one still appears in its page: change a figure in the page and here together, then redraw. The
docs build itself only reads the committed PNGs and needs no matplotlib.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img"

# docs/measurements/rerank-and-answers.md, "How the rerank defaults were chosen": nDCG@10 with the shipped
# cross-encoder, by penalty (logits a place); squad-dev-retrieval 300 questions (seed 42), SciFact train (809
# claims), SciFact test (300 claims, not used to choose). The second AMD EPYC, 2026-12-04.
RERANK = {
    "page": "measurements/rerank-and-answers.md",
    "penalty": ["0", "0.3", "0.5", "0.75", "1", "1.5"],
    "squad-dev 300, depth 10": ["0.929", "0.936", "0.934", "0.933", "0.930", "0.923"],
    "squad-dev 300, depth 20": ["0.934", "0.941", "0.938", "0.937", "0.933", "0.925"],
    "SciFact train, depth 10": ["0.697", "0.722", "0.728", "0.732", "0.730", "0.731"],
    "SciFact train, depth 20": ["0.670", "0.724", "0.731", "0.734", "0.733", "0.734"],
    "SciFact test, depth 20": ["0.669", "0.716", "0.721", "0.7205", "0.723", "0.725"],
    "first stage": {"squad-dev 300": "0.876", "SciFact train": "0.717", "SciFact test": "0.718"},
    "default": "0.75",
}

# docs/measurements/speed.md, "Rerank and ask latency": `bertsearch bench --ask --shell` on wiki-demo, the shipped
# defaults (rerank depth 20), the second AMD EPYC, 2026-12-04. Milliseconds.
LATENCY = {
    "page": "measurements/speed.md",
    "pipelines": [
        # name, p50, p95, stage means (stage, ms)
        ("hybrid search", "11.5", "13.5", []),
        ("hybrid + rerank (top 20)", "265", "337", [("retrieve", "12"), ("rerank", "259")]),
        ("ask (rerank, then read 5 passages)", "362", "446", [("retrieve", "13"), ("rerank", "291"), ("read", "61")]),
    ],
}

# docs/measurements/adapt.md: SciFact test nDCG@10, dense and hybrid, of each encoder. The development machine
# unless the page says otherwise, 2026-11-22 to 2026-12-05.
ADAPT = {
    "page": "measurements/adapt.md",
    "packaged": ("all-MiniLM-L6-v2 (packaged)", "0.656", "0.718"),
    "targets": {"dense, supervised": "0.69", "dense, unsupervised": "0.67"},
    "families": {
        "supervised (train encoder)": [
            ("defaults", "0.698", "0.736"),
            ("defaults, GPU-trained filter", "0.697", "0.737"),
            ("earlier defaults", "0.687", "0.730"),
        ],
        "adapt, trained alone": [
            ("MNRL", "0.604", "0.684"),
            ("MNRL, --limit 2000 --lr 1e-5", "0.647", "0.710"),
            ("findings, cut", "0.612", "0.690"),
            ("findings, kept", "0.587", "0.672"),
            ("titles", "0.655", "0.721"),
        ],
        "adapt, averaged with the packaged model": [
            ("findings, cut, 0.5", "0.662", "0.716"),
            ("findings, kept, 0.5", "0.647", "0.712"),
            ("titles, 0.5", "0.662", "0.720"),
            ("soup of three runs", "0.671", "0.7188"),
            ("soup, other seeds", "0.667", "0.7195"),
        ],
        "adapt --loss margin-mse (GPL)": [
            ("GPU-trained teacher", "0.571", "0.666"),
            ("GPU-trained teacher, titles", "0.636", "0.699"),
            ("margins rescaled", "0.535", "0.648"),
            ("unscaled margins", "0.418", "0.582"),
        ],
    },
}


def figures() -> dict[str, list[str]]:
    """Every figure this script draws, by the docs page (relative to docs/) that must print it."""
    rerank = [v for k, vs in RERANK.items() if k not in ("page", "penalty", "first stage", "default") for v in vs]
    rerank += list(RERANK["first stage"].values())
    latency = [v for _, p50, p95, stages in LATENCY["pipelines"] for v in (p50, p95, *(ms for _, ms in stages))]
    adapt = [v for rows in ADAPT["families"].values() for _, d, h in rows for v in (d, h)]
    adapt += [ADAPT["packaged"][1], ADAPT["packaged"][2], *ADAPT["targets"].values()]
    return {RERANK["page"]: rerank, LATENCY["page"]: latency, ADAPT["page"]: adapt}


def _save(fig, name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})  # no version stamp: stable bytes
    return path


def rerank_penalty(plt) -> Path:
    x = [float(p) for p in RERANK["penalty"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, title, keys, base in (
        (left, "squad-dev-retrieval (300 questions)", ["squad-dev 300, depth 10", "squad-dev 300, depth 20"],
         {"squad-dev 300": "C0"}),
        (right, "SciFact", ["SciFact train, depth 10", "SciFact train, depth 20", "SciFact test, depth 20"],
         {"SciFact train": "C1", "SciFact test": "C2"}),
    ):
        for key in keys:
            color = "C0" if "squad" in key else "C2" if "test" in key else "C1"
            style = "--" if "depth 10" in key else "-"
            ax.plot(x, [float(v) for v in RERANK[key]], style, marker="o", color=color, label=key)
        for name, color in base.items():
            ax.axhline(float(RERANK["first stage"][name]), color=color, lw=0.8, ls=":",
                       label=f"{name}: first stage (hybrid)")
        ax.axvline(float(RERANK["default"]), color="grey", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("penalty (logits a first-stage place); grey line: the default")
        ax.set_ylabel("nDCG@10")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    fig.suptitle("Rerank by the cross-encoder's logit less a penalty per first-stage place", fontsize=11)
    return _save(fig, "rerank-penalty.png")


def latency_by_stage(plt) -> Path:
    rows = LATENCY["pipelines"]
    colors = {"retrieve": "C0", "rerank": "C1", "read": "C2"}
    fig, ax = plt.subplots(figsize=(9, 2.8))
    seen = set()
    for i, (name, p50, p95, stages) in enumerate(rows):
        left = 0.0
        for stage, ms in stages:
            ax.barh(i, float(ms), left=left, color=colors[stage], height=0.5,
                    label=f"{stage} (mean)" if stage not in seen else None)
            seen.add(stage)
            left += float(ms)
        ax.plot([float(p50)], [i], "k|", ms=18, mew=2, label="p50" if i == 0 else None)
        ax.plot([float(p95)], [i], "|", color="grey", ms=18, mew=2, label="p95" if i == 0 else None)
        ax.annotate(f"p50 {p50} ms, p95 {p95} ms", (float(p95), i), xytext=(8, -3), textcoords="offset points",
                    fontsize=8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 640)
    ax.set_xlabel("milliseconds (wiki-demo, 2 cores, bf16 autocast)")
    ax.legend(fontsize=8, loc="upper right", ncol=2)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Where a query's time goes: stage means, and p50 / p95 of the whole", fontsize=11)
    return _save(fig, "latency-by-stage.png")


def adapt_scifact(plt) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5.2))
    markers = ["s", "o", "D", "v"]
    for (family, rows), marker in zip(ADAPT["families"].items(), markers):
        ax.scatter([float(d) for _, d, _ in rows], [float(h) for _, _, h in rows], marker=marker, label=family, s=36)
    name, dense, hybrid = ADAPT["packaged"]
    ax.scatter([float(dense)], [float(hybrid)], marker="*", s=200, color="black", label=name, zorder=3)
    ax.axvline(float(dense), color="black", lw=0.6, ls=":")
    ax.axhline(float(hybrid), color="black", lw=0.6, ls=":")
    for label, value in ADAPT["targets"].items():
        ax.axvline(float(value), color="grey", lw=0.8, ls="--")
        ax.annotate(f"target: {label} >= {value}", (float(value), 0.585), rotation=90, fontsize=7,
                    xytext=(-9, 0), textcoords="offset points", color="grey")
    ax.set_xlabel("dense nDCG@10 (SciFact test)")
    ax.set_ylabel("hybrid nDCG@10 (SciFact test)")
    ax.set_title("Each encoder against the packaged one (dotted lines): up and right is better", fontsize=11)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, "adapt-scifact.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "bertsearch"
    for draw in (rerank_penalty, latency_by_stage, adapt_scifact):
        path = draw(plt)
        plt.close("all")
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
