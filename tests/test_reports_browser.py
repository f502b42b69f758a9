"""The reports in a real browser: headless Chromium opens reports/index.html, every stage
report and the offline `dvc plots show` page of the CI-sized pipeline run (fixture `project`).

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: no port,
no extra package), only on file:// URLs, with the network emulated offline and every
hostname unresolvable, so a page that needs the internet shows up as failing here.
"""
import fcntl
import html
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import cv2
import numpy as np
import pytest

from conftest import ROOT
from facelm.report.index import build_index
from facelm.report.metrics import meaning
from facelm.report.plots import ensure_vega_template, show_plots

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)

pytestmark = [
    pytest.mark.pipeline,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                       "(apt-get install -y chromium; CI installs it in .ci/run)"),
]

VIEWPORT = (1280, 2000)


class Chromium:
    """A headless Chromium and a minimal DevTools-protocol client over its debugging pipe."""

    def __init__(self, profile: Path, timeout: float = 30.0):
        self.timeout, self._next_id, self._buffer, self.events = timeout, 0, b"", []
        to_child, self._to_browser = os.pipe()     # we write commands, Chromium reads fd 3
        self._from_browser, from_child = os.pipe()  # Chromium writes fd 4, we read

        def wire_fds():  # runs in the child before exec: the protocol expects fds 3 and 4
            # move both ends above 4 first, so neither is clobbered nor left close-on-exec
            # when os.pipe() happened to hand out 3 or 4 itself
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child, from_child)]
            os.dup2(high[0], 3)  # dup2 makes 3 and 4 inheritable
            os.dup2(high[1], 4)

        self.log = open(profile.with_suffix(".log"), "wb")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            preexec_fn=wire_fds, close_fds=False, start_new_session=True,  # own group: killable whole
        )
        os.close(to_child)
        os.close(from_child)
        self.session = self._target = None

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed its pipe (exit code {self.proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == self.session:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    def open(self, url: str) -> None:
        """Load ``url`` in a fresh tab, offline, at the test viewport; returns after the load event."""
        assert url.startswith("file://"), url  # never anything but local files
        if self.session:
            self.send("Target.closeTarget", {"targetId": self._target}, session=False)
        self._target = self.send("Target.createTarget", {"url": "about:blank"},
                                 session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": self._target, "flatten": True},
                                 session=False)["sessionId"]
        self.events.clear()
        for domain in ("Page", "Network", "Runtime"):
            self.send(f"{domain}.enable")
        self.send("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                  "downloadThroughput": -1, "uploadThroughput": -1})
        self.send("Emulation.setDeviceMetricsOverride", {"width": VIEWPORT[0], "height": VIEWPORT[1],
                  "deviceScaleFactor": 1, "mobile": False})
        error = self.send("Page.navigate", {"url": url}).get("errorText")
        assert not error, f"{url}: {error}"
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == self.session]

    def screenshot(self, path: Path) -> np.ndarray:
        import base64

        data = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])
        path.write_bytes(data)
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - a browser that will not close is killed below
            pass
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the browser and its helpers, nothing else
                self.proc.wait(timeout=10)
            os.close(self._to_browser)
            os.close(self._from_browser)
            self.log.close()


IMAGES_LOADED = """(() => {
  const imgs = Array.from(document.images);
  return {count: imgs.length,
          broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0))
                      .map(i => (i.currentSrc || i.src).slice(0, 100))};
})()"""

# dvc-render writes each vega plot as <div id=ID><script>... vegaEmbed('#ID', spec)</script></div>;
# vegaEmbed renders asynchronously (and replaces the script), so poll until each chart div
# holds an <svg> or <canvas>, for at most 15 s.
VEGA_RENDERED = """ids => new Promise(resolve => {
  const state = () => ids.map(id => {
    const d = document.getElementById(id);
    return {id: id, drawn: !!(d && d.querySelector('svg, canvas')),
            marks: d ? d.querySelectorAll('svg path, svg line, svg text').length : 0,
            error: d && d.querySelector('.facelm-plot-error') ? d.querySelector('.facelm-plot-error').textContent : null};
  });
  const start = Date.now();
  (function poll() {
    const s = state();
    if (s.every(c => c.drawn) || Date.now() - start > 15000) resolve(s);
    else setTimeout(poll, 100);
  })();
})"""


def vega_chart_ids(page: Path) -> list[str]:
    return re.findall(r"vegaEmbed\('#([^']+)'", page.read_text(encoding="utf-8"))


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        if tag == "a" and dict(attrs).get("href"):
            self.hrefs.append(dict(attrs)["href"])


