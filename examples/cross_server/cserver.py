"""The original README's second example, server side: a pure cross-server node (no WebSocket).

    python examples/cross_server/cserver.py --name=serverA [--redis=redis://127.0.0.1:6379 ...]

Start several at once with different names (each one is its own process), for example::

    for n in A B C D E; do python examples/cross_server/cserver.py --name=server$n & done

then run ``sender.py``. Every server answers the ``say`` event; when the sender asked for a reply
(callback or promise), ``callback`` is a function and the reply goes back to the sender only.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402

from crossws_sync import WebSocketCrossServerAdapter  # noqa: E402

parser = argparse.ArgumentParser(description="cross-server node of the original README's second example")
parser.add_argument("--name", default="serverA", help="unique server name (default serverA)")
parser.add_argument("--redis", action="append",
                    help="Redis node URL, repeat for several nodes (default redis://127.0.0.1:6379)")
args = parser.parse_args()

# Several Redis nodes are supported: each publish goes to one healthy node chosen by the
# selection strategy; every server listens on all of them. At least one node is required.
redis_config = args.redis or ["redis://127.0.0.1:6379"]
# Or as dicts of redis-py options: [{"host": "127.0.0.1", "port": 6379}, {"host": "127.0.0.1", "port": 6380}]

# Every server of the cluster needs a unique name.
server_name = args.name
print("Using configured values - serverName: %s" % server_name, flush=True)


def on_redis_health_change(health, info):
    print("Node health status changed:%s" % health, dict(info), flush=True)


def on_redis_subscription_error(info):
    print("onRedisSubscriptionError:", dict(info), flush=True)


cross_server = WebSocketCrossServerAdapter(
    redis_config=redis_config,
    server_name=server_name,
    on_redis_health_change=on_redis_health_change,
    on_redis_subscription_error=on_redis_subscription_error,
)


def on_say(data, callback):
    print('Received "say" event from another server:', data, flush=True)
    # When the sender used a callback or a promise, callback is a function: answer with it.
    if callback:
        callback({"msg": "Hi, this is server %s responding to you" % cross_server.get_server_name()})


cross_server.on_cross_server_event("say", on_say)

# Blocks until SIGINT / SIGTERM, then closes every Redis connection and greenlet.
cross_server.serve_forever()
