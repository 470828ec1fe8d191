"""The client's answers to server requests: the ``reply`` argument of server-event listeners.

A server request is a server event whose frame carries an ``ackId`` (ours, see
:mod:`crossws_sync.wire.events`). Listeners that accept a second positional argument get a
``reply`` callable with the payload (the signature is read once, at registration); a listener
taking only ``payload`` keeps working and never answers. ``reply(data)`` sends
``{"ackId":..,"payload":data}`` once, on the connection the request came on.
"""
from __future__ import annotations

from typing import Any, Callable

from ..wire import events, frames
from .connection import Connection

#: ``reply(data=MISSING) -> sent``
Reply = Callable[..., bool]


def make_reply(conn: Connection, ack_id: str) -> Reply:
    """The ``reply`` of the request ``ack_id`` that arrived on ``conn``."""
    used = False

    def reply(data: Any = events.MISSING) -> bool:
        """Answer the server's request with ``data`` (any JSON value; left out when not given).

        Only the first call answers; later calls return ``False`` and send nothing.

        Returns:
            whether the answer was handed to the socket (``False`` when the connection the
            request came on is not open any more).

        Raises:
            TypeError: ``data`` is not JSON-serialisable (the reply is not used up).
        """
        nonlocal used
        if used:
            return False
        frame = frames.encode_text(events.encode_answer(ack_id, data), mask=True)
        used = True
        return conn.send(frame)

    return reply


__all__ = ["Reply", "make_reply"]
