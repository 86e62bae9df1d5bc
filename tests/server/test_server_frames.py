"""Notebook frames over real HTTP: minting a ticket needs the token in a header,
a ticket works once and leads to a per-frame key path, the key path serves the
whole URL layout (and nothing more), and no response opens CORS."""

from __future__ import annotations

import json

import pytest
from serverkit import GAS_BYTES, LiveServer

from fireflyhpc.server import frames
from fireflyhpc.server.auth import cookie_name


def mint(server: LiveServer) -> str:
    response, body = server.request("/_frame", method="POST")
    assert response.status == 200, body
    assert response.getheader("Content-Type") == "application/json"
    document = json.loads(body)
    assert document["param"] == "ticket" and document["expires_in"] == frames.TICKET_TTL
    return str(document["ticket"])


def key_of(location: str) -> str:
    assert location.startswith("_frame/"), location
    return location.split("/")[1]


def test_minting_needs_post_and_the_bearer_token(live_server: LiveServer) -> None:
    token = live_server.token
    assert token
    assert live_server.request("/_frame")[0].status == 405
    assert live_server.request("/_frame", method="POST", auth=False)[0].status == 403
    cookie = {"Cookie": f"{cookie_name(token)}={token}"}  # a browser's cookie is not enough
    assert live_server.request("/_frame", cookie, method="POST", auth=False)[0].status == 403
    wrong = {"Authorization": "Bearer nope"}
    assert live_server.request("/_frame", wrong, method="POST")[0].status == 403
    assert mint(live_server) != mint(live_server)


def test_a_ticket_works_once_and_leads_to_the_frame_path(any_server: LiveServer) -> None:
    ticket = mint(any_server)
    response, _ = any_server.request(f"/datasets.json?a=1&ticket={ticket}", auth=False)
    assert response.status == 303
    location = response.getheader("Location")
    assert location.endswith("/datasets.json?a=1") and "ticket" not in location
    assert response.getheader("Set-Cookie") is None and "no-store" in \
        response.getheader("Cache-Control")
    key = key_of(location)
    again, body = any_server.request(f"/?ticket={ticket}", auth=False)
    assert again.status == 403 and b"expired" in body
    response, body = any_server.request(f"/_frame/{key}/datasets.json", auth=False)
    assert response.status == 200
    assert json.loads(body) == {"datasets": [{"name": "galaxy", "path": "data/galaxy/"}]}


def test_the_frame_path_serves_the_app_and_data_only(any_server: LiveServer) -> None:
    response, _ = any_server.request(f"/?ticket={mint(any_server)}", auth=False)
    key = key_of(response.getheader("Location"))
    assert response.getheader("Location") == f"_frame/{key}/"
    base = f"/_frame/{key}"

    def get(path: str) -> tuple[int, bytes]:
        answer, body = any_server.request(base + path, auth=False)
        assert answer.getheader("Access-Control-Allow-Origin") is None
        assert answer.getheader("Referrer-Policy") == "no-referrer"
        return answer.status, body

    assert get("/")[0] == 200 and b"<title>test app</title>" in get("/")[1]
    assert get("/app.js")[0] == 200
    assert get("/data/galaxy/Gas000.ffly") == (200, GAS_BYTES)  # the fast path
    assert get("/data/galaxy/inside.ffly") == (200, GAS_BYTES)
    for escape in ("/data/galaxy/escape", "/data/galaxy/.hidden", "/data/galaxy/%2e%2e/stray.txt",
                   "/data/galaxy/escape_dir/secret.txt", "/../secret.txt"):
        assert get(escape)[0] == 404, escape
    slashless, _ = any_server.request(base, auth=False)
    assert (slashless.status, slashless.getheader("Location")) == (308, f"{key}/")
    for bad in (f"/_frame/{key[:-1]}/", "/_frame//datasets.json", "/_frame/x/"):
        answer, body = any_server.request(bad, auth=False)
        assert answer.status == 403 and b"expired" in body, bad
    # A request without any credential still meets the token check.
    assert any_server.request("/datasets.json", auth=False)[0].status == 403


def test_tickets_expire_and_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    passes = frames.FramePasses(ttl=10, clock=lambda: now[0])
    early, late = passes.mint(), passes.mint()
    key = passes.redeem(early)
    assert key and passes.valid_key(key) and passes.redeem(early) is None
    now[0] += 10.0
    assert passes.redeem(late) is None  # expired
    assert passes.valid_key(key)  # a frame's key outlives its ticket
    assert not passes.valid_key("x" * 43)
    monkeypatch.setattr(frames, "MAX_TICKETS", 3)
    monkeypatch.setattr(frames, "MAX_FRAMES", 2)
    tickets = [passes.mint() for _ in range(5)]
    assert [passes.redeem(t) is not None for t in tickets] == [False, False, True, True, True]
    assert not passes.valid_key(key)  # the least recently used key made room


def test_relative_locations_resolve_under_any_prefix() -> None:
    from urllib.parse import urljoin

    for path, target in (("/", "/_frame/K/"), ("/a/b", "/_frame/K/a/b"),
                         ("/a/", "/_frame/K/a/"), ("/a:b", "/_frame/K/a:b")):
        for prefix in ("", "/user/me/proxy/8001"):
            assert urljoin(f"http://h{prefix}{path}?ticket=t",
                           frames.relative_to(path, target)) == f"http://h{prefix}{target}"
