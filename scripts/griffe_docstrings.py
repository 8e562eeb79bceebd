"""A griffe extension (mkdocs.yml, mkdocstrings' `extensions:`) that reads bertsearch's docstrings as their authors
meant them when they are rendered as Markdown in the API reference.

The docstrings are written for `help()` and a terminal: doctest examples (`>>> ...`), reStructuredText literal
blocks (`text::` and an indented block) and roles (:meth:`Filter.sql`). As Markdown the first would turn into nested
quotes and the others would print their markup. This rewrites them, for the docs only, into fenced code, a plain
colon and a code span. The source is left as it is.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:meth|func|class|attr|mod|data|obj|exc):`~?([^`]+)`")


def markdown(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(">>>"):  # a doctest: it and its output, up to a blank line, become one fenced block
            indent = line[: len(line) - len(stripped)]
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
                i += 1
            out += [f"{indent}```pycon", *(indent + b for b in block), f"{indent}```"]
            continue
        if stripped == "::":
            i += 1
            continue
        if line.rstrip().endswith("::"):  # reST: "text::" introduces an indented literal block
            line = line.rstrip()[:-1]
        out.append(ROLE.sub(r"`\1`", line))
        i += 1
    return "\n".join(out)


class Docstrings(griffe.Extension):
    def on_instance(self, *, node: Any, obj: griffe.Object, agent: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
