"""The upgrade request as seen by handlers, and ``parse_ws_request_params``. Pure.

:class:`Request` is what the ``connection`` event and the auth hook receive in place of Node's
``req``: ``url`` is the request target (path and query, like ``req.url``), ``headers`` a dict with
lower-case names, plus the WSGI ``environ`` for anything else.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Mapping, Optional, Union
from urllib.parse import parse_qsl, quote, unquote, urlsplit

#: Variables whose values are usually the same for many clients (the server's own, the method,
#: the client's software, the WebSocket handshake's fixed headers). :meth:`Request.slim` keeps
#: one shared copy of each such value, so thousands of idle connections do not keep thousands.
SHARED_VALUES = frozenset({
    "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "SERVER_SOFTWARE", "GATEWAY_INTERFACE", "SCRIPT_NAME",
    "REQUEST_METHOD", "PATH_INFO", "REMOTE_ADDR", "HTTP_HOST", "HTTP_UPGRADE", "HTTP_CONNECTION",
    "HTTP_SEC_WEBSOCKET_VERSION", "HTTP_SEC_WEBSOCKET_EXTENSIONS", "HTTP_SEC_WEBSOCKET_PROTOCOL", "HTTP_ORIGIN",
    "HTTP_USER_AGENT", "HTTP_ACCEPT_ENCODING", "HTTP_ACCEPT_LANGUAGE", "HTTP_CACHE_CONTROL", "HTTP_PRAGMA",
    "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP",
})
#: Longer values are kept as they are (interning is for the short, repeated ones).
_SHARED_MAX_LENGTH = 512


class Request:
    """The HTTP request that opened (or tries to open) a WebSocket.

    Attributes:
        url: path plus ``?query`` as sent by the client (Node's ``req.url``).
        path: the decoded path (``/chat``).
        query_string: the raw query string, without ``?``.
        method: the HTTP method.
        remote_addr: the peer address as a string.
        environ: the WSGI environ of the request.
    """

    __slots__ = ("environ", "url", "path", "query_string", "method", "remote_addr", "_headers")

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self.environ = environ
        self._headers: Optional[Dict[str, str]] = None
        self._read(environ)

    def _read(self, environ: Mapping[str, Any]) -> None:
        self.path = environ.get("PATH_INFO", "") or "/"
        self.query_string = environ.get("QUERY_STRING", "") or ""
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        if not raw:
            native = environ.get("SCRIPT_NAME", "") + self.path
            try:
                # PEP 3333: PATH_INFO holds the request's bytes decoded as latin-1; re-encoding as
                # UTF-8 would double-encode every non-ASCII byte (/caf%C3%A9 -> /caf%C3%83%C2%A9).
                raw_path = native.encode("latin-1")
            except UnicodeEncodeError:  # not a native string: a hand-built environ with real text
                raw_path = native.encode("utf-8")
            raw = quote(raw_path, safe="/:@!$&'()*+,;=-._~%")
            if self.query_string:
                raw += "?" + self.query_string
        self.url: str = raw
        self.method = environ.get("REQUEST_METHOD", "GET")
        self.remote_addr = str(environ.get("REMOTE_ADDR", ""))

    def slim(self) -> None:
        """Keep only the string CGI/HTTP variables of the environ (drops the WSGI server's objects,
        so nothing of the HTTP handler stays alive as long as the WebSocket).

        Names, and the values of :data:`SHARED_VALUES` (``Host``, ``User-Agent``...), are
        interned: connections share one copy of each instead of keeping their own.
        """
        slim: Dict[str, str] = {}
        intern = sys.intern
        for key, value in self.environ.items():
            if type(value) is str and not key.startswith(("wsgi.", "crossws.")):
                key = intern(key)
                if key in SHARED_VALUES and len(value) <= _SHARED_MAX_LENGTH:
                    value = intern(value)
                slim[key] = value
        self.environ = slim
        self._headers = None  # rebuilt from the slim environ when asked for
        self._read(slim)

    @property
    def headers(self) -> Dict[str, str]:
        """Request headers with lower-case names (``host``, ``origin``, ``cookie``...)."""
        if self._headers is None:
            headers: Dict[str, str] = {}
            for key, value in self.environ.items():
                if key.startswith("HTTP_"):
                    headers[key[5:].replace("_", "-").lower()] = value
            if self.environ.get("CONTENT_TYPE"):
                headers["content-type"] = self.environ["CONTENT_TYPE"]
            self._headers = headers
        return self._headers

    @property
    def cookies(self) -> Dict[str, str]:
        """Cookies of the request (``{}`` when none)."""
        from http.cookies import SimpleCookie

        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(self.headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is the client's problem, not ours
            return {}
        return {name: morsel.value for name, morsel in jar.items()}

    def __repr__(self) -> str:
        # Only the path: query strings often carry tokens, which must never reach logs.
        return "<Request %s %s>" % (self.method, self.path)


ParamValue = Union[str, List[str]]


def parse_ws_request_params(
    request: Union[Request, Mapping[str, Any], str, None],
    *,
    auto_lower_case_keys: bool = False,
    parse_path: bool = True,
    auto_remove_leading_slash: bool = True,
    include_headers: bool = False,
) -> Dict[str, Any]:
    """Parse the query parameters and path of an upgrade request.

    Args:
        request: a :class:`Request`, a WSGI environ, or a request target string (``/chat?id=1``).
        auto_lower_case_keys: lower-case parameter names.
        parse_path: fill ``path`` (``None`` otherwise).
        auto_remove_leading_slash: ``/chat`` gives ``"chat"``.
        include_headers: also return ``headers`` (the original documents headers but never
            parsed them; ours are opt-in so the result shape stays the original's by default).

    Returns:
        ``{"params": {name: str or [str, ...]}, "path": str or None}``. A name seen twice gives a
        list. Unlike the original, an empty first value is kept (``?a=&a=1`` gives ``["", "1"]``).
        Never raises.
    """
    if isinstance(request, Request):
        target = request.url
    elif isinstance(request, str):
        target = request
    elif isinstance(request, Mapping):
        request = Request(request)
        target = request.url
    else:
        target = ""
    params: Dict[str, ParamValue] = {}
    path: Optional[str] = None
    try:
        parts = urlsplit(target)
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if auto_lower_case_keys:
                key = key.lower()
            existing = params.get(key)
            if existing is None:
                params[key] = value
            elif isinstance(existing, list):
                existing.append(value)
            else:
                params[key] = [existing, value]
        if parse_path and target:
            path = unquote(parts.path)
            if auto_remove_leading_slash:
                path = path.lstrip("/")
    except ValueError:
        pass
    result: Dict[str, Any] = {"params": params, "path": path}
    if include_headers:
        result["headers"] = dict(request.headers) if isinstance(request, Request) else {}
    return result
