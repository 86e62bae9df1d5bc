"""`fireflyhpc remote-install` and `fireflyhpc doctor`: the cluster side.

The SSH stack is imported inside the commands, so that `python -m fireflyhpc serve`
on a compute node (where only the payload's dependencies are installed) never
loads it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

import click

from fireflyhpc import config as cfg

if TYPE_CHECKING:
    from fireflyhpc.ssh import Connection

_ACCEPT_HELP = "Trust and record the login node's host key if it is not known yet."


def _settings(ctx: click.Context, cluster: str | None, login: str | None) -> cfg.ResolvedSettings:
    return cfg.load_settings(ctx.obj.config if ctx.obj else None,
                             {"login": login, "ssh": ctx.obj.ssh if ctx.obj else None},
                             cluster=cluster)


def _connect(ctx: click.Context, login: str, accept_new: bool, backend: str) -> "Connection":
    from fireflyhpc.ssh import open_connection

    return open_connection(login, ssh_config=ctx.obj.ssh_config if ctx.obj else None,
                           accept_new_host_key=accept_new, backend=backend)


def _progress(message: str) -> None:
    click.echo(f"fireflyhpc: {message} ...", err=True)


@click.command("remote-install")
@click.option("--cluster", metavar="NAME", help="Cluster profile to use (its login host and "
              "setup lines).")
@click.option("--login", metavar="HOST", help="Login host or ssh_config alias (overrides the "
              "profile).")
@click.option("--prefix", metavar="PATH", help="Where the venv goes on the cluster (~ is the "
              "remote home). Default: ~/.local/share/fireflyhpc/venv-VERSION.")
@click.option("--python", "python", default="python3", show_default=True, metavar="PY",
              help="The cluster's Python that makes the venv (3.10 or newer).")
@click.option("--index", type=click.Choice(["auto", "yes", "no"]), default="auto",
              show_default=True, help="Install from the cluster's package index (yes), upload "
              "wheels made here (no), or ask the index first (auto).")
@click.option("--wheel-upload", is_flag=True, help="Same as --index no.")
@click.option("--deps", type=click.Choice(["payload", "all"]), default="payload",
              show_default=True, help="Install only what the payload server needs, or every "
              "dependency (the SSH stack too).")
@click.option("--with-firefly", "firefly", is_flag=False, flag_value="", default=None,
              metavar="[=VERSION]", help="Also install Firefly (the latest, or VERSION) into "
              "the venv, so that connect serves Firefly's own app.")
@click.option("--force", is_flag=True, help="Reinstall even if this version is there.")
@click.option("--print-python", is_flag=True, help="Print only the venv's python path.")
@click.option("--accept-new-host-key", is_flag=True, help=_ACCEPT_HELP)
@click.pass_context
def remote_install_command(ctx: click.Context, cluster: str | None, login: str | None,
                           prefix: str | None, python: str, index: str, wheel_upload: bool,
                           deps: str, firefly: str | None, force: bool, print_python: bool,
                           accept_new_host_key: bool) -> None:
    """Install this version of fireflyhpc into a venv in your cluster home.

    The payload server (`python -m fireflyhpc serve`) then runs on compute nodes
    from that venv. Clusters without a package index get wheels built and
    downloaded on this machine, uploaded over SSH. Running it again with the same
    version changes nothing. Prints the python path to set as `python` in the
    cluster profile.
    """
    from fireflyhpc.remote.install import InstallRequest, remote_install

    if wheel_upload:
        if index == "yes":
            raise click.UsageError("--wheel-upload contradicts --index yes")
        index = "no"
    settings = _settings(ctx, cluster, login)
    host = settings.require_login()
    request = InstallRequest(python=python, prefix=prefix, index=index, deps=deps, force=force,
                             setup=settings.setup, firefly=firefly)
    with _connect(ctx, host, accept_new_host_key, settings.ssh) as conn:
        result = remote_install(conn, request, say=_progress)
    if print_python:
        click.echo(result.python_path)
        return
    if result.changed:
        how = {"upload": "wheels uploaded", "index": "from the cluster's index",
               "refresh": "same version, changed code: fireflyhpc wheel replaced"}[result.mode]
        click.echo(f"installed fireflyhpc {result.version} on {host} in {result.prefix} "
                   f"({how}, {result.seconds:.1f} s)")
    else:
        click.echo(f"fireflyhpc {result.version} is already installed on {host} in "
                   f"{result.prefix} (--force reinstalls)")
    if result.firefly is not None:
        click.echo(f"Firefly {result.firefly} {'installed' if result.firefly_changed else 'was already'}"
                   f" in that venv: connect serves Firefly's own app (--payload auto)")
    current = settings.python if settings.sources.get("python", "").startswith("profile") \
        else None
    if current != result.python_path:
        click.echo(f"set this in the cluster profile ({cfg.config_path(ctx.obj.config)}):")
        click.echo(f"  [clusters.{settings.cluster or 'NAME'}]")
    click.echo(f"  python = {json.dumps(result.python_path)}")  # a TOML basic string


def _ticks() -> tuple[str, str, str]:
    """Marks for pass/warn/fail: check marks when stdout can print them."""
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "✓✗!".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return ("OK  ", "WARN", "FAIL")
    return ("✓", "!", "✗")


@click.command("doctor")
@click.option("--cluster", metavar="NAME", help="Cluster profile to check.")
@click.option("--login", metavar="HOST", help="Login host or ssh_config alias (overrides the "
              "profile).")
@click.option("--accept-new-host-key", is_flag=True, help=_ACCEPT_HELP)
@click.pass_context
def doctor_command(ctx: click.Context, cluster: str | None, login: str | None,
                   accept_new_host_key: bool) -> int:
    """Check everything `connect` needs on a cluster, one line per check with a fix.

    Exits 0 when every check passes (warnings allowed), 1 otherwise.
    """
    from fireflyhpc.remote.doctor import DoctorRequest, render, run_checks

    settings = _settings(ctx, cluster, login)
    request = DoctorRequest(settings=settings, login=settings.require_login(),
                            ssh_config=ctx.obj.ssh_config if ctx.obj else None,
                            accept_new_host_key=accept_new_host_key,
                            environ=dict(os.environ))
    marks = _ticks()
    failed = False
    for check in run_checks(request):
        click.echo(render(check, marks))
        failed = failed or check.status == "fail"
    return 1 if failed else 0


commands = [remote_install_command, doctor_command]
