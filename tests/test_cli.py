"""The CLI skeleton: help, version, and how errors become one line and a status."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

import fireflyhpc
from fireflyhpc import cli as cli_mod
from fireflyhpc.errors import ExitStatus, FireflyHPCError, RemoteCommandError, SSHError


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fireflyhpc", *args],
                          capture_output=True, text=True, timeout=60)


def test_version_matches_package() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"fireflyhpc, version {fireflyhpc.__version__}"


def last_line_of_python(code: str) -> str:
    """The last line ``code`` prints in a fresh interpreter, which must exit 0."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()[-1]


def test_help_lists_global_options() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for option in ("--debug", "--ssh-config", "--ssh", "--config", "--version"):
        assert option in proc.stdout


def test_cli_loads_without_the_ssh_stack() -> None:
    """A compute node has only the payload's dependencies: the command line (serve,
    --version) must load without paramiko, and must not load the SSH stack at all."""
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'paramiko':\n"
            "            raise ImportError('no paramiko here')\n"
            "sys.meta_path.insert(0, Block())\n"
            "from fireflyhpc.cli import main\n"
            "status = main(['--version'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('fireflyhpc.ssh')))\n"
            "sys.exit(status)\n")
    assert last_line_of_python(code) == "[]"


def test_unknown_command_is_usage_error() -> None:
    proc = run_cli("no-such-command")
    assert proc.returncode == ExitStatus.USAGE
    assert proc.stderr == ("fireflyhpc: error: No such command 'no-such-command'. "
                           "(see `fireflyhpc --help`)\n")


def _group_paths(group: click.Group = cli_mod.cli, path: tuple[str, ...] = ()
                 ) -> list[tuple[str, ...]]:
    """``()`` for `fireflyhpc` itself and the path of every command group below it."""
    found = [path]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            found += _group_paths(command, (*path, name))
    return found


def test_the_command_table_names_each_module_s_commands_exactly() -> None:
    import importlib

    defined = {command.name: module for module in set(cli_mod.COMMANDS.values())
               for command in importlib.import_module(f"fireflyhpc.cli.{module}").commands}
    assert defined == cli_mod.COMMANDS


def test_a_command_imports_no_other_command_s_module() -> None:
    code = ("import sys\nfrom fireflyhpc.cli import main\nmain(['status', '--help'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('fireflyhpc.cli.')))")
    assert last_line_of_python(code) == "['fireflyhpc.cli.status_cmd']"


def test_bare_command_prints_the_help() -> None:
    proc = run_cli()
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == run_cli("--help").stdout
    assert proc.stdout.startswith("Usage: fireflyhpc [OPTIONS] COMMAND [ARGS]...\n")
    assert len(proc.stdout.splitlines()) > 10


@pytest.mark.parametrize("path", _group_paths(), ids=lambda p: " ".join(p) or "fireflyhpc")
def test_every_group_alone_prints_its_help(path: tuple[str, ...],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_mod.main([*path, "--help"]) == 0
    wanted = capsys.readouterr().out
    assert cli_mod.main(list(path)) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (wanted, "")
    assert out.startswith(f"Usage: {' '.join(('fireflyhpc', *path))} [OPTIONS] COMMAND")


@pytest.mark.parametrize("args,needle,command", [
    (["serve", "--port", "99999"], "Invalid value for '--port'", "fireflyhpc serve"),
    (["export"], "Missing argument 'TARGET'", "fireflyhpc export"),
    (["alias", "--shell", "tcsh"], "'tcsh' is not one of", "fireflyhpc alias"),
    (["config", "nosuch"], "No such command 'nosuch'", "fireflyhpc config"),
    (["connect", "--bogus"], "No such option '--bogus'", "fireflyhpc connect"),
])
def test_usage_errors_are_one_line(args, needle, command) -> None:
    proc = run_cli(*args)
    assert proc.returncode == ExitStatus.USAGE
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fireflyhpc: error: ") and needle in lines[0]
    assert lines[0].endswith(f"(see `{command} --help`)")


@pytest.fixture
def failing_command():
    """Temporarily add commands that raise, to see how main() renders errors."""
    @click.command("boom-ssh")
    def boom_ssh() -> None:
        raise SSHError("cannot reach login1", hint="check the host name")

    @click.command("boom-bug")
    def boom_bug() -> None:
        raise ZeroDivisionError("oops")

    @click.command("boom-remote")
    def boom_remote() -> None:
        raise RemoteCommandError(["squeue", "-u", "a b"], 3, "line1\nline2\n", host="login1")

    for c in (boom_ssh, boom_bug, boom_remote):
        cli_mod.cli.add_command(c)
    yield
    for name in ("boom-ssh", "boom-bug", "boom-remote"):
        cli_mod.cli.commands.pop(name)


def test_known_error_is_one_line_with_its_status(failing_command, capsys) -> None:
    status = cli_mod.main(["boom-ssh"])
    err = capsys.readouterr().err
    assert status == ExitStatus.SSH
    assert err == "fireflyhpc: error: cannot reach login1 (check the host name)\n"


def test_debug_shows_traceback(failing_command, capsys) -> None:
    status = cli_mod.main(["--debug", "boom-ssh"])
    err = capsys.readouterr().err
    assert status == ExitStatus.SSH
    assert "Traceback" in err and err.rstrip().endswith("(check the host name)")


def test_bug_is_one_line_without_debug(failing_command, capsys) -> None:
    status = cli_mod.main(["boom-bug"])
    err = capsys.readouterr().err
    assert status == ExitStatus.ERROR
    assert len(err.strip().splitlines()) == 1
    assert "ZeroDivisionError" in err and "--debug" in err


def test_remote_error_names_command_and_stderr_tail(failing_command, capsys) -> None:
    assert cli_mod.main(["boom-remote"]) == ExitStatus.REMOTE_COMMAND
    err = capsys.readouterr().err
    assert "`squeue -u 'a b'` on login1 exited 3: line1 | line2" in err


def test_every_error_family_has_a_distinct_status() -> None:
    families = [FireflyHPCError, *FireflyHPCError.__subclasses__()]
    statuses = [f.exit_status for f in families]
    assert len(set(statuses)) == len(statuses)


def test_config_init_where_nothing_can_be_written_names_the_target(tmp_path) -> None:
    """/proc takes no new files (not even root's): the error names the file asked for,
    never the temporary file the atomic write uses."""
    proc = run_cli("config", "init", "/proc/fireflyhpc-test.toml")
    assert proc.returncode == ExitStatus.LOCAL
    assert proc.stderr == ("fireflyhpc: error: cannot write /proc/fireflyhpc-test.toml: "
                           "No such file or directory\n")
