"""Retry hints a server gives its clients: the 1012 close reason and the ``Retry-After`` header.

A node that restarts closes its clients with 1012 (Service Restart) and a reason that carries
a retry delay drawn at random for each client (``"service restart retry=2.734s"``), so they do
not all come back in the same instant; a node that refuses an upgrade for its accept-rate limit
answers ``503`` with ``Retry-After: <seconds>``. Clients that know the hint wait that long
before their next attempt; the original's client reads neither and just reconnects on its own
schedule (1012 is not one of its no-reconnect codes).

Pure: no gevent, no sockets.
"""
from __future__ import annotations

import re
from typing import Optional

#: Close code of a restart (RFC 6455 registry: Service Restart): reconnect, after the hint.
RESTART_CODE = 1012
#: Longest close reason in bytes (a control frame holds 125 bytes, 2 of them the code).
MAX_REASON_BYTES = 123
#: The longest hint a client honours, whatever the server says.
MAX_HINT_SECONDS = 3600.0

_HINT = re.compile(r"(?:^|\s)retry=(\d{1,7}(?:\.\d{1,3})?)s(?:\s|$)")


def with_retry_hint(reason: str, seconds: float) -> str:
    """``reason`` followed by ``retry=<seconds>s`` (milliseconds precision), cut to fit a close frame.

    Args:
        reason: the close reason text (may be empty); its end is cut when the whole would not
            fit in :data:`MAX_REASON_BYTES` UTF-8 bytes.
        seconds: the retry delay (clamped to ``[0, MAX_HINT_SECONDS]``).
    """
    hint = "retry=%.3fs" % min(max(0.0, seconds), MAX_HINT_SECONDS)
    room = MAX_REASON_BYTES - len(hint) - 1
    text = reason.encode("utf-8")[:max(0, room)].decode("utf-8", "ignore").rstrip()
    return text + " " + hint if text else hint


def retry_hint(reason: str) -> Optional[float]:
    """The retry delay in seconds that :func:`with_retry_hint` put in ``reason``, or ``None``."""
    match = _HINT.search(reason or "")
    if match is None:
        return None
    return min(float(match.group(1)), MAX_HINT_SECONDS)


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """A ``Retry-After`` header value as seconds; ``None`` when absent or not ``delay-seconds``.

    The HTTP-date form is not honoured (clocks differ; our server never sends it).
    """
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 7:
        return None
    return min(float(int(value)), MAX_HINT_SECONDS)


__all__ = ["MAX_HINT_SECONDS", "MAX_REASON_BYTES", "RESTART_CODE", "parse_retry_after", "retry_hint",
           "with_retry_hint"]
