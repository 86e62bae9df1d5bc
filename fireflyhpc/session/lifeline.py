"""The lifeline: what keeps a payload server alive on its node, and for how long.

A connect session holds one long-running command on the node, the *lifeline*
(:data:`LIFELINE_SCRIPT`), for as long as it is there. The lifeline's stdin is the
protocol, so any SSH client that can run a command and hold its stdin open can carry
it. ("The node" below is the host where the server's process group lives: the compute
node with SSH launch; the login node for a payload started as an srun step, whose
process group there is srun's, see :mod:`fireflyhpc.session.srun`. Ending that group
ends the step.)

1. We write the session's token, one line. The lifeline checks that the server still
   runs and writes its *generation* (a random word of ours) to the run folder's
   ``attached`` file: from now on it is the one that holds the server. It removes a
   token kept on disk by an earlier lifeline, and answers ``attached`` (or ``gone``
   and exit status 3 when the server has ended).
2. Then it waits for one more line, or the end of its stdin:

   - ``stop`` (Ctrl-C, ``fireflyhpc stop``): end the server at once, remove the run
     folder, cancel the job if this session must.
   - ``detach``: keep the server until the job ends.
   - the end of stdin without a word: the SSH connection was lost (a Wi-Fi drop, a
     sleeping laptop, a login node's sshd restart, or connect killed outright). That
     is not abandonment yet: keep the server for ``linger`` seconds (``0``: end it
     now, as after ``stop``).

*Keeping* the server means: the token is written to the run folder (``token``, mode
0600, in a 0700 folder), so that a later ``connect --job ID`` can find and reuse it
(:mod:`fireflyhpc.session.kept`), and a *guard* (:data:`GUARD_SCRIPT`) is started in a session of
its own. The guard ends the server when the job leaves the queue, and, for a lost
connection, once ``linger`` seconds have passed, cancelling the job too if the
session that lost it would have. It gives up its duty, doing nothing, as soon as a
newer lifeline has attached (``attached`` no longer holds its generation) or the run
folder is gone (the server was stopped).

Every change of hands (attach, keep, end) happens under a lock in the run folder (a
``mkdir`` lock: plain POSIX sh), so a lifeline that attaches while a guard ends the
server either sees the server gone or stops the guard; never both.
"""

from __future__ import annotations

import logging
import secrets
from typing import Protocol, Sequence

from fireflyhpc.errors import ServerError, SSHError
from fireflyhpc.scheduler import slurm
from fireflyhpc.session.launch import RemoteServer

log = logging.getLogger(__name__)

ATTACH_TIMEOUT = 30.0  # seconds for a new lifeline to say "attached"
GUARD_POLL = 20  # seconds between the guard's squeue calls

# Shell functions both scripts use. Expect $dir (run folder), $pg (process group),
# $gen (generation) and $nq (how many of the trailing words are the squeue command;
# the words after those are the cancel command, or none).
_COMMON = r"""
trap '' HUP PIPE
lock() {
    i=0
    until mkdir "$dir/lock" 2>/dev/null; do
        [ -d "$dir" ] || return 1
        i=$((i + 1))
        if [ "$i" -ge 50 ]; then rmdir "$dir/lock" 2>/dev/null; i=0; fi
        sleep 0.1
    done
}
unlock() { rmdir "$dir/lock" 2>/dev/null; }
current() { [ "$(cat "$dir/attached" 2>/dev/null)" = "$gen" ]; }
# finish any|current cancel|keep-job WORDS...: end the server (only while we hold it,
# with "current"), remove the run folder, then run the cancel command if asked. The
# pgid file goes first, under the lock: no lifeline attaches after that.
finish() {
    if lock; then
        if [ "$1" = current ] && ! current; then unlock; exit 0; fi
        rm -f -- "$dir/pgid"
        unlock
    elif [ "$1" = current ]; then
        exit 0
    fi
    if kill -0 "-$pg" 2>/dev/null; then
        kill -TERM "-$pg" 2>/dev/null
        i=0
        while kill -0 "-$pg" 2>/dev/null && [ "$i" -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "-$pg" 2>/dev/null
    fi
    rm -rf -- "$dir"
    what=$2
    shift 2
    shift "$nq"
    if [ "$what" = cancel ] && [ "$#" -gt 0 ]; then "$@" >/dev/null 2>&1; fi
    exit 0
}
"""

