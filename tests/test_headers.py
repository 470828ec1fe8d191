"""crossws_sync.wire.headers: the request header block, compared with the e-mail parser pywsgi used."""
from __future__ import annotations

import io
from http import client

import pytest

from crossws_sync.wire.headers import RequestHeaders

UPGRADE = (b"Host: 127.0.0.1:8000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           b"Cookie: a=1\r\ncookie: b=2\r\nX-Odd:   spaced value  \r\nContent-Type: text/plain\r\n\r\n")


def _email(block: bytes) -> client.HTTPMessage:
    return client.parse_headers(io.BytesIO(block))


def test_the_same_answers_as_the_email_parser_for_an_upgrade_request() -> None:
    ours, theirs = RequestHeaders.parse(UPGRADE), _email(UPGRADE)
    for name in ("host", "HOST", "Upgrade", "sec-websocket-key", "Cookie", "x-odd", "missing"):
        # theirs keeps trailing whitespace (pywsgi strips it for the environ); RFC 9112 drops it
        assert ours.get(name) == (theirs.get(name).rstrip() if theirs.get(name) else None), name
    assert ours.get_all("cookie") == theirs.get_all("cookie") == ["a=1", "b=2"]
    assert ours.items() == [(k, v.strip()) for k, v in theirs.items()]
    assert ours.typeheader == ours.getheader("content-type") == "text/plain"
    assert ours.status == ""
    assert "upgrade" in ours and "nope" not in ours and len(ours) == 9


def test_headers_lines_are_what_pywsgi_builds_the_environ_from() -> None:
    lines = list(RequestHeaders.parse(b"A: 1\r\nB-C: two words\r\n\r\n").headers)
    assert lines == ["A: 1\r\n", "B-C: two words\r\n"]


def test_delete_removes_every_occurrence_and_ignores_absent_names() -> None:
    headers = RequestHeaders.parse(b"Content-Length: 3\r\ncontent-length: 4\r\nA: b\r\n")
    del headers["CONTENT-LENGTH"]
    del headers["not-there"]
    assert headers.items() == [("A", "b")]


def test_an_obsolete_line_folding_continues_the_value_with_one_space() -> None:
    headers = RequestHeaders.parse(b"X-Long: first\r\n  second\r\n\tthird\r\nY: 1\r\n\r\n")
    assert headers.get("x-long") == "first second third" and headers.get("y") == "1"


def test_bytes_are_decoded_as_latin1_like_http_client() -> None:
    block = "X-Name: caf\u00e9\r\n\r\n".encode("latin-1")
    assert RequestHeaders.parse(block).get("x-name") == _email(block).get("x-name") == "caf\u00e9"


def test_bare_lf_line_ends_are_accepted() -> None:
    assert RequestHeaders.parse(b"A: 1\nB: 2\n\n").items() == [("A", "1"), ("B", "2")]


@pytest.mark.parametrize("block", [b"no colon\r\n", b": empty name\r\n", b"Name : space before colon\r\n",
                                   b"Two words: x\r\n", b" starts folded\r\n"])
def test_malformed_lines_raise_value_error(block: bytes) -> None:
    with pytest.raises(ValueError):
        RequestHeaders.parse(block)


def test_repr_names_headers_but_never_values() -> None:
    text = repr(RequestHeaders.parse(b"Cookie: secret=1\r\n"))
    assert "Cookie" in text and "secret" not in text
