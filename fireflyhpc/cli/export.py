"""`fireflyhpc export`: write the viewer and datasets as a static site."""

from __future__ import annotations

import click

from fireflyhpc.export import export_site


@click.command("export")
@click.argument("target", type=click.Path(file_okay=False))
@click.argument("data_dirs", nargs=-1, type=click.Path())
@click.option("--demo", is_flag=True, help="Include the demo galaxy (generated once, then cached).")
@click.option("--gh-pages", "gh_pages", is_flag=True,
              help="Make TARGET a git repository with a gh-pages branch, ready to push.")
@click.option("--force", is_flag=True, help="Write into TARGET even if it is not empty.")
def export_command(target: str, data_dirs: tuple[str, ...], demo: bool, gh_pages: bool,
                   force: bool) -> None:
    """Write a self-contained static site (viewer + data) into TARGET.

    Each DATA_DIR is a Firefly dataset (a directory with filenames.json) or a
    directory of datasets. The site works from any static host, for example
    `python3 -m http.server -d TARGET`. Files are exported as `serve` serves
    them: hidden ones are left out, and a symlink that leads out of its dataset
    stops the export (nothing is written then).
    """
    result = export_site(target, data_dirs, demo=demo, gh_pages=gh_pages, force=force)
    names = ", ".join(d.name for d in result.datasets)
    click.echo(f"exported {len(result.datasets)} dataset(s) ({names}) to {result.target}")
    if result.commit:
        click.echo(f"branch gh-pages, commit {result.commit[:12]}: push it with "
                   f"git -C {result.target} push <remote> gh-pages")


commands = [export_command]
