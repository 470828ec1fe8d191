"""One node of the demo cluster: the chat page, the browser client and the WebSocket on one port.

    python -m crossws_sync.demo.node --port 8000 --name node1 --redis redis://127.0.0.1:6379

Serves ``/`` (the chat page), ``/chat.js``, ``/chat.css``, ``/ws-connector.js`` (the browser
client), ``/api/info`` (JSON: this node's name) and WebSocket upgrades on ``/ws``. Every node of a
demo shares one Redis, so room messages, direct messages and presence reach users on any node.

Wire events of the chat (the client connects to ``/ws?name=<name>&room=<room>``):

=============  ===========  ==================================================================
event          direction    payload / ack
=============  ===========  ==================================================================
``welcome``    server push  ``{name, node, room}`` once the connection is mapped and in its room
``chat``       server push  ``{from, node, room, text, time}``: a room message
``direct``     server push  ``{from, node, to, text, time}``: a direct message
``presence``   server push  ``{name, node, room, online}``: someone came, left or changed room
``say``        client, ack  ``{text}`` -> ``{ok, room}`` (or ``{ok: false, error}``)
``dm``         client, ack  ``{to, text}`` -> ``{ok, node, message}`` (or ``{ok: false, error}``)
``join``       client, ack  ``{room}`` -> ``{ok, room}``
``who``        client, ack  ``{}`` -> ``{users: [{name, node, room}], nodes: [{name, users}]}``
``nodes``      client, ack  ``{}`` -> ``[{name, port, users}]`` (asked to every node over the bus)
=============  ===========  ==================================================================
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from importlib import resources
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import gevent
from gevent import monkey

from ..server.connection import WebSocketConnection
from ..wire.events import encode_event
from ..wire.request import Request
from ..adapter import WebSocketCrossServerAdapter

logger = logging.getLogger("crossws_sync.demo.node")

#: Room namespace of the chat rooms.
NAMESPACE = "chat"
#: Close code for a refused name or room (the original's "authentication failed" convention).
BAD_PARAMS_CODE = 4011
#: Close code used when the same name logs in elsewhere (``duplicate_login="close_old"``).
REPLACED_CODE = 4012
MAX_TEXT = 2000
NODE_INFO_EVENT = "demo.node-info"
#: Line printed on stdout once the node listens; the launcher waits for it.
READY_FORMAT = "{name} ready at {url}"
READY_PATTERN = re.compile(r"^(?P<name>\S+) ready at (?P<url>https?://\S+)$")

_NAME = re.compile(r"^[\w][\w .\-]{0,23}$", re.UNICODE)
_ROOM = re.compile(r"^[\w][\w.\-]{0,31}$", re.UNICODE)

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/chat.js": ("chat.js", "application/javascript; charset=utf-8"),
    "/chat.css": ("chat.css", "text/css; charset=utf-8"),
}
#: Only this origin's files and WebSockets: the page uses no external resource.
_CSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; form-action 'none'"


def clean_name(value: Any) -> Optional[str]:
    """A user name as typed (trimmed), or ``None`` when it is not 1-24 letters, digits, spaces, ``.``, ``_``, ``-``."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if _NAME.match(value) else None


def clean_room(value: Any) -> Optional[str]:
    """A room name (trimmed), or ``None`` when it is not 1-32 letters, digits, ``.``, ``_``, ``-``."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if _ROOM.match(value) else None


def clean_text(value: Any) -> Optional[str]:
    """A message text (trimmed, at most :data:`MAX_TEXT` characters), or ``None`` when empty."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:MAX_TEXT] if value else None


def static_file(name: str) -> bytes:
    """Bytes of a file of ``crossws_sync/demo/static/``."""
    return resources.files("crossws_sync.demo").joinpath("static", name).read_bytes()


