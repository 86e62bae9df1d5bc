"""`fireflyhpc doctor`: check, one by one, what `connect` needs from a cluster.

:func:`run_checks` yields one :class:`Check` per item, in the order a connection
needs them: the login node (reachable, host key, authentication), Slurm (commands,
partitions), the remote Python (version, fireflyhpc, Flask), the compute node
(TCP from the login node, port forwarding, SSH) and the home directory's space.
A failed step does not stop the others unless they depend on it; those are
reported as skipped. :func:`render` turns a check into its one output line.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import fireflyhpc
from fireflyhpc import validate
from fireflyhpc.config import ResolvedSettings
from fireflyhpc.errors import FireflyHPCError
from fireflyhpc.remote.checks import FAIL, PASS, SKIP, WARN, Check, error_text
from fireflyhpc.remote.doctor_node import check_forwarding, check_node_ssh, pick_node
from fireflyhpc.remote.target import MIN_PYTHON, with_setup

SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "sinfo")
MIN_FREE_MIB = 200  # a payload venv with its wheels needs ~60 MiB
LOW_FREE_MIB = 1024
# Runs with the profile's python on the cluster; prints one JSON line.
PYTHON_INFO = r"""
import json, sys
info = {"python": ".".join(map(str, sys.version_info[:3])), "executable": sys.executable}
for name in ("fireflyhpc", "flask", "waitress"):
    try:
        module = __import__(name)
        version = getattr(module, "__version__", None)
        if version is None:
            from importlib.metadata import version as dist_version
            version = dist_version(name)
        info[name] = str(version)
    except Exception as exc:
        info[name] = None
        info[name + "_error"] = "{0}: {1}".format(type(exc).__name__, exc)
try:  # Firefly's version without importing it (numpy, h5py...)
    from importlib.metadata import version as dist_version
    info["firefly"] = dist_version("firefly")
except Exception:
    info["firefly"] = None
print(json.dumps(info))
"""


@dataclass(frozen=True)
class DoctorRequest:
    """What to check: resolved settings of a cluster profile and how to reach it."""

    settings: ResolvedSettings
    login: str
    ssh_config: str | None = None
    accept_new_host_key: bool = False
    environ: Mapping[str, str] = field(default_factory=dict)
    connect_timeout: float = 10.0


def render(check: Check, marks: tuple[str, str, str] = ("✓", "!", "✗")) -> str:
    """``✓ name: detail`` (pure); a fix hint follows failures and warnings after ``->``."""
    mark = {PASS: marks[0], WARN: marks[1], FAIL: marks[2], SKIP: "-"}[check.status]
    line = f"{mark} {check.name}: {check.detail}"
    if check.hint and check.status in (WARN, FAIL):
        line += f"  -> {check.hint}"
    return line


# -- the login node ---------------------------------------------------------------------

def check_reachable(spec: Any, timeout: float) -> Check:
    """TCP to the login node's sshd (or the first ProxyJump hop)."""
    name = "login reachable"
    if spec.proxy_command:
        return Check(name, SKIP, f"through ProxyCommand ({spec.proxy_command})")
    first = spec.proxy_jump[0] if spec.proxy_jump else spec
    via = f" (first hop of ProxyJump for {spec.alias})" if spec.proxy_jump else ""
    try:
        with socket.create_connection((first.hostname, first.port), timeout=timeout):
            pass
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        return Check(name, FAIL, f"cannot reach {first.hostname} port {first.port}{via}: {why}",
                     hint="check the HostName/Port in your ssh_config, your VPN and network")
    return Check(name, PASS, f"{first.hostname} port {first.port}{via}")


def check_host_keys(spec: Any, accept_new: bool, *, certificates: bool = True) -> Check:
    """Every host of the chain has a key in known_hosts (before connecting); with
    ``certificates`` (OpenSSH), an ``@cert-authority`` line for it counts too."""
    from fireflyhpc.ssh.hostkeys import ACCEPT_FLAG, known_keys

    missing = []
    for host in (*spec.proxy_jump, spec):
        files = host.known_hosts_files + host.global_known_hosts_files
        if not [k for k in known_keys(files, host.known_hosts_name)
                if not k.revoked and (certificates or not k.cert_authority)]:
            missing.append(host)
    if not missing:
        return Check("host key known", PASS, ", ".join(h.known_hosts_name
                                                       for h in (*spec.proxy_jump, spec)))
    names = ", ".join(h.known_hosts_name for h in missing)
    trusting = accept_new or all(h.strict_host_key_checking in ("accept-new", "no")
                                 for h in missing)
    if trusting:
        return Check("host key known", WARN, f"no key on file for {names}; it will be "
                     "recorded on first connection", hint="compare its fingerprint with the "
                     "one your cluster publishes")
    return Check("host key known", FAIL, f"no key on file for {names}",
                 hint=f"run `ssh {spec.alias}` once and compare the fingerprint with the one "
                      f"your cluster publishes, or pass {ACCEPT_FLAG}")


