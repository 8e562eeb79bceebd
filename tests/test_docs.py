"""The documentation: the README stays short and every figure it keeps links to its measurement; the plots' figures
are the pages' figures; the site builds with `mkdocs build --strict` (a broken link, a missing page or anchor, or a
docstring the API reference cannot render fails it)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
NUMBER = re.compile(r"(?<![\w.])[-+]?\d(?:[\d,]*\d)?(?:\.\d+)?")


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _anchors(page: Path) -> set[str]:
    """The ids Python-Markdown's toc gives the headings of `page` (as mkdocs builds them)."""
    from markdown.extensions.toc import slugify

    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.MULTILINE)
    return {slugify(re.sub(r"[`*]", "", h), "-") for h in headings}


def _headline_rows() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Headline figures", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| what")]


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines < 150, f"README.md has {lines} lines; the long material belongs in docs/"


def test_readme_keeps_the_two_setup_commands():
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, flags=re.MULTILINE) and re.search(r"^test:", makefile, flags=re.MULTILINE)


def test_readme_links_resolve():
    for target in LINK.findall(README.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = ROOT / path
        assert file.exists(), f"README links to {target}, which does not exist"
        if anchor and file.suffix == ".md":
            assert anchor in _anchors(file), f"README links to {target}: {path} has no heading with that anchor"


def test_every_headline_figure_links_to_a_page_that_prints_it():
    rows = _headline_rows()
    assert rows, "README.md has no headline figures table"
    for row in rows:
        links = [t for t in LINK.findall(row) if t.startswith("docs/")]
        assert links, f"a headline figure without a link to its measurement: {row}"
        pages = " ".join((ROOT / t.partition("#")[0]).read_text(encoding="utf-8") for t in links)
        figures = NUMBER.findall(LINK.sub("", row).replace("**", ""))
        missing = [f for f in figures if f.lstrip("+") not in pages]
        assert not missing, f"{missing} in README's row {row!r} appear nowhere in {links}"


def test_plotted_figures_are_the_pages_figures():
    plots = _module(ROOT / "scripts" / "plots.py")
    for page, figures in plots.figures().items():
        text = (DOCS / page).read_text(encoding="utf-8")
        missing = [f for f in figures if not re.search(rf"(?<![\d.]){re.escape(f)}(?![\d])", text)]
        assert not missing, f"scripts/plots.py draws {missing}, which docs/{page} does not print"


def test_plots_are_committed_and_linked():
    images = {p.name for p in (DOCS / "img").glob("*.png")}
    linked = {Path(m).name for p in DOCS.rglob("*.md") for m in re.findall(r"\]\(([^)]+\.png)\)", p.read_text())}
    assert linked, "no page shows a plot"
    assert linked <= images, f"pages show {sorted(linked - images)}, not in docs/img (python scripts/plots.py)"


def test_the_cli_reference_covers_every_command():
    from bertsearch.cli import cli

    hooks = _module(ROOT / "scripts" / "docs_hooks.py")
    sections = list(hooks.commands(cli, "bertsearch"))
    names = [path for path, _, _ in sections]
    assert len(names) == len(set(names)) and "bertsearch search" in names and "bertsearch eval beir" in names
    for path, _, text in sections:
        assert text.startswith(f"Usage: {path} "), path
    assert hooks.MARKER in (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")


def test_docs_build_strict(tmp_path):
    needed = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
    missing = [m for m in needed if importlib.util.find_spec(m.split(".")[0]) is None
               or (m == "mkdocstrings_handlers.python" and importlib.util.find_spec(m) is None)]
    if missing:
        reason = f"the docs extra is not installed ({', '.join(missing)} missing): pip install -e '.[docs]'"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stdout}\n{r.stderr}"
    cli_page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "bertsearch eval beir" in cli_page and "--rerank-penalty" in cli_page
    api_page = (site / "reference" / "python" / "index.html").read_text(encoding="utf-8")
    assert "open_index" in api_page and "batch_search" in api_page
    assert "<blockquote>" not in api_page, "a doctest rendered as nested quotes (scripts/griffe_docstrings.py)"
    assert (site / "img" / "rerank-penalty.png").is_file()
    for offline in ("fonts.googleapis.com", "fonts.gstatic.com"):
        assert offline not in (site / "index.html").read_text(encoding="utf-8"), f"the site loads {offline}"


def _doc_commands():
    """Each `bertsearch ...` command line in the fenced code blocks of the README, the docs and the model cards
    (continuation lines joined, comments cut), with where it stands."""
    pages = [README, *sorted(DOCS.rglob("*.md")), *sorted((ROOT / "bertsearch" / "weights").glob("*/README.md"))]
    for page in pages:
        if page.name == "changelog.md":  # history: options since renamed
            continue
        fenced, pending = False, ""
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced, pending = not fenced, ""
                continue
            if not fenced:
                continue
            line = pending + line
            if line.rstrip().endswith("\\"):
                pending = line.rstrip()[:-1] + " "
                continue
            pending = ""
            m = re.search(r"(?:^|\s)(?:python -m )?bertsearch (.*)", line.split(" #")[0])
            if m and not line.lstrip().startswith(("pip", "#", "import", "from")):
                yield f"{page.relative_to(ROOT)}:{n}", m.group(1)
    import click

    from bertsearch.cli import cli

    def examples(cmd, path):  # and the examples in each command's --help
        for line in (cmd.help or "").replace("\\\n", " ").splitlines():
            if line.strip().startswith("bertsearch "):
                yield " ".join(["bertsearch", *path.split(), "--help"]), line.strip()[len("bertsearch "):].split(" #")[0]
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(click.Context(cmd)):
                yield from examples(cmd.get_command(click.Context(cmd), name), f"{path} {name}".strip())

    yield from examples(cli, "")


def test_the_documented_commands_use_options_that_exist():
    import shlex

    import click

    from bertsearch.cli import cli

    wrong = []
    for where, line in _doc_commands():
        try:
            words = shlex.split(line.split("|")[0].split("&&")[0])
        except ValueError:
            continue
        cmd, i = cli, 0
        while isinstance(cmd, click.Group) and i < len(words):
            sub = cmd.get_command(click.Context(cmd), words[i])
            if sub is None:
                break
            cmd, i = sub, i + 1
        if isinstance(cmd, click.Group):
            wrong.append(f"{where}: no command {' '.join(words[:i + 1])!r}")
            continue
        names = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        for w in words[i:]:
            if w.startswith("-") and w.split("=")[0] not in names and w not in ("-", "--") and not NUMBER.fullmatch(w):
                wrong.append(f"{where}: {cmd.name} has no option {w.split('=')[0]}")
    assert not wrong, "\n".join(wrong)
