"""mkdocs hooks (mkdocs.yml `hooks:`): the command-line reference, written at build time from each command's --help.

docs/reference/cli.md holds the marker below; this hook replaces it with one section per command, each the text
that `bertsearch COMMAND --help` prints, so the page cannot drift from the code. It imports `bertsearch.cli` only
(no torch, no models): the build stays fast and needs nothing beyond mkdocs and this package.
"""

from __future__ import annotations

import click

MARKER = "<!-- cli-reference -->"
WIDTH = 88  # columns of the rendered help, fixed so the page does not depend on the terminal that builds it


def commands(cmd: click.Command, name: str, parent: click.Context | None = None):
    """(full name, depth, help text) for `cmd` and every subcommand below it, depth-first in name order."""
    settings = {**cmd.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    ctx = click.Context(cmd, info_name=name, parent=parent, **settings)
    yield ctx.command_path, 0 if parent is None else ctx.command_path.count(" "), cmd.get_help(ctx)
    if isinstance(cmd, click.Group):
        for sub in sorted(cmd.list_commands(ctx)):
            yield from commands(cmd.get_command(ctx, sub), sub, ctx)


def cli_reference() -> str:
    from bertsearch.cli import cli

    parts = []
    for path, depth, text in commands(cli, "bertsearch"):
        level = "#" * min(2 + max(depth - 1, 0), 4)
        parts.append(f"{level} `{path}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_reference())
