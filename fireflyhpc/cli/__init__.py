"""The `fireflyhpc` command line: a thin layer over the library.

Each subcommand lives in its own module under ``fireflyhpc.cli`` and is listed in
``COMMANDS`` (command name -> module); a module exposes ``commands``, a list of click
commands. A module is imported when one of its commands is asked for (a command's
start-up is not slowed by every other command's imports; `--help` imports them all).
Commands parse flags, build a request, call the library and render the result.
Errors are turned into one line and an exit status here, in :func:`main`.
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback
from dataclasses import dataclass
from typing import Sequence

import click

from fireflyhpc import __version__
from fireflyhpc.errors import ExitStatus, FireflyHPCError
from fireflyhpc.settings import SSH_BACKENDS

# Subcommand -> the module under fireflyhpc.cli that defines it (in its `commands`).
COMMANDS: dict[str, str] = {
    "serve": "serve", "export": "export", "tunnel": "tunnel", "config": "config_cmd",
    "templates": "templates_cmd", "alias": "alias_cmd", "status": "status_cmd",
    "connect": "connect_cmd", "stop": "connect_cmd", "remote-install": "remote_cmd",
    "doctor": "remote_cmd",
}


class LazyGroup(click.Group):
    """A group whose commands in ``COMMANDS`` are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module = importlib.import_module(f"fireflyhpc.cli.{COMMANDS[cmd_name]}")
            for command in module.commands:
                self.add_command(command)
        return self.commands.get(cmd_name)

log = logging.getLogger("fireflyhpc")


@dataclass
class AppContext:
    """Global options, available to every subcommand as ``ctx.obj``."""

    debug: bool = False
    ssh_config: str | None = None
    config: str | None = None
    ssh: str | None = None  # --ssh (None: FIREFLYHPC_SSH, the profile's ssh, auto)


_debug_requested = False


def _configure_logging(debug: bool, verbose: int) -> None:
    level = logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("fireflyhpc: %(levelname)s: %(message)s"))
    root = logging.getLogger("fireflyhpc")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if debug:
        logging.getLogger("paramiko").setLevel(logging.INFO)
        logging.getLogger("paramiko").addHandler(handler)


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="fireflyhpc")
@click.option("--debug", is_flag=True, envvar="FIREFLYHPC_DEBUG",
              help="Show debug logs, and the full traceback of any error.")
@click.option("-v", "--verbose", count=True, help="Say more about what is happening.")
@click.option("--ssh-config", "ssh_config", type=click.Path(dir_okay=False),
              envvar="FIREFLYHPC_SSH_CONFIG", show_envvar=True,
              help="OpenSSH client config to read instead of ~/.ssh/config.")
@click.option("--ssh", "ssh", type=click.Choice(SSH_BACKENDS), default=None,
              help="SSH backend: openssh (your own ssh client and its config, ControlMaster, "
                   "Kerberos, security keys, certificates), paramiko (pure Python fallback), "
                   "auto (openssh where it can multiplex, i.e. not on Windows). Also "
                   "FIREFLYHPC_SSH or the profile's ssh key [default: auto].")
@click.option("--config", "config", type=click.Path(dir_okay=False),
              envvar="FIREFLYHPC_CONFIG", show_envvar=True,
              help="fireflyhpc config file (TOML) to read instead of the default one.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int, ssh_config: str | None,
        ssh: str | None, config: str | None) -> None:
    """Put a web visualization running on an HPC compute node into your browser.

    fireflyhpc submits (or attaches to) a Slurm job, starts a Firefly server on the
    node, forwards a local port through the login node, opens your browser, and
    cleans everything up when you are done. `fireflyhpc serve` runs the same
    viewer on this machine.
    """
    global _debug_requested
    _debug_requested = debug
    _configure_logging(debug, verbose)
    ctx.obj = AppContext(debug=debug, ssh_config=ssh_config, config=config, ssh=ssh)


def _error_line(text: str) -> None:
    click.echo(f"fireflyhpc: error: {text}", err=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return (and, as a console script, exit with) its status."""
    global _debug_requested
    _debug_requested = False
    args = list(sys.argv[1:] if argv is None else argv)
    status: int
    try:
        result = cli.main(args=args, prog_name="fireflyhpc", standalone_mode=False)
    except click.exceptions.Abort:
        _error_line("interrupted")
        status = ExitStatus.INTERRUPTED
    except click.exceptions.NoArgsIsHelpError as exc:
        # `fireflyhpc` or a group such as `fireflyhpc config` alone: a request for
        # help, answered as --help would be (stdout, several lines, success).
        click.echo(exc.ctx.get_help())
        status = ExitStatus.OK
    except click.UsageError as exc:
        # One line like every other error, with where to read more.
        command = exc.ctx.command_path if exc.ctx is not None else "fireflyhpc"
        message = " ".join(exc.format_message().split())
        _error_line(f"{message} (see `{command} --help`)")
        status = exc.exit_code
    except click.ClickException as exc:
        _error_line(" ".join(exc.format_message().split()))
        status = exc.exit_code
    except click.exceptions.Exit as exc:
        status = exc.exit_code
    except KeyboardInterrupt:
        _error_line("interrupted")
        status = ExitStatus.INTERRUPTED
    except FireflyHPCError as exc:
        if _debug_requested:
            traceback.print_exc()
        _error_line(str(exc))
        status = exc.exit_status
    except OSError as exc:
        # Local I/O problems (a file we cannot read, a full disk): no traceback.
        if _debug_requested:
            traceback.print_exc()
        _error_line(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        status = ExitStatus.LOCAL
    except Exception as exc:  # a bug: say so in one line, keep the details for --debug
        if _debug_requested:
            traceback.print_exc()
        _error_line(f"unexpected {type(exc).__name__}: {exc} (this is a bug in fireflyhpc; "
                    "run again with --debug for the traceback)")
        status = ExitStatus.ERROR
    else:
        status = result if isinstance(result, int) else ExitStatus.OK
    return int(status)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
