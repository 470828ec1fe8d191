"""The modules' paths before the package was laid out in layers keep working.

``import crossws_sync.wsgi`` (or ``gunicorn -k crossws_sync.gunicorn.GeventWebSocketWorker``)
imports the module at its new path and binds it under the old name too: the same module object,
so everything defined there is there under both names. Nothing is imported before it is asked for.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import Optional, Sequence

#: Old path -> new path (both under ``crossws_sync``).
MOVED = {
    "backoff": "core.backoff",
    "calls": "bus.calls",
    "connection": "server.connection",
    "crossserver": "cluster.crossserver",
    "deflate": "wire.deflate",
    "directory": "core.directory",
    "dispatch": "io.dispatch",
    "distributed": "cluster.routing",
    "envelope": "wire.envelope",
    "frames": "wire.frames",
    "gunicorn": "server.gunicorn",
    "lifecycle": "io.forks",
    "listeners": "core.listeners",
    "names": "core.names",
    "nodes": "bus.node",
    "nodeset": "bus.nodes",
    "outage": "cluster.outage",
    "protocol": "wire.events",
    "publisher": "bus.publisher",
    "request": "wire.request",
    "resp": "bus.connection",
    "rooms": "core.rooms",
    "rpc": "bus.rpc",
    "signing": "wire.signing",
    "sockets": "io.sockets",
    "static_files": "server.static",
    "subscriber": "bus.subscriber",
    "supervisor": "io.supervisor",
    "upgrade": "wire.url",
    "wsgi": "server.wsgi",
    "wsserver": "server.service",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """Already executed under its new name."""


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Optional[Sequence[str]],
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        package, _, name = fullname.rpartition(".")
        new = MOVED.get(name) if package == "crossws_sync" else None
        if new is None or new == name:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias("crossws_sync." + new))


def install_module_aliases() -> None:
    """Let the old module paths import (idempotent)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
