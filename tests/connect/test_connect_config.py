"""Config file parsing, validation, and the one precedence function resolve()."""

from __future__ import annotations

from pathlib import Path

import pytest
from connect_testutil import one_error_line, run_cli

from fireflyhpc import config as cfg
from fireflyhpc import validate as v
from fireflyhpc.errors import ConfigError

GOOD = """\
default_cluster = "mini"

[clusters.mini]
login = "login1"
partition = "debug"
account = "astro"
time = "2:00:00"
cpus = 2
mem = "1G"
setup = ["module load python", "source $HOME/venv/bin/activate"]
python = "/opt/py/bin/python3"
hop = "ssh"
port_range = "9000-9099"
template = "firefly"
payload = "firefly"
launch = "srun"

[clusters.other]
login = "user@other.example"
"""


def parse(text: str) -> cfg.Config:
    return cfg.parse_config(text, Path("/cfg/config.toml"))


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- value kinds -----------------------------------------------------------------------

@pytest.mark.parametrize("text", ["30", "90", "1:30", "1:00:00", "100:00:00", "2-0", "2-12:30",
                                  "2-00:00:00", "0:30"])
def test_time_forms_accepted(text: str) -> None:
    assert v.slurm_time(text) == text


@pytest.mark.parametrize("text", ["", "abc", "1h", "1:60:00", "1-24:00:00", "0", "1:2:3:4",
                                  "-1", "2-", " 30", "30\n", "0:00:00"])
def test_time_forms_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="time limit"):
        v.slurm_time(text)


def test_time_seconds() -> None:
    assert v.time_seconds("30") == 1800
    assert v.time_seconds("1:30") == 90
    assert v.time_seconds("1:00:00") == 3600
    assert v.time_seconds("2-12:30") == (2 * 24 + 12) * 3600 + 30 * 60


@pytest.mark.parametrize("raw,normal", [("4G", "4G"), ("500m", "500M"), ("2000", "2000"),
                                        (512, "512")])
def test_memory(raw: object, normal: str) -> None:
    assert v.memory(raw) == normal


@pytest.mark.parametrize("raw", ["4GB", "G", "1.5G", "-1G", "4 G", True])
def test_memory_rejected(raw: object) -> None:
    with pytest.raises(ValueError):
        v.memory(raw)


@pytest.mark.parametrize("raw", ["debug", "gpu_a100", "long-2", "p.1"])
def test_partition_names(raw: str) -> None:
    assert v.slurm_name(raw) == raw


@pytest.mark.parametrize("raw", ["", "-p", "a b", "a;b", "a'b", "a\nb", "$(id)", "x" * 65, 3])
def test_bad_partition_names(raw: object) -> None:
    with pytest.raises(ValueError):
        v.slurm_name(raw)


def test_port_range_forms() -> None:
    assert v.port_range([8000, 8999]) == (8000, 8999)
    assert v.port_range("9000-9000") == (9000, 9000)
    for bad in ([9000, 8000], [80, 90], "8000:8999", [8000], [8000, "x"], [True, 9000]):
        with pytest.raises(ValueError):
            v.port_range(bad)


def test_python_command() -> None:
    assert v.python_command("python3") == "python3"
    assert v.python_command("/opt/conda/bin/python") == "/opt/conda/bin/python"
    # what `remote-install` prints for a user whose home has a space is accepted as is
    space = "/home/ff space/.local/share/fireflyhpc/venv-0.1.0/bin/python"
    assert v.python_command(space) == space
    for bad in ("~/venv/bin/python", "python3 -u", "rel/path/python", "", "/a\nb/python",
                "/a\0b", "/tab\there"):
        with pytest.raises(ValueError):
            v.python_command(bad)


def test_payload_kinds() -> None:
    assert v.payload("builtin") == "builtin"
    assert v.payload("jupyter lab --port {port}") == "jupyter lab --port {port}"
    for bad in ("jupyter lab", "x {port}\ny", 3):
        with pytest.raises(ValueError):
            v.payload(bad)


# -- the file --------------------------------------------------------------------------

def test_good_file_parses_and_normalizes() -> None:
    config = parse(GOOD)
    assert config.default_cluster == "mini"
    assert sorted(config.clusters) == ["mini", "other"]
    mini = config.profile("mini").values
    assert mini["port_range"] == (9000, 9099)
    assert mini["setup"] == ["module load python", "source $HOME/venv/bin/activate"]
    assert mini["mem"] == "1G" and mini["cpus"] == 2 and mini["launch"] == "srun"


def test_shipped_example_is_valid() -> None:
    config = parse(cfg.example_config_text())
    assert config.default_cluster in config.clusters
    settings = cfg.resolve({}, {}, config.profile(config.default_cluster))
    assert settings.login and settings.template == "firefly"