class DemoSite:
    """The plain-HTTP part of a node (a WSGI app): the page, its assets and ``/api/info``.

    Args:
        node_name: shown by ``/api/info``.
    """

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self._files = {path: (static_file(name), content_type) for path, (name, content_type) in _STATIC.items()}

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return self._respond(start_response, "405 Method Not Allowed", b"GET only", "text/plain", method)
        if path == "/api/info":
            body = json.dumps({"node": self.node_name}).encode()
            return self._respond(start_response, "200 OK", body, "application/json", method)
        if path == "/favicon.ico":
            start_response("204 No Content", [("Content-Length", "0")])
            return []
        found = self._files.get(path)
        if found is None:
            return self._respond(start_response, "404 Not Found", b"Not Found", "text/plain", method)
        return self._respond(start_response, "200 OK", found[0], found[1], method)

    @staticmethod
    def _respond(start_response: Callable[..., Any], status: str, body: bytes, content_type: str,
                 method: str) -> List[bytes]:
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                ("Cache-Control", "no-store"), ("Content-Security-Policy", _CSP),
                                ("X-Content-Type-Options", "nosniff")])
        return [body] if method == "GET" else []


class ChatService:
    """The chat logic of one node, on top of a distributed adapter.

    Args:
        adapter: the node's adapter (WebSocket and Redis both configured).
        port: the HTTP port, reported to pages that list the nodes.
    """

    def __init__(self, adapter: WebSocketCrossServerAdapter, port: Optional[int] = None) -> None:
        self.adapter = adapter
        self.port = port
        self.node = adapter.get_server_name() or "node"
        handlers: Dict[str, Callable[[WebSocketConnection, Any, Any], None]] = {
            "say": self.on_say, "dm": self.on_dm, "join": self.on_join, "who": self.on_who, "nodes": self.on_nodes,
        }
        adapter.on_websocket_event("connection", self.on_connection)
        adapter.on_websocket_event("close", self.on_close)
        for event, handler in handlers.items():
            adapter.on_websocket_event(event, handler)
        adapter.on_cross_server_event(NODE_INFO_EVENT, self.on_node_info)

    # Connections ---------------------------------------------------------------------------

    def on_connection(self, socket: WebSocketConnection, request: Request) -> None:
        """Map the connection under its name, put it in its room, greet it and tell everyone."""
        params = self.adapter.parse_ws_request_params(request)["params"]
        name = clean_name(params.get("name"))
        room = clean_room(params.get("room") or "lobby")
        if name is None:
            socket.close(BAD_PARAMS_CODE, "invalid name: 1-24 letters, digits, spaces, '.', '_' or '-'")
            return
        if room is None:
            socket.close(BAD_PARAMS_CODE, "invalid room: 1-32 letters, digits, '.', '_' or '-'")
            return
        socket.chat_name = name  # type: ignore[attr-defined]
        socket.chat_room = room  # type: ignore[attr-defined]
        self.adapter.set_user_socket(name, socket)
        self.adapter.join_room(NAMESPACE, room, name)
        socket.send(encode_event("welcome", {"name": name, "node": self.node, "room": room}))
        self._presence(name, room, True)
        logger.info("%s connected to #%s", name, room)

    def on_close(self, socket: WebSocketConnection, request: Request, code: int, reason: str) -> None:
        """Tell everyone that a user left, unless the name lives on in a newer connection."""
        name = getattr(socket, "chat_name", None)
        if name is None:
            return
        current = self.adapter.get_socket_instance(name)
        if code == REPLACED_CODE or (current is not None and current is not socket):
            return
        self._presence(name, getattr(socket, "chat_room", None), False)
        logger.info("%s left (%s)", name, code)

    def _presence(self, name: str, room: Optional[str], online: bool) -> None:
        self.adapter.broadcast("presence", {"name": name, "node": self.node, "room": room, "online": online})

    # Client events ---------------------------------------------------------------------------

    def on_say(self, socket: WebSocketConnection, payload: Any, callback: Optional[Callable[..., Any]]) -> None:
        """``say {text}``: send a message to the sender's room, on every node."""
        name, room = getattr(socket, "chat_name", None), getattr(socket, "chat_room", None)
        text = clean_text(payload.get("text") if isinstance(payload, dict) else None)
        if name is None or room is None or text is None:
            return _reply(callback, {"ok": False, "error": "nothing to send"})
        message = {"from": name, "node": self.node, "room": room, "text": text, "time": time.time()}
        self.adapter.broadcast_to_room(NAMESPACE, room, "chat", message)
        _reply(callback, {"ok": True, "room": room})

    def on_dm(self, socket: WebSocketConnection, payload: Any, callback: Optional[Callable[..., Any]]) -> None:
        """``dm {to, text}``: send a direct message to a user on any node."""
        name = getattr(socket, "chat_name", None)
        payload = payload if isinstance(payload, dict) else {}
        to, text = clean_name(payload.get("to")), clean_text(payload.get("text"))
        if name is None or to is None or text is None:
            return _reply(callback, {"ok": False, "error": "a direct message needs a user name and a text"})
        node = self.adapter.find_user_node(to)
        if node is None:
            return _reply(callback, {"ok": False, "error": "%s is not online" % to})
        message = {"from": name, "node": self.node, "to": to, "text": text, "time": time.time()}
        self.adapter.to_socket_id(to, "direct", message)
        _reply(callback, {"ok": True, "node": node, "message": message})

    def on_join(self, socket: WebSocketConnection, payload: Any, callback: Optional[Callable[..., Any]]) -> None:
        """``join {room}``: leave the current room for another one."""
        name, old = getattr(socket, "chat_name", None), getattr(socket, "chat_room", None)
        room = clean_room(payload.get("room") if isinstance(payload, dict) else None)
        if name is None or room is None:
            return _reply(callback, {"ok": False, "error": "invalid room: 1-32 letters, digits, '.', '_' or '-'"})
        if room != old:
            self.adapter.join_room(NAMESPACE, room, name)
            if old is not None:
                self.adapter.leave_room(NAMESPACE, old, name)
            socket.chat_room = room  # type: ignore[attr-defined]
            self._presence(name, room, True)
        _reply(callback, {"ok": True, "room": room})

    def on_who(self, socket: WebSocketConnection, payload: Any, callback: Optional[Callable[..., Any]]) -> None:
        """``who``: everyone online in the cluster, with node and room, and the live nodes."""
        _reply(callback, {"users": self.online_users(), "nodes": [
            {"name": node["server_name"], "users": node["users"]} for node in self.adapter.get_cluster_nodes()
            if node.get("websocket", True)]})

    def on_nodes(self, socket: WebSocketConnection, payload: Any, callback: Optional[Callable[..., Any]]) -> None:
        """``nodes``: ask every node (cross-server request) for its name, HTTP port and user count."""
        if callback is None:
            return
        gevent.spawn(self._collect_nodes, callback)

    def _collect_nodes(self, callback: Callable[..., Any]) -> None:
        result = self.adapter.emit_cross_server_and_wait(NODE_INFO_EVENT, {}, expected_responses=None, timeout=1.0)
        nodes = [reply.get("payload") for reply in (result.get("responses") or {}).values()]
        callback(sorted((n for n in nodes if isinstance(n, dict)), key=lambda n: str(n.get("name"))))

    def on_node_info(self, data: Any, callback: Optional[Callable[..., Any]]) -> None:
        """Cross-server listener: this node's name, HTTP port and user count."""
        if callback is not None:
            callback({"name": self.node, "port": self.port, "users": self.adapter.get_socket_client_count()})

    # Queries ---------------------------------------------------------------------------------

    def online_users(self) -> List[Dict[str, Any]]:
        """``[{name, node, room}]`` of every user in a chat room on any live node, sorted by name."""
        rooms: Dict[str, str] = {}
        for room in sorted(self.adapter.get_cluster_room_ids(NAMESPACE)):
            for name in self.adapter.get_cluster_room_socket_ids(NAMESPACE, room):
                rooms.setdefault(name, room)
        users = []
        for name in sorted(rooms):
            node = self.adapter.find_user_node(name)
            if node is not None:
                users.append({"name": name, "node": node, "room": rooms[name]})
        return users


