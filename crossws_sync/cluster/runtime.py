"""What one process of a node runs now: its bus and its router, shared by the facade's parts."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from ..bus.bus import CrossServerBus
    from .routing import Router


class Runtime:
    """The bus and the router of this process (``None`` before the start and after a fork).

    Args:
        ensure_started: starts the node when it is not started yet (idempotent).
        redis_enabled: whether the node has Redis at all (``redis_config`` given).
    """

    __slots__ = ("bus", "router", "redis_enabled", "_ensure_started")

    def __init__(self, ensure_started: Callable[[], None], redis_enabled: bool) -> None:
        self.bus: Optional["CrossServerBus"] = None
        self.router: Optional["Router"] = None
        self.redis_enabled = redis_enabled
        self._ensure_started = ensure_started

    def started_router(self) -> Optional["Router"]:
        """The router once the node is started (starting it if needed); ``None`` without one."""
        self._ensure_started()
        return self.router

    def started_bus(self) -> Optional["CrossServerBus"]:
        """The bus once the node is started (starting it if needed); ``None`` without Redis."""
        if not self.redis_enabled:
            return None
        self._ensure_started()
        return self.bus


__all__ = ["Runtime"]
