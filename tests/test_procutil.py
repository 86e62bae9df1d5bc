"""fireflyhpc.procutil: the one verdict on "is this recorded process still running?",
on real processes: this one, a finished one, a reused pid, a zombie, and one that
exists but may not be inspected (a real psutil AccessDenied, under hidepid)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

import fireflyhpc
from fireflyhpc.procutil import process_alive, running_process, start_stamp


def test_this_process_is_alive() -> None:
    me = psutil.Process()
    assert process_alive(me.pid, start_stamp(me))
    proc = running_process(me.pid, start_stamp(me))
    assert proc is not None and proc.pid == me.pid


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's /proc stamp")
def test_the_stamp_does_not_move_with_the_wall_clock(monkeypatch) -> None:
    """psutil derives create times from the boot time as the wall clock tells it now:
    a clock step (NTP, a laptop's clock set after a sleep) moves every one of them.
    The stamp is the start's offset from boot; a step must not make us look dead."""
    import psutil._pslinux as pslinux

    me = psutil.Process()
    stamp = start_stamp(me)
    assert abs(stamp + psutil.boot_time() - me.create_time()) < 0.02
    stepped = pslinux.boot_time() + 1.0  # the clock was set one second ahead
    monkeypatch.setattr(pslinux, "boot_time", lambda: stepped)
    assert abs(psutil.Process().create_time() - me.create_time() - 1.0) < 0.02
    assert start_stamp(psutil.Process()) == stamp
    assert process_alive(me.pid, stamp)


def test_a_finished_process_is_dead() -> None:
    child = subprocess.Popen(["true"])
    created = start_stamp(psutil.Process(child.pid))
    child.wait()
    assert not process_alive(child.pid, created)


def test_another_create_time_is_a_reused_pid_so_dead() -> None:
    me = psutil.Process()
    assert not process_alive(me.pid, start_stamp(me) - 5)
    assert running_process(me.pid, start_stamp(me) + 5) is None


def test_a_zombie_is_dead() -> None:
    child = subprocess.Popen(["true"])
    created = start_stamp(psutil.Process(child.pid))
    try:
        for _ in range(200):  # until it has exited; nobody has waited for it yet
            if psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE:
                break
            time.sleep(0.05)
        assert psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE
        assert not process_alive(child.pid, created)
    finally:
        child.wait()


# Runs as user nobody, with /proc mounted hidepid=1: root's processes are there but
# cannot be read. Prints psutil's own answer, then ours.
_CHECK = """
import sys, psutil
from fireflyhpc.procutil import process_alive
pid, created = int(sys.argv[1]), float(sys.argv[2])
try:
    psutil.Process(pid).create_time()
    print("readable")
except psutil.AccessDenied:
    print("AccessDenied")
print(process_alive(pid, created), process_alive(pid, created - 5))
"""

# In a private mount namespace: make the interpreter, psutil and this source tree
# reachable for nobody (their real folders may sit under root's 0700 home), hide
# other users' process details, then drop to nobody.
_SANDBOX = """
set -e
d=$1; shift
mount --bind "$PY_HOME" "$d/py"
mount --bind "$SITE" "$d/site"
mount --bind "$SRC" "$d/src"
mount -t proc -o hidepid=1 proc /proc
export PYTHONPATH="$d/src:$d/site"
exec setpriv --reuid=65534 --regid=65534 --clear-groups "$d/py/$PY_EXE" -c "$CHECK" "$@"
"""


def test_a_process_that_cannot_be_inspected_is_alive() -> None:
    """AccessDenied means the process exists: alive (deleting its record would be wrong)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a mount namespace, and user nobody)")
    if not (shutil.which("unshare") and shutil.which("setpriv")):
        pytest.skip("needs unshare and setpriv (util-linux)")
    home = Path(sys.base_prefix)
    exe = Path(os.path.realpath(sys.executable))
    if not exe.is_relative_to(home):
        pytest.skip(f"the interpreter {exe} is not inside {home}")
    folder = Path(tempfile.mkdtemp(prefix="ffhpc-hidepid-"))
    target = subprocess.Popen(["sleep", "60"])  # root's: hidden from nobody
    try:
        folder.chmod(0o755)
        for name in ("py", "site", "src"):
            (folder / name).mkdir(mode=0o755)
        env = dict(os.environ, PY_HOME=str(home), PY_EXE=str(exe.relative_to(home)),
                   SITE=str(Path(psutil.__file__).parent.parent),
                   SRC=str(Path(fireflyhpc.__file__).parent.parent), CHECK=_CHECK)
        created = start_stamp(psutil.Process(target.pid))
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               _SANDBOX, "sh", str(folder), str(target.pid), str(created)],
                              env=env, capture_output=True, text=True, timeout=60, check=False)
    finally:
        target.kill()
        target.wait()
        shutil.rmtree(folder, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    # psutil itself was denied, so the verdict below is the AccessDenied one; a pid
    # with another create time still cannot be told apart, and counts as alive too.
    assert proc.stdout.split("\n")[:2] == ["AccessDenied", "True True"]
