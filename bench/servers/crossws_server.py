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
  ``duration`` s; acks the stats), ``gc`` and ``stats`` (W11: clients and the last liveness sweep).
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bench_payload, collect_garbage, parse_args, run_rpc_loops  # noqa: E402

from crossws_sync import WebSocketCrossServerAdapter  # noqa: E402  (the public name: any revision runs this)

NAMESPACE = "bench"


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
          redis_urls: str = "") -> WebSocketCrossServerAdapter:
    options: Dict[str, Any] = {"ws_options": {"host": host, "port": port}}
    if redis_port or redis_urls:
        options["server_name"] = "n%d" % node_index
        if redis_urls.startswith("redis+cluster://"):
            options["redis_config"] = [redis_urls]
        elif redis_urls:
            options["redis_config"] = redis_urls.split(",")
        else:
            options["redis_config"] = [{"host": "127.0.0.1", "port": redis_port}]
        if recovery:
            options["connection_state_recovery"] = {"max_disconnection": 120.0, "history_size": 1000}
    adapter = WebSocketCrossServerAdapter(**options)
    time_sweeps(adapter.get_wss())
    gc.callbacks.append(time_full_collections)

    def on_connection(socket: Any, request: Any) -> None:
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
                stats = run_rpc_loops(lambda: rpc_once(expected), int(payload["loops"]),
                                      float(payload["duration"]), gevent.spawn, gevent.joinall)
                if callback is not None:
                    callback(stats)

            gevent.spawn(work)  # do not hold this socket's reader for the whole run
            return
        elif action == "gc":
            reply = collect_garbage()
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
    adapter = build(args.host, args.port, args.node_index, args.redis_port, args.recovery, args.redis_urls)
    adapter.serve_forever()


if __name__ == "__main__":
    main()
