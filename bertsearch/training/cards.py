"""The model card (README.md) each trainer writes beside its model: one layout for the reader, the reranker and
the encoder, filled in from the trainer's report and a few paragraphs of its own."""

from __future__ import annotations

from typing import Any

from .common import stopped_note

HIDDEN_SETTINGS = {"out_dir", "progress"}
"""Settings left out of the card's table: where the model was written says nothing about how it was trained."""


def model_card(
    r: dict[str, Any],
    *,
    title: str,
    tags: list[str],
    about: str,
    score: str,
    licence: str,
    card_licence: str | None = None,
    base: str | None = None,
    datasets: list[str] | None = None,
    notes: str = "",
    history: str = "",
    reproduce: str | None = None,
    use: str = "",
) -> str:
    """A model card in Markdown with YAML front matter.

    `r` is the trainer's report (base, settings, steps, train_seconds, seconds_per_step, train_loss, machine,
    and optionally command); `about` says what the model is and what it learnt from, `score` its dev result,
    `licence` what licence the data puts on it (`card_licence` is the front matter's id for it). `notes`
    follow the score, `history` the settings table, and `use` ends the card; `reproduce` (by default the
    report's command) is the command line that trains it again. `base` defaults to the report's.
    """
    front = [f"license: {card_licence}"] if card_licence else []
    front += [f"base_model: {base if base is not None else r['base']}", f"tags: [{', '.join(tags)}]"]
    front += [f"datasets: [{', '.join(datasets)}]"] if datasets else []
    settings = "\n".join(f"| {k} | {v} |" for k, v in r["settings"].items() if k not in HIDDEN_SETTINGS)
    reproduce = reproduce if reproduce is not None else r.get("command")
    parts = [
        "---\n" + "\n".join(front) + "\n---",
        f"# {title}",
        about.strip(),
        f"Dev score: {score}.",
        notes.strip(),
        "## Data and licence",
        licence.strip(),
        "## Training",
        f"{training_line(r)}{stopped_note(r)}",
        f"| setting | value |\n|---|---|\n{settings}",
        history.strip(),
        f"## Reproduce\n\n```\n{reproduce}\n```" if reproduce else "",
        use.strip(),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def training_line(r: dict[str, Any]) -> str:
    """How long training took and on what: steps, seconds, the machine and library versions, the final loss."""
    m = r["machine"]
    threads = m.get("torch_threads")
    shown = f", {threads} torch thread{'s' if threads != 1 else ''}" if threads else ""
    versions = f"torch {m['torch']}, transformers {m['transformers']}"
    if m.get("sentence_transformers"):
        versions += f", sentence-transformers {m['sentence_transformers']}"
    return (
        f"{r['steps']} steps in {r['train_seconds']:.0f} s ({r['seconds_per_step']} s/step) on {m['device']} "
        f"({m['processor']}, {m['cpus']} CPUs{shown}), {versions}. Final training loss {r['train_loss']:.4f}."
    )
