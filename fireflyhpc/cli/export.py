"""`fireflyhpc export`: write the viewer and datasets as a static site."""

from __future__ import annotations

from pathlib import Path

import click

from fireflyhpc.export import export_site


@click.command("export")
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@click.argument("data_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--demo", is_flag=True, help="Include the demo galaxy (generated once, then cached).")
@click.option("--gh-pages", "gh_pages", is_flag=True,
              help="Make TARGET a git repository with a gh-pages branch, ready to push.")
@click.option("--force", is_flag=True, help="Write into TARGET even if it is not empty.")
def export_command(target: Path, data_dirs: tuple[Path, ...], demo: bool, gh_pages: bool,
                   force: bool) -> None:
    """Write a self-contained static site (viewer + data) into TARGET.

    Each DATA_DIR is a Firefly dataset (a directory with filenames.json) or a
    directory of datasets. The site works from any static host, for example
    `python3 -m http.server -d TARGET`.
    """
    result = export_site(target, data_dirs, demo=demo, gh_pages=gh_pages, force=force)
    names = ", ".join(d.name for d in result.datasets)
    click.echo(f"exported {len(result.datasets)} dataset(s) ({names}) to {result.target}")
    if result.commit:
        click.echo(f"branch gh-pages, commit {result.commit[:12]}: push it with "
                   f"git -C {result.target} push <remote> gh-pages")


commands = [export_command]
