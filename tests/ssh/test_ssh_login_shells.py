"""Users whose login shell is not bash: sshd runs every command string with it
(``tcsh -c COMMAND``, ``fish -c COMMAND``). Commands, environment, files, long-lived
processes and a timed-out command's end must behave as under bash, on both backends,
against the loopback sshd (users from conftest.LOGIN_SHELLS)."""

from __future__ import annotations

import secrets
import subprocess
import time

import pytest

from fireflyhpc.ssh import RemoteTimeoutError, open_connection

HOSTILE = ["a'; echo foo", "$(id)", "`id`", "x\ny", "back\\slash", "\\", "*", "-n", "",
           "tab\there", '"dq"', "!bang", "~", "$HOME", "é ü", "{a,b}", "a\\'b"]

# A long-lived process in the style of the session's node scripts: several lines,
# a here-read protocol on stdin, `!` and backslashes.
ECHO_SCRIPT = r"""
IFS= read -r first || exit 4
printf 'got %s!\n' "$first"
while IFS= read -r line; do
    [ "$line" = stop ] && { echo 'bye\'; exit 0; }
    printf '%s\n' "$line"
done
exit 5
"""


@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
@pytest.mark.parametrize("user", ["ffssh-tcsh", "ffssh-fish"])
def test_commands_behave_under_any_login_shell(make_config, user: str, backend: str) -> None:
    with open_connection("target", ssh_config=str(make_config(user)), backend=backend) as conn:
        shell = conn.run(["sh", "-c", 'getent passwd "$(id -un)" | cut -d: -f7']).stdout
        assert shell.strip().endswith(user.split("-")[1]), "the test user has that shell"
        assert conn.run(["printf", "%s\\0", *HOSTILE]).stdout.split("\0")[:-1] == HOSTILE
        result = conn.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
        assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
        env = {"FOO": "a b'c $(id)!", "BAR_2": "x\ny\\z"}
        assert conn.run(["sh", "-c", 'printf "%s|%s" "$FOO" "$BAR_2"'], env=env).stdout == \
            "a b'c $(id)!|x\ny\\z"

        path = f"/tmp/ffssh-shell-{secrets.token_hex(4)}"
        data = "line one!\nback\\slash 'q' \"dq\" $(id)\n"
        conn.write_file(path, data)
        try:
            assert conn.run(["cat", path]).stdout == data
            assert conn.run(["stat", "-c", "%a", path]).stdout.strip() == "600"
        finally:
            conn.run(["rm", "-f", path], check=False)

        process = conn.start(["sh", "-c", ECHO_SCRIPT])
        try:
            process.write(b"hello\n")
            assert process.readline(timeout=20) == b"got hello!\n"
            process.write(b"a\\b!\nstop\n")
            assert process.readline(timeout=20) == b"a\\b!\n"
            assert process.readline(timeout=20) == b"bye\\\n"
            assert process.wait(timeout=20) == 0
        finally:
            process.close()


@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_a_timed_out_command_ends_under_tcsh(make_config, backend: str) -> None:
    marker = "ffssh-shell-" + secrets.token_hex(4)
    with open_connection("target", ssh_config=str(make_config("ffssh-tcsh")),
                         backend=backend) as conn:
        with pytest.raises(RemoteTimeoutError):
            conn.run(["sh", "-c", f"sleep 60; : {marker}"], timeout=2)

    def left() -> str:
        return subprocess.run(["pgrep", "-u", "ffssh-tcsh", "-af", marker],
                              capture_output=True, text=True).stdout.strip()

    deadline = time.monotonic() + 20
    while left() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left(), "the timed-out command was ended"
