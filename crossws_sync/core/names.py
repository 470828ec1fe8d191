"""The name policy: which namespaces, room ids and socket ids are accepted, and their channels. Pure.

Names come from clients (a chat app passes the room a client names to ``join_room``), so each is
hostile until checked here. A valid name is a ``str`` that

* is not empty and at most ``max_bytes`` bytes long in UTF-8 (default 256);
* encodes to UTF-8 (no lone surrogates such as ``"\\ud800"``, which JSON escapes can carry);
* holds no control characters (C0, DEL), so it cannot forge log lines or protocol framing.

A room namespace must also not be reserved: it may not start with the WebSocket prefix
(``ws:``) or the bridge prefix (``csbp:``), not equal a system name (``broadcast``,
``private_socket``) and not start with ``_crossws``. Then ``ws_prefix + namespace`` is one-to-one:
no namespace can alias another namespace's channel or a system channel (``ws:broadcast``,
``ws:private_socket``, ``ws:_crossws.*``, ``csbp:*``). Namespace ``chat`` is still channel
``ws:chat``, as in the original, so mixed clusters keep working.
"""
from __future__ import annotations

import re
from typing import Iterable, List

from ..errors import InvalidNameError

#: Default cap of a namespace, room id or socket id, in UTF-8 bytes.
DEFAULT_MAX_NAME_BYTES = 256
#: Namespaces whose channels are the original's system channels.
RESERVED_NAMESPACES = frozenset({"broadcast", "private_socket"})
#: Prefix of this library's own channels under the WebSocket prefix.
RESERVED_NAMESPACE_PREFIX = "_crossws"

_CONTROL = re.compile("[\x00-\x1f\x7f]")


def check_name(label: str, value: object, max_bytes: int = DEFAULT_MAX_NAME_BYTES) -> str:
    """Return ``value`` if it is a valid name.

    Raises:
        TypeError: not a non-empty ``str`` (the original's argument check).
        InvalidNameError: too long, not encodable to UTF-8, or holding control characters.
    """
    if not isinstance(value, str) or not value:
        raise TypeError("%s must be a non-empty string" % label)
    if not value.isascii() or len(value) > max_bytes:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidNameError("%s is not valid text (it holds a lone surrogate)" % label) from None
        if size > max_bytes:
            raise InvalidNameError("%s is %d bytes long, over the %d-byte limit" % (label, size, max_bytes))
    if _CONTROL.search(value) is not None:
        raise InvalidNameError("%s holds control characters" % label)
    return value


def valid_name(value: object, max_bytes: int = DEFAULT_MAX_NAME_BYTES) -> bool:
    """Whether :func:`check_name` accepts ``value``."""
    try:
        check_name("name", value, max_bytes)
    except (TypeError, InvalidNameError):
        return False
    return True


def check_names(label: str, values: Iterable[object], max_bytes: int = DEFAULT_MAX_NAME_BYTES) -> List[str]:
    """:func:`check_name` for each of ``values``; returns them as a list."""
    return [check_name(label, value, max_bytes) for value in values]


def reserved_reason(namespace: str, ws_prefix: str, bridge_prefix: str) -> str:
    """Why ``namespace`` is reserved, or ``""`` when it is not."""
    if namespace.startswith(ws_prefix) or namespace.startswith(bridge_prefix):
        return ("it starts with a channel prefix (%r / %r); pass the namespace without it"
                % (ws_prefix, bridge_prefix))
    if namespace in RESERVED_NAMESPACES:
        return "it is the name of a system channel"
    if namespace.startswith(RESERVED_NAMESPACE_PREFIX):
        return "names starting with %r are reserved for the cluster's own channels" % RESERVED_NAMESPACE_PREFIX
    return ""


def check_namespace(namespace: object, ws_prefix: str = "ws:", bridge_prefix: str = "csbp:",
                    max_bytes: int = DEFAULT_MAX_NAME_BYTES) -> str:
    """Return ``namespace`` if it is a valid, unreserved room namespace.

    Raises:
        TypeError: not a non-empty ``str``.
        InvalidNameError: invalid text (see :func:`check_name`) or reserved.
    """
    name = check_name("roomNamespace", namespace, max_bytes)
    reason = reserved_reason(name, ws_prefix, bridge_prefix)
    if reason:
        raise InvalidNameError("room namespace %r is reserved: %s" % (name, reason))
    return name


def preset_namespace(namespace: object, ws_prefix: str = "ws:", bridge_prefix: str = "csbp:",
                     max_bytes: int = DEFAULT_MAX_NAME_BYTES) -> str:
    """A ``preset_room_namespaces`` entry as a namespace: the original accepts it with the
    WebSocket prefix already on (``"ws:chat"`` is namespace ``"chat"``), so the prefix is dropped.

    Raises:
        TypeError, InvalidNameError: as :func:`check_namespace`, after the prefix is dropped.
    """
    if isinstance(namespace, str) and namespace.startswith(ws_prefix):
        namespace = namespace[len(ws_prefix):]
    return check_namespace(namespace, ws_prefix, bridge_prefix, max_bytes)


def namespace_channel(namespace: str, ws_prefix: str = "ws:") -> str:
    """The Redis channel of a checked namespace: ``ws_prefix + namespace``."""
    return ws_prefix + namespace


__all__ = ["DEFAULT_MAX_NAME_BYTES", "RESERVED_NAMESPACES", "RESERVED_NAMESPACE_PREFIX", "check_name",
           "check_names", "check_namespace", "namespace_channel", "preset_namespace", "reserved_reason",
           "valid_name"]
