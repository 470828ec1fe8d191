"""The cross-server bus over Redis pub/sub: Redis connections (publisher, subscriber, RESP
reader), one node and the set of nodes with their health and strategies, RPC with replies,
and :class:`CrossServerBus` on top: a facade over channels (which are wanted), outbox
(publishing) and receiver (echo filter, decoding, routing by channel)."""
from .bus import STRATEGIES, CrossServerBus

__all__ = ["CrossServerBus", "STRATEGIES"]