def _reply(callback: Optional[Callable[..., Any]], data: Any) -> None:
    if callback is not None:
        callback(data)


def build_node(*, name: str, redis_url: str, host: str = "127.0.0.1", port: int = 8000,
               node_heartbeat_interval: float = 1.0) -> Tuple[WebSocketCrossServerAdapter, ChatService]:
    """Build (without starting) one demo node.

    Args:
        name: the node's server name (``node1``...).
        redis_url: the Redis every node of the demo shares.
        host, port: where to listen (port 0: any free port; ``adapter.port`` tells which).
        node_heartbeat_interval: cluster registry heartbeat period in seconds.

    Returns:
        ``(adapter, chat)``; call ``adapter.start()`` or ``adapter.serve_forever()``.
    """
    adapter = WebSocketCrossServerAdapter(
        server_name=name, ws_options={"host": host, "port": port, "path": "/ws", "app": DemoSite(name)},
        redis_config=[redis_url], client_js_path="/ws-connector.js", auto_cleanup=True,
        duplicate_login="close_old", duplicate_login_code=REPLACED_CODE,
        node_heartbeat_interval=node_heartbeat_interval, max_message_size=64 * 1024,
    )
    return adapter, ChatService(adapter, port)


def _watch_parent(parent_pid: int, adapter: WebSocketCrossServerAdapter) -> None:
    # The launcher normally stops us; if it dies without doing so (SIGKILL), stop anyway.
    while os.getppid() == parent_pid:
        gevent.sleep(1.0)
    logger.warning("launcher (pid %d) is gone: stopping", parent_pid)
    adapter.shutdown()


