"""on / once / off listener registry with tags, shared by the adapter and the client. Pure.

Fixes two bugs of the original: the registry is a real ``dict`` (event names such as
``constructor`` or ``__proto__`` are ordinary keys), and a ``once`` registration removes only
itself, never a persistent registration of the same function.
"""
from __future__ import annotations

import inspect
import logging
import sys
from typing import Any, Callable, Dict, Hashable, List, Optional, Set

_SENTINEL: Any = object()


def positional_capacity(fn: Callable[..., Any]) -> int:
    """How many positional arguments ``fn`` accepts: ``sys.maxsize`` with ``*args``, ``-1`` when
    its signature cannot be read (some builtins)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return -1
    count = 0
    for parameter in parameters:
        if parameter.kind is parameter.VAR_POSITIONAL:
            return sys.maxsize
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


class _Entry:
    __slots__ = ("fn", "once", "tag", "capacity")

    def __init__(self, fn: Callable[..., Any], once: bool, tag: Optional[Hashable]) -> None:
        self.fn = fn
        self.once = once
        self.tag = tag
        #: positional arguments ``fn`` accepts (read once, at registration; see emit_with_extra)
        self.capacity = positional_capacity(fn)


def check_event_name(event: object) -> str:
    """Return ``event`` if it is a non-empty ``str``, else raise ``TypeError`` (as the original)."""
    if not isinstance(event, str) or not event:
        raise TypeError("event must be a non-empty string")
    return event


class ListenerRegistry:
    """Listeners per event name; exceptions raised by one listener never reach the others.

    Args:
        logger: where listener exceptions are logged (with traceback, at ERROR).
        on_exception: called with ``(event, exception)`` after a listener raised.
    """

    def __init__(self, logger: logging.Logger, on_exception: Optional[Callable[[str, BaseException], None]] = None) -> None:
        # Lists are never mutated in place (copy on write), so emit() iterates them without a
        # copy even when a listener registers or removes listeners while it runs.
        self._listeners: Dict[str, List[_Entry]] = {}
        self._once_events: Set[str] = set()
        self._logger = logger
        self._on_exception = on_exception

    def on(self, event: str, listener: Callable[..., Any], tag: Optional[Hashable] = None, *, once: bool = False) -> None:
        """Register ``listener`` for ``event`` (``once=True``: removed after its first call)."""
        check_event_name(event)
        if not callable(listener):
            raise TypeError("listener must be a function")
        self._listeners[event] = self._listeners.get(event, []) + [_Entry(listener, once, tag)]
        if once:
            self._once_events.add(event)

    def off(self, event: str, listener_or_tag: Any = _SENTINEL) -> None:
        """Remove all listeners of ``event``, or those equal to a function, or with a tag."""
        check_event_name(event)
        entries = self._listeners.get(event)
        if entries is None:
            return
        if listener_or_tag is _SENTINEL:
            remaining: List[_Entry] = []
        elif callable(listener_or_tag):
            remaining = [e for e in entries if e.fn != listener_or_tag]
        else:
            remaining = [e for e in entries if e.tag is None or e.tag != listener_or_tag]
        if remaining:
            self._listeners[event] = remaining
        else:
            del self._listeners[event]

    def has(self, event: str) -> bool:
        """Whether ``event`` has at least one listener."""
        return event in self._listeners

    def count(self, event: str) -> int:
        """Number of listeners registered for ``event``."""
        return len(self._listeners.get(event, ()))

    def emit(self, event: str, *args: Any) -> int:
        """Call every listener of ``event`` with ``args``; return how many were called.

        ``once`` entries are removed before they run, so a listener that re-registers itself
        keeps its new registration. Exceptions are logged and swallowed per listener.
        """
        entries = self._listeners.get(event)
        if not entries:
            return 0
        if event in self._once_events:
            self._drop_once(event, entries)
        called = 0
        for entry in entries:
            called += 1
            try:
                entry.fn(*args)
            except Exception as exc:  # user code: log and keep the others running
                self._failed(event, exc)
        return called

    def emit_with_extra(self, event: str, extra: Any, *args: Any) -> int:
        """Like :meth:`emit`, and the listeners that accept one more positional argument than
        ``args`` are called with ``extra`` after them (a listener taking only ``args`` keeps
        working). Returns how many listeners got ``extra``."""
        entries = self._listeners.get(event)
        if not entries:
            return 0
        if event in self._once_events:
            self._drop_once(event, entries)
        wanted = len(args) + 1
        given = 0
        for entry in entries:
            try:
                if entry.capacity >= wanted:
                    given += 1
                    entry.fn(*args, extra)
                else:
                    entry.fn(*args)
            except Exception as exc:  # user code: log and keep the others running
                self._failed(event, exc)
        return given

    def _drop_once(self, event: str, entries: List[_Entry]) -> None:
        self._once_events.discard(event)
        kept = [e for e in entries if not e.once]
        if kept:
            self._listeners[event] = kept
        else:
            del self._listeners[event]

    def _failed(self, event: str, exc: BaseException) -> None:
        self._logger.exception("listener for %r raised", event)
        if self._on_exception is not None:
            self._on_exception(event, exc)

    def clear(self) -> None:
        """Remove every listener."""
        self._listeners.clear()
        self._once_events.clear()
