"""Real HTTP against a running payload: token, cookie, 403, traversal, Range,
304, content types, caching headers, keep-alive."""

from __future__ import annotations

import json
from email.utils import formatdate
from pathlib import Path

import pytest
from serverkit import GAS_BYTES, SECRET, LiveServer

from fireflyhpc.server.auth import cookie_name


def test_token_query_sets_cookie_and_redirects_to_clean_url(any_server: LiveServer) -> None:
    response, _ = any_server.request(f"/datasets.json?a=1&token={any_server.token}&b=2",
                                     auth=False)
    assert response.status == 303
    assert response.getheader("Location") == "./datasets.json?a=1&b=2"  # relative: any prefix
    cookie = response.getheader("Set-Cookie")
    assert cookie.startswith(f"{cookie_name(any_server.token)}={any_server.token};")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path=/", "samesite=strict"} <= attributes
    assert "no-store" in response.getheader("Cache-Control")

    name = cookie_name(any_server.token)
    response, body = any_server.request("/datasets.json", {"Cookie": f"{name}={any_server.token}"},
                                        auth=False)
    assert response.status == 200
    assert json.loads(body) == {"datasets": [{"name": "galaxy", "path": "data/galaxy/"}]}


def test_root_redirect_then_index(any_server: LiveServer) -> None:
    response, _ = any_server.request(f"/?token={any_server.token}", auth=False)
    assert (response.status, response.getheader("Location")) == (303, "./")
    response, body = any_server.request("/")
    assert response.status == 200 and b"<title>test app</title>" in body
    assert response.getheader("Content-Type").startswith("text/html")
    response, body = any_server.request("/app.js")
    assert response.status == 200 and body == b"console.log('app');\n"


@pytest.mark.parametrize("headers, path", [
    ({}, "/"),
    ({}, "/data/galaxy/Gas000.ffly"),
    ({"Authorization": "Bearer wrong"}, "/datasets.json"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "/datasets.json"),
    ({"Cookie": "fireflyhpc_0000000000000000=wrong"}, "/"),
    ({}, "/?token=wrong"),
    ({}, "/nonexistent"),
])
def test_missing_or_wrong_token_is_403_with_help(any_server: LiveServer,
                                                 headers: dict[str, str], path: str) -> None:
    response, body = any_server.request(path, headers, auth=False)
    assert response.status == 403
    assert response.getheader("Set-Cookie") is None
    assert b"Access token needed" in body and b"?token=" in body


def test_cookie_of_another_token_is_refused(any_server: LiveServer) -> None:
    other = "another-token-123456"
    response, _ = any_server.request("/", {"Cookie": f"{cookie_name(any_server.token)}={other}"},
                                     auth=False)
    assert response.status == 403


def test_bearer_header_works(any_server: LiveServer) -> None:
    response, body = any_server.request("/data/galaxy/Gas000.ffly", auth=True)
    assert response.status == 200 and body == GAS_BYTES


@pytest.mark.parametrize("path", [
    "/data/galaxy/../../secret.txt",
    "/data/galaxy/%2e%2e/%2e%2e/secret.txt",
    "/data/galaxy/%2E%2E%2F%2E%2E%2Fsecret.txt",
    "/data/galaxy/..%2f..%2fsecret.txt",
    "/data/../secret.txt",
    "/data/%2e%2e/secret.txt",
    "/%2e%2e/%2e%2e/secret.txt",
    "/../secret.txt",
    "/data/galaxy/escape",
    "/data/galaxy/escape_dir/secret.txt",
    "/data/galaxy//etc/passwd",
    "/data//etc/passwd",
    "/data/galaxy/%2fetc%2fpasswd",
    "//etc/passwd",
    "/data/galaxy/.hidden",
    "/data/galaxy/%2ehidden",
    "/data/galaxy/",
    "/data/galaxy",
    "/data/",
    "/data/stray.txt",
    "/data/sims/stray.txt",
    "/data/nosuch/Gas000.ffly",
    "/data/galaxy/Gas000.ffly%00.txt",
])
def test_nothing_outside_the_served_data_is_reachable(any_server: LiveServer, path: str) -> None:
    response, body = any_server.request(path)
    assert response.status == 404, path
    assert SECRET.encode() not in body


def test_symlink_inside_the_dataset_is_served(any_server: LiveServer) -> None:
    response, body = any_server.request("/data/galaxy/inside.ffly")
    assert response.status == 200 and body == GAS_BYTES


def test_content_types_and_caching(any_server: LiveServer) -> None:
    response, _ = any_server.request("/data/galaxy/Gas000.ffly")
    assert response.getheader("Content-Type") == "application/octet-stream"
    cache = response.getheader("Cache-Control")
    assert "private" in cache and "no-store" not in cache
    assert response.getheader("Accept-Ranges") == "bytes"
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    response, _ = any_server.request("/data/galaxy/filenames.json")
    assert response.getheader("Content-Type") == "application/json"
    response, _ = any_server.request("/datasets.json")
    assert response.getheader("Content-Type") == "application/json"


