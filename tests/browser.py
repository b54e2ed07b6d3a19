"""Headless Chromium driven over the DevTools protocol on a pipe (no websocket library).

`open_page(url, shot)` loads a page with the network off (every http(s)
request goes to a dead proxy, and is recorded), waits until the page's
charts are drawn, and returns what the page did: console errors, uncaught
exceptions, http(s) requests, and an `evaluate(js)` for DOM checks; it
writes a screenshot to `shot`. Tests that need it are skipped, with the
reason, when Chromium is not installed (.ci/run installs it).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("headless Chromium not found (apt install chromium); .ci/run installs it")


class Page:
    def __init__(self, proc, to_browser, from_browser):
        self.proc = proc
        self.out = to_browser
        self.inp = from_browser
        self.next_id = 0
        self.buffer = b""
        self.session = None
        self.console_errors: list[str] = []
        self.exceptions: list[str] = []
        self.requests: list[str] = []
        self.loaded = False

    def send(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.out, json.dumps(msg).encode() + b"\0")
        wanted = self.next_id
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reply = self._read()
            if reply.get("id") == wanted:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._event(reply)
        raise TimeoutError(method)

    def _read(self) -> dict:
        while b"\0" not in self.buffer:
            chunk = os.read(self.inp, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def _event(self, msg: dict) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.console_errors.append(
                " ".join(str(a.get("value", a.get("description"))) for a in params.get("args", []))
            )
        elif method == "Runtime.exceptionThrown":
            self.exceptions.append(json.dumps(params.get("exceptionDetails", {}))[:500])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.console_errors.append(params["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if url.startswith(("http:", "https:", "ws:", "wss:")):
                self.requests.append(url)
        elif method == "Page.loadEventFired":
            self.loaded = True

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    def close(self) -> None:
        for fd in (self.out, self.inp):
            try:
                os.close(fd)
            except OSError:
                pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def pump(self, seconds: float) -> None:
        """Let events arrive for a while (a harmless call, repeated)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.evaluate("1")
            time.sleep(0.05)


def open_page(url: str, shot: Path, ready_js: str, width: int = 1200, height: int = 1600) -> Page:
    """Load `url` and wait until `ready_js` is true (at most 20 s); write a screenshot to `shot`."""
    binary = chromium()
    to_r, to_w = os.pipe()  # we write commands, Chromium reads them on fd 3
    from_r, from_w = os.pipe()  # Chromium writes replies on fd 4

    def child_fds():  # copies first: dup2 onto itself would keep the close-on-exec flag
        a, b = os.dup(to_r), os.dup(from_w)
        os.dup2(a, 3)
        os.dup2(b, 4)

    proc = subprocess.Popen(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-pipe",
            "--proxy-server=127.0.0.1:9",  # the network is off: a request fails
            "--no-first-run",
            "--no-default-browser-check",
            f"--user-data-dir={shot.parent / 'chromium-profile'}",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        preexec_fn=child_fds,
        close_fds=False,  # fds 3 and 4 are made in the child, after the parent's were chosen
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(to_r)
    os.close(from_w)
    page = Page(proc, to_w, from_r)
    try:
        target = page.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = page.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, False
        )
        page.session = attached["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            page.send(f"{domain}.enable")
        page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        page.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ready = page.evaluate(ready_js)  # a call also reads the events that came meanwhile
            if ready and page.loaded:
                break
            time.sleep(0.1)
        page.pump(0.5)  # late console messages
        shot_data = page.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        shot.write_bytes(base64.b64decode(shot_data["data"]))
    except BaseException:
        page.close()
        raise
    return page