@pytest.mark.parametrize("text,expected", [
    ('[clusters.a]\nlogin = "x"\nnodes = 3\n',
     "/cfg/config.toml:3: [clusters.a] unknown key 'nodes'; expected one of: login,"),
    ('[clusters.a]\ncpus = "many"\n',
     "/cfg/config.toml:2: [clusters.a] cpus = 'many': expected a whole number of at least 1"),
    ('[clusters.a]\ntime = "1h"\n',
     "/cfg/config.toml:2: [clusters.a] time = '1h': expected a Slurm time limit like 30"),
    ('[clusters.a]\npartition = "gpu;rm -rf"\n',
     "/cfg/config.toml:2: [clusters.a] partition = 'gpu;rm -rf': expected a name of letters"),
    ('[clusters.a]\nsetup = "module load x\\nrm -rf ~"\n',
     "/cfg/config.toml:2: [clusters.a] setup = 'module load x\\nrm -rf ~': expected one shell "
     "line"),
    ('[clusters.a]\nhop = "maybe"\n',
     "/cfg/config.toml:2: [clusters.a] hop = 'maybe': expected 'auto' or 'ssh' or 'direct'"),
    ('[clusters.a]\nsetup = [1, 2]\n',
     "/cfg/config.toml:2: [clusters.a] setup = [1, 2]: expected a list of shell lines"),
    ('colour = "blue"\n', "/cfg/config.toml:1: unknown key 'colour'"),
    ('default_cluster = "nope"\n[clusters.a]\n',
     "/cfg/config.toml:1: default_cluster = 'nope' has no [clusters.nope]"),
    ('clusters = 3\n', "/cfg/config.toml:1: clusters: expected tables [clusters.NAME]"),
    ('[clusters."bad name"]\n', "/cfg/config.toml:1: [clusters.'bad name']: expected a "
                                 "cluster name"),
    ('[clusters.ok]\n[clusters.b]\ncpus = 1\n[clusters."b".x]\ncpus = 0\n',
     "/cfg/config.toml:4: [clusters.b] unknown key 'x'"),
    ('[clusters]\na.cpus = 0\n', "/cfg/config.toml: [clusters.a] cpus = 0: expected a whole"),
])
def test_bad_values_name_file_key_and_expectation(text: str, expected: str) -> None:
    assert error_of(text).startswith(expected)


def test_malformed_toml_gives_file_and_line() -> None:
    message = error_of('default_cluster = "a"\n\n[clusters.a]\nlogin = \n')
    assert message.startswith("/cfg/config.toml:4: invalid TOML: ")
    assert "line 4" not in message  # said once, as file:line


def test_unknown_cluster_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown cluster 'nope' in /cfg/config.toml; "
                                          r"known clusters: mini, other"):
        parse(GOOD).profile("nope")


