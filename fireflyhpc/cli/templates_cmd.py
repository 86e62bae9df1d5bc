"""`fireflyhpc templates list|show|render`: the Slurm job templates."""

from __future__ import annotations

import os

import click

from fireflyhpc import config as cfg
from fireflyhpc.scheduler import templates as tpl


def _user_dir(app: object) -> "cfg.Path":
    return cfg.templates_dir(cfg.config_path(getattr(app, "config", None)))


@click.group("templates")
def templates_group() -> None:
    """List, show and render Slurm job templates (yours override the shipped ones)."""


@templates_group.command("list")
@click.pass_obj
def list_command(app: object) -> None:
    """List the templates: name, shipped or user, file."""
    for template in tpl.list_templates(_user_dir(app)):
        click.echo(f"{template.name:<20} {template.origin:<8} {template.path}")


@templates_group.command("show")
@click.argument("name")
@click.pass_obj
def show_command(app: object, name: str) -> None:
    """Print template NAME as it is, placeholders included."""
    click.echo(tpl.find_template(name, _user_dir(app)).text, nl=False)


@templates_group.command("render")
@click.argument("name")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Set a placeholder (repeatable), over the cluster profile's value.")
@click.option("--cluster", metavar="NAME", help="Cluster profile to take values from.")
@click.pass_obj
def render_command(app: object, name: str, assignments: tuple[str, ...],
                   cluster: str | None) -> None:
    """Print template NAME filled in, exactly as sbatch would receive it."""
    config = cfg.load_config(getattr(app, "config", None))
    settings = cfg.resolve({}, os.environ, cfg.pick_profile(config, cluster, os.environ))
    values = tpl.template_values(settings, tpl.parse_assignments(list(assignments)))
    template = tpl.find_template(name, cfg.templates_dir(config.path))
    click.echo(tpl.render_template(template.text, values, name=template.name), nl=False)


commands = [templates_group]
