"""`fireflyhpc serve`: the payload web server, on this machine or a compute node."""

from __future__ import annotations

import click

from fireflyhpc import validate as v
from fireflyhpc.server.main import ServeRequest, serve


class PortsType(click.ParamType):
    """``0``, a port, or ``LOW-HIGH`` (see :func:`fireflyhpc.validate.listen_ports`)."""

    name = "ports"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value  # type: ignore[return-value]
        try:
            return v.listen_ports(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


PORTS = PortsType()


@click.command("serve")
@click.argument("data_dirs", nargs=-1, metavar="[DATA_DIR]...",
                type=click.Path(file_okay=False))
@click.option("--port", "ports", type=PORTS, default="0", show_default=True,
              metavar="PORT|LOW-HIGH",
              help="Port to listen on; 0 lets the OS pick a free one; LOW-HIGH takes a free "
                   "one in that range.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback is reachable by others: "
                   "warned about, and refused with --no-token.")
@click.option("--demo", is_flag=True, help="Also serve a synthetic demo galaxy (generated "
              "once, cached).")
@click.option("--app", "app", default="auto", show_default=True, metavar="auto|firefly|firefly-flask|builtin|PATH",
              help="Web app at /: Firefly's own (auto, when the firefly package is "
                   "installed), Firefly's own Flask server (firefly-flask: Load New Data, "
                   "data from Python; behind the token), the bundled viewer, or a directory "
                   "with an index.html.")
@click.option("--no-browser", is_flag=True, help="Do not open a web browser.")
@click.option("--token-file", type=click.Path(dir_okay=False),
              help="Read the access token from this file (mode 0600). Default: "
                   "$FIREFLYHPC_TOKEN, else a new random token.")
@click.option("--no-token", is_flag=True,
              help="Serve without an access token (loopback only; any local user can read).")
@click.option("--ready-file", type=click.Path(dir_okay=False),
              help="Once listening, write pid, host, port and url (no token) here as JSON.")
def serve_command(data_dirs: tuple[str, ...], ports: tuple[int, int], host: str, demo: bool, app: str,
                  no_browser: bool, token_file: str | None, no_token: bool,
                  ready_file: str | None) -> None:
    """Serve Firefly data and a viewer over HTTP, behind an access token.

    Each DATA_DIR is either a Firefly dataset (a directory with filenames.json)
    or a directory whose subdirectories are datasets. Prints the address to open,
    token included, as one line on stdout; stops cleanly on Ctrl-C or SIGTERM.
    """
    serve(ServeRequest(data_dirs=list(data_dirs), host=host, ports=ports, demo=demo, app=app,
                       token_file=token_file, no_token=no_token, ready_file=ready_file,
                       open_browser=not no_browser))


commands = [serve_command]
