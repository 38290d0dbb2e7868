"""The try-it page (``GET /``) in headless Chromium from Debian's ``chromium`` package, loopback only.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages
ending in NUL on file descriptors 3 and 4), so no WebSocket library is needed. The page must: take a
picked file, run it through ``/v1/cutout``, show the result over a checkerboard, offer it for
download with the same bytes as a direct POST, switch modes, and take a dropped file. Skips without
chromium (``apt-get install chromium``; ``make test`` tries to).
"""

from __future__ import annotations

import base64
import fcntl
import http.client
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_helpers import save, scene
from serve_helpers import start_images

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BASH = shutil.which("bash")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe"]  # fmt: skip


class DevTools:
    """Chromium with the DevTools protocol on a pipe; ``call`` waits (bounded) for the matching answer."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Chromium reads commands on fd 3 and writes answers on fd 4; the child's ends are moved above 9
        # first, so bash's "3<&R 4>&W" cannot overwrite one with the other (dash takes single digits only).
        to_chrome_r, from_chrome_w = (_high(fd) for fd in (to_chrome_r, from_chrome_w))
        shell = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}'
        self.log = profile.with_name("chromium.log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([BASH, "-c", shell, CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                                          "about:blank"], pass_fds=(to_chrome_r, from_chrome_w),
                                         stdout=log, stderr=log)  # fmt: skip
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        try:
            os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if "dbus" not in ln]
            raise AssertionError(f"Chromium exited ({self.proc.poll()}): {lines[-5:]}") from None
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    self.events.remove(event)
                    return event
            self.events.append(self._read(deadline))

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium in time")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise AssertionError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (AssertionError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def _high(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


def evaluate(browser: DevTools, session: str, expression: str) -> object:
    result = browser.call("Runtime.evaluate", session, expression=expression, awaitPromise=True, returnByValue=True)
    assert "exceptionDetails" not in result, result
    return result["result"].get("value")


def wait_done(browser: DevTools, session: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = evaluate(browser, session, "document.getElementById('status').textContent")
        if status.startswith(("done", "failed")) or status[:3].isdigit():
            return status
        time.sleep(0.1)
    raise TimeoutError(f"the page still says {status!r}")


def direct(port: int, mode: str, data: bytes) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", f"/v1/{mode}?format=png", data)
    answer = connection.getresponse()
    assert answer.status == 200
    return answer.read()


RESULT_BYTES = """fetch(document.getElementById('download').href).then(r => r.arrayBuffer()).then(b => {
  let s = ''; new Uint8Array(b).forEach(x => s += String.fromCharCode(x)); return btoa(s); })"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
@pytest.mark.skipif(BASH is None, reason="bash not installed (it hands Chromium its DevTools pipe)")
def test_the_page_picks_runs_shows_downloads_and_takes_a_drop(random_u2netp, tmp_path):
    server = start_images(random_u2netp.fp32, tmp_path / "srv", python=Path(sys.executable))
    browser = DevTools(tmp_path / "profile")
    try:
        photo = save(tmp_path / "photo.png", scene(60, 90, seed=4))
        targets = browser.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        session = browser.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        browser.call("Page.enable", session)
        browser.call("Page.navigate", session, url=f"http://127.0.0.1:{server.port}/")
        browser.wait_event("Page.loadEventFired")
        assert evaluate(browser, session, "[...document.querySelectorAll('#mode option')].map(o => o.value)") == [
            "mask", "cutout", "composite"]  # from runtime.render.MODES  # fmt: skip
        root = browser.call("DOM.getDocument", session)["root"]["nodeId"]
        picker = browser.call("DOM.querySelector", session, nodeId=root, selector="#file")["nodeId"]
        browser.call("DOM.setFileInputFiles", session, files=[str(photo)], nodeId=picker)
        assert wait_done(browser, session).startswith("done"), "the cutout did not arrive"
        assert evaluate(browser, session, "[document.getElementById('result').naturalWidth, "
                                          "document.getElementById('result').naturalHeight]") == [90, 60]  # fmt: skip
        assert "conic-gradient" in evaluate(browser, session, "getComputedStyle(document.getElementById('result'))"
                                                              ".backgroundImage")  # the checkerboard  # fmt: skip
        assert evaluate(browser, session, "document.getElementById('download').download") == "photo-cutout.png"
        shown = base64.b64decode(evaluate(browser, session, RESULT_BYTES))
        assert shown == direct(server.port, "cutout", photo.read_bytes())
        evaluate(browser, session, "const m = document.getElementById('mode'); m.value = 'mask';"
                                   "m.dispatchEvent(new Event('change')); true")  # fmt: skip
        time.sleep(0.2)
        assert wait_done(browser, session).startswith("done")
        mask = base64.b64decode(evaluate(browser, session, RESULT_BYTES))
        assert mask == direct(server.port, "mask", photo.read_bytes())
        # A dropped file: a 40x30 canvas drawn in the page, dropped on the drop zone.
        evaluate(browser, session, """new Promise(done => { const c = document.createElement('canvas');
            c.width = 40; c.height = 30; const g = c.getContext('2d'); g.fillStyle = '#eee'; g.fillRect(0, 0, 40, 30);
            c.toBlob(b => { const t = new DataTransfer(); t.items.add(new File([b], 'dropped.png', {type: 'image/png'}));
              document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: t, bubbles: true,
                cancelable: true})); done(true); }); })""")
        time.sleep(0.2)
        assert wait_done(browser, session).startswith("done")
        dropped = cv2.imdecode(np.frombuffer(base64.b64decode(evaluate(browser, session, RESULT_BYTES)), np.uint8),
                               cv2.IMREAD_UNCHANGED)  # fmt: skip
        assert dropped.shape == (30, 40)
        assert evaluate(browser, session, "document.getElementById('download').download") == "dropped-mask.png"
    finally:
        browser.close()
        server.stop()
