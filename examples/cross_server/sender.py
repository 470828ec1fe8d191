"""The original README's second example, sending side: the three ways to emit a cross-server event.

    python examples/cross_server/sender.py [--name=senderA] [--redis=redis://127.0.0.1:6379 ...]

Start a few ``cserver.py`` first. After 3 s the sender broadcasts ``say`` without a reply, after
6 s it asks every server for a reply through a callback (called once per reply, then once on
timeout if fewer than 3 came), and after 15 s it does the same with a promise (an
``AsyncResult`` resolved once, with every reply keyed by server name).

``--scale`` multiplies those delays (``--scale=0.2`` runs the whole demo in 3 s) and ``--exit``
stops the sender after the promise instead of waiting for Ctrl-C.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402

import gevent  # noqa: E402

from crossws_sync import WebSocketCrossServerAdapter  # noqa: E402

parser = argparse.ArgumentParser(description="sender of the original README's second example")
parser.add_argument("--name", default="senderA", help="unique server name (default senderA)")
parser.add_argument("--redis", action="append",
                    help="Redis node URL, repeat for several nodes (default redis://127.0.0.1:6379)")
parser.add_argument("--scale", type=float, default=1.0, help="multiply the demo's delays (default 1)")
parser.add_argument("--exit", action="store_true", help="exit after the promise instead of running on")
args = parser.parse_args()

redis_config = args.redis or ["redis://127.0.0.1:6379"]
server_name = args.name
print("Using configured values - serverName: %s" % server_name, flush=True)

cross_server = WebSocketCrossServerAdapter(
    redis_config=redis_config,
    server_name=server_name,
    on_redis_health_change=lambda health, info: print("Node health status changed:%s" % health, dict(info), flush=True),
    on_redis_subscription_error=lambda info: print("onRedisSubscriptionError:", dict(info), flush=True),
).start()
name = cross_server.get_server_name()


# When the targets include this server (a broadcast without except_self, or target_server
# naming it), this server answers too: its listener runs locally, right inside the emit call,
# without a round trip through Redis.
def on_say(data, callback):
    print('Received "say" event from another server:', flush=True)
    print(data, flush=True)
    if callback:
        callback({"msg": "Hi, this is server %s responding to you" % name})


cross_server.on_cross_server_event("say", on_say)


def send_without_reply():
    cross_server.emit_cross_server("say", {"content": "Hi everyone, I am %s" % name}, None, target_server=[])


def on_result(result):
    # Called once per reply, and once more on timeout if fewer than expected_responses came.
    print("Callback response result:", dict(result), flush=True)
    if result.success:
        print("Received server callback:", result.data, flush=True)
        print("Number of servers yet to respond:", result.remaining_responses, flush=True)
    else:
        print("Error message:", result.error, flush=True)
        print("Number of servers that did not respond:", result.unresponded_count, flush=True)


def send_with_callback():
    cross_server.emit_cross_server(
        "say", {"content": "Hi everyone, I am %s, please respond with your callback." % name}, on_result,
        target_server=[],
        expected_responses=3,
        # except_self=False,
        # timeout=2.0,
    )


def send_with_promise():
    # The AsyncResult resolves once every expected reply arrived, or on timeout with success False.
    promise = cross_server.emit_cross_server_with_promise(
        "say", {"content": "Hi everyone, I am %s, please respond with your callback for the promise." % name},
        target_server=[],
        expected_responses=3,
        # except_self=True,
        # timeout=2.0,
    )
    result = promise.get()  # or: cross_server.emit_cross_server_and_wait(...) in one call
    print("Promise response result:", dict(result), flush=True)
    if result.success:
        print("All expected nodes responded:", result.responses, flush=True)
    else:
        print("Nodes that have responded so far:", result.responses, flush=True)
        print("Number of servers that did not respond: %s" % result.unresponded_count, flush=True)


timers = [
    gevent.spawn_later(3 * args.scale, send_without_reply),
    gevent.spawn_later(6 * args.scale, send_with_callback),
    gevent.spawn_later(15 * args.scale, send_with_promise),
]
if args.exit:
    gevent.joinall(timers)
    cross_server.close()
else:
    cross_server.serve_forever()
