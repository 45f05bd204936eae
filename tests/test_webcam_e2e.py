"""End-to-end test of the webcam widget in a real browser: JupyterLab + headless Chromium driven by Playwright.

The test starts JupyterLab on 127.0.0.1 (random port and token, XSRF checks on, windowing mode off, autosave
off) on a copy of notebook 04, opens it in Debian's Chromium with a fake camera that plays a still frame of the
bundled photo (``--use-file-for-fake-video-capture``), runs every cell, presses Start and waits for 20 stylised
frames. It checks that no page error occurred, that the displayed frame is the network's stylisation of the
camera frame (close to what `stylize_frame` gives for it, and changed from the camera frame the way the
network changes it) after a 20 s kernel stall at the start, switches to the base64 transport and back, takes a
snapshot, then denies the camera and checks the message and the one-click switch to the file source. Screenshots go to
``test-artifacts/``. It skips, saying why, only where Chromium or Playwright is missing.

The helpers (`JupyterLab`, `launch_chromium`, `write_y4m`, `run_notebook_in_lab`) are reused by
``benchmarks/webcam.py``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
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
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
NOTEBOOK = ROOT / "notebooks" / "04_webcam.ipynb"
CHROMIUM = Path(os.environ.get("STLIB_CHROMIUM", "/usr/bin/chromium"))
FRAMES_WANTED = 20
WIDGET = ".stlib-webcam"


# --------------------------------------------------------------------------------------------------------
# Helpers (also used by benchmarks/webcam.py)
# --------------------------------------------------------------------------------------------------------


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


# Makes the widget's next frame handler sleep 20 s: the kernel stops answering for that long.
STALL_KERNEL = """
import time as _time
_handle_frame = cam._on_frame
def _stalled(content, buffers, _once=[True]):
    if _once.pop() if _once else False:
        _time.sleep(20)
    _handle_frame(content, buffers)
