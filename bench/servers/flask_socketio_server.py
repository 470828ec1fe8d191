"""Flask-SocketIO on gevent + gevent-websocket: the bench protocol as socket.io events.

One process per node. With ``--redis-port`` the nodes share python-socketio's Redis message
queue, so ``socketio.emit`` reaches every node's clients (W2, W3, W4). Handlers:

* connect: join room ``<id>`` (the user's own room, our stand-in for ``to_socket_id``) and
  room ``<room>`` when the query has one;
* ``echo`` -> returns the payload as the ack;
* ``trigger`` ``broadcast`` / ``rooms`` / ``gc`` -> pushes ``bench`` events, then acks;
* ``relay`` ``{"to": user, ...}`` -> ``emit("relay", payload, to=user)`` through the queue.

With ``--auth`` (W10) the connect handler checks the client's ``auth`` token against the query's
user id (``common.token_ok``; refused: ``ConnectionRefusedError``), joins the user's room and
emits one ``welcome`` to it.

W6 (server-to-server RPC) has no Flask-SocketIO equivalent: N/A.
"""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402
from typing import Any, Dict  # noqa: E402

from flask import Flask, request  # noqa: E402
from flask_socketio import ConnectionRefusedError, SocketIO, emit, join_room  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bench_payload, collect_garbage, parse_args, token_ok  # noqa: E402


def build(redis_port: int, auth: bool = False) -> "tuple[Flask, SocketIO]":
    app = Flask(__name__)
    queue = "redis://127.0.0.1:%d" % redis_port if redis_port else None
    socketio = SocketIO(app, async_mode="gevent", message_queue=queue, cors_allowed_origins="*",
                        logger=False, engineio_logger=False)

    @socketio.on("connect")
    def on_connect(credentials: Any = None) -> None:
        user_id = request.args.get("id")
        if auth:
            token = credentials.get("token") if isinstance(credentials, dict) else None
            if not token_ok(user_id, token):
                raise ConnectionRefusedError("unauthorized")
            join_room(user_id)
            emit("welcome", {"id": user_id})
            return
        if user_id:
            join_room(user_id)
        room = request.args.get("room")
        if room:
            join_room(room)

    @socketio.on("echo")
    def on_echo(payload: Any) -> Any:
        return payload

    @socketio.on("relay")
    def on_relay(payload: Dict[str, Any]) -> None:
        socketio.emit("relay", payload, to=payload["to"])

    @socketio.on("trigger")
    def on_trigger(payload: Dict[str, Any]) -> Any:
        action = payload.get("action")
        pad = "x" * int(payload.get("pad", 48))
        if action == "broadcast":
            count = int(payload["count"])
            for seq in range(count):
                socketio.emit("bench", bench_payload(seq, pad))
            return {"sent": count}
        if action == "rooms":
            count = int(payload["count"])
            rooms = list(payload["rooms"])
            for seq in range(count):
                for room in rooms:
                    socketio.emit("bench", bench_payload(seq, pad, room), to=room)
            return {"sent": count * len(rooms)}
        if action == "gc":
            return collect_garbage()
        return {"error": "unsupported action %r" % action}

    return app, socketio


def main() -> None:
    args = parse_args()
    app, socketio = build(args.redis_port, args.auth)
    socketio.run(app, host=args.host, port=args.port, log_output=False)


if __name__ == "__main__":
    main()