def open_login(req: DoctorRequest) -> tuple[Check, Any]:
    """Connect and authenticate; return the check and the connection (None on failure)."""
    from fireflyhpc.ssh import open_connection

    try:
        conn = open_connection(req.login, ssh_config=req.ssh_config,
                               accept_new_host_key=req.accept_new_host_key,
                               backend=req.settings.ssh)
    except FireflyHPCError as exc:
        text = error_text(exc)
        hint = ("fix the host key first (see above)" if "host key" in text.lower() else
                f"check that `ssh {req.login}` works: User and IdentityFile in ssh_config, "
                "your key loaded in ssh-agent")
        return Check("login authenticated", FAIL, text, hint=hint), None
    return Check("login authenticated", PASS, f"{conn.spec.label} ({conn.backend})"), conn


# -- Slurm ------------------------------------------------------------------------------

def check_slurm_commands(conn: Any, setup: tuple[str, ...]) -> Check:
    """sbatch, squeue, scancel and sinfo are on the login node's PATH."""
    script = 'for c do command -v "$c" >/dev/null 2>&1 || printf "%s\\n" "$c"; done'
    result = conn.run(with_setup(setup, ["sh", "-c", script, "sh", *SLURM_COMMANDS]),
                      check=False, timeout=60)
    missing = result.stdout.split()
    if result.exit_code != 0:
        return Check("Slurm commands", FAIL, f"cannot look them up: {result.stderr.strip()}")
    if missing:
        return Check("Slurm commands", FAIL, f"not found on the login node: {', '.join(missing)}",
                     hint="add a setup line that loads Slurm, e.g. setup = [\"module load "
                          "slurm\"], to the cluster profile")
    return Check("Slurm commands", PASS, ", ".join(SLURM_COMMANDS))


def check_partitions(conn: Any, settings: ResolvedSettings) -> tuple[Check, list[Any]]:
    """Partitions sinfo shows; the profile's partition among them."""
    from fireflyhpc.scheduler.client import Scheduler

    def runner(argv: Any, *, input: str | None = None) -> Any:  # noqa: A002
        return conn.run(with_setup(settings.setup, list(argv)), check=False, input=input,
                        timeout=60)

    try:
        partitions = Scheduler(runner, where=conn.spec.alias).partitions()
    except FireflyHPCError as exc:
        return Check("partitions", FAIL, error_text(exc)), []
    names = [p.name + ("*" if p.default else "") for p in partitions]
    if not partitions:
        return Check("partitions", FAIL, "sinfo shows none", hint="ask the admins which "
                     "partitions you may use"), []
    wanted = settings.partition
    if wanted and wanted not in {p.name for p in partitions}:
        return Check("partitions", FAIL, f"partition {wanted!r} (from "
                     f"{settings.sources.get('partition', 'settings')}) is not among "
                     f"{', '.join(names)}",
                     hint=f"set partition to one of: {', '.join(p.name for p in partitions)}"
                     ), partitions
    chosen = f"; using {wanted}" if wanted else "; using the default partition"
    return Check("partitions", PASS, ", ".join(names) + chosen), partitions


# -- the remote Python --------------------------------------------------------------------

def python_checks(conn: Any, settings: ResolvedSettings) -> Iterator[Check]:
    """The profile's python: runs, is new enough, has fireflyhpc (this version) and Flask."""
    python = settings.python
    cluster = settings.cluster or "NAME"
    install = f"run `fireflyhpc remote-install --cluster {cluster}` and set python = the " \
              f"path it prints in [clusters.{cluster}]"
    result = conn.run(with_setup(settings.setup, [python, "-c", PYTHON_INFO]), check=False,
                      timeout=120)
    info: dict[str, Any] = {}
    if result.exit_code == 0:
        try:
            info = json.loads([ln for ln in result.stdout.splitlines() if ln.strip()][-1])
        except (IndexError, ValueError):
            info = {}
    if not info:
        why = result.stderr.strip().splitlines()[-1:] or [f"exit {result.exit_code}"]
        yield Check("remote python", FAIL, f"{python} does not run on the login node: {why[0]}",
                    hint=install)
        yield Check("fireflyhpc on the cluster", SKIP, "needs the remote python")
        yield Check("Flask importable", SKIP, "needs the remote python")
        yield Check("Firefly on the cluster", SKIP, "needs the remote python")
        return
    version = tuple(int(p) for p in str(info["python"]).split(".")[:2])
    if version < MIN_PYTHON:
        yield Check("remote python", FAIL, f"{python} is Python {info['python']}; 3.10 or newer "
                    "is needed", hint=install)
    else:
        yield Check("remote python", PASS, f"{python}: Python {info['python']}")
    yield _version_check(info, settings, install)
    if info.get("flask"):
        yield Check("Flask importable", PASS, f"Flask {info['flask']}, waitress "
                    f"{info.get('waitress') or 'missing'}")
    else:
        yield Check("Flask importable", FAIL, f"import flask: {info.get('flask_error')}",
                    hint=install)
    yield firefly_check(info.get("firefly"), settings)


