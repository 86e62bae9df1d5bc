"""The batch scheduler layer: pure Slurm builders/parsers and a runner-based client.

``slurm`` builds argv lists and parses output (no I/O); ``nodelist`` expands host
lists; ``client.Scheduler`` runs the commands through any runner (SSH or local).
"""

from fireflyhpc.scheduler.client import Backoff, Result, Runner, Scheduler, local_runner
from fireflyhpc.scheduler.nodelist import expand_nodelist
from fireflyhpc.scheduler.slurm import JobInfo, JobState, Partition, StartEstimate

__all__ = [
    "Backoff", "JobInfo", "JobState", "Partition", "Result", "Runner", "Scheduler",
    "StartEstimate", "expand_nodelist", "local_runner",
]
