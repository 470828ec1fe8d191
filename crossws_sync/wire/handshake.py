"""The WebSocket opening handshake (RFC 6455 §4), both roles, sans I/O.

* server: :func:`check_request` validates an upgrade request as §4.2.1 asks (a 400 or 426 with
  the reason otherwise) and :func:`accept_headers` builds the ``101`` answer's headers;
* client: :func:`handshake_request` builds the upgrade request and
  :func:`check_handshake_response` validates the server's ``101`` answer (§4.1).

Pure: no gevent, no sockets. The server side reads a WSGI ``environ`` (a plain dict).
"""
from __future__ import annotations

import base64
import binascii
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import HandshakeError
from .frames import accept_key
from .retry import parse_retry_after

#: Largest HTTP answer to the upgrade request.
MAX_HANDSHAKE_BYTES = 64 << 10

Headers = List[Tuple[str, str]]
#: A refused upgrade: (HTTP status, plain-text body, extra headers).
Refusal = Tuple[int, str, Headers]


# Server role ---------------------------------------------------------------------------------


def valid_key(key: str) -> bool:
    """Whether ``key`` is a ``Sec-WebSocket-Key``: 16 bytes in base64 (24 characters)."""
    try:
        return len(key) == 24 and len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def check_request(environ: Mapping[str, Any]) -> Optional[Refusal]:
    """``None`` when the WSGI ``environ`` is a valid upgrade request, else why not.

    Refused with 400: not GET, HTTP/1.0 or older, no ``Host``, no ``Connection: Upgrade``, no
    key or a key that is not 16 bytes in base64 (two keys arrive joined by a comma, which fails
    too); with 426 and ``Sec-WebSocket-Version: 13``: another protocol version.
    """
    if environ.get("REQUEST_METHOD") != "GET":
        return 400, "WebSocket upgrade needs GET", []
    if "upgrade" not in environ.get("HTTP_CONNECTION", "").lower():
        return 400, "missing Connection: Upgrade", []
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
        return 426, "unsupported WebSocket version", [("Sec-WebSocket-Version", "13")]
    if not environ.get("HTTP_SEC_WEBSOCKET_KEY"):
        return 400, "missing Sec-WebSocket-Key", []
    if environ.get("SERVER_PROTOCOL", "HTTP/1.1") in ("HTTP/1.0", "HTTP/0.9"):
        return 400, "WebSocket upgrade needs HTTP/1.1", []
    if not environ.get("HTTP_HOST"):
        return 400, "missing Host", []
    if not valid_key(environ["HTTP_SEC_WEBSOCKET_KEY"].strip()):
        return 400, "Sec-WebSocket-Key is not 16 bytes in base64", []
    return None


def accept_headers(environ: Mapping[str, Any], extensions: Optional[str] = None) -> Headers:
    """The ``101 Switching Protocols`` headers answering a request that :func:`check_request`
    accepted; ``extensions`` is the agreed ``Sec-WebSocket-Extensions`` value, if any."""
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(environ["HTTP_SEC_WEBSOCKET_KEY"].strip())),
    ]
    if extensions:
        headers.append(("Sec-WebSocket-Extensions", extensions))
    return headers


# Client role ---------------------------------------------------------------------------------


def handshake_request(resource: str, host_header: str, key: str, headers: Tuple[Tuple[str, str], ...]) -> bytes:
    """The bytes of the HTTP/1.1 upgrade request for ``resource`` (path and query).

    ``headers`` are validated extra headers; a ``Host`` among them replaces ``host_header``.
    """
    lines = ["GET %s HTTP/1.1" % resource]
    names = {name.lower() for name, _ in headers}
    if "host" not in names:
        lines.append("Host: %s" % host_header)
    lines += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: %s" % key,
              "Sec-WebSocket-Version: 13"]
    lines += ["%s: %s" % pair for pair in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def check_handshake_response(head: bytes, key: str, *, extensions_offered: bool = False) -> Optional[str]:
    """Raise :class:`HandshakeError` unless ``head`` is a valid ``101`` answer for ``key``.

    A refusal's ``Retry-After`` (``delay-seconds``) is kept in the error's ``retry_after``.

    Returns:
        the answer's ``Sec-WebSocket-Extensions`` value (``None`` without one); one is an error
        unless the client offered extensions.
    """
    text = head.decode("latin-1")
    status_line, _, rest = text.partition("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HandshakeError("invalid HTTP status line %r" % status_line[:100])
    status = int(parts[1])
    fields: Dict[str, str] = {}
    for line in rest.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    if status != 101:
        raise HandshakeError("server refused the WebSocket upgrade: HTTP %s" % " ".join(parts[1:]), status,
                             parse_retry_after(fields.get("retry-after")))
    if fields.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("101 answer without 'Upgrade: websocket'", status)
    if "upgrade" not in [token.strip().lower() for token in fields.get("connection", "").split(",")]:
        raise HandshakeError("101 answer without 'Connection: Upgrade'", status)
    if fields.get("sec-websocket-accept") != accept_key(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept in the 101 answer", status)
    extensions = fields.get("sec-websocket-extensions")
    if extensions and not extensions_offered:
        raise HandshakeError("server selected an extension the client did not offer", status)
    return extensions or None


__all__ = [
    "MAX_HANDSHAKE_BYTES",
    "accept_headers",
    "check_handshake_response",
    "check_request",
    "handshake_request",
    "valid_key",
]
