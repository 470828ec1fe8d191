"""crossws_sync under the bench protocol (the original's JSON frames).

One process per node; with ``--redis-port`` the nodes form a cluster over Redis
(``server_name="n<i>"``). Handlers:

* connection: ``set_user_socket(<id>)`` and, when the query has ``room``, ``join_room("bench",
  <room>, <id>)``;
* ``echo`` with ack -> ``callback(payload)``;
* ``relay`` ``{"to": user, ...}`` -> ``to_socket_id(user, "relay", payload)`` (routed to the
  owning node in the distributed mode);
* ``trigger``: ``broadcast`` (N x ``broadcast("bench", ...)``), ``rooms`` (N x R x
  ``broadcast_to_room("bench", room, "bench", ...)``), ``rpc`` (W6: ``loops`` greenlets of
  ``emit_cross_server_and_wait("bench_rpc", ..., expected_responses=<nodes>)`` for
  ``duration`` s; acks the stats; with ``rate``: an open loop of that many calls per second,
  W6L), ``gc`` and ``stats`` (W11: clients and the last liveness sweep).

With ``--auth`` (W10) the ``authenticate`` hook checks the query's ``token`` against the user id
(``common.token_ok``) before the 101 and returns the id; the connection handler maps it
(``set_user_socket``) and pushes one ``welcome`` event to it (``to_socket_id``).

``serve_forever`` shuts the node down gracefully on SIGTERM (W8 stops the victim node that way),
closing its clients with ``shutdown_code`` (``--shutdown-code 1012``: with retry hints).
"""
from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402
from typing import Any, Callable, Deque, Dict, List, Optional  # noqa: E402

import gevent  # noqa: E402
import gevent.queue  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bench_payload, collect_garbage, parse_args, run_rpc_loops, run_rpc_rate, token_ok  # noqa: E402

from crossws_sync import WebSocketCrossServerAdapter  # noqa: E402  (the public name: any revision runs this)
from crossws_sync import parse_ws_request_params  # noqa: E402

NAMESPACE = "bench"


def authenticate(request: Any) -> Any:
    """W10's auth hook: the query's ``token`` must be the user id's (``common.token_ok``);
    returns the id (the connection's ``identity``), or False (401)."""
    params = parse_ws_request_params(request)["params"]
    user_id = params.get("id")
    return user_id if token_ok(user_id, params.get("token")) else False


#: W11: when the latest liveness sweeps ran, [start, end] in epoch milliseconds (see time_sweeps)
SWEEP_WINDOWS: Deque[List[float]] = deque(maxlen=32)


def time_sweeps(service: Any) -> None:
    """W11: record when each liveness sweep runs, so that the generator's slow canary round
    trips can be matched with them (the bench's own wrapper; the library keeps only durations)."""
    sweep_once = service.sweep_once

    def timed(now: float) -> None:
        started = time.time()
        try:
            sweep_once(now)
        finally:
            SWEEP_WINDOWS.append([started * 1000.0, time.time() * 1000.0])

    service.sweep_once = timed


#: W11: the latest full (generation 2) garbage collections, [start, end] in epoch milliseconds
GC_WINDOWS: Deque[List[float]] = deque(maxlen=32)
_gc_started = [0.0]


def time_full_collections(phase: str, info: Dict[str, Any]) -> None:
    """A ``gc.callbacks`` entry: record when each full collection ran (W11 matches slow canary
    round trips with them, as with sweeps)."""
    if info.get("generation") != 2:
        return
    if phase == "start":
        _gc_started[0] = time.time()
    else:
        GC_WINDOWS.append([_gc_started[0] * 1000.0, time.time() * 1000.0])


def service_stats(service: Any) -> Dict[str, Any]:
    """W11: the open connections and the last liveness sweep (``None`` where a revision run as
    crossws_base does not record it)."""
    return {"clients": len(service.clients), "sweep_windows": list(SWEEP_WINDOWS), "gc_windows": list(GC_WINDOWS),
            "sweeps": getattr(service, "sweeps", None),
            "last_sweep_seconds": getattr(service, "last_sweep_seconds", None),
            "last_sweep_cpu_seconds": getattr(service, "last_sweep_cpu_seconds", None),
            "last_sweep_clients": getattr(service, "last_sweep_clients", None)}


