"""Starting the payload with ``srun --jobid ID --overlap`` (profile ``launch = "srun"``).

For clusters that refuse SSH to compute nodes: the payload becomes a job step of
the user's job, started from the login node. The start script is the one SSH launch
runs on the node (:data:`fireflyhpc.session.launch.START_SCRIPT`, kind ``step``), run
on the login node instead: there ``srun`` is started in a session and process group
of its own, detached from the SSH connection, and that process group is what the
:class:`~fireflyhpc.session.launch.RemoteServer` names. So everything that holds or
ends a server over SSH works on the login node unchanged: the lifeline and its guard
(:mod:`fireflyhpc.session.lifeline`: a lost connection keeps the step for the grace
period, a later ``connect --job ID`` takes it back), ``stop_payload`` and
``payload_alive``. Ending srun's process group (SIGTERM) makes srun end the step at
once (Slurm ends every process of it on the node; on the mini cluster srun is gone
within 0.1 s). A SIGKILLed srun would leave the step running: the task's watcher ends
the server when the run folder is gone, as it is after every way of ending srun.

Differences from SSH launch, all forced by the missing SSH hop to the node:

- the server binds all the node's addresses (the login node must connect to it:
  the tunnel's ``direct`` hop); the token still guards every request;
- the token travels in a 0600 file in the run folder of the (shared) home, because
  srun's own stdin is not private to one task; the task reads it and removes it
  before the server starts, so it is on disk only while the step starts (and, as
  with SSH launch, while no session holds the server);
- the ready file is read from the login node (shared home).
"""

from __future__ import annotations

from dataclasses import replace

from fireflyhpc.errors import ConfigError
from fireflyhpc.scheduler import slurm
from fireflyhpc.session.launch import READY_TIMEOUT, RUN_ROOT, PayloadSpec, payload_argv, \
    start_script


# The step's task on the node. $1 the run folder; the rest: the server's argv. The
# token file goes as soon as it is read; then the profile's setup lines, then the
# server (its stdout, which carries the token URL, goes to /dev/null via srun --output).
# A SIGKILLed srun leaves its step running (SIGTERM makes srun end it); whatever ends
# srun also removes the run folder, so a watcher ends the server (the task's pid, once
# exec'd) when the folder is gone.
TASK_SCRIPT = r"""
cd || exit 4
dir=$1; shift
IFS= read -r FIREFLYHPC_TOKEN <"$dir/token" || exit 4
rm -f -- "$dir/token"
export FIREFLYHPC_TOKEN
sh -c 'while [ -d "$1" ] && kill -0 "$2" 2>/dev/null; do sleep {poll}; done
[ -d "$1" ] || kill -TERM "$2" 2>/dev/null' sh "$dir" "$$" </dev/null >/dev/null 2>&1 &
{setup}
cd || exit 4
exec "$@"
"""
WATCH_POLL = 5  # seconds between the task watcher's looks at the run folder


def task_script(setup: tuple[str, ...], poll: int = WATCH_POLL) -> str:
    """The step's task script with the profile's ``setup`` lines in place (pure)."""
    script = TASK_SCRIPT.replace("{poll}", str(int(poll)))
    return script.replace("{setup}", "\n".join(setup) or ":")


def task_argv(spec: PayloadSpec, run_dir: str, *, poll: int = WATCH_POLL) -> list[str]:
    """The step's task: :data:`TASK_SCRIPT` and the server's argv, the server bound to
    all the node's addresses (pure). Raises ConfigError for a payload command (only the
    fireflyhpc server can be made to check the token)."""
    if spec.kind == "command":
        raise ConfigError("launch = \"srun\" runs the builtin or firefly payload only")
    server = payload_argv(replace(spec, bind="0.0.0.0"), f"{run_dir}/ready.json")
    return ["sh", "-c", task_script(spec.setup, poll), "sh", run_dir, *server]


def start_step_argv(spec: PayloadSpec, *, job_id: str, node: str, name: str,
                    timeout: float = READY_TIMEOUT) -> list[str]:
    """The argv (for the SSH layer to quote) that, run on the login node, starts ``spec``
    as a step of ``job_id`` on ``node`` in run folder ``name`` (pure; raises as
    :func:`task_argv`)."""
    run_dir = f"{RUN_ROOT}/{name}"
    task = task_argv(spec, run_dir)
    srun = slurm.srun_step_argv(job_id, node, error_file=f"{run_dir}/server.log")
    return ["sh", "-c", start_script((), timeout), "sh", run_dir, "step", *srun, *task]
