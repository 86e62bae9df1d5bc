"""Job templates: golden renders, strict placeholders, hostile values through real bash."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from connect_testutil import check_golden, one_error_line, run_cli

from fireflyhpc import config as cfg
from fireflyhpc.scheduler import templates as tpl
from fireflyhpc.errors import ConfigError

PROFILE = """\
[clusters.mini]
login = "login1"
partition = "debug"
account = "astro"
time = "2:00:00"
cpus = 2
mem = "1500M"
gpus = 2
setup = ["module load python/3.11", "source \\"$HOME/venvs/ff/bin/activate\\""]
python = "/opt/py/bin/python3"
"""

HOSTILE = ["a'; echo foo", "$(id)", "`id`", "x\ny", "a b", "\"; touch /tmp/pwned; \"", "*",
           "-rf", "${HOME}", "\\", "'", "a\0b", "é"]


def settings(text: str = PROFILE, cluster: str = "mini") -> cfg.ResolvedSettings:
    config = cfg.parse_config(text, Path("/cfg/config.toml"))
    return cfg.resolve({}, {}, config.profile(cluster))


def render(name: str, values: dict, user_dir: Path | None = None) -> str:
    template = tpl.find_template(name, user_dir)
    return tpl.render_template(template.text, values, name=template.name)


def bash_n(script: str) -> None:
    proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", ["firefly", "firefly-gpu", "firefly-env"])
def test_shipped_templates_render_like_golden_files(name: str) -> None:
    text = render(name, tpl.template_values(settings()))
    check_golden(f"{name}.sbatch", text)
    bash_n(text)
    assert "{{" not in text and "}}" not in text


def test_unset_optional_directives_are_left_out() -> None:
    values = tpl.template_values(settings('[clusters.mini]\nlogin = "l"\n'))
    text = render("firefly-gpu", values)
    check_golden("firefly-gpu-minimal.sbatch", text)
    for directive in ("--partition", "--account", "--qos", "--constraint", "--mem", "--gres"):
        assert f"#SBATCH {directive}" not in text
    assert "#SBATCH --time=1:00:00" in text and "#SBATCH --cpus-per-task=1" in text


def test_every_shipped_template_lists_and_is_bash_valid() -> None:
    names = [t.name for t in tpl.list_templates(None)]
    assert {"firefly", "firefly-gpu", "firefly-env"} <= set(names)
    for name in names:
        bash_n(render(name, tpl.template_values(settings())))


def test_unknown_placeholder_names_template_line_and_placeholder() -> None:
    text = "#!/bin/bash\n#SBATCH --time={{ time }}\necho {{ colour }}\n"
    with pytest.raises(ConfigError, match=r"^template t line 3: unknown placeholder "
                                          r"\{\{ colour \}\}; known: cluster, "):
        tpl.render_template(text, {"time": "10"}, name="t")


@pytest.mark.parametrize("line,message", [
    ("echo {{ time", r"line 2: malformed placeholder \(unmatched"),
    ("echo {{ 1x }}", r"line 2: malformed placeholder \{\{ 1x \}\}"),
    ("echo {{ python }}", r"line 2: \{\{ python \}\} has no value \(set it in the cluster "
                          r"profile or with --set python=VALUE\)"),
    ("#SBATCH --x={{ setup }}", r"line 2: \{\{ setup \}\} cannot be used on an #SBATCH line"),
    ("echo a; {{ setup }}", r"line 2: \{\{ setup \}\} must stand alone on its line"),
    ("#SBATCH --chdir={{ workdir }}", r"line 2: \{\{ workdir \}\} = 'a b': cannot stand on an "
                                      r"#SBATCH line"),
])
def test_template_errors(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tpl.render_template(f"#!/bin/bash\n{line}\n", {"setup": ["x"], "workdir": "a b"},
                            name="t")


def test_setup_lines_keep_indent_and_vanish_when_empty() -> None:
    text = "#!/bin/bash\nif true; then\n    {{ setup }}\n    :\nfi\n"
    assert tpl.render_template(text, {"setup": ["module load a", "conda activate b"]}) == \
        "#!/bin/bash\nif true; then\n    module load a\n    conda activate b\n    :\nfi\n"
    assert tpl.render_template(text, {"setup": []}) == "#!/bin/bash\nif true; then\n    :\nfi\n"


HOSTILE_TEMPLATE = """\
#!/bin/bash
#SBATCH --job-name={{ job_name }}
#SBATCH --chdir={{ workdir }}
printf '<%s>\\n' {{ workdir }}
printf '<%s>\\n' {{ python }}
"""


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_arrive_verbatim_in_the_body_or_are_rejected(value: str,
                                                                    tmp_path: Path) -> None:
    """Free text is quoted in the body and then printed back by real bash, byte for byte;
    on an #SBATCH line, or for a strict kind, the same value is refused with one line."""
    body_only = HOSTILE_TEMPLATE.replace("#SBATCH --chdir={{ workdir }}\n", "")
    values = {"job_name": "ok", "python": "python3", "workdir": value}
    try:
        script = tpl.render_template(body_only, values, name="hostile")
    except ConfigError as exc:
        assert "\n" in value or "\0" in value or "\r" in value, exc
        assert str(exc).startswith("template hostile line 3: {{ workdir }} = ")
        assert "\n" not in str(exc)
    else:
        bash_n(script)
        proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                              timeout=30, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"<{value}>\n<python3>\n"
        assert list(tmp_path.iterdir()) == []  # nothing was executed, nothing created
    # On an #SBATCH line nothing is quoted: only harmless characters get through.
    try:
        script = tpl.render_template(HOSTILE_TEMPLATE, {**values, "workdir": value},
                                     name="hostile")
    except ConfigError as exc:
        assert str(exc).startswith("template hostile line 3: {{ workdir }} = "), exc
    else:
        assert value in ("*", "-rf")  # no space, quote, $, `, ; or newline: sbatch-safe
        assert f"#SBATCH --chdir={value}\n" in script
    # Strict kinds refuse every one of these values, wherever they stand.
    for key, text in (("job_name", HOSTILE_TEMPLATE), ("python", body_only)):
        with pytest.raises(ConfigError, match=r"^template hostile line \d: \{\{ " + key):
            tpl.render_template(text, {**values, "workdir": "w", key: value}, name="hostile")


