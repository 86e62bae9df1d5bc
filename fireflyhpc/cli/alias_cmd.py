"""`fireflyhpc alias`: print (or install) the s2firefly shell function."""

from __future__ import annotations

import os
from pathlib import Path

import click

from fireflyhpc import aliases
from fireflyhpc import config as cfg
from fireflyhpc import validate as v


@click.command("alias")
@click.option("--shell", type=click.Choice(aliases.SHELLS),
              help="Shell to write for (default: from $SHELL).")
@click.option("--name", default=aliases.DEFAULT_NAME, show_default=True,
              help="Name of the shell function.")
@click.option("--port", default=str(aliases.DEFAULT_PORT), show_default=True, metavar="PORT",
              help="Port forwarded on the laptop, the login node and the compute node.")
@click.option("--cluster", metavar="NAME", help="Cluster profile whose login host to use.")
@click.option("--login", metavar="HOST", help="Login host: host, user@host, host:port, "
              "user@host:port or an ssh_config alias (overrides the profile's).")
@click.option("--install", is_flag=True, help="Add the function to your shell's rc file "
              "(once, in a marked block; installing again replaces it).")
@click.option("--rc-file", type=click.Path(dir_okay=False),
              help="The rc file to install into (default: the shell's usual one).")
@click.pass_obj
def alias_command(app: object, shell: str | None, name: str, port: str, cluster: str | None,
                  login: str | None, install: bool, rc_file: str | None) -> None:
    """Print a shell function so that `s2firefly NODE` forwards localhost:PORT to NODE.

    It runs the classic chained OpenSSH forward through the login node:
    ssh -t -L PORT:localhost:PORT LOGIN ssh -L PORT:localhost:PORT NODE.
    The global --ssh-config makes the function use `ssh -F PATH`.
    """
    shell = shell or aliases.detect_shell(os.environ)
    if login is None:
        config = cfg.load_config(getattr(app, "config", None))
        settings = cfg.resolve({}, os.environ, cfg.pick_profile(config, cluster, os.environ))
        login = settings.require_login()
    ssh_config = getattr(app, "ssh_config", None)
    if ssh_config:  # the function would fail on every use: refuse it now, as connect does
        from fireflyhpc.ssh.config import config_path

        ssh_config = str(config_path(ssh_config))
    spec = aliases.AliasSpec(login=login, name=name, port=v.parse_port(port, what="--port"),
                             ssh_config=str(Path(ssh_config).expanduser().absolute())
                             if ssh_config else None)
    text = aliases.render_function(spec, shell)
    if not install:
        click.echo(text, nl=False)
        return
    target = Path(rc_file).expanduser() if rc_file else aliases.rc_file(shell, name, os.environ)
    outcome = aliases.install(target, name, text)
    click.echo(f"{name}: {outcome} in {target}; open a new shell (or source it) to use it")


commands = [alias_command]
