"""`bertsearch backup` and `bertsearch restore`: one call each to bertsearch.store.backup."""

from __future__ import annotations

import click

from .options import index_option, json_option


@click.command("backup")
@click.argument("out", type=click.Path(path_type=str))
@index_option
@click.option("--force", is_flag=True, help="Replace OUT if it already holds something.")
@json_option
def backup_command(out: str, index_path: str, force: bool, as_json: bool) -> None:
    """Copy an index to the folder OUT, consistently, while it stays in use.

    OUT is itself an index (store.db and config.json; the vector file is rebuilt from the store on
    first search): search it with --index OUT, or put it back with 'bertsearch restore'. The copy is
    one committed state of the index, whatever writers do meanwhile, and it appears under OUT's name
    only when complete.

    \b
    bertsearch backup backups/mine-2024-06-01 --index indexes/mine
    bertsearch search "northern lights" --index backups/mine-2024-06-01
    """
    from ..store.backup import backup
    from . import render

    report = backup(index_path, out, force=force)
    if as_json:
        render.print_json(report)
        return
    render.out.print(f"backed up {report['documents']} documents ({report['chunks']} chunks) of {index_path} to {out}")


@click.command("restore")
@click.argument("backup_dir", metavar="BACKUP", type=click.Path(path_type=str))
@index_option
@click.option("--force", is_flag=True, help="Replace the index at --index if there is one.")
@json_option
def restore_command(backup_dir: str, index_path: str, force: bool, as_json: bool) -> None:
    """Make the index at --index a copy of BACKUP (a folder written by 'bertsearch backup').

    An existing index is replaced only with --force, in one step: until then it stays as it was,
    and a restore that fails leaves it untouched. The vector file is rebuilt on first search.

    \b
    bertsearch restore backups/mine-2024-06-01 --index indexes/mine --force
    """
    from ..store.backup import restore
    from . import render

    report = restore(backup_dir, index_path, force=force)
    if as_json:
        render.print_json(report)
        return
    what = "replaced the index at" if report["replaced"] else "restored into"
    render.out.print(f"{what} {index_path}: {report['documents']} documents ({report['chunks']} chunks) from {backup_dir}")
