"""remote-install and doctor against the real mini cluster (sshd, Slurm, no network).

The bench has no package index, so every install here takes the wheel-upload path.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import subprocess
import time
from pathlib import Path

import pytest

import fireflyhpc
from fireflyhpc import config as cfg
from fireflyhpc.cli import main

pytestmark = pytest.mark.cluster


def cli(cluster, *args: str, config: Path | None = None, ssh_config: Path | None = None) -> list[str]:
    """Global options pointing at the bench, then ``args``."""
    return ["--ssh-config", str(ssh_config or cluster.ssh_config),
            "--config", str(config or cluster.dir / "fireflyhpc.toml"), *args]


def remote_pids(cluster, host: str, pattern: str) -> list[int]:
    """Pids of the bench user's processes on ``host`` whose command line has ``pattern``."""
    out = cluster.ssh(host, ["pgrep", "-u", cluster.user, "-f", pattern], timeout=30).stdout
    return [int(p) for p in out.split()]


def test_bench_profile_loads_and_points_at_the_installed_venv(cluster, cluster_payload_python):
    loaded = cfg.load_config(cluster.dir / "fireflyhpc.toml")
    settings = cfg.resolve({}, {}, loaded.profile("mini"))
    assert loaded.default_cluster == "mini"
    assert (settings.login, settings.partition, settings.hop) == (
        cluster.login_host, cluster.default_partition, "auto")
    assert settings.python == cluster_payload_python
    assert cluster_payload_python.startswith(str(cluster.home()) + "/")


