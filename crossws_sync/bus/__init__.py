"""The cross-server bus over Redis pub/sub: Redis connections (publisher, subscriber, RESP
reader), one node and the set of nodes with their health and strategies, RPC with replies,
and :class:`CrossServerBus` on top."""
from .bus import STRATEGIES, CrossServerBus

__all__ = ["CrossServerBus", "STRATEGIES"]
