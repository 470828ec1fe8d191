"""The client heartbeat of the original's connector, for the current connection."""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Protocol

import gevent

from ..wire import frames
from ..wire.websocket import OPEN

logger = logging.getLogger("crossws_sync.client")

PONG_TIMEOUT_CODE = 4002
PONG_TIMEOUT_REASON = "pong timeout"


class Link(Protocol):
    """What the heartbeat needs of a connection."""

    state: int
    detached: bool

    def send(self, data: bytes) -> bool: ...

    def start_close(self, code: int, reason: str) -> None: ...


class Heartbeat:
    """``interval`` after open or the last pong: fire ``ping``, send ``ping_msg``; its echo
    fires ``pong(latency)`` and re-arms; no echo within ``pong_timeout`` fires
    ``pong-timeout`` and closes with 4002. Only the echo of an outstanding ping counts.

    Args:
        interval: seconds from :meth:`start` (or the last pong) to the ping.
        pong_timeout: seconds to wait for the echo.
        ping_msg: the heartbeat text.
        fire: ``fire(event, *args)`` posts a lifecycle event.
        url: named in the log line of a missing echo.
    """

    def __init__(self, interval: float, *, pong_timeout: float, ping_msg: str,
                 fire: Callable[..., None], url: str = "") -> None:
        self.interval = interval
        #: Round-trip time of the last echo (monotonic clock), ``None`` before one.
        self.latency: Optional[float] = None
        self._pong_timeout = pong_timeout
        self._ping_msg = ping_msg
        self._fire = fire
        self._url = url
        self._ping_timer: Optional[gevent.Greenlet] = None
        self._pong_timer: Optional[gevent.Greenlet] = None
        self._sent_at: Optional[float] = None

    def start(self, conn: Link) -> None:
        """(Re)arm the next ping on ``conn``, ``interval`` seconds from now."""
        self.stop()
        self._ping_timer = gevent.spawn_later(self.interval, self._send_ping, conn)

    def stop(self) -> None:
        """Cancel the ping and the pong wait (an echo that comes later is not a pong)."""
        self._sent_at = None
        current = gevent.getcurrent()
        for timer in (self._ping_timer, self._pong_timer):
            if timer is not None and timer is not current:
                timer.kill(block=False)
        self._ping_timer = self._pong_timer = None

    def on_text(self, conn: Link, text: str) -> bool:
        """Handle ``text`` if it is the echo of the outstanding ping; return whether it was."""
        if self._sent_at is None or text != self._ping_msg:
            return False
        latency = time.monotonic() - self._sent_at
        self.latency = latency
        self._fire("pong", latency)
        self.start(conn)
        return True

    def _send_ping(self, conn: Link) -> None:
        self._ping_timer = None
        if conn.detached or conn.state != OPEN:
            return
        self._fire("ping")
        self._sent_at = time.monotonic()
        # Armed before writing: a write stuck on a dead link still ends in pong-timeout.
        self._pong_timer = gevent.spawn_later(self._pong_timeout, self._pong_missing, conn)
        conn.send(frames.encode_text(self._ping_msg, mask=True))

    def _pong_missing(self, conn: Link) -> None:
        self._pong_timer = None
        self._sent_at = None
        if conn.detached:
            return
        logger.info("no heartbeat echo from %s within %gs", self._url, self._pong_timeout)
        self._fire("pong-timeout")
        conn.start_close(PONG_TIMEOUT_CODE, PONG_TIMEOUT_REASON)
