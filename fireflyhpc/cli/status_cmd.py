"""`fireflyhpc status`: the user's connect sessions (dead entries are dropped)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import click

from fireflyhpc.session.records import SessionRecord, SessionStore, liveness


def _time_left(record: SessionRecord, now: float) -> str:
    if record.time_limit_end is None:
        return "-"
    left = int(record.time_limit_end - now)
    if left <= 0:
        return "expired"
    hours, rest = divmod(left, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _row(record: SessionRecord, now: float) -> str:
    ports = f"{record.local_port or '-'}->{record.remote_port or '-'}"
    return (f"{record.id:<9} {record.cluster or '-':<12} {record.job_id or '-':<9} "
            f"{record.node or '-':<10} {ports:<12} {_time_left(record, now):<9} "
            f"{record.url or '-'}")


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(as_json: bool) -> None:
    """List your live fireflyhpc sessions (cluster, job, node, ports, time left, URL).

    Entries whose connect process has gone are removed as they are found.
    """
    store = SessionStore()
    dropped = store.prune()
    records = store.list()
    now = time.time()
    if as_json:
        out = [{**asdict(r), "liveness": liveness(r).value} for r in records]
        click.echo(json.dumps({"sessions": out, "dropped": [r.id for r in dropped]}, indent=2))
        return
    for record in dropped:
        click.echo(f"dropped stale session {record.id} (its connect process is gone)", err=True)
    if not records:
        click.echo("no sessions")
        return
    click.echo(f"{'ID':<9} {'CLUSTER':<12} {'JOB':<9} {'NODE':<10} {'PORTS':<12} "
               f"{'TIME LEFT':<9} URL")
    for record in records:
        click.echo(_row(record, now))


commands = [status_command]
