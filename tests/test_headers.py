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


HEAD = (b"GET /ws?id=1 HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def test_a_whole_upgrade_head_is_parsed_with_its_length_target_and_headers() -> None:
    from crossws_sync.wire.headers import parse_upgrade_head

    head = parse_upgrade_head(HEAD + b"\x81\x00", 32768)
    assert head is not None
    assert head.length == len(HEAD) and head.target == "/ws?id=1"
    assert head.requestline == "GET /ws?id=1 HTTP/1.1" and head.headers.get("upgrade") == "WebSocket"


@pytest.mark.parametrize("data, why", [
    (HEAD[:-2], "no empty line yet: partial"),
    (HEAD.replace(b"GET ", b"POST ", 1), "not GET"),
    (HEAD.replace(b"HTTP/1.1", b"HTTP/1.0", 1), "HTTP/1.0"),
    (HEAD.replace(b"GET /ws?id=1 ", b"GET /a b ", 1), "four words in the request line"),
    (HEAD.replace(b"Upgrade: WebSocket", b"Upgrade: h2c", 1), "another protocol"),
    (HEAD.replace(b"Upgrade: WebSocket", b"X-Note: websocket", 1), "the word, not the header"),
    (HEAD.replace(b"Host: x\r\n", b"Host: x\r\nContent-Length: 5\r\n", 1), "a body"),
    (HEAD.replace(b"Host: x\r\n", b"Transfer-Encoding: chunked\r\n", 1), "a chunked body"),
    (HEAD.replace(b"Host: x\r\n", b"no colon\r\n", 1), "a malformed line"),
])
def test_anything_but_a_whole_plain_upgrade_head_is_left_to_the_general_reader(data: bytes, why: str) -> None:
    from crossws_sync.wire.headers import parse_upgrade_head

    assert parse_upgrade_head(data, 32768) is None, why


def test_a_header_block_over_the_cap_is_left_to_the_general_reader_which_answers_431() -> None:
    from crossws_sync.wire.headers import parse_upgrade_head

    block = len(HEAD) - len(b"GET /ws?id=1 HTTP/1.1\r\n")
    assert parse_upgrade_head(HEAD, block) is not None
    assert parse_upgrade_head(HEAD, block - 1) is None
