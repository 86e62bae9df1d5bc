"""`fireflyhpc tunnel`: forward a web server on a compute node to 127.0.0.1."""

from __future__ import annotations

import logging
import signal
import threading

import click

from fireflyhpc.config import load_settings
from fireflyhpc.tunnel.build import HOPS, TunnelRequest, open_tunnel
from fireflyhpc.tunnel.ports import parse_port


@click.command("tunnel")
@click.argument("node")
@click.argument("remote_port")
@click.option("--login", "login", envvar="FIREFLYHPC_LOGIN", show_envvar=True,
              help="Login node (a host or ssh_config alias) to go through "
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
    remote = parse_port(remote_port, what="remote port", allow_zero=False)
    local = parse_port(local_port, what="local port")
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
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if not serving.is_set():
            raise KeyboardInterrupt  # still connecting: unwind, cleaning up on the way
        stop.set()

    serving = threading.Event()
    previous = {sig: signal.signal(sig, on_signal)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        tunnel = open_tunnel(request)
        serving.set()
        try:
            click.echo(f"{tunnel.url}  (-> {node}:{request.remote_port} via {login}; "
                       "Ctrl-C to stop)")
            while not stop.wait(0.5):
                pass
        finally:
            tunnel.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


commands = [tunnel_command]