def test_compute_node_runs_the_same_version_as_the_bench_user(cluster, cluster_payload_python):
    proc = cluster.ssh("node1", [cluster_payload_python, "-m", "fireflyhpc", "--version"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"fireflyhpc, version {fireflyhpc.__version__}"
    # Only the payload's dependencies: the SSH stack stays on the laptop.
    paramiko = cluster.ssh("node1", [cluster_payload_python, "-c", "import paramiko"])
    assert paramiko.returncode != 0 and "ModuleNotFoundError" in paramiko.stderr
    # The venv belongs to the bench user, in their home, not readable through /root.
    venv = Path(cluster_payload_python).parents[1]
    assert venv.stat().st_uid == pwd.getpwnam(cluster.user).pw_uid
    marker = json.loads((venv / "fireflyhpc-install.json").read_text())
    assert (marker["state"], marker["version"], marker["mode"]) == (
        "complete", fireflyhpc.__version__, "upload")


def test_payload_serves_on_node_loopback_with_its_token(cluster, cluster_payload_python):
    token = os.urandom(16).hex()
    home = cluster.home()
    token_file, ready = f"{home}/.ffhpc-test-token", f"{home}/.ffhpc-test-ready.json"
    # The token travels on stdin into a 0600 file: never on a command line.
    write = cluster.ssh("node1", ["sh", "-c", 'umask 077 && cat > "$1"', "sh", token_file],
                        input=token)
    assert write.returncode == 0, write.stderr
    serve = [cluster_payload_python, "-m", "fireflyhpc", "serve", "--no-browser", "--port", "0",
             "--demo", "--app", "builtin", "--token-file", token_file, "--ready-file", ready]
    proc = subprocess.Popen(cluster.ssh_argv("node1", serve), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = None
        for _ in range(600):  # bounded: 60 s
            got = cluster.ssh("node1", ["cat", ready], timeout=30)
            if got.returncode == 0 and got.stdout.strip():
                info = json.loads(got.stdout)
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
        assert info is not None, "the payload never wrote its ready file"
        assert info["host"] == "127.0.0.1"
        url = f"http://127.0.0.1:{info['port']}/datasets.json"
        curl = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20"]
        with_token = cluster.run_in("node1", [*curl, "-K", "-", url],
                                    input=f'header = "Authorization: Bearer {token}"\n')
        without = cluster.run_in("node1", [*curl, url])
        assert with_token.stdout == "200", with_token.stderr
        assert without.stdout in ("401", "403")  # no token: refused
        for pid in remote_pids(cluster, "node1", token_file):
            assert token not in cluster.ssh("node1", ["ps", "-ww", "-o", "args=", "-p",
                                                      str(pid)]).stdout
    finally:
        cluster.ssh("node1", ["pkill", "-u", cluster.user, "-f", "--", ready], timeout=30)
        proc.terminate()
        proc.wait(timeout=30)
        cluster.ssh("node1", ["rm", "-f", "--", token_file, ready], timeout=30)
    assert remote_pids(cluster, "node1", ready) == []


def test_rerun_changes_nothing_and_prints_the_python(cluster, cluster_payload_python, capsys):
    marker = Path(cluster_payload_python).parents[1] / "fireflyhpc-install.json"
    # Up to date first: in a working tree others may have edited the code meanwhile.
    assert main(cli(cluster, "remote-install", "--cluster", "mini")) == 0
    capsys.readouterr()
    before = marker.stat().st_mtime_ns
    assert main(cli(cluster, "remote-install", "--cluster", "mini")) == 0
    out = capsys.readouterr().out
    assert "already installed" in out and f'python = "{cluster_payload_python}"' in out
    assert marker.stat().st_mtime_ns == before
    assert main(cli(cluster, "remote-install", "--cluster", "mini", "--print-python")) == 0
    assert capsys.readouterr().out == cluster_payload_python + "\n"


def test_fresh_install_with_force_into_another_prefix(cluster, cluster_payload_python, capsys):
    """The full path (auto: no index on the bench, so wheels are uploaded), then idempotent."""
    prefix = "~/ffhpc-test-prefix/venv"
    real = cluster.home() / "ffhpc-test-prefix" / "venv"
    try:
        start = time.monotonic()
        assert main(cli(cluster, "remote-install", "--cluster", "mini", "--prefix", prefix,
                        "--index", "auto", "--force")) == 0, capsys.readouterr().err
        took = time.monotonic() - start
        out = capsys.readouterr().out
        assert f"installed fireflyhpc {fireflyhpc.__version__}" in out and "uploaded" in out
        with capsys.disabled():
            print(f"\nremote-install (fresh venv, wheel upload): {took:.1f} s")
        proc = cluster.ssh("node2", [f"{real}/bin/python", "-m", "fireflyhpc", "--version"])
        assert fireflyhpc.__version__ in proc.stdout, proc.stderr
        assert not (real / ".fireflyhpc-wheels").exists()  # the upload stage is gone
        assert not Path(f"{real}.lock").exists()
        venv_cfg = (real / "pyvenv.cfg").stat()
        assert main(cli(cluster, "remote-install", "--cluster", "mini", "--prefix", prefix)) == 0
        again = capsys.readouterr()
        # Nothing is rebuilt (others editing this working tree may at most cause the
        # fireflyhpc wheel alone to be replaced: same version, changed code).
        assert "already installed" in again.out or "code changed" in again.err
        assert "creating a venv" not in again.err
        assert (real / "pyvenv.cfg").stat().st_mtime_ns == venv_cfg.st_mtime_ns
    finally:
        cluster.ssh("login1", ["rm", "-rf", "--", str(real.parent)], timeout=60)


def test_refuses_to_replace_a_directory_it_did_not_make(cluster, cluster_payload_python, capsys):
    foreign = cluster.home() / "ffhpc-test-foreign"
    cluster.ssh("login1", ["sh", "-c", 'mkdir -p "$1" && echo mine > "$1/keep.txt"', "sh",
                           str(foreign)], check=True)
    try:
        status = main(cli(cluster, "remote-install", "--cluster", "mini", "--prefix",
                          str(foreign), "--force"))
        err = capsys.readouterr().err
        assert status == 3 and "not made by fireflyhpc remote-install" in err
        assert len(err.strip().splitlines()) == 1
        assert (foreign / "keep.txt").read_text() == "mine\n"
    finally:
        cluster.ssh("login1", ["rm", "-rf", "--", str(foreign)], timeout=60)


def test_unknown_cluster_is_one_line(cluster, capsys):
    assert main(cli(cluster, "remote-install", "--cluster", "nope")) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fireflyhpc: error: unknown cluster 'nope'")
    assert main(cli(cluster, "doctor", "--cluster", "nope")) == 3
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_unreachable_login_is_one_line(cluster, tmp_path, capsys):
    # An address in the bench range that nothing answers (the guard route refuses it).
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host deadlogin\n    HostName 198.18.200.1\n    User ffuser\n"
                          "    ConnectTimeout 5\n")
    status = main(cli(cluster, "remote-install", "--login", "deadlogin", ssh_config=ssh_config))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 4 and len(err) == 1 and "198.18.200.1" in err[0], err
    status = main(cli(cluster, "doctor", "--login", "deadlogin", ssh_config=ssh_config))
    out = capsys.readouterr().out.splitlines()
    assert status == 1
    assert out[0].startswith("✗ login reachable") and "-> " in out[0]
    assert all(line.startswith("- ") for line in out[3:])  # the rest needs the login


def test_doctor_all_pass_after_remote_install(cluster, cluster_payload_python, capsys):
    status = main(cli(cluster, "doctor", "--cluster", "mini"))
    out = capsys.readouterr().out.splitlines()
    assert status == 0, "\n".join(out)
    names = [line.split(":", 1)[0][2:] for line in out]
    assert names == ["login reachable", "host key known", "login authenticated",
                     "Slurm commands", "partitions", "remote python",
                     "fireflyhpc on the cluster", "Flask importable", "Firefly on the cluster",
                     "TCP login -> node",
                     "port forwarding", "SSH to compute node", "home space"]
    assert all(line.startswith("✓ ") for line in out), "\n".join(out)


def test_login_as_user_at_host_colon_port(cluster, cluster_payload_python, capsys):
    """doctor and remote-install take every login form; junk is refused before any SSH."""
    login = f"{cluster.user}@{cluster.login_host}:22"
    status = main(cli(cluster, "doctor", "--cluster", "mini", "--login", login))
    out = capsys.readouterr().out.splitlines()
    assert status == 0, "\n".join(out)
    assert out[2].startswith(f"✓ login authenticated: {cluster.user}@{cluster.login_host}")
    for command in ("doctor", "remote-install"):
        assert main(cli(cluster, command, "--cluster", "mini", "--login", "u@login1:x")) == 3
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("fireflyhpc: error: --login = 'u@login1:x': "
                                                   "expected [user@]host[:port]"), err


def test_doctor_names_a_wrong_profile_python_and_the_fix(cluster, cluster_payload_python,
                                                         tmp_path, capsys):
    text = (cluster.dir / "fireflyhpc.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(f'python = "{cluster_payload_python}"',
                                'python = "/nonexistent/venv/bin/python"'))
    status = main(cli(cluster, "doctor", "--cluster", "mini", config=bad))
    out = capsys.readouterr().out.splitlines()
    assert status == 1
    failed = [line for line in out if line.startswith("✗")]
    assert len(failed) == 1 and failed[0].startswith("✗ remote python: /nonexistent/venv/bin/python")
    assert "fireflyhpc remote-install --cluster mini" in failed[0]
    # The checks after it still ran.
    assert any(line.startswith("✓ SSH to compute node") for line in out)
    bad.write_text(text.replace('partition = "debug"', 'partition = "nosuchpart"'))
    assert main(cli(cluster, "doctor", "--cluster", "mini", config=bad)) == 1
    out = capsys.readouterr().out
    assert "✗ partitions: partition 'nosuchpart'" in out and "debug" in out


def test_doctor_sees_an_older_fireflyhpc_on_the_cluster(cluster, cluster_payload_python,
                                                        tmp_path, capsys):
    """A venv whose fireflyhpc reports another version: the version check fails."""
    fake = cluster.home() / "ffhpc-test-oldpython"
    script = ("#!/bin/sh\nexec env PYTHONPATH=\"$(dirname \"$0\")/lib\" "
              f"{shlex.quote(cluster_payload_python)} \"$@\"\n")
    setup = ('mkdir -p "$1/lib/fireflyhpc" && cat > "$1/python" && chmod 755 "$1/python" && '
             'echo "__version__ = \'0.0.1\'" > "$1/lib/fireflyhpc/__init__.py"')
    cluster.ssh("login1", ["sh", "-c", setup, "sh", str(fake)], input=script, check=True)
    try:
        text = (cluster.dir / "fireflyhpc.toml").read_text()
        bad = tmp_path / "old.toml"
        bad.write_text(text.replace(f'python = "{cluster_payload_python}"',
                                    f'python = "{fake}/python"'))
        assert main(cli(cluster, "doctor", "--cluster", "mini", config=bad)) == 1
        out = capsys.readouterr().out
        assert f"✗ fireflyhpc on the cluster: 0.0.1 there, {fireflyhpc.__version__} here" in out
    finally:
        cluster.ssh("login1", ["rm", "-rf", "--", str(fake)], timeout=60)


def test_concurrent_installs_into_one_prefix_take_turns(cluster, cluster_payload_python):
    """Two installs racing for one new prefix: one builds it, the other waits and finds it."""
    import threading

    from fireflyhpc.remote.install import InstallRequest, remote_install
    from fireflyhpc.ssh import SSHConnection

    real = cluster.home() / "ffhpc-test-race"
    results, errors = [], []

    def install() -> None:
        try:
            with SSHConnection.open(cluster.login_host, ssh_config=str(cluster.ssh_config)) as conn:
                results.append(remote_install(conn, InstallRequest(prefix=f"{real}/venv",
                                                                   index="no")))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=install) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        assert not errors, errors
        modes = sorted(r.mode for r in results)
        assert len(modes) == 2 and modes.count("upload") == 1, modes  # one fresh venv only
        proc = cluster.ssh("node1", [f"{real}/venv/bin/python", "-m", "fireflyhpc", "--version"])
        assert fireflyhpc.__version__ in proc.stdout, proc.stderr
        assert not Path(f"{real}/venv.lock").exists()
    finally:
        cluster.ssh("login1", ["rm", "-rf", "--", str(real)], timeout=60)


