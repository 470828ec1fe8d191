"""Result objects returned to callbacks and promises. Pure."""
from __future__ import annotations

from typing import Any


class Result(dict):
    """A ``dict`` with attribute access: ``result["success"]`` and ``result.success`` both work.

    Keys are the original's result keys in snake_case (``remaining_responses``,
    ``unresponded_count``, ``error_code``, ``callback_id``...).
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value