def parse_args(argv: Optional[Iterable[str]] = None) -> argparse.Namespace:
    """Command line of a node (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m crossws_sync.demo.node", description="One node of the crossws_sync demo.")
    parser.add_argument("--port", type=int, default=8000, help="HTTP and WebSocket port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--name", default="node1", help="node name, unique in the cluster")
    parser.add_argument("--redis", default=os.environ.get("CROSSWS_REDIS_URL", "redis://127.0.0.1:6379"),
                        help="Redis URL shared by every node")
    parser.add_argument("--parent-pid", type=int, default=None, help="stop when this process is gone")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="cluster heartbeat period in seconds")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING...")
    return parser.parse_args(list(argv) if argv is not None else None)


def main(argv: Optional[Iterable[str]] = None) -> int:
    """Run one node until SIGINT/SIGTERM. Returns the exit status."""
    monkey.patch_all()
    args = parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # The library is chatty at INFO (every subscription); the demo's own lines are enough.
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("crossws_sync").setLevel(logging.WARNING)
        logger.setLevel(logging.getLogger().level)
    adapter, chat = build_node(name=args.name, redis_url=args.redis, host=args.host, port=args.port,
                               node_heartbeat_interval=args.heartbeat)
    try:
        adapter.start()
    except Exception as exc:  # a busy port, an unreachable Redis: say it in one line
        print("%s could not start: %s" % (args.name, exc), file=sys.stderr, flush=True)
        adapter.shutdown(timeout=1)
        return 1
    port = chat.port = int(adapter.port or args.port)
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "", "::") else args.host
    print(READY_FORMAT.format(name=args.name, url="http://%s:%d/" % (shown_host, port)), flush=True)
    if args.parent_pid:
        gevent.spawn(_watch_parent, args.parent_pid, adapter)
    adapter.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
