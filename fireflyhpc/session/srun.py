"""Starting the payload with ``srun --jobid ID --overlap`` (profile ``launch = "srun"``).

For clusters that refuse SSH to compute nodes: the payload becomes a job step of
the user's job, started from the login node. The ``srun`` runs inside an SSH
channel this process keeps open (the *lifeline*): closing it, or this process
dying, makes the script on the login node end ``srun``, which ends the step (Slurm
kills every process of it on the node) and removes the run folder.

Differences from SSH launch, all forced by the missing SSH hop to the node:

- the server binds all the node's addresses (the login node must connect to it:
  the tunnel's ``direct`` hop); the token still guards every request;
- the token travels in a 0600 file in the run folder of the (shared) home, written
  over SSH stdin, because srun's own stdin is not private to one task;
- the ready file is read from the login node (shared home).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from fireflyhpc.errors import ConfigError, ServerError
from fireflyhpc.scheduler import slurm
from fireflyhpc.session.launch import RUN_ROOT, PayloadSpec, RemoteServer, parse_start_output, \
    payload_argv

log = logging.getLogger(__name__)

# $1 run folder; the rest: the srun command with the task's argv. Prints "pid PID"
# (srun's pid on the login node), then holds until its stdin says "detach" or ends.
HOLD_SCRIPT = r"""
cd || exit 4
dir=$1; shift
"$@" &
pid=$!
echo "pid $pid"
IFS= read -r word
[ "$word" = detach ] && exit 0
kill -TERM "$pid" 2>/dev/null
wait "$pid"
rm -rf -- "$dir"
exit 0
"""

# The step's task: the profile's setup lines, then the server (its stdout, which
# carries the token URL, goes to /dev/null via srun --output).
TASK_SCRIPT = """
cd || exit 4
{setup}
cd || exit 4
exec "$@"
"""

# $1 run folder, $2 srun pid, $3 ticks of 0.2 s: wait for the ready file.
WAIT_SCRIPT = r"""
cd || exit 4
i=0
while [ "$i" -lt "$3" ]; do
    [ -s "$1/ready.json" ] && { cat "$1/ready.json"; exit 0; }
    kill -0 "$2" 2>/dev/null || { tail -n 15 "$1/server.log" >&2; exit 3; }
    sleep 0.2
    i=$((i + 1))
done
tail -n 15 "$1/server.log" >&2
exit 5
"""


class SrunPayload:
    """A payload running as a job step; :meth:`stop` ends it (see the module doc)."""

    def __init__(self, login: Any, spec: PayloadSpec, *, job_id: str, node: str, name: str,
                 token: str, timeout: float = 60.0) -> None:
        if spec.kind == "command":
            raise ConfigError("launch = \"srun\" runs the builtin or firefly payload only")
        self.login = login
        run_dir = f"{RUN_ROOT}/{name}"
        login.run(["sh", "-c", 'umask 077 && mkdir -p -- "$1"', "sh", run_dir])
        login.write_file(f"{run_dir}/token", token + "\n")
        spec = replace(spec, bind="0.0.0.0")
        task = ["sh", "-c", TASK_SCRIPT.replace("{setup}", "\n".join(spec.setup) or ":"), "sh",
                *payload_argv(spec, f"{run_dir}/ready.json"),
                "--token-file", f"{run_dir}/token"]
        srun = slurm.srun_step_argv(job_id, node, error_file=f"{run_dir}/server.log")
        self._holder = login.start(["sh", "-c", HOLD_SCRIPT, "sh", run_dir, *srun, *task])
        try:
            pid = self._read_pid(timeout=30)
            ticks = str(max(1, int(timeout / 0.2)))
            result = login.run(["sh", "-c", WAIT_SCRIPT, "sh", run_dir, str(pid), ticks],
                               check=False, timeout=timeout + 30)
            if result.exit_code != 0:
                tail = " | ".join(x for x in result.stderr.strip().splitlines()[-6:] if x)
                raise ServerError(f"the payload step on {node} did not start: "
                                  f"{tail or 'no output'}")
            self.server = parse_start_output(f"pid {pid}\n{result.stdout}", node, name)
        except BaseException:
            self.stop()
            raise
        log.info("payload started on %s as a step of job %s (srun pid %d on the login node)",
                 node, job_id, pid)

    def _read_pid(self, timeout: float) -> int:
        raw = self._holder.readline(timeout=timeout)
        if not raw:  # None: nothing in time; b"": the launcher ended without a word
            raise ServerError("srun did not start on the login node")
        line = raw.decode("utf-8", "replace").rstrip("\n")
        if not line.startswith("pid ") or not line[4:].strip().isdigit():
            raise ServerError(f"unexpected answer from the srun launcher: {line[:100]!r}")
        return int(line[4:])

    def alive(self) -> bool:
        """True while srun (and so the step) runs."""
        return self._holder.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """End srun and so the step (all its processes on the node). Never raises."""
        try:
            self._holder.close_stdin()
            self._holder.wait(timeout)
        except Exception as exc:  # the connection may be gone: the closed channel ends srun
            log.debug("srun payload stop: %s", exc)
        finally:
            self._holder.close()

    @property
    def remote(self) -> RemoteServer:
        """The server (its ``pgid`` is srun's pid on the login node)."""
        return self.server