def build(host: str, port: int, node_index: int, redis_port: int, recovery: bool = False,
          redis_urls: str = "", auth: bool = False, ws_options: Optional[Dict[str, Any]] = None,
          server_name: Optional[str] = None, storm: Optional[Dict[str, Any]] = None) -> WebSocketCrossServerAdapter:
    """The bench adapter; ``ws_options`` replaces the standalone server's (gunicorn: ``no_server``)."""
    options: Dict[str, Any] = {"ws_options": ws_options or {"host": host, "port": port}}
    # W8's options (shutdown_code, restart_retry_window, max_accept_rate, accept_burst): passed
    # only when given, so that a --baseline revision without them still runs the other workloads
    options.update({k: v for k, v in (storm or {}).items() if v is not None})
    if redis_port or redis_urls:
        options["server_name"] = server_name or "n%d" % node_index
        if redis_urls.startswith("redis+cluster://"):
            options["redis_config"] = [redis_urls]
        elif redis_urls:
            options["redis_config"] = redis_urls.split(",")
        else:
            options["redis_config"] = [{"host": "127.0.0.1", "port": redis_port}]
        if recovery:
            options["connection_state_recovery"] = {"max_disconnection": 120.0, "history_size": 1000}
    if auth:
        options["authenticate"] = authenticate
    adapter = WebSocketCrossServerAdapter(**options)
    time_sweeps(adapter.get_wss())
    gc.callbacks.append(time_full_collections)

    def on_connection(socket: Any, request: Any) -> None:
        if auth:
            user = socket.identity  # the id the authenticate hook accepted
            adapter.set_user_socket(user, socket)
            adapter.to_socket_id(user, "welcome", {"id": user})
            return
        params = adapter.parse_ws_request_params(request)["params"]
        user_id = params.get("id")
        if user_id:
            adapter.set_user_socket(user_id, socket)
            room = params.get("room")
            if room:
                adapter.join_room(NAMESPACE, room, user_id)

    def on_echo(socket: Any, payload: Any, callback: Optional[Callable[[Any], None]]) -> None:
        if callback is not None:
            callback(payload)

    def on_relay(socket: Any, payload: Any, callback: Optional[Callable[[Any], None]]) -> None:
        adapter.to_socket_id(payload["to"], "relay", payload)

    def rpc_once(expected: int) -> bool:
        result = adapter.emit_cross_server_and_wait("bench_rpc", {"pad": "x" * 48},
                                                    expected_responses=expected, timeout=5.0)
        return bool(result["success"])

    def on_trigger(socket: Any, payload: Any, callback: Optional[Callable[[Any], None]]) -> None:
        action = payload.get("action")
        pad = "x" * int(payload.get("pad", 48))
        reply: Any
        if action == "broadcast":
            count = int(payload["count"])
            for seq in range(count):
                adapter.broadcast("bench", bench_payload(seq, pad))
            reply = {"sent": count}
        elif action == "rooms":
            count = int(payload["count"])
            rooms = list(payload["rooms"])
            for seq in range(count):
                for room in rooms:
                    adapter.broadcast_to_room(NAMESPACE, room, "bench", bench_payload(seq, pad, room))
            reply = {"sent": count * len(rooms)}
        elif action == "rpc":
            expected = int(payload.get("expected", 3))

            def work() -> None:
                if payload.get("rate"):
                    stats = run_rpc_rate(lambda: rpc_once(expected), float(payload["rate"]),
                                         float(payload["duration"]), gevent.spawn, gevent.joinall, gevent.sleep,
                                         gevent.queue.Queue())
                else:
                    stats = run_rpc_loops(lambda: rpc_once(expected), int(payload["loops"]),
                                          float(payload["duration"]), gevent.spawn, gevent.joinall)
                if callback is not None:
                    callback(stats)

            gevent.spawn(work)  # do not hold this socket's reader for the whole run
            return
        elif action == "gc":
            reply = collect_garbage()
        elif action == "pid":  # W9: which gunicorn worker serves this client
            reply = {"pid": os.getpid()}
        elif action == "stats":
            reply = service_stats(adapter.get_wss())
        else:
            reply = {"error": "unsupported action %r" % action}
        if callback is not None:
            callback(reply)

    def on_bench_rpc(data: Any, callback: Optional[Callable[[Any], None]]) -> None:
        if callback is not None:
            callback({"ok": True})

    adapter.on_websocket_event("connection", on_connection)
    adapter.on_websocket_event("echo", on_echo)
    adapter.on_websocket_event("relay", on_relay)
    adapter.on_websocket_event("trigger", on_trigger)
    if redis_port or redis_urls:
        adapter.on_cross_server_event("bench_rpc", on_bench_rpc)
    return adapter


def main() -> None:
    args = parse_args()
    import crossws_sync

    sys.stderr.write("crossws_sync from %s\n" % os.path.dirname(crossws_sync.__file__))
    storm = {"shutdown_code": args.shutdown_code, "restart_retry_window": args.restart_retry_window,
             "max_accept_rate": args.max_accept_rate, "accept_burst": args.accept_burst}
    adapter = build(args.host, args.port, args.node_index, args.redis_port, args.recovery, args.redis_urls, args.auth,
                    storm=storm)
    adapter.serve_forever()


if __name__ == "__main__":
    main()
