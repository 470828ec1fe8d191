"""The browser client files shipped in ``crossws_sync/static/``."""
from __future__ import annotations

import functools
from importlib import resources


@functools.lru_cache(maxsize=None)
def static_file(name: str) -> bytes:
    """Bytes of a file of ``crossws_sync/static/``."""
    return resources.files("crossws_sync").joinpath("static", name).read_bytes()


def browser_client() -> bytes:
    """The browser connector as a classic script (defines ``window.WebSocketConnector``)."""
    return static_file("ws-connector.js")
