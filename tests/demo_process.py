"""The demo launcher (``python -m crossws_sync demo``) as a child process, for the demo and browser tests."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Dict, List, Optional

import gevent
import psutil

from crossws_sync.demo import launcher
from support import repo_root, wait_for

NODE_LINE = re.compile(r"^\s+(node\d+)\s+(http://\S+)\s+\(pid (\d+)\)$")
START_TIMEOUT = 45.0


class DemoProcess:
    """``python -m crossws_sync demo ...`` as a child process; a greenlet collects its output."""

    def __init__(self, args: List[str], env: Optional[Dict[str, str]] = None) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        environ.pop(launcher.ENV_REDIS_URL, None)
        environ.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "crossws_sync", "demo"] + args, cwd=repo_root(),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environ)
        self.lines: List[str] = []
        self.known_children: List[psutil.Process] = []
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self) -> Dict[str, str]:
        """Wait for the launcher's summary; return ``{node name: url}``."""
        wait_for(lambda: "Press Ctrl-C" in self.output or self.proc.poll() is not None, timeout=START_TIMEOUT,
                 message="the demo to print its URLs")
        assert self.proc.poll() is None, "demo exited early:\n" + self.output
        self.known_children = self.children()
        urls = {}
        for line in self.lines:
            match = NODE_LINE.match(line)
            if match:
                urls[match.group(1)] = match.group(2)
        return urls

    def children(self) -> List[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop_with(self, sig: int, timeout: float = 30.0) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.reader.join(timeout=5)
        return code

    def cleanup(self) -> None:
        """Teardown: kill whatever of this tree is still running (only processes it started)."""
        leftovers = self.children() + [p for p in self.known_children if p.is_running()]
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for child in leftovers:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        self.reader.kill()
