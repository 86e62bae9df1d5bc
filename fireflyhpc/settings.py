"""The one table of named settings: every key of a cluster profile, the flag-only
settings and the job-template placeholders, each with the validator of its value.

The config file (:mod:`fireflyhpc.config`) and the job templates
(:mod:`fireflyhpc.scheduler.templates`) take their validators from here through
:func:`validators`, so a value refused in a profile is refused in a template. The
validators themselves live in :mod:`fireflyhpc.validate` and
:mod:`fireflyhpc.hostspec`; nothing here loads the SSH stack.
"""

from __future__ import annotations

from fireflyhpc import validate as v
from fireflyhpc.hostspec import login_host

# The SSH backends: "auto" (OpenSSH where it can multiplex, else paramiko), or either.
SSH_BACKENDS = ("auto", "openssh", "paramiko")
# How the tunnel goes from the login node to the compute node: "ssh" (a second SSH
# session into the node), "direct" (the login node connects to NODE:PORT) or "auto"
# ("ssh", falling back to "direct" when the node takes no SSH).
HOPS = ("auto", "ssh", "direct")


# Every named setting (a cluster profile's keys, the flag-only settings and the job
# template placeholders) with the validator of its value.
SETTINGS: dict[str, v.Validator] = {
    "login": login_host,
    "scheduler": v.choice("slurm"),
    "cluster": v.cluster_name,
    "partition": v.slurm_name,
    "account": v.slurm_name,
    "qos": v.slurm_name,
    "constraint": v.constraint,
    "time": v.slurm_time,
    "cpus": v.positive_int,
    "mem": v.memory,
    "gpus": v.count,
    "setup": v.shell_lines,
    "python": v.python_command,
    "hop": v.choice(*HOPS),
    "linger": v.duration,
    "port_range": v.port_range,
    "template": v.template_name,
    "payload": v.payload,
    "launch": v.choice("auto", "ssh", "srun"),
    "ssh": v.choice(*SSH_BACKENDS),
    "job_name": v.slurm_name,
    "local_port": v.local_port,
    "output": v.output_path,
    "workdir": v.one_line,
}


def validators(*names: str) -> dict[str, v.Validator]:
    """``{name: validator}`` from :data:`SETTINGS` for ``names``, in that order."""
    return {name: SETTINGS[name] for name in names}