def test_user_template_overrides_shipped(tmp_path: Path) -> None:
    (tmp_path / "firefly.sbatch").write_text("#!/bin/bash\n#SBATCH --time={{ time }}\nhostname\n")
    (tmp_path / "mine.sbatch").write_text("#!/bin/bash\necho {{ cluster }}\n")
    found = tpl.find_template("firefly", tmp_path)
    assert found.origin == "user" and found.path == tmp_path / "firefly.sbatch"
    listing = {t.name: t.origin for t in tpl.list_templates(tmp_path)}
    assert listing["firefly"] == "user" and listing["mine"] == "user"
    assert listing["firefly-gpu"] == "shipped"
    with pytest.raises(ConfigError, match="no template called 'nope'; known templates: firefly, "):
        tpl.find_template("nope", tmp_path)
    with pytest.raises(ConfigError, match="template '../x': expected a template name"):
        tpl.find_template("../x", tmp_path)


def test_set_overrides_and_rejects_unknown_keys() -> None:
    values = tpl.template_values(settings(), tpl.parse_assignments(["time=45", "partition=x"]))
    assert values["time"] == "45" and values["partition"] == "x"
    with pytest.raises(ConfigError, match=r"--set colour: unknown placeholder"):
        tpl.template_values(settings(), {"colour": "red"})
    with pytest.raises(ConfigError, match=r"--set 'time': expected KEY=VALUE"):
        tpl.parse_assignments(["time"])


# -- CLI -------------------------------------------------------------------------------

@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "conf" / "config.toml"
    path.parent.mkdir()
    path.write_text(PROFILE)
    return path


def test_cli_render_matches_golden(config_file: Path, clean_env) -> None:
    proc = run_cli("--config", str(config_file), "templates", "render", "firefly",
                   "--cluster", "mini", env=clean_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (Path(__file__).parent / "golden" / "firefly.sbatch").read_text()


def test_cli_list_show_and_user_override(config_file: Path, clean_env) -> None:
    user = config_file.parent / "templates"
    user.mkdir()
    (user / "firefly.sbatch").write_text("#!/bin/bash\n#SBATCH --time={{ time }}\nhostname\n")
    listing = run_cli("--config", str(config_file), "templates", "list", env=clean_env).stdout
    assert f"firefly              user     {user / 'firefly.sbatch'}" in listing
    assert "firefly-gpu          shipped" in listing
    shown = run_cli("--config", str(config_file), "templates", "show", "firefly", env=clean_env)
    assert shown.stdout == "#!/bin/bash\n#SBATCH --time={{ time }}\nhostname\n"
    rendered = run_cli("--config", str(config_file), "templates", "render", "firefly",
                       "--cluster", "mini", "--set", "time=5", env=clean_env)
    assert rendered.stdout == "#!/bin/bash\n#SBATCH --time=5\nhostname\n"


@pytest.mark.parametrize("args,expected", [
    (["render", "firefly", "--set", "time=forever"], "template firefly line 13: {{ time }} = "
                                                     "'forever': expected a Slurm time limit"),
    (["render", "firefly", "--set", "partition=a'; echo foo"],
     "template firefly line 9: {{ partition }} = \"a'; echo foo\": expected a name"),
    (["render", "firefly", "--set", "colour=red"], "--set colour: unknown placeholder"),
    (["render", "firefly", "--set", "oops"], "--set 'oops': expected KEY=VALUE"),
    (["render", "broken"], "template broken line 2: unknown placeholder {{ nodes }}"),
    (["show", "nope"], "no template called 'nope'"),
    (["render", "firefly", "--cluster", "zzz"], "unknown cluster 'zzz'"),
])
def test_cli_bad_input_is_one_line(config_file: Path, clean_env, args: list[str],
                                   expected: str) -> None:
    user = config_file.parent / "templates"
    user.mkdir()
    (user / "broken.sbatch").write_text("#!/bin/bash\n#SBATCH --nodes={{ nodes }}\n")
    proc = run_cli("--config", str(config_file), "templates", *args, env=clean_env)
    line = one_error_line(proc)
    assert expected in line, line
    assert proc.returncode == 3
    assert proc.stdout == ""