# $1 the guard script; $2 process group; $3 run folder; $4 linger (seconds); $5 our
# generation; $6 N; then the N words of the squeue command printing the job's state,
# then the command cancelling the job (none: this session must not cancel it).
LIFELINE_SCRIPT = r"""
cd || exit 4
umask 077
guard=$1; pg=$2; dir=$3; linger=$4; gen=$5; nq=$6
shift 6
{common}
IFS= read -r token || exit 0
if ! lock; then echo gone; exit 3; fi
if [ ! -s "$dir/pgid" ] || ! kill -0 "-$pg" 2>/dev/null; then unlock; echo gone; exit 3; fi
printf '%s\n' "$gen" >"$dir/attached.new" && mv -f -- "$dir/attached.new" "$dir/attached"
rm -f -- "$dir/token" "$dir/kept" "$dir/cancels"
unlock
echo attached
IFS= read -r word
exec </dev/null >/dev/null 2>&1
# keep job|SECONDS WORDS...: leave the token for a later connect and a guard in charge.
keep() {
    until=$1
    shift
    lock || exit 0
    if ! current; then unlock; exit 0; fi
    printf '%s\n' "$token" >"$dir/token.new" && mv -f -- "$dir/token.new" "$dir/token"
    if [ "$until" = job ]; then echo detached; else echo lingering; fi >"$dir/kept"
    if [ "$#" -gt "$nq" ]; then : >"$dir/cancels"; fi
    unlock
    setsid sh -c "$guard" sh "$pg" "$dir" "$gen" "$until" "$nq" "$@" &
    exit 0
}
case $word in
    stop) finish any cancel "$@" ;;
    detach) keep job "$@" ;;
    *) if [ "$linger" -gt 0 ]; then keep "$linger" "$@"; else finish current cancel "$@"; fi ;;
esac
"""

# Started by a lifeline that keeps the server. $1 process group; $2 run folder; $3 the
# generation of that lifeline; $4 "job" (until the job ends) or seconds (then end it,
# cancelling the job if the words say so); $5 N; the squeue and cancel words as for
# the lifeline. No squeue on the node, or an unreachable controller: the job is not
# judged (it waits, it never guesses).
GUARD_SCRIPT = r"""
cd || exit 0
pg=$1; dir=$2; gen=$3; until=$4; nq=$5
shift 5
{common}
# job_state WORDS...: run the first $nq words (the squeue command)
job_state() {
    n=$nq
    k=$(($# - n))
    while [ "$n" -gt 0 ]; do set -- "$@" "$1"; shift; n=$((n - 1)); done
    shift "$k"
    "$@" 2>&1
}
checks=0
if [ "$nq" -gt 0 ] && command -v "$1" >/dev/null 2>&1; then checks=1; fi
if [ "$checks" = 0 ] && [ "$until" = job ]; then exit 0; fi
start=$(date +%s)
next=0
while :; do
    [ -d "$dir" ] || exit 0
    current || exit 0
    now=$(date +%s)
    if [ "$until" != job ] && [ $((now - start)) -ge "$until" ]; then
        finish current cancel "$@"
    fi
    if [ "$checks" = 1 ] && [ "$now" -ge "$next" ]; then
        case $(job_state "$@") in
            "" | *"Invalid job id"* | COMPLETED* | CANCELLED* | TIMEOUT* | FAILED* | \
            NODE_FAIL* | PREEMPTED* | OUT_OF_MEMORY* | BOOT_FAIL* | DEADLINE*)
                finish current keep-job "$@" ;;
        esac
        next=$((now + {poll}))
    fi
    sleep 2
done
"""

def lifeline_script() -> str:
    """The lifeline's shell text (pure)."""
    return LIFELINE_SCRIPT.replace("{common}", _COMMON)


def guard_script(poll: int = GUARD_POLL) -> str:
    """The guard's shell text (pure)."""
    return GUARD_SCRIPT.replace("{common}", _COMMON).replace("{poll}", str(int(poll)))


