"""An HTTP/1.1 request's header block as the WSGI server's handler needs it. Pure.

gevent's pywsgi parses request headers with the standard library's e-mail parser
(``http.client.parse_headers``): a feed parser, a policy object and a ``Message`` per request,
about a tenth of the server's CPU per accepted WebSocket. The upgrade handler has already read
and bounded the block (:class:`~crossws_sync.server.wsgi.UpgradeHandlerMixin`), so this module
splits it once into ``(name, value)`` pairs and answers the few questions pywsgi and gunicorn ask
(``get``, ``headers``, ``items``, ``typeheader``, ``getheader``, ``del``, ``status``).

Same results as the e-mail parser for what reaches it: the block is decoded as ISO-8859-1, the
first value of a repeated header is the one ``get`` returns, names keep their case and compare
without it, values lose the whitespace around them, and an obsolete line folding (a line that
starts with a space or a tab) continues the previous value, joined with one space (RFC 9112
§5.2).
"""
from __future__ import annotations

from typing import Iterator, List, NamedTuple, Optional, Tuple


class RequestHeaders:
    """The parsed header block of one request (what pywsgi keeps as ``handler.headers``).

    Attributes:
        status: always ``""`` (pywsgi refuses a request whose header parser set a status).
    """

    __slots__ = ("_pairs",)

    status = ""

    def __init__(self, pairs: List[Tuple[str, str]]) -> None:
        self._pairs = pairs

    @classmethod
    def parse(cls, block: bytes) -> "RequestHeaders":
        """Split a header block (the lines after the request line, up to and including the empty
        line, or without it) into headers.

        Raises:
            ValueError: a line is neither ``name: value`` nor a continuation, or a name is empty
                or holds whitespace.
        """
        pairs: List[Tuple[str, str]] = []
        for line in block.decode("latin-1").split("\n"):
            line = line.rstrip("\r")
            if not line:
                continue
            if line[0] in " \t":
                if not pairs:
                    raise ValueError("a header block that starts with a continuation line")
                name, value = pairs[-1]
                pairs[-1] = (name, (value + " " + line.strip()).strip())
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or " " in name or "\t" in name:
                raise ValueError("not a header line: %r" % line[:100])
            pairs.append((name, value.strip()))
        return cls(pairs)

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of header ``name`` (any case), else ``default``."""
        wanted = name.lower()
        for key, value in self._pairs:
            if key.lower() == wanted:
                return value
        return default

    getheader = get

    def get_all(self, name: str) -> List[str]:
        """Every value of header ``name`` (any case), in order."""
        wanted = name.lower()
        return [value for key, value in self._pairs if key.lower() == wanted]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __delitem__(self, name: str) -> None:
        """Remove every occurrence of ``name``; like ``email.message.Message``, no error when absent."""
        wanted = name.lower()
        self._pairs = [(key, value) for key, value in self._pairs if key.lower() != wanted]

    def items(self) -> List[Tuple[str, str]]:
        """The ``(name, value)`` pairs in the order received (gunicorn's access log)."""
        return list(self._pairs)

    def keys(self) -> List[str]:
        return [key for key, _ in self._pairs]

    def __len__(self) -> int:
        return len(self._pairs)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    @property
    def headers(self) -> Iterator[str]:
        """The headers as ``"Name: value\\r\\n"`` lines (pywsgi builds the environ from these)."""
        for key, value in self._pairs:
            yield "%s: %s\r\n" % (key, value)

    @property
    def typeheader(self) -> Optional[str]:
        """``Content-Type``, or ``None``."""
        return self.get("content-type")

    def __repr__(self) -> str:
        # Names only: values carry cookies and tokens.
        return "<RequestHeaders %s>" % ", ".join(self.keys())


class UpgradeHead(NamedTuple):
    """A whole WebSocket upgrade request head (see :func:`parse_upgrade_head`)."""

    length: int  #: bytes of the head, its empty line included
    requestline: str  #: ``"GET <target> HTTP/1.1"``
    target: str  #: the request target as sent (path and query, still %-encoded)
    headers: RequestHeaders


def parse_upgrade_head(data: bytes, max_header_bytes: int) -> Optional[UpgradeHead]:
    """The request head at the start of ``data`` when it is whole and a plain WebSocket upgrade
    request: ``GET <target> HTTP/1.1``, a header block of at most ``max_header_bytes`` (the
    request line excluded) that parses, ``Upgrade: websocket``, and no body
    (no ``Content-Length`` nor ``Transfer-Encoding``). ``None`` for anything else: partial,
    malformed or other requests are for the general HTTP reader, which answers their errors.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0 or not data.startswith(b"GET ") or b"websocket" not in data[:end].lower():
        return None
    line_end = data.find(b"\r\n")
    if end + 2 - line_end > max_header_bytes:
        return None
    words = data[:line_end].decode("latin-1").split()
    if len(words) != 3 or words[2] != "HTTP/1.1":
        return None
    try:
        headers = RequestHeaders.parse(data[line_end + 2:end + 2])
    except ValueError:
        return None
    upgrade = headers.get("upgrade")
    if upgrade is None or upgrade.lower() != "websocket" or "content-length" in headers \
            or "transfer-encoding" in headers:
        return None
    return UpgradeHead(end + 4, " ".join(words), words[1], headers)


__all__ = ["RequestHeaders", "UpgradeHead", "parse_upgrade_head"]
