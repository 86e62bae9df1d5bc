"""The value rules of fireflyhpc.validate that other modules build on: the one TCP
port parser and its one-line-error form."""

from __future__ import annotations

import pytest

from fireflyhpc import validate as v
from fireflyhpc.errors import ConfigError


@pytest.mark.parametrize("value, allow_zero, expected", [
    (22, False, 22), ("22", False, 22), (" 8080 ", False, 8080), ("65535", False, 65535),
    ("0", True, 0), (0, True, 0), ("00080", False, 80),
])
def test_port_accepts(value: object, allow_zero: bool, expected: int) -> None:
    assert v.port(value, allow_zero=allow_zero) == expected


@pytest.mark.parametrize("value", [0, "0", -1, 65536, "65536", "", "abc", "1e3", "0x50", "８０",
                                   True, 22.0, None, "123456"])
def test_port_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="expected a TCP port number from 1 to 65535"):
        v.port(value)


def test_parse_port_is_a_one_line_config_error_naming_the_value() -> None:
    with pytest.raises(ConfigError, match="^remote port = 'x': expected a TCP port number "
                                          "from 1 to 65535$"):
        v.parse_port("x", what="remote port")
    assert v.parse_port("0", what="local port", allow_zero=True) == 0