def test_failed_index_install_leaves_nothing_behind(cluster, cluster_payload_python, capsys):
    """--index yes uses the cluster's pip config; an index that refuses is one error line
    and the half-made venv is removed."""
    pip_conf = cluster.home() / ".config" / "pip" / "pip.conf"
    assert not pip_conf.exists(), "the bench user has a pip config of their own"
    conf = "[global]\nindex-url = http://127.0.0.1:9/simple\nretries = 0\ntimeout = 5\n"
    cluster.ssh("login1", ["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh",
                           str(pip_conf)], input=conf, check=True)
    real = cluster.home() / "ffhpc-test-noindex"
    try:
        status = main(cli(cluster, "remote-install", "--cluster", "mini", "--prefix", str(real),
                          "--index", "yes"))
        err = [line for line in capsys.readouterr().err.splitlines()
               if not line.endswith(" ...")]  # progress lines
        assert status == 5 and len(err) == 1, err
        assert err[0].startswith("fireflyhpc: error: `") and "--index no" in err[0]
        assert not real.exists() and not Path(f"{real}.lock").exists()
    finally:
        cluster.ssh("login1", ["rm", "-f", "--", str(pip_conf)], timeout=60)


def test_missing_remote_python_is_one_line_with_the_fix(cluster, capsys):
    status = main(cli(cluster, "remote-install", "--cluster", "mini", "--python", "python2.9",
                      "--prefix", "~/ffhpc-test-never"))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 3 and len(err) == 1, err
    assert "python2.9 not found on the cluster" in err[0] and "--python" in err[0]
    assert not (cluster.home() / "ffhpc-test-never").exists()


def test_doctor_reports_an_unknown_host_key_and_accepts_it_on_request(cluster, tmp_path,
                                                                      capsys):
    known = tmp_path / "known_hosts"
    known.write_text("")
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(cluster.ssh_config.read_text().replace(
        f"UserKnownHostsFile {cluster.known_hosts}", f"UserKnownHostsFile {known}"))
    assert main(cli(cluster, "doctor", "--cluster", "mini", ssh_config=ssh_config)) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("✗ host key known: no key on file for 198.18.0.2")
    assert "--accept-new-host-key" in out[1]
    assert out[2].startswith("✗ login authenticated") and "not known" in out[2]
    status = main(cli(cluster, "doctor", "--cluster", "mini", "--accept-new-host-key",
                      ssh_config=ssh_config))
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("! host key known") and out[2].startswith("✓ login authenticated")
    # Recorded as ssh's accept-new would, the compute node's key too (same policy).
    recorded = known.read_text()
    assert status == 0 and "198.18.0.2 " in recorded, "\n".join(out)
    assert all(line.startswith("✓") for i, line in enumerate(out) if i != 1), "\n".join(out)
    assert any(cluster.addr(node) + " " in recorded for node in cluster.nodes)
