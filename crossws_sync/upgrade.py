"""The client side of the WebSocket upgrade, sans I/O.

* :func:`build_connect_url`: ``url`` + ``custom_params`` exactly as the original connector
  builds it (``URLSearchParams`` form encoding of ``String(value)``);
* :func:`parse_ws_url`: where to connect and what to ask for;
* :func:`handshake_request` / :func:`check_handshake_response`: the HTTP/1.1 upgrade (RFC 6455
  §4.1) and the checks of the server's ``101`` answer.

Pure: no gevent, no sockets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from . import frames
from .errors import ConfigError, HandshakeError

#: Largest HTTP answer to the upgrade request.
MAX_HANDSHAKE_BYTES = 64 << 10
_RESERVED_HEADERS = frozenset({"upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
                               "sec-websocket-accept", "sec-websocket-extensions"})


def _js_number(value: float) -> str:
    """``String(number)`` of JavaScript for a float (shortest round-trip digits, JS exponent rules)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    digits_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()[1:]
    digits = "".join(map(str, digits_tuple))
    k = len(digits)
    n = k + int(exponent)  # value = 0.digits * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        exp = n - 1
        mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
        text = "%se%s%d" % (mantissa, "+" if exp >= 0 else "-", abs(exp))
    return sign + text


def js_string(value: Any) -> str:
    """Return what JavaScript's ``String(value)`` gives for the JSON-like ``value``.

    ``True`` -> ``"true"``, ``None`` -> ``"null"``, ``1.0`` -> ``"1"``, lists are joined with
    ``","`` (``None`` items become empty), dicts become ``"[object Object]"``.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _js_number(value)
    if isinstance(value, (list, tuple)):
        return ",".join("" if item is None else js_string(item) for item in value)
    if isinstance(value, Mapping):
        return "[object Object]"
    return str(value)


_FORM_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789*-._")


def _form_encode(text: str) -> str:
    # WHATWG application/x-www-form-urlencoded (what URLSearchParams.toString() produces):
    # unlike urllib's quote_plus, "~" is escaped. Lone surrogates become U+FFFD like in JS.
    raw = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")
    out = []
    for byte in raw:
        if byte in _FORM_SAFE:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append("%%%02X" % byte)
    return "".join(out)


def build_connect_url(url: str, custom_params: Optional[Mapping[Any, Any]] = None) -> str:
    """Return ``url`` with ``custom_params`` appended exactly as the original connector does.

    Each pair becomes ``key=String(value)`` in ``URLSearchParams`` form encoding, joined to the
    URL with ``&`` when it already contains ``?``, else with ``?``.
    """
    if not custom_params:
        return url
    query = "&".join("%s=%s" % (_form_encode(js_string(key)), _form_encode(js_string(value)))
                     for key, value in custom_params.items())
    return url + ("&" if "?" in url else "?") + query


@dataclass(frozen=True)
class Target:
    """Where a ``ws://`` / ``wss://`` URL points: TLS or not, address, request target, ``Host``."""

    secure: bool
    host: str
    port: int
    resource: str
    host_header: str


def parse_ws_url(url: str) -> Target:
    """Split a ``ws://`` / ``wss://`` URL.

    Raises:
        ConfigError: empty, another scheme, no host, a bad port or a fragment.
    """
    if not isinstance(url, str) or not url:
        raise ConfigError("url is required: a complete ws:// or wss:// address such as ws://127.0.0.1:9000/path")
    try:
        parts = urlsplit(url)
        explicit_port = parts.port
    except ValueError as exc:
        raise ConfigError("invalid url %r: %s" % (url, exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ConfigError("url must start with ws:// or wss://, got %r" % (url,))
    if not parts.hostname:
        raise ConfigError("url has no host: %r" % (url,))
    if parts.fragment or url.endswith("#"):
        raise ConfigError("a WebSocket url cannot contain a fragment (#...): %r" % (url,))
    secure = scheme == "wss"
    default_port = 443 if secure else 80
    port = explicit_port or default_port
    host = parts.hostname
    host_header = "[%s]" % host if ":" in host else host
    if port != default_port:
        host_header += ":%d" % port
    resource = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    return Target(secure, host, port, resource, host_header)


def handshake_request(target: Target, key: str, headers: Tuple[Tuple[str, str], ...]) -> bytes:
    """Return the bytes of the HTTP/1.1 upgrade request (``headers`` come from :func:`header_pairs`)."""
    lines = ["GET %s HTTP/1.1" % target.resource]
    names = {name.lower() for name, _ in headers}
    if "host" not in names:
        lines.append("Host: %s" % target.host_header)
    lines += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: %s" % key,
              "Sec-WebSocket-Version: 13"]
    lines += ["%s: %s" % pair for pair in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def check_handshake_response(head: bytes, key: str, *, extensions_offered: bool = False) -> Optional[str]:
    """Raise :class:`HandshakeError` unless ``head`` is a valid ``101`` answer for ``key``.

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
    if status != 101:
        raise HandshakeError("server refused the WebSocket upgrade: HTTP %s" % " ".join(parts[1:]), status)
    fields: Dict[str, str] = {}
    for line in rest.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    if fields.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("101 answer without 'Upgrade: websocket'", status)
    if "upgrade" not in [token.strip().lower() for token in fields.get("connection", "").split(",")]:
        raise HandshakeError("101 answer without 'Connection: Upgrade'", status)
    if fields.get("sec-websocket-accept") != frames.accept_key(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept in the 101 answer", status)
    extensions = fields.get("sec-websocket-extensions")
    if extensions and not extensions_offered:
        raise HandshakeError("server selected an extension the client did not offer", status)
    return extensions or None


def header_pairs(headers: Any) -> Tuple[Tuple[str, str], ...]:
    """Validate extra upgrade headers (a mapping or ``(name, value)`` pairs) into a tuple of pairs.

    Raises:
        ConfigError: not a mapping / pairs, a name or value that could split the request, or a
            header the client sets itself (``Upgrade``, ``Connection``, ``Sec-WebSocket-*``).
    """
    if headers is None:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    pairs = []
    try:
        for name, value in items:
            name, value = str(name), str(value)
            if not name or any(c in name for c in ":\r\n ") or "\r" in value or "\n" in value:
                raise ConfigError("invalid header %r" % (name,))
            if name.lower() in _RESERVED_HEADERS:
                raise ConfigError("header %r is set by the client itself" % (name,))
            pairs.append((name, value))
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError("headers must be a mapping or an iterable of (name, value) pairs") from None
    return tuple(pairs)


__all__ = [
    "MAX_HANDSHAKE_BYTES",
    "Target",
    "build_connect_url",
    "check_handshake_response",
    "handshake_request",
    "header_pairs",
    "js_string",
    "parse_ws_url",
]
