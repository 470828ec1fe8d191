"""Helpers shared by the bus test modules: a bus factory and a raw Redis spy."""
from __future__ import annotations

from typing import Any, Callable, Dict, List

import gevent
import pytest
import redis

from crossws_sync.bus.bus import CrossServerBus


@pytest.fixture
def make_bus() -> Any:
    """Create CrossServerBus instances (fast health timings by default); all closed at teardown."""
    buses: List[CrossServerBus] = []

    def factory(server_name: str, redis_config: Any, **options: Any) -> CrossServerBus:
        options.setdefault("redis_ping_interval", 0.5)
        options.setdefault("redis_ping_timeout", 0.5)
        bus = CrossServerBus(server_name=server_name, redis_config=redis_config, **options)
        buses.append(bus)
        return bus

    yield factory
    for bus in buses:
        bus.close()


class Spy:
    """A plain redis-py subscriber that records the raw bytes published on some channels."""

    def __init__(self, port: int, *channels: str) -> None:
        self.client = redis.Redis(host="127.0.0.1", port=port)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(*channels)
        self.messages: List[Dict[str, Any]] = []
        self._greenlet = gevent.spawn(self._run)
        # wait for the subscription confirmations to be consumed
        deadline = 50
        while self.client.pubsub_numsub(channels[0])[0][1] < 1 and deadline:
            gevent.sleep(0.02)
            deadline -= 1

    def _run(self) -> None:
        for message in self.pubsub.listen():
            if message["type"] == "message":
                self.messages.append({"channel": message["channel"].decode(), "data": message["data"]})

    def on(self, channel: str) -> List[bytes]:
        """Raw payloads seen on ``channel``."""
        return [m["data"] for m in self.messages if m["channel"] == channel]

    def close(self) -> None:
        self._greenlet.kill()
        self.pubsub.close()
        self.client.close()


def collect() -> "tuple[list, Callable[..., None]]":
    """A list and a callable appending its single argument (for callbacks)."""
    items: list = []
    return items, items.append
