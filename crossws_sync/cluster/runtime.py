"""What one process of a node runs now: its bus and its router, shared by the facade's parts."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, List, Optional

if TYPE_CHECKING:
    from ..bus.bus import CrossServerBus
    from .recovery import Recovery
    from .routing import Router


class Runtime:
    """The bus and the router of this process (``None`` before the start and after a fork).

    Args:
        ensure_started: starts the node when it is not started yet (idempotent).
        redis_config: the node's Redis configurations; a node added at run time is appended.
    """

    __slots__ = ("bus", "router", "recovery", "redis_config", "_ensure_started")

    def __init__(self, ensure_started: Callable[[], None], redis_config: List[Any]) -> None:
        self.bus: Optional["CrossServerBus"] = None
        self.router: Optional["Router"] = None
        #: connection state recovery, when on (built with the bus)
        self.recovery: Optional["Recovery"] = None
        self.redis_config = redis_config
        self._ensure_started = ensure_started

    @property
    def redis_enabled(self) -> bool:
        """Whether the node has Redis at all."""
        return bool(self.redis_config)

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
