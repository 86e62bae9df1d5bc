"""The file answer's pure parts: Range parsing and the 200/206/304/416 decision."""

from __future__ import annotations

import os
from email.utils import formatdate

import pytest

from fireflyhpc.server.files import etag_of, parse_range, plan_answer


@pytest.mark.parametrize("header,size,expected", [
    ("bytes=0-0", 10, (0, 1)),
    ("bytes=2-5", 10, (2, 4)),
    ("bytes=2-", 10, (2, 8)),
    ("bytes=2-999", 10, (2, 8)),       # the end is clipped to the file
    ("bytes=-3", 10, (7, 3)),          # the last 3 bytes
    ("bytes=-30", 10, (0, 10)),        # more than the file: all of it
    ("bytes= 1 - 2 ", 10, (1, 2)),
    ("BYTES=1-2", 10, (1, 2)),
    ("bytes=10-", 10, False),          # starts past the end: 416
    ("bytes=-0", 10, False),
    ("bytes=0-", 0, False),            # nothing to give from an empty file
    ("bytes=5-2", 10, None),           # malformed: ignored, the whole file is sent
    ("bytes=0-1,4-5", 10, None),       # several ranges: the whole file
    ("bytes=a-b", 10, None),
    ("bytes=-", 10, None),
    ("bytes=5", 10, None),
    ("items=0-1", 10, None),
])
def test_parse_range(header, size, expected) -> None:
    assert parse_range(header, size) == expected


def stat_of(tmp_path, data: bytes = b"0123456789") -> os.stat_result:
    path = tmp_path / "f.ffly"
    path.write_bytes(data)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    return os.stat(path)


def test_plain_get_is_200_with_validators(tmp_path) -> None:
    st = stat_of(tmp_path)
    answer = plan_answer({}, st, "application/octet-stream")
    headers = dict(answer.headers)
    assert answer.status == "200 OK" and (answer.start, answer.length) == (0, 10)
    assert headers["ETag"] == etag_of(st) and headers["Content-Length"] == "10"
    assert headers["Last-Modified"] == formatdate(1_700_000_000, usegmt=True)
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Cache-Control"] == "private, no-cache"


def test_conditional_answers(tmp_path) -> None:
    st = stat_of(tmp_path)
    etag, modified = etag_of(st), formatdate(1_700_000_000, usegmt=True)
    for environ in ({"HTTP_IF_NONE_MATCH": etag}, {"HTTP_IF_NONE_MATCH": f'"x", W/{etag}'},
                    {"HTTP_IF_NONE_MATCH": "*"}, {"HTTP_IF_MODIFIED_SINCE": modified}):
        answer = plan_answer(environ, st, "text/plain")
        assert answer.status == "304 Not Modified" and answer.length == 0, environ
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
    answer = plan_answer({"HTTP_IF_NONE_MATCH": '"other"', "HTTP_IF_MODIFIED_SINCE": modified},
                         st, "text/plain")
    assert answer.status == "200 OK"
    for since in (formatdate(0, usegmt=True), "not a date"):
        assert plan_answer({"HTTP_IF_MODIFIED_SINCE": since}, st, "x").status == "200 OK"


def test_range_answers(tmp_path) -> None:
    st = stat_of(tmp_path)
    answer = plan_answer({"HTTP_RANGE": "bytes=2-5"}, st, "x")
    assert answer.status == "206 Partial Content" and (answer.start, answer.length) == (2, 4)
    assert dict(answer.headers)["Content-Range"] == "bytes 2-5/10"
    answer = plan_answer({"HTTP_RANGE": "bytes=20-"}, st, "x")
    assert answer.status == "416 Range Not Satisfiable" and answer.length == 0
    assert dict(answer.headers)["Content-Range"] == "bytes */10"
    # If-Range: the range only if the client's copy is the current one.
    current = plan_answer({"HTTP_RANGE": "bytes=2-5", "HTTP_IF_RANGE": etag_of(st)}, st, "x")
    assert current.status == "206 Partial Content"
    stale = plan_answer({"HTTP_RANGE": "bytes=2-5", "HTTP_IF_RANGE": '"old"'}, st, "x")
    assert stale.status == "200 OK" and stale.length == 10
