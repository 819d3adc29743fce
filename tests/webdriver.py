"""A small W3C WebDriver client over ``urllib``, and the playground started as a user starts it.

Why not Selenium: the browser tests need six WebDriver commands (new session, navigate, find an
element, perform pointer actions, run a script, take a screenshot). Speaking the W3C protocol to
Debian's ``chromedriver`` directly takes the few dozen lines below and adds no package: no
version floor to keep working on Python 3.10, and no Selenium Manager that could try to download
a driver (CI reaches no network but the package registries). The driver and the browser are the
system's, named by path, never fetched.

:class:`Playground` runs ``python -m common.playground ARGS`` as a subprocess and waits for
the line with its address, so the tests use the real command, not a copy of its set-up.
"""
from __future__ import annotations

import base64
import json
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"
"""The key under which the W3C protocol names an element in JSON."""
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--hide-scrollbars", "--force-device-scale-factor=1")
STARTUP_SECONDS = 60


def browser_paths() -> tuple[str | None, str | None]:
    """``(chromium, chromedriver)``: the system's executables on PATH, or None where missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    return chromium, shutil.which("chromedriver")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebDriverError(RuntimeError):
    """A command the driver refused: its W3C error name and message."""


class WebDriver:
    """One headless Chromium session through ``chromedriver`` (started here, stopped by :meth:`quit`)."""

    def __init__(self, chromium: str, chromedriver: str, log: Path, size: tuple[int, int] = (1200, 800)) -> None:
        self.port = free_port()
        self._log = open(log, "wb")  # closed by quit()
        self.driver = subprocess.Popen([chromedriver, f"--port={self.port}"], stdout=self._log,
                                       stderr=subprocess.STDOUT)
        self.session = ""
        try:
            self._wait_ready()
            options = {"binary": chromium, "args": [*CHROMIUM_FLAGS, f"--window-size={size[0]},{size[1]}"]}
            capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
            self.session = self.command("POST", "/session", {"capabilities": capabilities})["sessionId"]
        except BaseException:
            self.quit()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.driver.poll() is not None:
                raise WebDriverError(f"chromedriver exited with code {self.driver.returncode}")
            try:
                if self.command("GET", "/status").get("ready"):
                    return
            except (OSError, WebDriverError):
                pass
            time.sleep(0.1)
        raise WebDriverError(f"chromedriver not ready after {STARTUP_SECONDS} s")

    def command(self, method: str, path: str, payload: dict | None = None) -> Any:
        """Send one command (``path`` after the session's, or absolute when it starts with ``/``)."""
        url = f"http://127.0.0.1:{self.port}" + (path if path.startswith("/") else f"/session/{self.session}/{path}")
        data = json.dumps(payload).encode("utf-8") if payload is not None else None
        request = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=STARTUP_SECONDS) as response:
                return json.load(response)["value"]
        except urllib.error.HTTPError as error:
            value = json.load(error).get("value", {})
            raise WebDriverError(f"{value.get('error')}: {str(value.get('message')).splitlines()[0]}") from None

    def open(self, url: str) -> None:
        self.command("POST", "url", {"url": url})

    def find(self, css: str) -> dict:
        """The element ``css`` selects, as the protocol's reference ``{ELEMENT_KEY: id}``."""
        return self.command("POST", "element", {"using": "css selector", "value": css})

    def click(self, css: str) -> None:
        """Click the element ``css`` selects, as a user would."""
        self.command("POST", f"element/{self.find(css)[ELEMENT_KEY]}/click", {})

    def script(self, source: str, *args: Any) -> Any:
        """Run ``source`` (a function body; ``arguments[i]`` are ``args``) in the page, return its value."""
        return self.command("POST", "execute/sync", {"script": source, "args": list(args)})

    def wait_for(self, source: str, seconds: float = 20.0, *args: Any) -> Any:
        """Poll ``script(source)`` every 50 ms until it returns something true; its last value
        after ``seconds`` otherwise (the caller's assertion says what was seen)."""
        deadline = time.monotonic() + seconds
        while True:
            value = self.script(source, *args)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.05)

    def draw(self, element: dict, points: Sequence[tuple[int, int]], pointer: str = "mouse") -> None:
        """Press at ``points[0]``, move through the rest, release: one stroke with a pointer of
        type ``pointer`` (mouse, pen or touch); points are pixels from the element's centre."""
        moves = [{"type": "pointerMove", "duration": 10, "origin": element, "x": x, "y": y} for x, y in points]
        actions = [moves[0], {"type": "pointerDown", "button": 0}, *moves[1:], {"type": "pointerUp", "button": 0}]
        source = {"type": "pointer", "id": f"{pointer}-1", "parameters": {"pointerType": pointer}, "actions": actions}
        self.command("POST", "actions", {"actions": [source]})
        self.command("DELETE", "actions")

    def screenshot(self) -> bytes:
        """The viewport as PNG bytes."""
        return base64.b64decode(self.command("GET", "screenshot"))

    def quit(self) -> None:
        """End the session and the driver (the driver closes its browser)."""
        try:
            if self.session:
                self.command("DELETE", f"/session/{self.session}")  # closes the browser; no trailing slash
        except (OSError, WebDriverError):
            pass
        finally:
            self.driver.terminate()
            try:
                self.driver.wait(10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
                self.driver.wait()
            self._log.close()


def _default_ctrl_c() -> None:
    """In the child, before Python starts: let SIGINT (Ctrl-C) interrupt, as at a terminal.

    A test run started in the background by a non-interactive shell (``cmd &``) inherits SIGINT
    ignored, and Python keeps an inherited "ignore": the playground would then never see Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Playground:
    """``python -m common.playground --port 0 ARGS`` run as a user runs it, in a subprocess.

    Starting waits for the line with its address (``url``, ``"http://127.0.0.1:PORT"``); a process
    that exits first, or prints no address in ``seconds``, fails the test with what it printed.
    """

    def __init__(self, *args: str, seconds: float = STARTUP_SECONDS) -> None:
        self.process = subprocess.Popen([sys.executable, "-u", "-m", "common.playground", "--port", "0", *args],
                                        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        preexec_fn=_default_ctrl_c)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.printed: list[str] = []
        deadline = time.monotonic() + seconds
        while (line := self._next(deadline)) is not None:
            self.printed.append(line)
            match = re.search(r"playground at (http://127\.0\.0\.1:\d+)/", line)
            if match:
                self.url = match.group(1)
                return
        self.process.kill()
        raise AssertionError(f"the playground printed no address (exit code {self.process.wait()}): "
                             f"{''.join(self.printed)}")

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next(self, deadline: float) -> str | None:
        """The next line printed, or None at the end of the output or after ``deadline``."""
        try:
            return self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None

    def stop(self, seconds: float = 10.0) -> tuple[int, str]:
        """Ctrl-C (SIGINT) and wait: ``(exit code, everything printed after the address)``; killed
        if still running after ``seconds``."""
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        deadline = time.monotonic() + seconds
        rest = []
        while (line := self._next(deadline)) is not None:
            rest.append(line)
        return code, "".join(rest)
