"""Result objects returned to callbacks and promises. Pure."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional


class Result(Dict[str, Any]):
    """The original's result objects: a ``dict`` whose keys also read as typed attributes.

    ``result["success"]`` and ``result.success`` both work; a key that is absent raises
    ``KeyError`` / ``AttributeError`` (keys are never invented). Being a ``dict``, a Result equals
    the dict with the same keys, is serialised by ``json`` as that dict, pickles and copies as
    one. Keys are the original's result keys in snake_case; the ones the library sets are
    declared below with their types. Any other key is still readable and writable as an
    attribute at run time (not for a type checker).
    """

    __slots__ = ()

    # RPC and ack results (cross-server calls, client acks).
    success: bool
    data: Any
    responses: Dict[str, Any]
    remaining_responses: int
    error: Any  # a message (str); the exception in the client's ``error`` / ``close`` events
    error_code: str
    message: str
    callback_id: str
    unresponded_count: int
    unresponded_servers: List[str]
    # Client lifecycle events.
    url: str
    code: int
    reason: str
    was_clean: bool
    repeat: int
    timeout: float
    status: Optional[int]
    # Redis health / subscription / name-conflict hook infos.
    host: str
    port: int
    server_name: str
    event: str
    is_healthy: bool
    healthy_subscriber_count: int
    healthy_publisher_count: int
    total_node_count: int
    type: str
    channel: str
    subscribers: int

    if not TYPE_CHECKING:  # a type checker sees only the declared keys
        def __getattr__(self, name: str) -> Any:
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

        def __setattr__(self, name: str, value: Any) -> None:
            self[name] = value

        def __delattr__(self, name: str) -> None:
            try:
                del self[name]
            except KeyError:
                raise AttributeError(name) from None

    def __dir__(self) -> List[str]:
        return sorted(set(super().__dir__()) | {key for key in self if isinstance(key, str)})
