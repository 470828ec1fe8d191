"""Runs every case of an Autobahn fuzzingserver with crossws_sync's WebSocketConnector
(tests/test_autobahn.py): each message is sent back as it came, text as text, binary as binary.
It offers permessage-deflate (every message compressed once agreed): sections 12 and 13 need it,
the others run uncompressed since the fuzzing server only accepts it there.

Usage: python tests/autobahn_client.py ws://127.0.0.1:PORT"""
from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402

import gevent.event  # noqa: E402

from crossws_sync import WebSocketConnector  # noqa: E402

AGENT = "crossws"


def run(url: str, query: str, echo: bool = True, timeout: float = 60.0) -> list:
    """Connect to ``url + query``; echo every message until the server closes; return them."""
    received = []
    closed = gevent.event.Event()
    client = WebSocketConnector(url + query, auto_reconnect=False, ping_interval=1e6, connect_timeout=10.0,
                                per_message_deflate={"threshold": 0})

    def on_message(data):
        received.append(data)
        if echo:
            client.send(data)

    client.on("message", on_message)
    client.on("close", lambda *args: closed.set())
    closed.wait(timeout)
    client.manual_close()
    return received


def main(url: str) -> None:
    count = int(json.loads(run(url, "/getCaseCount", echo=False)[0]))
    for case in range(1, count + 1):
        run(url, "/runCase?case=%d&agent=%s" % (case, AGENT))
    run(url, "/updateReports?agent=%s" % AGENT, echo=False)


if __name__ == "__main__":
    main(sys.argv[1])
