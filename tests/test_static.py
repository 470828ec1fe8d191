"""crossws_sync.server.static: the shipped browser client files, read from the installed package."""
import os

import pytest

import crossws_sync
from crossws_sync.server.static import browser_client, static_file

STATIC_DIR = os.path.join(os.path.dirname(crossws_sync.__file__), "static")


def test_browser_client_is_the_classic_script_that_defines_websocketconnector():
    body = browser_client()
    with open(os.path.join(STATIC_DIR, "ws-connector.js"), "rb") as f:
        assert body == f.read()
    assert b"WebSocketConnector" in body and b"export " not in body  # a classic script, not a module


def test_static_file_reads_any_shipped_file_and_caches_it():
    assert static_file("ws-connector.mjs").startswith(open(os.path.join(STATIC_DIR, "ws-connector.mjs"), "rb").read(64))
    assert static_file("ws-connector.js") is static_file("ws-connector.js")


def test_a_missing_file_raises():
    with pytest.raises((FileNotFoundError, OSError)):
        static_file("no-such-file.js")
