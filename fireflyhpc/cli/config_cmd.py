"""`fireflyhpc config init|path|show`: create and inspect the config file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from fireflyhpc import config as cfg
from fireflyhpc.errors import ConfigError, LocalError
from fireflyhpc.fsutil import atomic_write


def write_new_file(path: Path, text: str, *, force: bool) -> None:
    """Write ``text`` to ``path`` atomically, mode 0644.

    Raises ConfigError if it exists and not ``force``, LocalError (naming ``path``,
    never a temporary file) if it cannot be written.
    """
    if path.exists() and not force:
        raise ConfigError(f"{path} exists already", hint="use --force to overwrite it")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path} is not a regular file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text, mode=0o644)
    except OSError as exc:
        raise LocalError(f"cannot write {path}: {exc.strerror or exc}") from None


@click.group("config")
def config_group() -> None:
    """Create and inspect the fireflyhpc config file (TOML, with cluster profiles)."""


@config_group.command("path")
@click.pass_obj
def path_command(app: object) -> None:
    """Print the path of the config file in use (it may not exist yet)."""
    click.echo(str(cfg.config_path(getattr(app, "config", None))))


@config_group.command("init")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.pass_obj
def init_command(app: object, force: bool, path: str | None) -> None:
    """Write a commented starting config to PATH (default: the config file in use)."""
    target = Path(path).expanduser() if path else cfg.config_path(getattr(app, "config", None))
    write_new_file(target, cfg.example_config_text(), force=force)
    click.echo(f"wrote {target}; edit the [clusters.NAME] table for your cluster")


def _format_value(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return json.dumps(list(value))
    return "(unset)" if value is None else str(value)


@config_group.command("show")
@click.option("--cluster", metavar="NAME", help="Profile to show (default: the default one).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show_command(app: object, cluster: str | None, as_json: bool) -> None:
    """Show the settings a cluster resolves to, and where each value comes from."""
    config = cfg.load_config(getattr(app, "config", None))
    profile = cfg.pick_profile(config, cluster, os.environ)
    settings = cfg.resolve({}, os.environ, profile)
    if as_json:
        click.echo(json.dumps({"config": str(config.path), "clusters": sorted(config.clusters),
                               "settings": settings.as_dict(), "sources": dict(settings.sources)},
                              indent=2))
        return
    state = "" if config.exists else " (does not exist)"
    click.echo(f"config: {config.path}{state}")
    click.echo(f"clusters: {', '.join(sorted(config.clusters)) or '(none)'}")
    click.echo(f"cluster: {settings.cluster or '(none)'}")
    for key, value in settings.as_dict().items():
        if key != "cluster":
            click.echo(f"  {key:<11} {_format_value(value):<30} {settings.sources.get(key, '')}")


commands = [config_group]