def firefly_check(firefly: str | None, settings: ResolvedSettings) -> Check:
    """Firefly in the profile's python: which version, and what connect serves (pure)."""
    cluster = settings.cluster or "NAME"
    add = f"run `fireflyhpc remote-install --cluster {cluster} --with-firefly`"
    if firefly:
        serves = {"builtin": "connect serves the bundled viewer (payload = builtin)"}.get(
            settings.payload, "connect serves Firefly's own app")
        return Check("Firefly on the cluster", PASS, f"firefly {firefly}; {serves}")
    if settings.payload == "firefly":
        return Check("Firefly on the cluster", FAIL, "not installed, but payload = firefly",
                     hint=add)
    return Check("Firefly on the cluster", PASS, "not installed: connect serves the bundled "
                 f"viewer (to serve Firefly's own app, {add})")


def _version_check(info: Mapping[str, Any], settings: ResolvedSettings, install: str) -> Check:
    local = fireflyhpc.__version__
    remote = info.get("fireflyhpc")
    needed = settings.payload in validate.PAYLOAD_APPS  # fireflyhpc's own server runs there
    status = FAIL if needed else WARN
    if not remote:
        return Check("fireflyhpc on the cluster", status,
                     f"not importable ({info.get('fireflyhpc_error')}); {local} here",
                     hint=install)
    if remote != local:
        return Check("fireflyhpc on the cluster", status, f"{remote} there, {local} here",
                     hint=install)
    return Check("fireflyhpc on the cluster", PASS, f"{remote} (same as here)")


# -- the home directory ------------------------------------------------------------------

def check_home_space(conn: Any) -> Check:
    """Free space in $HOME (df), and quota's verdict where the tool exists."""
    result = conn.run(["sh", "-c", 'df -Pk "$HOME"'], check=False, timeout=60)
    rows = [ln.split() for ln in result.stdout.splitlines()[1:] if ln.strip()]
    try:
        free_mib = int(rows[-1][3]) // 1024
    except (IndexError, ValueError):
        return Check("home space", WARN, f"cannot read df output: {result.stderr.strip()}")
    quota = conn.run(["sh", "-c", "command -v quota >/dev/null 2>&1 || exit 99; quota -w"],
                     check=False, timeout=60)
    quota_text = "" if quota.exit_code == 99 else "; quota: " + (
        "over a limit" if "*" in quota.stdout else "within limits")
    detail = f"{free_mib} MiB free in the home directory{quota_text}"
    if free_mib < MIN_FREE_MIB or "over" in quota_text:
        return Check("home space", FAIL, detail, hint="free some space in your cluster home")
    if free_mib < LOW_FREE_MIB:
        return Check("home space", WARN, detail, hint="little room left in your cluster home")
    return Check("home space", PASS, detail)


# -- all of it --------------------------------------------------------------------------

def run_checks(req: DoctorRequest) -> Iterator[Check]:
    """Yield every check in order. Raises ConfigError only for a broken ssh_config."""
    from fireflyhpc.ssh import choose_backend
    from fireflyhpc.ssh.factory import describe_host

    spec = describe_host(req.login, ssh_config=req.ssh_config, backend=req.settings.ssh)
    yield check_reachable(spec, req.connect_timeout)
    yield check_host_keys(spec, req.accept_new_host_key,
                          certificates=choose_backend(req.settings.ssh) == "openssh")
    first, conn = open_login(req)
    yield first
    if conn is None:
        for name in ("Slurm commands", "partitions", "remote python", "fireflyhpc on the "
                     "cluster", "Flask importable", "TCP login -> node", "port forwarding",
                     "SSH to compute node", "home space"):
            yield Check(name, SKIP, "needs the login connection")
        return
    try:
        yield from _remote_checks(conn, req.settings)
    finally:
        conn.close()


def _guard(name: str, step: Callable[[], Check]) -> Check:
    """Run one check; an SSH failure in the middle becomes its failed line."""
    try:
        return step()
    except FireflyHPCError as exc:
        return Check(name, FAIL, error_text(exc))


def _remote_checks(conn: Any, settings: ResolvedSettings) -> Iterator[Check]:
    yield _guard("Slurm commands", lambda: check_slurm_commands(conn, settings.setup))
    try:
        part_check, partitions = check_partitions(conn, settings)
    except FireflyHPCError as exc:
        part_check, partitions = Check("partitions", FAIL, error_text(exc)), []
    yield part_check
    try:
        yield from python_checks(conn, settings)
    except FireflyHPCError as exc:
        yield Check("remote python", FAIL, error_text(exc))
    node = pick_node(conn, settings, partitions) if partitions else None
    if node is None:
        for name in ("TCP login -> node", "port forwarding", "SSH to compute node"):
            yield Check(name, SKIP, "no compute node found in sinfo")
    else:
        try:
            yield from check_forwarding(conn, node)
        except FireflyHPCError as exc:
            yield Check("port forwarding", FAIL, error_text(exc))
        yield _guard("SSH to compute node", lambda: check_node_ssh(conn, node, settings))
    yield _guard("home space", lambda: check_home_space(conn))