def test_missing_default_file_is_empty_but_named_file_is_an_error(tmp_path: Path,
                                                                  monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    config = cfg.load_config(None)
    assert not config.exists and config.clusters == {}
    assert config.path == tmp_path / "xdg" / "fireflyhpc" / "config.toml"
    with pytest.raises(ConfigError, match="config file not found: .*missing.toml"):
        cfg.load_config(str(tmp_path / "missing.toml"))


# -- precedence ------------------------------------------------------------------------

def test_resolve_precedence_flags_env_profile_defaults() -> None:
    profile = parse(GOOD).profile("mini")
    env = {"FIREFLYHPC_TIME": "3:00:00", "FIREFLYHPC_PARTITION": "short",
           "FIREFLYHPC_ACCOUNT": "", "UNRELATED": "x", "FIREFLYHPC_CPUS": "7"}
    flags = {"partition": "long", "cpus": None, "local_port": 8123}
    s = cfg.resolve(flags, env, profile)
    assert (s.partition, s.sources["partition"]) == ("long", "flag")           # flag > env
    assert (s.time, s.sources["time"]) == ("3:00:00", "FIREFLYHPC_TIME")       # env > profile
    assert (s.account, s.sources["account"]) == ("astro", "profile mini")      # empty env ignored
    assert (s.cpus, s.sources["cpus"]) == (2, "profile mini")                  # None flag; no env
    assert (s.job_name, s.sources["job_name"]) == ("fireflyhpc", "default")    # default
    assert (s.local_port, s.sources["local_port"]) == (8123, "flag")
    assert s.cluster == "mini" and s.login == "login1"
    assert s.setup == ("module load python", "source $HOME/venv/bin/activate")


def test_resolve_without_profile_uses_defaults() -> None:
    s = cfg.resolve({}, {}, None)
    assert s.cluster is None and s.login is None
    assert s.as_dict() == {**cfg.DEFAULTS, "cluster": None, "setup": []}
    assert s.port_range is None  # any free port on the node
    assert set(s.sources.values()) == {"default"}
    with pytest.raises(ConfigError, match="no cluster chosen"):
        s.require_login()


def test_resolve_validates_flags_and_env_naming_them() -> None:
    with pytest.raises(ConfigError, match=r"^--time = '1 hour': expected a Slurm time"):
        cfg.resolve({"time": "1 hour"}, {}, None)
    with pytest.raises(ConfigError, match=r"^FIREFLYHPC_PARTITION = 'a b': expected a name"):
        cfg.resolve({}, {"FIREFLYHPC_PARTITION": "a b"}, None)
    with pytest.raises(ConfigError, match=r"^--local-port = 70000: expected a TCP port"):
        cfg.resolve({"local_port": 70000}, {}, None)


def test_pick_profile_order() -> None:
    config = parse(GOOD)
    assert cfg.pick_profile(config, "other", {"FIREFLYHPC_CLUSTER": "mini"}).name == "other"
    assert cfg.pick_profile(config, None, {"FIREFLYHPC_CLUSTER": "other"}).name == "other"
    assert cfg.pick_profile(config, None, {}).name == "mini"
    assert cfg.pick_profile(cfg.Config(Path("x"), False), None, {}) is None
    with pytest.raises(ConfigError, match="unknown cluster 'zzz'"):
        cfg.pick_profile(config, None, {"FIREFLYHPC_CLUSTER": "zzz"})


# -- the CLI ---------------------------------------------------------------------------

def test_config_init_writes_commented_file_and_refuses_overwrite(tmp_path: Path,
                                                                 clean_env) -> None:
    target = tmp_path / "sub" / "ff.toml"
    first = run_cli("config", "init", str(target), env=clean_env)
    assert first.returncode == 0, first.stderr
    text = target.read_text()
    assert text == cfg.example_config_text() and text.count("\n#") > 20
    target.write_text("# mine\n")
    again = run_cli("config", "init", str(target), env=clean_env)
    assert one_error_line(again) == f"fireflyhpc: error: {target} exists already " \
                                    "(use --force to overwrite it)"
    assert again.returncode == 3 and target.read_text() == "# mine\n"
    forced = run_cli("config", "init", "--force", str(target), env=clean_env)
    assert forced.returncode == 0 and target.read_text() == cfg.example_config_text()


def test_config_init_default_path_follows_config_option(tmp_path: Path, clean_env) -> None:
    env = {**clean_env, "FIREFLYHPC_CONFIG": str(tmp_path / "env.toml")}
    assert run_cli("config", "path", env=env).stdout.strip() == str(tmp_path / "env.toml")
    assert run_cli("--config", str(tmp_path / "o.toml"), "config", "path",
                   env=env).stdout.strip() == str(tmp_path / "o.toml")
    assert run_cli("config", "init", env=env).returncode == 0
    assert (tmp_path / "env.toml").is_file()
    default = run_cli("config", "path", env=clean_env).stdout.strip()
    assert default == f"{clean_env['XDG_CONFIG_HOME']}/fireflyhpc/config.toml"


def test_config_show_reports_values_and_sources(tmp_path: Path, clean_env) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    env = {**clean_env, "FIREFLYHPC_TIME": "45"}
    proc = run_cli("--config", str(path), "config", "show", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    import json
    data = json.loads(proc.stdout)
    assert data["settings"]["cluster"] == "mini" and data["settings"]["time"] == "45"
    assert data["sources"]["time"] == "FIREFLYHPC_TIME"
    assert data["sources"]["partition"] == "profile mini"
    text = run_cli("--config", str(path), "config", "show", "--cluster", "other",
                   env=env).stdout
    assert "login       user@other.example" in text and "profile other" in text


@pytest.mark.parametrize("content,expected", [
    ('[clusters.a]\nlogin = \n', r"c\.toml:2: invalid TOML: "),
    ('[clusters.a]\ntime = "forever"\n', r"c\.toml:2: \[clusters\.a\] time = 'forever': expected"),
    ('[clusters.a]\nwhatever = 1\n', r"c\.toml:2: \[clusters\.a\] unknown key 'whatever'"),
    (b'\xff\xfe', r"c\.toml: not UTF-8 text"),
])
def test_bad_config_through_cli_is_one_line(tmp_path: Path, clean_env, content,
                                            expected: str) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for argv in (["config", "show"], ["templates", "render", "firefly"], ["alias", "--shell",
                                                                         "bash"]):
        proc = run_cli("--config", str(path), *argv, env=clean_env)
        import re
        assert re.search(expected, one_error_line(proc)), proc.stderr
        assert proc.returncode == 3


def test_unknown_cluster_through_cli(tmp_path: Path, clean_env) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    proc = run_cli("--config", str(path), "config", "show", "--cluster", "nope", env=clean_env)
    assert "unknown cluster 'nope'" in one_error_line(proc) and proc.returncode == 3


HOSTILE = ["a'; echo foo", "$(id)", "`id`", "x\ny", "a b", "-p", "../x", "*", "\0"]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("key", ["partition", "account", "time", "mem", "cpus", "python",
                                 "template", "job_name", "qos", "constraint"])
def test_hostile_values_are_refused_in_one_line(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.resolve({key: value}, {}, None)
    message = str(info.value)
    assert message.startswith(f"--{key.replace('_', '-')} = ") and "\n" not in message and "\0" not in message
    toml_value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
        .replace("\0", "\\u0000")
    with pytest.raises(ConfigError, match=rf"^/cfg/config.toml:2: \[clusters.a\] {key} = "):
        parse(f'[clusters.a]\n{key} = "{toml_value}"\n')


def test_cluster_name_with_newline_is_one_line() -> None:
    message = error_of('[clusters."a\\nb"]\nlogin = "x"\n')
    assert message.startswith("/cfg/config.toml") and "'a\\nb'" in message