cam._on_frame = _stalled
"""

OUTPUT_PNG = f"() => document.querySelector('{WIDGET} .stlib-webcam-output').toDataURL('image/png')"

# The camera frame as the widget captures it: the <video> scaled to cover the output size, centred.
CAMERA_PNG = f"""() => {{
    const out = document.querySelector('{WIDGET} .stlib-webcam-output');
    const video = document.querySelector('{WIDGET} .stlib-webcam-video');
    const c = document.createElement('canvas');
    c.width = out.width; c.height = out.height;
    const vw = video.videoWidth, vh = video.videoHeight;
    const s = Math.max(c.width / vw, c.height / vh), sw = c.width / s, sh = c.height / s;
    c.getContext('2d').drawImage(video, (vw - sw) / 2, (vh - sh) / 2, sw, sh, 0, 0, c.width, c.height);
    return c.toDataURL('image/png');
}}"""


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


# --------------------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser_ready():
    """Skip, saying why, where Chromium or Playwright is missing or Chromium cannot start."""
    problem = chromium_problem()
    if problem:
        pytest.skip(problem)
    from playwright.sync_api import Error, sync_playwright

    try:
        with sync_playwright() as pw:
            launch_chromium(pw).close()
    except Error as err:
        first = next((line for line in str(err).splitlines() if line.strip()), repr(err))
        pytest.skip(f"Chromium at {CHROMIUM} cannot be launched here: {first}")


def test_webcam_widget_in_jupyterlab(browser_ready, tmp_path):
    import torch
    from playwright.sync_api import sync_playwright

    from stlib import assets, images
    from stlib.stylize import load_model, stylize_frame

    ARTIFACTS.mkdir(exist_ok=True)
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)  # a copy: the executed notebook never lands in the repository
    camera = np.asarray(images.load_image(assets.content_image("tubingen"), size=(640, 480)))
    y4m = write_y4m(camera, tmp_path / "camera.y4m")
    env = {"STLIB_QUICK": "1", "STLIB_VGG_WEIGHTS": "offline", "STLIB_OUTPUTS": str(tmp_path / "outputs")}
    env.setdefault("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    started = time.perf_counter()
    page_errors: list[str] = []
    console_errors: list[str] = []

    with JupyterLab(work, tmp_path / "jupyter", env=env) as lab, sync_playwright() as pw:
        browser = launch_chromium(pw, fake_video=y4m)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("pageerror", lambda err: page_errors.append(str(err)))
            page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
            run_seconds = run_notebook_in_lab(page, lab, NOTEBOOK.name)
            assert not notebook_errors(page), f"the notebook raised: {notebook_errors(page)}"
            page.wait_for_selector(WIDGET, timeout=30_000)
            page.locator(WIDGET).scroll_into_view_if_needed()

            # 1. The browser camera: Start, then 20 stylised frames. The kernel first stalls for 20 s (as when Start
            # is pressed while other cells run under ipykernel 6, which handles widget messages only between cells):
            # the unanswered frames expire, the browser suspects lost binary buffers and tries base64; the late
            # binary replies then show that buffers do arrive, and the loop goes back to them.
            run_in_kernel(page, STALL_KERNEL)
            loop_start = time.perf_counter()
            page.click(f"{WIDGET} .stlib-webcam-start")
            wait_for_frames(page, FRAMES_WANTED, timeout_s=240)
            loop_seconds = time.perf_counter() - loop_start
            data = widget_data(page)
            # At least once: on a loaded machine a slow reply after the stall can expire too and count again; what
            # matters is that the browser tried base64 and then went back to binary buffers (asserted below).
            fallbacks = int(data.get("fallbacks") or 0)
            assert fallbacks >= 1, "the stalled kernel should have made the browser try base64"
            page.locator(WIDGET).screenshot(path=str(ARTIFACTS / "webcam_e2e.png"))
            page.screenshot(path=str(ARTIFACTS / "webcam_e2e_page.png"), full_page=False)
            assert data["transport"] == "binary", "JupyterLab delivers binary buffers; base64 is only a fallback"
            assert data["source"] == "browser"

            shown = canvas_rgb(page, OUTPUT_PNG)  # (240, 320, 3): what the learner sees
            seen = canvas_rgb(page, CAMERA_PNG)  # the camera frame at the same size
            assert shown.shape == seen.shape == (240, 320, 3)
            torch.set_num_threads(1)
            model = load_model(data["model"])
            expected = stylize_frame(model, np.ascontiguousarray(seen[:, ::-1]))  # the widget mirrors by default
            camera_in = seen[:, ::-1].astype(np.float32)  # what the network received (mirrored)
            change_shown = shown.astype(np.float32) - camera_in  # how the display differs from the camera
            change_net = expected.astype(np.float32) - camera_in  # how the network changes the camera frame
            to_expected = float(np.abs(shown.astype(np.float32) - expected).mean())
            changed = float(np.abs(change_shown).mean())
            agreement = float(np.corrcoef(change_shown.ravel(), change_net.ravel())[0, 1])
            layout = float(np.corrcoef(shown.mean(axis=2).ravel(), camera_in.mean(axis=2).ravel())[0, 1])
            Image.fromarray(np.concatenate([seen[:, ::-1], shown, expected], axis=1)).save(
                ARTIFACTS / "webcam_e2e_frames.png"
            )
            print(
                f"\nshown vs stylize_frame(camera): mean |diff| {to_expected:.1f}; shown vs camera: mean |diff| "
                f"{changed:.1f}, correlation of the changes with the network's {agreement:.2f}, "
                f"of brightness {layout:.2f}"
            )
            assert float(shown.std()) > 10, "the displayed frame is blank"
            assert to_expected < 8, "the displayed frame is not the network's stylisation of the camera frame"
            assert changed > 6, "the displayed frame is (nearly) the camera frame: not stylised"
            assert agreement > 0.6, "the displayed frame differs from the camera frame otherwise than the network does"
            assert layout > 0.3, "the displayed frame lost the camera frame's layout"

            # 2. The base64 fallback (what runs where a front end drops binary buffers), both ways, switched on
            # from the kernel as a learner would: cam.transport = "base64".
            run_in_kernel(page, "cam.transport = 'base64'")
            page.wait_for_function(f"() => document.querySelector('{WIDGET}').dataset.transport === 'base64'")
            before = int(widget_data(page)["frames"])
            wait_for_frames(page, before + 5, timeout_s=120)
            assert widget_data(page)["transport"] == "base64"
            run_in_kernel(page, "cam.transport = 'auto'")

            # 3. Snapshot: the current stylised frame goes to outputs/.
            page.click(f"{WIDGET} .stlib-webcam-snapshot")
            page.wait_for_function(f"() => document.querySelector('{WIDGET}').dataset.snapshot", timeout=30_000)
            snapshot = Path(widget_data(page)["snapshot"])
            assert snapshot.parent == tmp_path / "outputs" and snapshot.suffix == ".jpg"
            assert np.asarray(Image.open(snapshot)).shape == (240, 320, 3)

            # 4. A denied camera: a clear message and a one-click switch to the file source.
            page.click(f"{WIDGET} .stlib-webcam-start")  # Stop
            page.wait_for_function(f"() => document.querySelector('{WIDGET}').dataset.running === 'false'")
            page.evaluate(
                "() => { navigator.mediaDevices.getUserMedia = () => "
                "Promise.reject(new DOMException('Permission denied', 'NotAllowedError')); }"
            )
            page.click(f"{WIDGET} .stlib-webcam-start")
            switch = page.locator(f"{WIDGET} .stlib-webcam-use-file")
            switch.wait_for(state="visible", timeout=30_000)
            message = page.inner_text(f"{WIDGET} .stlib-webcam-error-text")
            assert "denied" in message and "file source" in message, message
            before = int(widget_data(page)["frames"])
            switch.click()
            wait_for_frames(page, before + 10, timeout_s=120)
            data_file = widget_data(page)
            assert data_file["source"] == "file" and not data_file["error"]
            page.locator(WIDGET).screenshot(path=str(ARTIFACTS / "webcam_e2e_file.png"))
            page.click(f"{WIDGET} .stlib-webcam-start")  # Stop
        finally:
            browser.close()

    total = time.perf_counter() - started
    print(
        f"webcam E2E: notebook ran in {run_seconds:.0f} s; {FRAMES_WANTED} frames in {loop_seconds:.1f} s after Start "
        f"(a 20 s stall included); widget fps {float(data['fps']):.2f} at 320x240, latency {data['latency']} ms; "
        f"file source fps {float(data_file['fps']):.2f}; total {total:.0f} s; screenshots in {ARTIFACTS}"
    )
    if console_errors:
        print("browser console errors (not failures):", *console_errors[:10], sep="\n  ")
    assert not page_errors, f"uncaught errors in the page: {page_errors}"
