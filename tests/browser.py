"""A browser harness for the webcam widget: JupyterLab + headless Chromium (Playwright) with a fake camera.

Used by tests/test_webcam_e2e.py and by ``python -m benchmarks.webcam``: `JupyterLab` starts a private server
(127.0.0.1, random port and token), `launch_chromium` starts Debian's Chromium with a fake camera playing a
`write_y4m` clip, `run_notebook_in_lab` runs a notebook's cells in it, and `widget_data`, `run_in_kernel` and
`wait_for_frames` read and drive the widget. `chromium_problem` says why a machine cannot run it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
NOTEBOOK = ROOT / "notebooks" / "04_webcam.ipynb"
CHROMIUM = Path(os.environ.get("STLIB_CHROMIUM", "/usr/bin/chromium"))
FRAMES_WANTED = 20
WIDGET = ".stlib-webcam"


def chromium_problem() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not CHROMIUM.is_file():
        return f"Chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run does this)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright; it is in the dev extra)"
    return None


def write_y4m(frame: np.ndarray, path: Path, frames: int = 1) -> Path:
    """Write uint8 (H, W, 3) RGB as a YUV4MPEG2 4:2:0 clip (BT.601, limited range) for Chromium's fake camera."""
    rgb = frame.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    h, w = y.shape
    sub = (slice(None, h - h % 2), slice(None, w - w % 2))
    u = u[sub].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    v = v[sub].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    planes = b"".join(np.clip(p + 0.5, 0, 255).astype(np.uint8).tobytes() for p in (y, u, v))
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + planes)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


class JupyterLab:
    """JupyterLab on 127.0.0.1 with a random port and token, isolated config and settings (a context manager)."""

    def __init__(self, root_dir: Path, home: Path, env: dict[str, str] | None = None, timeout: float = 90.0) -> None:
        self.root_dir, self.home, self.timeout = root_dir, home, timeout
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.process: subprocess.Popen | None = None
        self.log_path = home / "jupyterlab.log"

    def __enter__(self) -> JupyterLab:
        settings = self.home / "lab-settings"
        _write_json(settings / "@jupyterlab/notebook-extension/tracker.jupyterlab-settings", {"windowingMode": "none"})
        _write_json(settings / "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings", {"autosave": False})
        _write_json(
            settings / "@jupyterlab/apputils-extension/notification.jupyterlab-settings",
            {"fetchNews": "false", "checkForUpdates": False},
        )
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.home / "config"),
            "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(self.home / "workspaces"),
            "IPYTHONDIR": str(self.home / "ipython"),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        command = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")  # only where we run as root (CI containers)
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in __exit__)
        self.process = subprocess.Popen(
            command, cwd=self.root_dir, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited at start:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.api("status"), timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.__exit__(None, None, None)
        raise RuntimeError(
            f"JupyterLab did not answer within {self.timeout:.0f} s:\n{self.log_path.read_text()[-3000:]}"
        )

    def api(self, path: str) -> str:
        """The URL of a REST endpoint, with the token."""
        return f"{self.url}/api/{path}?token={self.token}"

    def lab_url(self, relative: str) -> str:
        """The URL that opens a file (relative to the root folder) in JupyterLab."""
        return f"{self.url}/lab/tree/{relative}?token={self.token}&reset"

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            try:  # the clean way: the server stops its kernels and exits
                request = urllib.request.Request(
                    f"{self.url}/api/shutdown", method="POST", headers={"Authorization": f"token {self.token}"}
                )
                urllib.request.urlopen(request, timeout=5).close()
                self.process.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the server and its kernels
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()


def launch_chromium(playwright, fake_video: Path | None = None):
    """Headless Debian Chromium with a fake camera (auto-accepted), never touching the network."""
    args = [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
    ]
    if fake_video is not None:
        args.append(f"--use-file-for-fake-video-capture={fake_video}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to start its sandbox as root
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)


def run_notebook_in_lab(page, lab: JupyterLab, relative: str, timeout_s: float = 300.0) -> float:
    """Open a notebook in JupyterLab, run all cells, wait until none is running; return the seconds it took."""
    page.goto(lab.lab_url(relative))
    page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=90_000)
    page.wait_for_function(
        """() => {
            const w = window.jupyterapp.shell.currentWidget;
            return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel &&
                   w.sessionContext.session.kernel.connectionStatus === 'connected' && !w.sessionContext.isRestarting
                   && w.sessionContext.session.kernel.status === 'idle';
        }""",
        timeout=90_000,
    )
    start = time.perf_counter()
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_timeout(500)
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-InputArea-prompt')].map(p => p.textContent);
            const w = window.jupyterapp.shell.currentWidget;
            return prompts.length > 0 && !prompts.some(t => t.includes('*')) &&
                   w.sessionContext.session.kernel.status === 'idle';
        }""",
        timeout=timeout_s * 1000,
        polling=500,
    )
    return time.perf_counter() - start


def notebook_errors(page) -> list[str]:
    """Tracebacks shown in the notebook's outputs."""
    texts = page.eval_on_selector_all(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]', "els => els.map(e => e.innerText)"
    )
    return [t for t in texts if "Traceback" in t]


def canvas_rgb(page, script: str) -> np.ndarray:
    """Evaluate `script` (returning a PNG data URL) in the page; the image as uint8 (H, W, 3) RGB."""
    url = page.evaluate(script)
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def widget_data(page) -> dict[str, str]:
    """The widget's data-* attributes (frames, fps, latency, transport, model, source, error ...)."""
    return page.eval_on_selector(WIDGET, "el => ({...el.dataset})")


def run_in_kernel(page, code: str, wait: bool = True) -> None:
    """Execute `code` in the notebook's kernel (as a hidden cell would); with `wait`, until it has run."""
    page.evaluate(
        """async ([code, wait]) => {
            const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
            const future = kernel.requestExecute({ code, silent: false, store_history: false });
            if (wait) await future.done;
        }""",
        [code, wait],
    )


def wait_for_frames(page, count: int, timeout_s: float) -> None:
    """Wait until the widget has drawn at least `count` stylised frames."""
    page.wait_for_function(
        f"() => {{ const el = document.querySelector('{WIDGET}'); return el && +el.dataset.frames >= {count}; }}",
        timeout=timeout_s * 1000,
        polling=250,
    )