def local_links(page: Path) -> list[str]:
    """The page's <a href>s that point at local files (not the web, not in-page anchors)."""
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return [h for h in parser.hrefs
            if not h.startswith(("#", "mailto:", "javascript:", "data:")) and not urlparse(h).scheme]


def assert_not_blank(image: np.ndarray, name: str) -> None:
    assert image is not None and image.shape[:2] == (VIEWPORT[1], VIEWPORT[0]), name
    colours = np.unique(image.reshape(-1, 3).astype(np.int32) @ np.array([1, 256, 65536]))
    inked = np.mean(np.any(image < 235, axis=2))
    assert len(colours) > 32 and inked > 0.01, f"{name} looks blank: {len(colours)} colours, {inked:.1%} ink"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chrome = Chromium(tmp_path_factory.mktemp("chromium") / "profile")
    yield chrome
    chrome.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    """Where screenshots go (/tmp/report_*.png), to look at after a run."""
    return Path(tempfile.gettempdir())


@pytest.fixture(scope="module")
def index(project) -> Path:
    # the `index` stage writes it during `dvc repro`; building it again gives the same bytes
    return build_index(project)


def test_index_links_every_report_and_no_link_is_broken(project, index):
    reports = project / "reports"
    stage_pages = sorted(p.name for p in reports.glob("[0-9][0-9]_*.html"))
    assert stage_pages, "the pipeline wrote no stage reports"
    links = local_links(index)
    assert set(stage_pages) <= {unquote(h.split("#")[0]) for h in links}
    for page in [index, *(reports / name for name in stage_pages)]:
        for href in local_links(page):
            target = (page.parent / unquote(urlparse(href).path)).resolve()
            assert target.exists(), f"{page.name}: broken link {href}"
    text = index.read_text(encoding="utf-8")
    for png in (reports / "figures").glob("*.png"):
        assert f'id="{png.stem}"' in text, f"figure {png.name} missing from the index"
    for metrics in (project / "metrics").glob("*.json"):
        flat = [k for k, v in json.loads(metrics.read_text()).items() if not isinstance(v, dict)]
        for key in flat:
            assert f"<code>{key}</code>" in text, f"metric {key} missing from the index"
            assert html.escape(meaning(key)) in text, f"metric {key}: no meaning from the registry"


def test_index_and_stage_reports_render(project, index, browser, shots):
    pages = [index, *sorted((project / "reports").glob("[0-9][0-9]_*.html"))]
    for page in pages:
        browser.open(page.as_uri())
        images = browser.evaluate(IMAGES_LOADED)
        assert not images["broken"], f"{page.name}: images that did not load: {images['broken']}"
        assert images["count"] > 0, f"{page.name}: no images at all"
        assert_not_blank(browser.screenshot(shots / f"report_{page.stem}.png"), page.name)
        if page == index:  # ours embeds every figure and must not reach for the network at all
            assert images["count"] == len(list((project / "reports" / "figures").glob("*.png")))
            external = [u for u in browser.requested_urls() if not u.startswith(("file:", "data:"))]
            assert not external, f"index.html requests {external}"


def test_offline_dvc_plots_draw_their_vega_charts(project, browser, shots, tmp_path):
    # the libraries come from npm once, in the checkout (CI: `npm ci --prefix tools/vega`)
    template = ensure_vega_template(ROOT, output=tmp_path / "offline_template.html")
    assert "{plot_divs}" in template.read_text(encoding="utf-8")
    page = show_plots(project, out=tmp_path / "plots", template=template)
    text = page.read_text(encoding="utf-8")
    assert "cdn.jsdelivr.net" not in text and "vegaEmbed(" in text
    ids = vega_chart_ids(page)
    assert ids, "dvc plots show wrote no vega charts"
    browser.open(page.as_uri())
    charts = browser.evaluate(f"({VEGA_RENDERED})({json.dumps(ids)})")
    assert [c["id"] for c in charts] == ids
    for chart in charts:
        # a curve is an <svg> (or <canvas>) with axes, ticks and a line; an image plot (the
        # BEGAN sample grids) holds one image mark per logged grid
        images = sorted((project / "dvclive" / "02_began" / "plots" / "images").rglob("*.png"))
        least = len(images) if chart["id"].endswith("plots_images") else 11
        assert chart["drawn"] and chart["marks"] >= least and not chart["error"], chart
    external = [u for u in browser.requested_urls() if not u.startswith(("file:", "data:"))]
    assert not external, f"the plots page requests {external}"
    assert not browser.evaluate(IMAGES_LOADED)["broken"]
    assert_not_blank(browser.screenshot(shots / "report_dvc_plots.png"), "dvc plots")
