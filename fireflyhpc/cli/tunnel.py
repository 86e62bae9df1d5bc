"""`fireflyhpc tunnel`: forward a web server on a compute node to 127.0.0.1."""

from __future__ import annotations

import logging

import click

from fireflyhpc import validate as v
from fireflyhpc.config import load_settings
from fireflyhpc.settings import HOPS
from fireflyhpc.signals import StopSignals
from fireflyhpc.tunnel.build import open_tunnel
from fireflyhpc.tunnel.request import TunnelRequest


@click.command("tunnel")
@click.argument("node")
@click.argument("remote_port")
@click.option("--login", "login", envvar="FIREFLYHPC_LOGIN", show_envvar=True,
              help="Login node to go through (host, user@host, host:port, user@host:port "
                   "or an ssh_config alias) "
                   "[default: the cluster profile's login].")
@click.option("--cluster", help="Cluster profile to take the login node and hop mode from "
              "(default: FIREFLYHPC_CLUSTER, then default_cluster).")
@click.option("--port", "local_port", default="0", show_default=True,
              help="Local port on 127.0.0.1 (0: any free port).")
@click.option("--hop", type=click.Choice(HOPS), default=None,
              help="ssh: a second SSH session into the node, target its loopback; "
                   "direct: the login node connects to NODE:REMOTE_PORT; auto: ssh if the node "
                   "accepts SSH, else direct [default: the profile's hop, else auto].")
@click.option("--accept-new-host-key", is_flag=True,
              help="Accept and record unknown host keys (never changed ones).")
@click.pass_obj
def tunnel_command(obj: object, node: str, remote_port: str, login: str | None,
                   cluster: str | None, local_port: str, hop: str | None,
                   accept_new_host_key: bool) -> None:
    """Forward REMOTE_PORT on compute node NODE to http://127.0.0.1:PORT until Ctrl-C.

    Prints one line with the local URL once it accepts connections. The tunnel
    reconnects by itself if the network drops; the local port stays yours. The
    login node comes from --login, else from the cluster profile. With OpenSSH
    (the global --ssh option), your own ssh master for the login node is used
    when one runs: nothing is asked then.
    """
    remote = v.parse_port(remote_port, what="remote port")
    local = v.parse_port(local_port, what="local port", allow_zero=True)
    settings = load_settings(getattr(obj, "config", None),
                             {"login": login, "hop": hop, "ssh": getattr(obj, "ssh", None)},
                             cluster=cluster)
    login = settings.require_login()
    request = TunnelRequest(
        node=node, login=login, hop=settings.hop, backend=settings.ssh,
        remote_port=remote, local_port=local,
        ssh_config=getattr(obj, "ssh_config", None), accept_new_host_key=accept_new_host_key)
    # paramiko reports dropped connections at ERROR level; the tunnel logs what
    # matters itself (reconnects), so keep paramiko's lines off the terminal.
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    with StopSignals(interrupt=True) as stop:  # still connecting: unwind, cleaning up
        tunnel = open_tunnel(request)
        try:
            stop.interrupt = False  # serving: a signal ends the wait below
            click.echo(f"{tunnel.url}  (-> {node}:{request.remote_port} via {login}; "
                       "Ctrl-C to stop)")
            stop.event.wait()
        finally:
            tunnel.close()


commands = [tunnel_command]
