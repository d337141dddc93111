"""The HTML report in a real browser: headless Chromium, driven over the DevTools protocol.

Chromium (Debian's ``chromium``) is installed by ``make test`` (the Makefile's ``browser``
target, apt-get as root). Without it the test is skipped, except under CI (``CI`` set),
where it fails. The browser is driven with ``--remote-debugging-pipe`` (JSON messages on
file descriptors 3 and 4), so no WebDriver and no websocket library is needed.
The page is checked for: loading without console errors, exceptions or failed requests;
every image decoded (``complete`` and ``naturalWidth > 0``); the results table present.
A full-page screenshot is kept in ``test-artifacts/report.png``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from e2e_helpers import ROOT
from pipeline_lib.study.registry import CLASSIFIERS, DEEP_MODELS, NAS_METHODS
from pipeline_lib.report.html import render_report
from pipeline_lib.report.table import table_note
from test_report import build_demo_report

ARTIFACTS = ROOT / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
]
PAGE_CHECK = """(() => {
  const imgs = [...document.images].map(i => ({alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}));
  const table = document.querySelector('#results-table');
  return {title: document.title, images: imgs, figures: document.querySelectorAll('figure').length,
          tableRows: table ? table.tBodies[0].rows.length : 0,
          tableHeader: table ? [...table.tHead.rows[0].cells].map(c => c.textContent) : [],
          firstSection: (document.querySelector('section') || {}).id, height: document.documentElement.scrollHeight};
})()"""


def chromium_binary() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if found:
        return found
    message = "Debian's chromium is not installed: run `make browser` (as root) or `apt-get install chromium`"
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{message} (CI is set, so the browser test may not be skipped)")
    pytest.skip(message)


class DevTools:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe."""

    def __init__(self, binary: str, profile: str, timeout: float = 60.0):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Chromium reads commands from fd 3 and writes replies to fd 4
        hi_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        hi_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)

        def wire_fds():
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=wire_fds,
            pass_fds=(3, 4),
        )
        for fd in (to_browser_r, from_browser_w, hi_r, hi_w):
            os.close(fd)
        self.timeout = timeout
        self._next_id = 0
        self._messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._stderr: list[bytes] = []
        threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self._from_browser, "rb", buffering=0) as stream:
            while chunk := stream.read(65536):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for message in messages:
                    self._messages.put(json.loads(message))
        self._messages.put(None)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._messages.get(timeout=max(0.1, deadline - time.monotonic()))
            if reply is None:
                raise RuntimeError(f"chromium exited: {b''.join(self._stderr).decode(errors='replace')[-2000:]}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + self.timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            seen = len(self.events)
            reply = self._messages.get(timeout=max(0.1, deadline - time.monotonic()))
            if reply is None:
                raise RuntimeError("chromium exited while waiting for " + method)
            self.events.append(reply)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)


def open_page(browser: DevTools, url: str, screenshot: Path | None = None) -> tuple[dict, list[str]]:
    """Load ``url`` in a new tab; return the page check's result and every problem reported."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.send(f"{domain}.enable", session=session)
    browser.send("Emulation.setDeviceMetricsOverride", {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
    start = len(browser.events)
    browser.send("Page.navigate", {"url": url}, session)
    browser.wait_for("Page.loadEventFired", session)
    evaluated = browser.send("Runtime.evaluate", {"expression": PAGE_CHECK, "returnByValue": True}, session)
    if "exceptionDetails" in evaluated:
        raise AssertionError(f"the page check failed: {evaluated['exceptionDetails']}")
    result = evaluated["result"]["value"]
    problems = []
    for event in browser.events[start:]:
        if event.get("sessionId") != session:
            continue
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            problems.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            problems.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            problems.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            problems.append(f"request failed: {params.get('errorText')}")
    if screenshot is not None:
        shot = browser.send(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True,
             "clip": {"x": 0, "y": 0, "width": 1200, "height": result["height"], "scale": 1}},
            session,
        )
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
    browser.send("Target.closeTarget", {"targetId": target})
    return result, problems


@pytest.fixture(scope="module")
def browser():
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        devtools = DevTools(binary, profile)
        try:
            yield devtools
        finally:
            devtools.close()


def test_report_loads_in_chromium_with_every_image_and_the_table(browser, tmp_path):
    table, entries = build_demo_report(tmp_path)
    page = tmp_path / "report" / "index.html"
    page.parent.mkdir()
    page.write_text(render_report(table, entries, note=table_note(table), git_commit="0" * 40, params_sha256="a" * 64))
    shot = ARTIFACTS / "report.png"
    result, problems = open_page(browser, page.as_uri(), screenshot=shot)
    assert problems == []
    assert result["title"] == "nexperia-repro: study report"
    assert result["firstSection"] == "results"
    assert result["tableHeader"][:4] == ["Model", "Valid acc %", "Valid acc 95 % CI", "Test AUC %"] and result["tableRows"] == len(table)
    assert result["figures"] == len(entries) == len(result["images"])
    broken = [i for i in result["images"] if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert broken == []
    assert shot.stat().st_size > 10_000 and shot.read_bytes().startswith(b"\x89PNG")


def test_the_check_sees_a_broken_image_and_a_script_error(browser, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="missing.png" alt="gone"><script>undefinedCall()</script></body></html>')
    result, problems = open_page(browser, bad.as_uri())
    assert [i["w"] for i in result["images"]] == [0]
    assert any("request failed" in p for p in problems)
    assert any("exception" in p for p in problems)



@pytest.mark.e2e
def test_the_tiny_study_report_in_chromium(browser, tiny_study):
    """The report the real DAG wrote (tiny configuration, conftest's session-wide run)."""
    page = tiny_study / "results/report/index.html"
    result, problems = open_page(browser, page.as_uri(), screenshot=ARTIFACTS / "tiny_study_report.png")
    assert problems == []
    assert result["firstSection"] == "results" and result["tableRows"] == len(CLASSIFIERS) + len(DEEP_MODELS) + len(NAS_METHODS)  # LDA RF LR SVM + the networks
    assert len(result["images"]) == result["figures"]
    assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in result["images"])
    # every NAS figure, by name (each figure's alt text is its title)
    shown = [i["alt"] for i in result["images"]]
    nas = ["DARTS α heatmap", "DARTS normal cell", "DARTS reduce cell", "ENAS normal cell", "ENAS reduce cell"]
    assert [title for title in shown if title in nas] == nas