def lifeline_argv(server: RemoteServer, *, linger: int, generation: str, job_id: str,
                  cancel_job: bool, poll: int = GUARD_POLL) -> list[str]:
    """The argv (for the SSH layer to quote) of a lifeline holding ``server`` (pure).

    ``linger``: seconds the server is kept after the connection is lost (0: none);
    ``cancel_job``: whether ending the server (stop, or the end of the grace) cancels
    ``job_id``. Raises ValueError for a negative linger or a bad generation.
    """
    if linger < 0:
        raise ValueError(f"linger must be 0 or more seconds, not {linger}")
    if not generation.isalnum():
        raise ValueError(f"bad lifeline generation {generation!r}")
    squeue = slurm.squeue_state_argv(job_id)
    cancel = slurm.scancel_argv([job_id]) if cancel_job else []
    return ["sh", "-c", lifeline_script(), "sh", guard_script(poll), str(server.pgid),
            server.run_dir, str(int(linger)), generation, str(len(squeue)), *squeue, *cancel]


class HeldCommand(Protocol):
    """A command left running on the node (a :class:`fireflyhpc.ssh.RemoteProcess`)."""

    def write(self, data: bytes) -> None: ...

    def readline(self, timeout: float | None = None) -> bytes | None: ...

    def close_stdin(self) -> None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int | None: ...

    def close(self) -> None: ...


class Holder(Protocol):
    """A connection that can leave a command running (a :class:`fireflyhpc.ssh.Connection`)."""

    def start(self, argv: Sequence[str]) -> HeldCommand: ...


class Lifeline:
    """This session's hold on the server; see the module doc.

    Creating one starts the lifeline and sends the token; :meth:`confirm` waits for
    the node's answer, so that a caller can do other work meanwhile (connect opens
    its tunnel). Until confirmed, the hold is not certain.
    """

    def __init__(self, conn: Holder, server: RemoteServer, *, token: str, linger: int,
                 job_id: str, cancel_job: bool) -> None:
        self.server = server
        self.linger = linger
        self.generation = secrets.token_hex(8)
        self.confirmed = False
        argv = lifeline_argv(server, linger=linger, generation=self.generation, job_id=job_id,
                             cancel_job=cancel_job)
        self._held = conn.start(argv)
        try:
            self._held.write((token + "\n").encode())
        except BaseException:
            self._held.close()
            raise

    def confirm(self, timeout: float = ATTACH_TIMEOUT) -> None:
        """Wait for the node to say that this lifeline holds the server (idempotent).

        Raises ServerError when the server has already ended, SSHError (or
        RemoteTimeoutError) when the node could not be reached or did not answer; the
        lifeline is closed then.
        """
        if self.confirmed:
            return
        node = self.server.node
        try:
            raw = self._held.readline(timeout)
        except BaseException:
            self._held.close()
            raise
        if raw is None:
            self._held.close()
            raise SSHError(f"the lifeline on {node} did not answer within {timeout:g} s")
        answer = raw.decode("utf-8", "replace").rstrip("\n") if raw else None
        if answer != "attached":
            self._held.close()
            if answer == "gone":
                raise ServerError(f"the payload server on {node} has ended")
            raise SSHError(f"the lifeline on {node} did not start ({answer!r})")
        self.confirmed = True
        log.debug("lifeline %s holds the server on %s", self.generation, node)

    def attached(self) -> bool:
        """True while the lifeline runs and its connection looks up (a dead link may
        still look up: probe the connection to be sure)."""
        return self._held.poll() is None

    def release(self, *, detach: bool, timeout: float | None = None) -> bool:
        """Say ``detach`` (keep the server until the job ends) or ``stop`` (end it now)
        and close the lifeline; True once the node confirmed within ``timeout`` s (by
        default 30 for detach, 5 for stop: an unconfirmed stop is the node's to finish,
        after the grace period). Never raises."""
        try:
            self._held.write(b"detach\n" if detach else b"stop\n")
            self._held.close_stdin()
            return self._held.wait(timeout or (30.0 if detach else 5.0)) == 0
        except Exception as exc:  # the connection may be gone: the node then lingers
            log.debug("lifeline: %s", exc)
            return False
        finally:
            self._held.close()

    def drop(self) -> None:
        """Let go without a word, as a lost connection would (the node keeps the server
        for ``linger`` seconds). Never raises."""
        self._held.close()
