"""crossws_sync.io.forks: every registered adapter is started, shut down and reset after a fork,
one failing adapter does not stop the others, and the registry never keeps an adapter alive."""
import gc
import logging
import os
import subprocess
import sys
import weakref

import pytest

from crossws_sync.io import forks
from support import repo_root


class Managed:
    def __init__(self, log, name, fail=False):
        self.log, self.name, self.fail = log, name, fail

    def start(self):
        self.log.append(("start", self.name))
        if self.fail:
            raise RuntimeError("cannot start")
        return self

    def shutdown(self, *, code=1001, reason="server shutdown", timeout=5.0):
        self.log.append(("shutdown", self.name, code, reason, timeout))
        if self.fail:
            raise RuntimeError("cannot stop")

    def _after_fork(self):
        self.log.append(("after_fork", self.name, os.getpid()))


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """A registry of its own: adapters left by other tests are never started or stopped here."""
    fresh = weakref.WeakSet()
    monkeypatch.setattr(forks, "_adapters", fresh)
    return fresh


def test_start_all_and_shutdown_all_reach_every_adapter_even_past_a_failing_one(caplog):
    log = []
    adapters = [Managed(log, "a", fail=True), Managed(log, "b")]
    for adapter in adapters:
        forks.register(adapter)
    with caplog.at_level(logging.ERROR, logger="crossws_sync.lifecycle"):
        forks.start_all()
        forks.shutdown_all(code=1012, reason="restart", timeout=2.0)
    assert sorted(entry for entry in log if entry[0] == "start") == [("start", "a"), ("start", "b")]
    assert sorted(entry for entry in log if entry[0] == "shutdown") == [
        ("shutdown", "a", 1012, "restart", 2.0), ("shutdown", "b", 1012, "restart", 2.0)]
    assert {"adapter failed to start", "adapter shutdown failed"} <= {r.getMessage() for r in caplog.records}


def test_unregistered_and_collected_adapters_are_not_reached():
    log = []
    kept, dropped, collected = Managed(log, "kept"), Managed(log, "dropped"), Managed(log, "collected")
    forks.register(kept)
    forks.register(dropped)
    forks.register(collected)
    forks.unregister(dropped)
    forks.unregister(dropped)  # idempotent
    del collected
    gc.collect()
    forks.start_all()
    assert log == [("start", "kept")]


CHILD_SCRIPT = """
import os, sys
from crossws_sync.io import forks

class Managed:
    def __init__(self):
        self.resets = []

    def _after_fork(self):
        self.resets.append(os.getpid())

adapter = Managed()
forks.register(adapter)
pid = os.fork()
if pid == 0:
    print("child", adapter.resets == [os.getpid()], flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print("parent", adapter.resets == [], flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_resets_every_adapter_and_the_parent_does_not():
    out = subprocess.run([sys.executable, "-c", CHILD_SCRIPT], capture_output=True, text=True, timeout=60,
                         cwd=repo_root(), env=dict(os.environ, PYTHONPATH=repo_root()))
    assert sorted(out.stdout.split("\n")) == ["", "child True", "parent True"], out.stderr
