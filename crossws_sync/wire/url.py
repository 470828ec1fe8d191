"""Where the client connects and what it asks for, sans I/O.

* :func:`build_connect_url`: ``url`` + ``custom_params`` exactly as the original connector
  builds it (``URLSearchParams`` form encoding of ``String(value)``);
* :func:`parse_ws_url`: where to connect and what to ask for;
* :func:`header_pairs`: the validated extra headers of the upgrade request.

The upgrade request and the checks of its answer are in :mod:`crossws_sync.wire.handshake`.

Pure: no gevent, no sockets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from ..errors import ConfigError

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
    "Target",
    "build_connect_url",
    "header_pairs",
    "js_string",
    "parse_ws_url",
]
