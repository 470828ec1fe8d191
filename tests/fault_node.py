"""One crossws_sync node as a real process, for the fault, abuse and soak tests.

    python tests/fault_node.py --name=n1 --port=0 --redis=redis://127.0.0.1:6379 --heartbeat=0.5

Prints ``READY <port>`` once it listens. SIGTERM / SIGINT shut it down gracefully
(``serve_forever``: close frames with ``--shutdown-code``, goodbye to the cluster).

Client events (all answer through the ack callback when one is asked):

* ``echo``: the payload back;
* ``join`` / ``leave`` ``{"ns", "room"}``: room membership of the caller's user id;
* ``room`` ``{"ns", "room", "body"}``: ``broadcast_to_room(ns, room, "chat", body)``;
* ``dm`` ``{"to", "body"}``: ``to_socket_id(to, "dm", body)``;
* ``whoami``: ``{"node", "pid", "user"}``;
* ``diag``: greenlets, file descriptors, RSS, sockets, rooms, directory and counter figures.

A connection with ``?id=<user>`` is mapped to that user; ``auto_cleanup`` unmaps it on close.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import greenlet  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crossws_sync import WebSocketCrossServerAdapter  # noqa: E402
from crossws_sync.io.readers import reader_pool  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--name", default="node")
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--redis", action="append", default=[])
parser.add_argument("--heartbeat", type=float, default=2.0)
parser.add_argument("--max-message-size", type=int, default=1 << 20)
parser.add_argument("--max-outbox", type=int, default=4 << 20)
parser.add_argument("--rate", type=float, default=None)
parser.add_argument("--burst", type=int, default=None)
parser.add_argument("--max-connections", type=int, default=None)
parser.add_argument("--shutdown-code", type=int, default=1012)
parser.add_argument("--log-level", default="WARNING")
parser.add_argument("--recovery", default=None, help="connection_state_recovery as JSON")
args = parser.parse_args()
logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stdout,
                    format="%(asctime)s %(name)s %(levelname)s %(message)s")

adapter = WebSocketCrossServerAdapter(
    server_name=args.name,
    ws_options={"host": "127.0.0.1", "port": args.port},
    redis_config=args.redis or None,
    node_heartbeat_interval=args.heartbeat,
    redis_ping_interval=0.5,
    redis_ping_timeout=0.5,
    max_message_size=args.max_message_size,
    max_outbox_bytes=args.max_outbox,
    max_messages_per_second=args.rate,
    rate_limit_burst=args.burst,
    max_connections=args.max_connections,
    auto_cleanup=True,
    connection_state_recovery=json.loads(args.recovery) if args.recovery else None,
    shutdown_code=args.shutdown_code,
)
counters = {"echo": 0, "room": 0, "dm": 0}


def on_connection(socket, request):
    user = adapter.parse_ws_request_params(request)["params"].get("id")
    if isinstance(user, str) and user:
        adapter.set_user_socket(user, socket)


def ack(callback, value):
    if callback is not None:
        callback(value)


def echo(socket, payload, callback):
    counters["echo"] += 1
    ack(callback, payload)


def join(socket, payload, callback):
    adapter.join_room(payload["ns"], payload["room"], socket.socket_id)
    ack(callback, {"joined": payload["room"], "node": adapter.get_server_name()})


def leave(socket, payload, callback):
    adapter.leave_room(payload["ns"], payload["room"], socket.socket_id)
    ack(callback, True)


def room(socket, payload, callback):
    counters["room"] += 1
    sent = adapter.broadcast_to_room(payload["ns"], payload["room"], "chat", payload["body"])
    ack(callback, sent)


def dm(socket, payload, callback):
    counters["dm"] += 1
    adapter.to_socket_id(payload["to"], "dm", payload["body"])
    ack(callback, True)


def whoami(socket, payload, callback):
    ack(callback, {"node": adapter.get_server_name(), "pid": os.getpid(), "user": socket.socket_id})


def diag(socket, payload, callback):
    gc.collect()
    parked = reader_pool().idle  # the reader pool's parked workers: reused, at most max_idle of them
    greenlets = sum(1 for obj in gc.get_objects() if isinstance(obj, greenlet.greenlet) and not obj.dead) - parked
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    service = adapter.get_wss()
    router = adapter._router
    bus = adapter._bus
    ack(callback, {
        "node": adapter.get_server_name(),
        "greenlets": greenlets,
        "parked_readers": parked,
        "fds": len(os.listdir("/proc/self/fd")),
        "rss": rss,
        "clients": len(service.clients) if service is not None else 0,
        "sockets": adapter.get_socket_client_count(),
        "room_entries": len(adapter.rooms),
        "namespaces": len(adapter.rooms.namespaces()),
        "directory_users": len(router.membership.directory.users()) if router is not None else 0,
        "directory_nodes": sorted(router.membership.directory.nodes) if router is not None else [],
        "pending_callbacks": bus.pending_callback_count if bus is not None else 0,
        "wanted_channels": sorted(bus.redis_nodes[0].wanted_channels) if bus is not None and bus.redis_nodes else [],
        "service_stats": dict(service.stats) if service is not None else {},
        "counters": dict(counters),
    })


adapter.on_websocket_event("connection", on_connection)
for event_name, handler in {"echo": echo, "join": join, "leave": leave, "room": room, "dm": dm,
                            "whoami": whoami, "diag": diag}.items():
    adapter.on_websocket_event(event_name, handler)

adapter.start()
print("READY %d" % adapter.port, flush=True)
adapter.serve_forever()  # SIGTERM / SIGINT: shutdown() with --shutdown-code
print("EXITED", flush=True)
