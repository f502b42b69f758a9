"""JupyterLab really renders the explorer: a headless Chromium opens notebooks/explore.ipynb,
runs it, moves the seed box and screenshots the result (/tmp/explorer.png).

Needs `jupyter lab` and Debian's `chromium` (`apt-get install chromium`); skipped when either
is missing. The JupyterLab server listens on 127.0.0.1 only, without a token, and both
processes are stopped at the end.
"""
import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from facelm.models.began import Generator, save_model
from facelm.models.lgen import LGen, save_lgen

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = Path("/tmp/explorer.png")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HAS_LAB = subprocess.run([sys.executable, "-m", "jupyterlab", "--version"],
                         capture_output=True).returncode == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, seconds: float) -> bytes:
    end = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.25)


class Page:
    """The smallest Chrome DevTools Protocol client: send a command, get its result."""

    def __init__(self, ws_url: str):
        import websocket  # websocket-client, a jupyter_server dependency

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)

    def send(self, method: str, **params):
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expression: str):
        res = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression[:80]}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait(self, expression: str, seconds: float, what: str):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.25)
        self.screenshot(SCREENSHOT)
        raise AssertionError(f"timed out after {seconds}s waiting for {what} (screenshot in {SCREENSHOT})")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))


def _project(folder: Path) -> Path:
    """A tiny project: untrained G, an L-Gen that returns world-face-shaped landmarks, latents."""
    from facelm.data.world import render_faces

    faces, landmarks = render_faces(24, size=32, seed=0)
    L = LGen(z_dim=64, seed=0)
    with torch.no_grad():  # near-constant output at a real face's landmarks, so points look like a face
        last = L.net[-2]
        last.weight.mul_(0.05)
        p = torch.from_numpy(landmarks[0].reshape(-1)).clamp(0.02, 0.98)
        last.bias.copy_(torch.log(p / (1 - p)))
    for name in ("dvc.yaml", "params.yaml"):
        (folder / name).write_text("{}\n")
    save_model(folder / "data/began/generator.safetensors", Generator(size=32, width=8, z_dim=64, seed=0))
    save_lgen(folder / "data/lgen/lgen.safetensors", L)
    for sub in ("latents", "faces", "lab/workspaces", "lab/settings/@jupyterlab/apputils-extension", "chrome"):
        (folder / "data" / sub).mkdir(parents=True, exist_ok=True)
    # no "get Jupyter news?" pop-up over the screenshot
    (folder / "data/lab/settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
     ).write_text('{"fetchNews": "false"}\n')
    rng = np.random.default_rng(0)
    np.save(folder / "data/latents/z_train.npy", rng.uniform(-1, 1, (24, 64)).astype(np.float32))
    np.save(folder / "data/latents/z_mirror.npy", rng.uniform(-1, 1, (3, 64)).astype(np.float32))
    np.save(folder / "data/faces/train_images.npy", faces)
    (folder / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / "explore.ipynb", folder / "notebooks")
    return folder


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process group this test started (by its id), waiting for it to end."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_jupyterlab_renders_and_drives_the_explorer(tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    if not HAS_LAB:
        pytest.skip("jupyterlab is not installed")
    root = _project(tmp_path)
    lab_port, cdp_port = _free_port(), _free_port()
    procs = []
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", "--ip=127.0.0.1",
             f"--port={lab_port}", "--ServerApp.token=", "--ServerApp.password=",
             f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
             f"--LabApp.workspaces_dir={root}/data/lab/workspaces",
             f"--LabApp.user_settings_dir={root}/data/lab/settings"],
            stdout=subprocess.DEVNULL, stderr=open(root / "lab.log", "w"), start_new_session=True))
        procs.append(subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", f"--remote-debugging-port={cdp_port}", "--remote-allow-origins=*",
             f"--user-data-dir={root}/data/chrome", "--window-size=1400,2300", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        _wait_http(f"http://127.0.0.1:{lab_port}/api/status", 60)
        targets = json.loads(_wait_http(f"http://127.0.0.1:{cdp_port}/json/list", 30))
        page = Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        page.send("Page.enable")
        # headless windows never have focus, and JupyterLab's current notebook follows focus
        page.send("Emulation.setFocusEmulationEnabled", enabled=True)
        page.send("Page.navigate", url=f"http://127.0.0.1:{lab_port}/lab/tree/notebooks/explore.ipynb")

        page.wait("!!(window.jupyterapp && Array.from(jupyterapp.shell.widgets('main'))"
                  ".some(w => w.sessionContext?.session?.kernel?.status === 'idle'))",
                  90, "the notebook and an idle kernel")
        page.js("jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait("document.querySelectorAll('.jp-OutputArea-output .widget-image img, "
                  ".jp-OutputArea-output img.widget-image').length >= 1 && "
                  "document.querySelectorAll('.jp-RenderedImage img').length >= 1",
                  90, "the explorer widget and the static figure")
        errors = page.js("Array.from(document.querySelectorAll('.jp-OutputArea-output'))"
                         ".map(e => e.innerText).filter(t => t.includes('Traceback')).join('\\n')")
        assert not errors, errors
        # the live view and its controls are in the page
        n_sliders = page.js("document.querySelectorAll('.widget-hslider').length")
        assert n_sliders >= 8 + 1  # 8 principal directions + t
        status = page.js("Array.from(document.querySelectorAll('.widget-html')).map(e => e.innerText).join(' ')")
        assert "principal components of 24" in status

        # a browser edit goes through the kernel and comes back as a new image
        face = "document.querySelector('.jp-OutputArea-output img')"
        before = page.js(f"{face}.src")
        page.js("(() => { const box = Array.from(document.querySelectorAll('.widget-text'))"
                ".find(e => e.innerText.includes('seed')).querySelector('input');"
                "box.focus(); box.value = '5'; box.dispatchEvent(new Event('input', {bubbles: true}));"
                "box.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', keyCode: 13, bubbles: true}));"
                "box.dispatchEvent(new Event('change', {bubbles: true})); box.blur(); })()")
        page.wait(f"{face}.src !== {json.dumps(before)} && {face}.complete", 30, "a new face after seed 5")
        assert "seed 5" in page.js("Array.from(document.querySelectorAll('.widget-html'))"
                                   ".map(e => e.innerText).join(' ')")
        page.js("jupyterapp.commands.execute('notebook:move-cursor-to-top'); "
                "document.querySelector('.jp-WindowedPanel-outer, .jp-Notebook').scrollTop = 0")
        time.sleep(0.5)
        page.screenshot(SCREENSHOT)
        assert SCREENSHOT.stat().st_size > 10_000
    finally:
        for proc in reversed(procs):
            _stop(proc)
