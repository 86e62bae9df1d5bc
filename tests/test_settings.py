"""fireflyhpc.settings: the one table from a setting's name to its validator, which
cluster profiles, flag-only settings and job-template placeholders share."""

from __future__ import annotations

import pytest

from fireflyhpc import config as cfg
from fireflyhpc.errors import ConfigError
from fireflyhpc.scheduler import templates as tpl
from fireflyhpc.settings import HOPS, SETTINGS, SSH_BACKENDS
from fireflyhpc.tunnel.request import TunnelRequest


def test_login_setting_accepts_every_form_and_keeps_it_as_written() -> None:
    for text in ("h", "u@h", "h:2222", "u@h:2222", "[::1]:22"):
        profile = cfg.parse_profile("c", {"login": text}, "<t>")
        assert cfg.resolve({}, {}, profile).login == text
        assert cfg.resolve({"login": text}, {}, None).login == text
    with pytest.raises(ConfigError, match=r"^<t>: \[clusters.c\] login = 'u@h:x': expected"):
        cfg.parse_profile("c", {"login": "u@h:x"}, "<t>")


def test_profile_keys_flags_and_placeholders_share_one_table() -> None:
    tables = {**cfg.PROFILE_KEYS, **cfg.FLAG_ONLY_KEYS, **tpl.PLACEHOLDERS}
    for name, validator in tables.items():
        assert validator is SETTINGS[name], name
    assert set(cfg.PROFILE_KEYS) & set(tpl.PLACEHOLDERS) >= {"partition", "time", "setup",
                                                             "python", "job_name"}


def test_a_value_refused_in_a_profile_is_refused_in_a_template() -> None:
    with pytest.raises(ConfigError, match="partition = 'a;b'"):
        cfg.parse_profile("c", {"partition": "a;b"}, "<t>")
    with pytest.raises(ConfigError, match=r"\{\{ partition \}\} = 'a;b'"):
        tpl.render_template("#SBATCH -p {{ partition }}\n", {"partition": "a;b"})
    with pytest.raises(ConfigError, match=r"\[clusters.'a b'\]: expected a cluster name"):
        cfg.parse_profile("a b", {}, "<t>")
    with pytest.raises(ConfigError, match=r"\{\{ cluster \}\} = 'a b'"):
        tpl.render_template("#SBATCH --comment={{ cluster }}\n", {"cluster": "a b"})


def test_the_tunnel_takes_the_hops_and_backends_a_profile_takes() -> None:
    for hop in HOPS:
        assert SETTINGS["hop"](hop) == hop
        assert TunnelRequest("node1", 80, "login1", hop=hop).validated().hop == hop
    for backend in SSH_BACKENDS:
        assert SETTINGS["ssh"](backend) == backend
        assert TunnelRequest("node1", 80, "login1", backend=backend).validated()
    with pytest.raises(ValueError, match="expected 'auto' or 'ssh' or 'direct'"):
        SETTINGS["hop"]("jump")
    with pytest.raises(ConfigError, match="^hop must be one of auto, ssh, direct, not 'jump'$"):
        TunnelRequest("node1", 80, "login1", hop="jump").validated()
    with pytest.raises(ConfigError, match="^backend must be one of auto, openssh, paramiko"):
        TunnelRequest("node1", 80, "login1", backend="putty").validated()
