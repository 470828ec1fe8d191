"""Process-wide bookkeeping of adapters: fork safety and graceful shutdown of all of them."""
from __future__ import annotations

import logging
import os
import weakref
from typing import Any, Optional, Protocol

logger = logging.getLogger("crossws_sync.lifecycle")


class _Managed(Protocol):
    def shutdown(self, *, code: Optional[int] = None, reason: Optional[str] = None, timeout: float = 5.0) -> None: ...

    def _after_fork(self) -> None: ...

    def start(self) -> Any: ...


_adapters: "weakref.WeakSet[Any]" = weakref.WeakSet()


def register(adapter: _Managed) -> None:
    """Track ``adapter`` so forks and worker shutdowns reach it."""
    _adapters.add(adapter)


def unregister(adapter: _Managed) -> None:
    _adapters.discard(adapter)


def _after_fork_in_child() -> None:
    for adapter in list(_adapters):
        try:
            adapter._after_fork()
        except Exception:
            logger.exception("adapter could not reset after fork")


def start_all() -> None:
    """Start every adapter of this process (a gunicorn worker calls it once it is ready)."""
    for adapter in list(_adapters):
        try:
            adapter.start()
        except Exception:
            logger.exception("adapter failed to start")


def shutdown_all(*, code: Optional[int] = None, reason: Optional[str] = None, timeout: float = 5.0) -> None:
    """Gracefully shut down every adapter of this process (close frames, deregistration).

    ``code`` / ``reason``: ``None`` lets each adapter use its own (its ``shutdown_code``)."""
    for adapter in list(_adapters):
        try:
            adapter.shutdown(code=code, reason=reason, timeout=timeout)
        except Exception:
            logger.exception("adapter shutdown failed")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
