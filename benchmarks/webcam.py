"""End-to-end frame rate of the webcam widget in a real browser, and of its kernel-side pipeline alone.

    python -m benchmarks.webcam --model checkpoints/starry_night.safetensors
    python -m benchmarks.webcam --model a.safetensors --model b.safetensors --seconds 30 --threads 2
    python -m benchmarks.webcam --quick          # a tiny random network, 10 s per resolution (a smoke run)
    python -m benchmarks.webcam --model a.safetensors --backend eager --backend auto   # before / after
    python -m benchmarks.webcam --model a.safetensors --smooth 0 --smooth 0.5   # without / with temporal smoothing

For each model and resolution (default 320x240 and 640x480): JupyterLab (127.0.0.1, random port and token)
shows `stlib.webcam.WebcamStylizer` in headless Debian Chromium with a fake camera playing the bundled photo;
after a warm-up the script counts the stylised frames the browser draws for ``--seconds`` (at least
``--min-frames``) and reads the widget's latency (capture -> display). ``pipeline fps`` is
`stlib.webcam.measure_pipeline` in this process: the kernel's work without the browser and the transport, an
upper bound. Needs Chromium at /usr/bin/chromium and Playwright (the dev extra); the browser harness is
`tests.browser`, shared with tests/test_webcam_e2e.py (hence ``python -m`` from the repository root). Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stlib import assets, images
from stlib.backends import make_backend
from stlib.checkpoint import load_model, save_model
from stlib.transformer import TransformerConfig, TransformerNet
from stlib.webcam import measure_pipeline
from tests.browser import (
    WIDGET,
    JupyterLab,
    chromium_problem,
    launch_chromium,
    run_notebook_in_lab,
    widget_data,
    write_y4m,
)

ROOT = Path(__file__).resolve().parents[1]


def _notebook(model: Path, resolution: str, backend: str, smooth: float = 0.0) -> dict:
    source = (
        "from stlib.webcam import WebcamStylizer\n"
        f"cam = WebcamStylizer(model={str(model)!r}, resolution={resolution!r}, backend={backend!r}, "
        f"smooth={smooth!r})\ncam"
    )
    return {
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _frames(page) -> int:
    return int(widget_data(page).get("frames", "0"))


def measure_browser(page, resolution: str, seconds: float, min_frames: int, warmup: int) -> dict[str, float]:
    """Switch the widget to `resolution`, warm up, then count drawn frames and sample the latency."""
    page.select_option(f"{WIDGET} .stlib-webcam-resolution", resolution)
    start_count = _frames(page)
    deadline = time.monotonic() + 600
    while _frames(page) < start_count + warmup and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    first, t0 = _frames(page), time.perf_counter()
    latencies = []
    while time.perf_counter() - t0 < seconds or _frames(page) - first < min_frames:
        page.wait_for_timeout(250)
        latencies.append(float(widget_data(page).get("latency", "0")))
        if time.perf_counter() - t0 > 900:
            break
    count, elapsed = _frames(page) - first, time.perf_counter() - t0
    return {"frames": count, "seconds": elapsed, "fps": count / elapsed, "latency_ms": statistics.median(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", type=Path, help="model file(s); default: checkpoints/*")
    parser.add_argument("--resolution", action="append", help="default: 320x240 and 640x480")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring time per resolution")
    parser.add_argument("--min-frames", type=int, default=5, help="measure at least this many frames")
    parser.add_argument("--warmup", type=int, default=3, help="frames dropped before measuring")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the kernel (default: 1)")
    parser.add_argument(
        "--backend", action="append", help="stlib.backends name(s) to compare, e.g. eager and auto (default: auto)"
    )
    parser.add_argument("--smooth", action="append", type=float, help="temporal smoothing strength(s) (default: 0)")
    parser.add_argument("--quick", action="store_true", help="a tiny random network and 10 s per resolution")
    parser.add_argument("--screenshots", type=Path, default=ROOT / "test-artifacts", help="where to save them")
    args = parser.parse_args()
    problem = chromium_problem()
    if problem:
        sys.exit(f"benchmarks/webcam.py: {problem}")
    torch.set_num_threads(args.threads)
    resolutions = args.resolution or ["320x240", "640x480"]
    backends = args.backend or ["auto"]
    tmp = Path(tempfile.mkdtemp(prefix="stlib-webcam-bench-"))
    models = args.model or sorted((ROOT / "checkpoints").glob("*.safetensors"))
    if args.quick:
        torch.manual_seed(0)
        models = [
            save_model(
                TransformerNet(TransformerConfig(width=0.25, num_residual_blocks=1)).eval(), tmp / "tiny.safetensors"
            )
        ]
        args.seconds = min(args.seconds, 10.0)
    if not models:
        sys.exit("benchmarks/webcam.py: no model: pass --model FILE (or --quick)")
    camera = np.asarray(images.load_image(assets.content_image("tubingen"), size=(640, 480)))
    y4m = write_y4m(camera, tmp / "camera.y4m")
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    args.screenshots.mkdir(parents=True, exist_ok=True)
    measured = []
    from playwright.sync_api import sync_playwright

    with JupyterLab(tmp, tmp / "jupyter", env=env) as lab, sync_playwright() as pw:
        browser = launch_chromium(pw, fake_video=y4m)
        try:
            runs = [(Path(m).resolve(), b, s) for m in models for b in backends for s in args.smooth or [0.0]]
            for model_path, backend, smooth in runs:
                name = f"bench_{model_path.stem}_{backend}_{smooth:g}.ipynb"
                (tmp / name).write_text(json.dumps(_notebook(model_path, resolutions[0], backend, smooth)))
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda err, errors=errors: errors.append(str(err)))
                run_notebook_in_lab(page, lab, name)
                page.click(f"{WIDGET} .stlib-webcam-start")
                for resolution in resolutions:
                    browser_row = measure_browser(page, resolution, args.seconds, args.min_frames, args.warmup)
                    page.locator(WIDGET).screenshot(
                        path=str(args.screenshots / f"bench_{model_path.stem}_{backend}_{resolution}.png")
                    )
                    measured.append((model_path, backend, smooth, resolution, browser_row))
                    print(
                        f"{model_path.stem} ({backend}, smooth {smooth:g}) {resolution}: browser "
                        f"{browser_row['fps']:.2f} fps ({browser_row['frames']} frames in "
                        f"{browser_row['seconds']:.0f} s), latency "
                        f"{browser_row['latency_ms']:.0f} ms",
                        flush=True,
                    )
                page.click(f"{WIDGET} .stlib-webcam-start")  # Stop
                if errors:
                    print(f"page errors: {errors}")
                page.close()
        finally:
            browser.close()

    # The kernel-side pipeline alone, once the browser and JupyterLab are gone (they would compete for the CPU).
    rows = []
    for model_path, backend, smooth, resolution, browser_row in measured:
        width, height = (int(v) for v in resolution.split("x"))
        net = make_backend(load_model(model_path), backend, probe=(height, width))
        pipeline = measure_pipeline(net, (resolution,), frames=max(3, args.min_frames), smooth=smooth)[0]
        label = f"{model_path.stem} ({net.name}" + (f", smooth {smooth:g})" if smooth else ")")
        rows.append((label, resolution, browser_row, pipeline))
    print()
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {platform.machine()} "
        f"({os.cpu_count()} cores), load average {os.getloadavg()[0]:.1f}; Chromium headless, fake camera"
    )
    print()
    print("| model (backend) | resolution | browser fps | latency (ms) | network ms/frame | pipeline fps |")
    print("|---|---|---:|---:|---:|---:|")
    for name, resolution, b, p in rows:
        print(f"| {name} | {resolution} | {b['fps']:.2f} | {b['latency_ms']:.0f} | {p.network_ms:.0f} | {p.fps:.2f} |")


if __name__ == "__main__":
    main()
