"""A small Chrome DevTools Protocol driver for the browser tests: headless Chromium, no download.

It starts the system's ``chromium`` (Debian's package) with a fresh profile and
``--remote-debugging-port=0``, reads the port from ``DevToolsActivePort``, and talks CDP over one
WebSocket (websocket-client) with flattened sessions: one isolated browser context per page, so
two pages are two users. Waits poll with deadlines; the whole process group is killed on close.
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Optional

import gevent
import gevent.event
import gevent.lock
import pytest
import websocket

#: Flags from the project's brief, plus a few that only remove background noise.
LAUNCH_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
]


def find_chromium() -> Optional[str]:
    """``$CROSSWS_CHROMIUM``, ``/usr/bin/chromium`` or ``chromium`` on PATH; ``None`` when absent."""
    for candidate in (os.environ.get("CROSSWS_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_chromium() -> str:
    """The chromium binary, or skip the test: ``CROSSWS_SKIP_BROWSER=1`` skips on purpose; a
    missing chromium skips locally and fails in CI (``CI=true``), so CI never skips quietly."""
    if os.environ.get("CROSSWS_SKIP_BROWSER") == "1":
        pytest.skip("CROSSWS_SKIP_BROWSER=1: browser tests disabled")
    executable = find_chromium()
    if executable is None:
        message = "chromium is not installed (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("browser tests need chromium in CI: " + message)
        pytest.skip(message)
    return executable


class CDPError(Exception):
    """A CDP command failed, timed out, or the page threw."""


class Browser:
    """One headless Chromium process and its DevTools connection.

    Args:
        executable: path of the chromium binary.
        timeout: seconds to wait for the DevTools endpoint.
    """

    def __init__(self, executable: str, timeout: float = 30.0) -> None:
        self.dir = tempfile.mkdtemp(prefix="crossws-chromium-")
        profile = os.path.join(self.dir, "profile")
        self.log_path = os.path.join(self.dir, "chromium.log")
        args = [executable] + LAUNCH_FLAGS + ["--user-data-dir=" + profile, "--remote-debugging-port=0",
                                              "--remote-debugging-address=127.0.0.1", "about:blank"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self._ids = itertools.count(1)
        self._pending: Dict[int, gevent.event.AsyncResult] = {}
        self._pages: Dict[str, "Page"] = {}
        self._send_lock = gevent.lock.Semaphore()
        self._closed = False
        try:
            self.ws = websocket.create_connection(self._endpoint(profile, timeout), suppress_origin=True,
                                                  enable_multithread=False, timeout=None)
        except BaseException:
            self.close()
            raise
        self._reader = gevent.spawn(self._read)

    def _endpoint(self, profile: str, timeout: float) -> str:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CDPError("chromium exited with %s:\n%s" % (self.proc.returncode, self.log_tail()))
            try:
                with open(port_file, encoding="ascii") as handle:
                    lines = handle.read().split()
                if len(lines) >= 2:
                    return "ws://127.0.0.1:%s%s" % (lines[0], lines[1])
            except OSError:
                pass
            gevent.sleep(0.05)
        raise CDPError("no DevTools endpoint after %.0fs:\n%s" % (timeout, self.log_tail()))

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return ""

    def _read(self) -> None:
        while True:
            try:
                raw = self.ws.recv()
            except Exception as exc:  # connection gone: fail every waiter
                for result in self._pending.values():
                    result.set_exception(CDPError("DevTools connection lost: %r" % exc))
                self._pending.clear()
                return
            if not raw:
                continue
            message = json.loads(raw)
            if "id" in message:
                waiter = self._pending.pop(message["id"], None)
                if waiter is not None:
                    waiter.set(message)
            else:
                page = self._pages.get(message.get("sessionId", ""))
                if page is not None:
                    page._on_event(message.get("method", ""), message.get("params", {}))

    def send(self, method: str, params: Optional[Dict[str, Any]] = None, session_id: Optional[str] = None,
             timeout: float = 15.0) -> Dict[str, Any]:
        """Run one CDP command and return its ``result``.

        Raises:
            CDPError: the command failed or got no answer within ``timeout`` seconds.
        """
        if self._closed:
            raise CDPError("browser is closed")
        message_id = next(self._ids)
        waiter = gevent.event.AsyncResult()
        self._pending[message_id] = waiter
        message: Dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        with self._send_lock:
            self.ws.send(json.dumps(message))
        try:
            reply = waiter.get(timeout=timeout)
        except gevent.Timeout:
            self._pending.pop(message_id, None)
            raise CDPError("%s: no answer in %.0fs" % (method, timeout)) from None
        if "error" in reply:
            raise CDPError("%s failed: %s" % (method, reply["error"]))
        return reply.get("result", {})

    def new_page(self, url: str) -> "Page":
        """Open ``url`` in a new tab of a new, isolated browser context (its own cookies and storage)."""
        context = self.send("Target.createBrowserContext", {"disposeOnDetach": True})["browserContextId"]
        target = self.send("Target.createTarget", {"url": "about:blank", "browserContextId": context})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, target, session)
        self._pages[session] = page
        for domain in ("Runtime.enable", "Page.enable", "Log.enable"):
            page.send(domain)
        page.goto(url)
        return page

    def close(self) -> None:
        """Close the connection and kill the whole Chromium process group; remove the profile."""
        self._closed = True
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.close(timeout=1)
            except Exception:
                pass
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.kill(block=False)
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # helpers (zygote, renderers) left in the group once the main process is gone
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Page:
    """One tab, driven through its CDP session; ``log`` collects console output and errors."""

    def __init__(self, browser: Browser, target_id: str, session_id: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session_id = session_id
        self.log: List[str] = []
        self.errors: List[str] = []

    def send(self, method: str, params: Optional[Dict[str, Any]] = None, timeout: float = 15.0) -> Dict[str, Any]:
        return self.browser.send(method, params, self.session_id, timeout)

    def _on_event(self, method: str, params: Dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
            self.log.append("console.%s: %s" % (params.get("type"), text))
            if params.get("type") == "error":
                self.errors.append(text)
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "exception")
            self.log.append("exception: %s" % text)
            self.errors.append(text)
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.log.append("log.%s: %s %s" % (entry.get("level"), entry.get("text"), entry.get("url", "")))
            if entry.get("level") == "error":
                self.errors.append(entry.get("text", ""))

    def goto(self, url: str, timeout: float = 15.0) -> None:
        """Navigate and wait until the document has loaded."""
        result = self.send("Page.navigate", {"url": url}, timeout=timeout)
        if result.get("errorText"):
            raise CDPError("navigation to %s failed: %s" % (url, result["errorText"]))
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", timeout=timeout,
                      message="%s to load" % url)

    def evaluate(self, expression: str, timeout: float = 15.0) -> Any:
        """Evaluate JavaScript in the page (promises are awaited) and return the value as JSON.

        Raises:
            CDPError: the expression threw (the message and the page's log are included).
        """
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True, "userGesture": True}, timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError("%s\nwhile evaluating: %s\npage log:\n%s" % (text, expression[:300], "\n".join(self.log[-20:])))
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 10.0, message: str = "") -> Any:
        """Poll ``expression`` until it is truthy; fail with the page's log after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("timed out after %.1fs waiting for %s\npage log:\n%s" % (
                    timeout, message or expression, "\n".join(self.log[-20:])))
            gevent.sleep(0.05)

    # User actions --------------------------------------------------------------------------------

    def type(self, selector: str, text: str) -> None:
        """Focus a field, clear it and type ``text`` as keyboard input."""
        self.evaluate("(() => { const e = document.querySelector(%s); e.focus(); e.select(); return true; })()"
                      % json.dumps(selector))
        self.send("Input.insertText", {"text": text})

    def click(self, selector: str) -> None:
        """Click the element with a real mouse press and release at its centre."""
        box = self.evaluate("(() => { const e = document.querySelector(%s); e.scrollIntoView({block: 'center'});"
                            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2,"
                            " r.width * r.height]; })()" % json.dumps(selector))
        if not box or not box[2]:
            raise CDPError("%s is not visible" % selector)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1})

    def text(self, selector: str) -> str:
        """``textContent`` of the first element matching ``selector`` (``""`` when none)."""
        return self.evaluate("(document.querySelector(%s) || {}).textContent || ''" % json.dumps(selector))

    def texts(self, selector: str) -> List[str]:
        """``textContent`` of every element matching ``selector``."""
        return self.evaluate("Array.from(document.querySelectorAll(%s), e => e.textContent)" % json.dumps(selector))

    # Screenshots ---------------------------------------------------------------------------------

    def set_viewport(self, width: int, height: int, scale: float = 1.0) -> None:
        """Fix the page's viewport (CSS pixels) and device scale factor, for repeatable screenshots."""
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                         "deviceScaleFactor": scale, "mobile": False})

    def rect(self, selector: str) -> Dict[str, float]:
        """``{"x", "y", "width", "height"}`` of the first element matching ``selector``, in CSS
        pixels of the viewport."""
        box = self.evaluate("(() => { const e = document.querySelector(%s); if (!e) return null;"
                            " const r = e.getBoundingClientRect();"
                            " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()" % json.dumps(selector))
        if not box:
            raise CDPError("%s is not in the page" % selector)
        return box

    def screenshot(self, clip: Optional[Dict[str, float]] = None) -> bytes:
        """A PNG of the viewport, or of ``clip`` (``{"x", "y", "width", "height"}`` in CSS pixels of
        the viewport, as :meth:`rect` gives it; CDP wants document coordinates, so the scroll
        offset is added here)."""
        params: Dict[str, Any] = {"format": "png"}
        if clip is not None:
            scroll = self.evaluate("[window.scrollX, window.scrollY]")
            params["clip"] = dict(clip, x=clip["x"] + scroll[0], y=clip["y"] + scroll[1], scale=1)
        return base64.b64decode(self.send("Page.captureScreenshot", params, timeout=30)["data"])
