"""`fireflyhpc doctor`'s checks of a compute node: TCP and port forwarding from the login
node, and SSH to the node (what ``launch = "ssh"`` needs; ``auto`` falls back to srun)."""

from __future__ import annotations

from typing import Any, Iterator

from fireflyhpc.config import ResolvedSettings
from fireflyhpc.errors import FireflyHPCError
from fireflyhpc.hostspec import host_name
from fireflyhpc.remote.checks import FAIL, PASS, WARN, Check, error_text
from fireflyhpc.remote.target import with_setup


def pick_node(conn: Any, settings: ResolvedSettings, partitions: list[Any]) -> str | None:
    """An idle node of the profile's partition (else any node of it), or None."""
    argv = ["sinfo", "-h", "-N", "-t", "idle", "-o", "%N"]
    if settings.partition:
        argv += ["-p", settings.partition]
    result = conn.run(with_setup(settings.setup, argv), check=False, timeout=60)
    candidates = result.stdout.split() if result.exit_code == 0 else []
    for part in partitions:
        if not settings.partition and part.default or part.name == settings.partition:
            candidates += list(part.nodes)
    for name in candidates:
        try:
            return str(host_name(name))
        except ValueError:
            continue
    return None


def check_forwarding(conn: Any, node: str) -> Iterator[Check]:
    """TCP login -> node:22 and a direct-tcpip channel, in one attempt: read sshd's banner."""
    from fireflyhpc.ssh import ChannelOpenError

    tcp, fwd = "TCP login -> node", "port forwarding"
    try:
        channel = conn.open_channel_to(node, 22, timeout=15)
    except ChannelOpenError as exc:
        if exc.code == 0:  # no reason given (the user's own ssh master keeps its log)
            by_shell = _tcp_by_shell(conn, node)
            yield by_shell
            if by_shell.status == PASS:
                yield Check(fwd, FAIL, f"{conn.spec.alias} refuses a forwarded channel to "
                            f"{node}:22 it can reach itself: {exc.reason}",
                            hint="the login node's sshd may forbid TCP forwarding; ask the "
                                 "admins for AllowTcpForwarding")
            return
        if exc.code == 1:
            yield _tcp_by_shell(conn, node)
            yield Check(fwd, FAIL, f"{conn.spec.alias} refuses forwarded channels: {exc.reason}",
                        hint="the login node's sshd forbids TCP forwarding; ask the admins "
                             "for AllowTcpForwarding")
            return
        yield Check(tcp, FAIL, error_text(exc), hint="the node's sshd may be down or "
                    "firewalled from the login node; try another node")
        yield Check(fwd, PASS, "allowed (the login node tried to connect)")
        return
    try:
        channel.settimeout(10)
        banner = channel.recv(255).decode("ascii", "replace").strip()
    except OSError:
        banner = ""
    finally:
        channel.close()
    yield Check(tcp, PASS, f"{conn.spec.alias} reaches {node} port 22"
                + (f" ({banner.splitlines()[0]})" if banner else ""))
    yield Check(fwd, PASS, f"direct-tcpip channel to {node}:22 opened")


def _tcp_by_shell(conn: Any, node: str) -> Check:
    script = 'exec 3<>"/dev/tcp/$1/22"'
    result = conn.run(["timeout", "10", "bash", "-c", script, "bash", node], check=False,
                      timeout=30)
    if result.exit_code == 0:
        return Check("TCP login -> node", PASS, f"{conn.spec.alias} reaches {node} port 22")
    return Check("TCP login -> node", FAIL, f"{conn.spec.alias} cannot reach {node} port 22",
                 hint="the node's sshd may be down or firewalled; try another node")


def check_node_ssh(conn: Any, node: str, settings: ResolvedSettings) -> Check:
    """SSH from the login node to ``node`` (what launch = "ssh" needs)."""
    try:
        with conn.connect_to(node) as node_conn:
            name = node_conn.run(["hostname"], timeout=30).stdout.strip()
    except FireflyHPCError as exc:
        # launch = "auto" (the default) starts the payload with srun where SSH fails
        status = FAIL if settings.launch == "ssh" else WARN
        return Check("SSH to compute node", status, f"{node}: {error_text(exc)}",
                     hint="many clusters allow SSH to a node only while you have a job "
                          "there; connect uses srun where it is refused (launch = \"auto\"), "
                          "or set launch = \"srun\" in the profile")
    return Check("SSH to compute node", PASS, f"{node} (hostname {name})")