def test_range_requests(any_server: LiveServer) -> None:
    response, body = any_server.request("/data/galaxy/Gas000.ffly", {"Range": "bytes=100-355"})
    assert response.status == 206
    assert body == GAS_BYTES[100:356]
    assert response.getheader("Content-Range") == f"bytes 100-355/{len(GAS_BYTES)}"
    response, body = any_server.request("/data/galaxy/Gas000.ffly", {"Range": "bytes=-10"})
    assert response.status == 206 and body == GAS_BYTES[-10:]
    response, _ = any_server.request("/data/galaxy/Gas000.ffly",
                                     {"Range": f"bytes={len(GAS_BYTES) + 5}-"})
    assert response.status == 416
    assert response.getheader("Content-Range") == f"bytes */{len(GAS_BYTES)}"


def test_if_range_and_several_ranges(any_server: LiveServer) -> None:
    response, _ = any_server.request("/data/galaxy/Gas000.ffly")
    etag = response.getheader("ETag")
    response, body = any_server.request("/data/galaxy/Gas000.ffly",
                                        {"Range": "bytes=4-7", "If-Range": etag})
    assert response.status == 206 and body == GAS_BYTES[4:8]
    response, body = any_server.request("/data/galaxy/Gas000.ffly",
                                        {"Range": "bytes=4-7", "If-Range": '"stale"'})
    assert response.status == 200 and body == GAS_BYTES
    response, body = any_server.request("/data/galaxy/Gas000.ffly",
                                        {"Range": "bytes=0-1,4-5"})
    assert response.status == 200 and body == GAS_BYTES


def test_conditional_requests(any_server: LiveServer) -> None:
    response, _ = any_server.request("/data/galaxy/Gas000.ffly")
    etag, modified = response.getheader("ETag"), response.getheader("Last-Modified")
    assert etag and modified
    response, body = any_server.request("/data/galaxy/Gas000.ffly", {"If-None-Match": etag})
    assert response.status == 304 and body == b""
    response, body = any_server.request("/data/galaxy/Gas000.ffly", {"If-Modified-Since": modified})
    assert response.status == 304 and body == b""
    response, body = any_server.request("/data/galaxy/Gas000.ffly",
                                        {"If-None-Match": '"something-else"'})
    assert response.status == 200 and body == GAS_BYTES
    old = formatdate(0, usegmt=True)
    response, body = any_server.request("/data/galaxy/Gas000.ffly", {"If-Modified-Since": old})
    assert response.status == 200


def test_keep_alive_many_requests_on_one_connection(any_server: LiveServer) -> None:
    conn = any_server.connection()
    headers = {"Authorization": f"Bearer {any_server.token}"}
    try:
        conn.connect()
        first_sock = conn.sock
        local_port = first_sock.getsockname()[1]
        for i in range(100):
            path = "/data/galaxy/notes.txt" if i % 2 else "/datasets.json"
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            assert not response.will_close
            assert conn.sock is first_sock  # http.client reconnects silently otherwise
        assert first_sock.getsockname()[1] == local_port
    finally:
        conn.close()


def test_server_sees_one_connection_for_100_requests(live_server: LiveServer) -> None:
    conn = live_server.connection()
    headers = {"Authorization": f"Bearer {live_server.token}"}
    try:
        for _ in range(100):
            conn.request("GET", "/data/galaxy/Gas000.ffly", headers=headers)
            response = conn.getresponse()
            assert response.read() == GAS_BYTES
    finally:
        conn.close()
    assert len(live_server.remote_ports) == 100
    assert len(set(live_server.remote_ports)) == 1


@pytest.mark.parametrize("query", ["", "?v=2"])  # "" takes the fast path, "?v=2" Flask's route
def test_data_route_and_fast_path_answer_alike(any_server: LiveServer, query: str) -> None:
    response, body = any_server.request(f"/data/galaxy/Gas000.ffly{query}")
    assert response.status == 200 and body == GAS_BYTES
    assert response.getheader("Cache-Control") == "private, no-cache"
    assert response.getheader("Referrer-Policy") == "no-referrer"
    etag = response.getheader("ETag")
    response, body = any_server.request(f"/data/galaxy/Gas000.ffly{query}",
                                        {"If-None-Match": etag})
    assert response.status == 304
    response, body = any_server.request(f"/data/galaxy/Gas000.ffly{query}",
                                        {"Range": "bytes=0-0"})
    assert response.status == 206 and body == GAS_BYTES[:1]
    response, body = any_server.request(f"/data/galaxy/Gas000.ffly{query}", method="HEAD")
    assert response.status == 200 and body == b""
    assert response.getheader("Content-Length") == str(len(GAS_BYTES))
    response, body = any_server.request(f"/data/galaxy/../../secret.txt{query}")
    assert response.status == 404
    response, body = any_server.request(f"/data/galaxy/Gas000.ffly{query}", auth=False)
    assert response.status == 403


def test_cookie_works_on_the_fast_path(any_server: LiveServer) -> None:
    cookie = f"other=1; {cookie_name(any_server.token)}={any_server.token}; x=y"
    response, body = any_server.request("/data/galaxy/Gas000.ffly", {"Cookie": cookie},
                                        auth=False)
    assert response.status == 200 and body == GAS_BYTES


def test_file_gone_after_lookup_is_404_not_500(tmp_path: Path) -> None:
    from werkzeug.test import EnvironBuilder

    from fireflyhpc.server.files import send

    environ = EnvironBuilder(path="/data/x/gone.ffly").get_environ()
    assert send(str(tmp_path / "gone.ffly"), environ).status_code == 404
