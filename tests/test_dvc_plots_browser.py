"""`dvc plots show` on the tiny study, opened in headless Chromium: the ROC and training curves render.

DVC's page loads vega, vega-lite and vega-embed from a CDN. The machine has no network, so the
browser's requests for them are answered from ``.cache/vega/`` (fetched from the npm registry by
``make browser``) through the DevTools ``Fetch`` domain: the page runs exactly as DVC wrote it.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from e2e_helpers import ROOT, run
from test_report_browser import browser, chromium_binary  # noqa: F401  (the module's fixture)

VEGA_DIR = ROOT / ".cache/vega"
CDN = re.compile(r"https://cdn\.jsdelivr\.net/npm/([a-z-]+@[0-9.]+)")
# DVC writes one <div id=...> per plot straight under <body>: vega-embed replaces a vega plot's
# script with a canvas or svg (and adds ids of its own deeper down); an image plot holds an <img>.
RENDERED = """(() => [...document.querySelectorAll('body > div[id]')]
  .map(d => {const c = d.querySelector('canvas, svg, img'); return {id: d.id, w: c ? c.getBoundingClientRect().width : 0,
                                                       h: c ? c.getBoundingClientRect().height : 0};}))()"""


def _vega_files() -> dict[str, Path]:
    from dvc_render.vega import VegaRenderer

    wanted = {pkg: VEGA_DIR / f"{pkg}.js" for pkg in CDN.findall(VegaRenderer.SCRIPTS)}
    missing = [str(p) for p in wanted.values() if not p.is_file()]
    if missing:
        message = f"{', '.join(missing)} missing: run `make browser` (fetches vega from the npm registry)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(message)
        pytest.skip(message)
    return wanted


def _serve_cdn_and_load(browser, url: str, files: dict[str, Path]) -> tuple[str, list[dict]]:
    """Open ``url``, answering CDN script requests from ``files``; return the session and events."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log"):
        browser.send(f"{domain}.enable", session=session)
    browser.send("Fetch.enable", {"patterns": [{"urlPattern": "https://*"}]}, session)
    start = len(browser.events)
    browser.send("Page.navigate", {"url": url}, session)
    # The page's <head> scripts block parsing until they are served, and the blank page this
    # target opened with fires a load event of its own: the page has loaded only once every
    # CDN script was served and a load event came after the last of them.
    handled, served, last_served, deadline = 0, set(), 0, time.monotonic() + 60
    while time.monotonic() < deadline:
        events = browser.events[start:]
        for index, event in enumerate(events[handled:], start=handled):
            if event.get("method") == "Fetch.requestPaused" and event.get("sessionId") == session:
                params = event["params"]
                match = CDN.match(params["request"]["url"])
                if match and match.group(1) in files:
                    body = base64.b64encode(files[match.group(1)].read_bytes()).decode()
                    browser.send("Fetch.fulfillRequest", {"requestId": params["requestId"], "responseCode": 200,
                                                          "responseHeaders": [{"name": "Content-Type", "value": "text/javascript"}],
                                                          "body": body}, session)
                    served.add(match.group(1))
                    last_served = index
                else:
                    browser.send("Fetch.failRequest", {"requestId": params["requestId"], "errorReason": "BlockedByClient"}, session)
        handled = len(events)
        loaded = [i for i, e in enumerate(events) if e.get("method") == "Page.loadEventFired" and e.get("sessionId") == session]
        if served == set(files) and loaded and loaded[-1] > last_served:
            return session, browser.events[start:]
        browser.send("Runtime.evaluate", {"expression": "1"}, session)  # pumps the event queue
    raise AssertionError(f"{url} did not load in 60 s")


@pytest.mark.e2e
def test_dvc_plots_show_renders_roc_and_training_curves(browser, tiny_study, tmp_path):
    files = _vega_files()
    work = tmp_path / "study"
    shutil.copytree(tiny_study, work, symlinks=True)
    run(["dvc", "plots", "show", "--out", str(tmp_path / "plots")], work)
    page = tmp_path / "plots/index.html"
    session, events = _serve_cdn_and_load(browser, page.as_uri(), files)
    rendered = []
    for _ in range(100):  # vega renders asynchronously after the load event
        rendered = browser.send("Runtime.evaluate", {"expression": RENDERED, "returnByValue": True}, session)["result"]["value"]
        if rendered and all(r["w"] > 0 for r in rendered):
            break
        time.sleep(0.1)
    by_id = {r["id"]: r for r in rendered}
    for plot in ("roc", "loss", "accuracy"):
        assert plot in by_id and by_id[plot]["w"] > 100 and by_id[plot]["h"] > 100, rendered
    # the image plots (cells, CAM, the report's PNGs) are shown too, each with its pixels
    images = [r for r in rendered if r["id"].endswith("_png")]
    assert any("cell_normal" in r["id"] for r in images) and all(r["w"] > 0 and r["h"] > 0 for r in images), rendered
    errors = [e for e in browser.events if e.get("sessionId") == session and e.get("method") == "Runtime.exceptionThrown"]
    assert errors == []
    shot = browser.send("Page.captureScreenshot", {"format": "png"}, session)
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts/dvc_plots.png").write_bytes(base64.b64decode(shot["data"]))
