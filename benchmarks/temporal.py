"""Flicker of stylised video on real clips: Lai et al.'s warping error, per frame against flow-guided smoothing.

    python benchmarks/temporal.py                                  # every shipped network, the clips in ../shared/video
    python benchmarks/temporal.py --models checkpoints/wave.safetensors --frames 30 --strengths 0.5 0.8
    python benchmarks/temporal.py --crops outputs/temporal_crops   # also PNG crops around the moving hands

For each clip (default: book, walk, again and a stretch of one-by-one-person-detection from ../shared/video,
"Intel IoT devkit sample videos, CC BY 4.0") and each network, run on the fastest correct engine of this machine
(`stlib.backends.make_backend(..., "auto")`, the same engine for every method):

- the per-frame stylisation (`stlib.stylize.stylize_frame`), then `stlib.temporal.TemporalSmoother` over its
  outputs at each ``--strengths`` value;
- E_warp (`stlib.temporal.warping_error`, the flow of the *inputs* by DIS "medium" at full resolution, a
  stronger flow than the smoother's own) of each, beside the input clip's E_warp (the floor);
- the style term of the network's own objective (`stlib.perceptual.PerceptualLoss` from the model file's
  training settings; `--style-frames` frames spread over the clip) so that a blurred result cannot look stable;
- milliseconds per frame: the network, and the network plus the smoothing, timed in turn on the same frames, each
  smoother right after a network call of its own (`interleaved_ms`, medians of ``--cost-frames``, 3 unless
  given); the cost is the median of smoothing time over network time of the same step.

Prints one Markdown table and the machine. ``--cache DIR`` keeps the per-frame outputs (re-runs skip the network
and reuse the times measured then).
"""

# ruff: noqa: E402 (stlib.short_openmp_spin runs before torch is imported, as on the command line)
from __future__ import annotations

import stlib

stlib.short_openmp_spin()  # before torch is imported, as the command line does (docs/performance.md)

# isort: split
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

if __package__ in (None, ""):  # python benchmarks/NAME.py: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import model_files, own_objective
from stlib import assets, images
from stlib.backends import make_backend
from stlib.checkpoint import load_model
from stlib.hardware import describe_machine
from stlib.perceptual import PerceptualLoss
from stlib.stylize import stylize_frame
from stlib.temporal import SmoothConfig, TemporalSmoother, clip_motion, warping_error
from stlib.video import read_frames

VIDEO = assets.repo_root().parent / "shared" / "video"
CLIPS = ("book.mkv", "walk.mkv", "again.mkv", "one-by-one-person-detection.mp4")
LONG_START = 300  # the long clip: frames from here (people walk through the room)
CREDIT = "Intel IoT devkit sample videos, CC BY 4.0"


def clip_frames(path: Path, count: int) -> list[np.ndarray]:
    """The first `count` frames of a webcam clip, or `count` frames of the long clip from LONG_START."""
    skip = LONG_START if path.name.startswith("one-by-one") else 0
    frames = list(read_frames(path, max_frames=skip + count))
    return frames[skip:]


def per_frame(network, frames: list[np.ndarray], cache: Path | None) -> tuple[list[np.ndarray], float]:
    """The network's output for every frame and its median ms per frame (from the cache when there)."""
    if cache is not None and cache.exists():
        data = np.load(cache)
        return list(data["outputs"]), float(data["ms"])
    stylize_frame(network, frames[0])  # warm-up
    outputs, times = [], []
    for frame in frames:
        start = time.perf_counter()
        outputs.append(stylize_frame(network, frame))
        times.append(1000 * (time.perf_counter() - start))
    ms = statistics.median(times)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, outputs=np.stack(outputs), ms=ms)
    return outputs, ms


def interleaved_ms(network, frames: list[np.ndarray], strengths: list[float], config: SmoothConfig, count: int = 3):
    """{strength: (median ms per frame, median cost)} of the network alone (strength 0) and of the network +
    smoothing at each strength, on the same `count` consecutive frames, the order turned frame by frame. Each
    smoother runs right after a network call of its own, as in `stlib.video.process_frame` (the network's idle
    threads may keep a core busy for a while after it); the cost is the median of smoothing time / network time of
    the same step, so that the network's own variation from call to call cancels."""
    smoothers = {0.0: None, **{s: TemporalSmoother(s, config) for s in strengths}}
    times: dict[float, list[tuple[float, float]]] = {s: [] for s in smoothers}  # (network ms, smoothing ms)
    stylize_frame(network, frames[0])  # warm-up
    order = list(smoothers)
    for index, frame in enumerate(frames[: count + 1]):
        for strength in order[index % len(order) :] + order[: index % len(order)]:
            start = time.perf_counter()
            styled = stylize_frame(network, frame)
            middle = time.perf_counter()
            if smoothers[strength] is not None:
                smoothers[strength](frame, styled)
            if index > 0:  # the first frame only stores the smoothers' state
                times[strength].append((1000 * (middle - start), 1000 * (time.perf_counter() - middle)))
    return {
        strength: (statistics.median(n + s for n, s in pairs), statistics.median(s / n for n, s in pairs))
        for strength, pairs in times.items()
    }


def smoothed(frames, outputs, strength: float, config: SmoothConfig) -> tuple[list[np.ndarray], float, int]:
    """The smoother over a clip: outputs, median ms per frame of the smoothing alone, scene resets."""
    smoother = TemporalSmoother(strength, config)
    result, times = [], []
    for frame, output in zip(frames, outputs, strict=True):
        start = time.perf_counter()
        result.append(smoother(frame, output))
        times.append(1000 * (time.perf_counter() - start))
    return result, statistics.median(times[1:]), smoother.resets


def style_term(objective: PerceptualLoss, frames: list[np.ndarray], picks: list[int]) -> float:
    """Mean style term of the objective over the picked frames (uint8 RGB)."""
    values = []
    with torch.no_grad():
        for index in picks:
            x = torch.from_numpy(frames[index]).permute(2, 0, 1)[None].float() / 255  # (1, 3, H, W)
            values.append(float(objective.judge(x, {})["style"]))
    return statistics.mean(values)


def save_crops(folder: Path, name: str, frames: list[np.ndarray], methods: dict[str, list[np.ndarray]]) -> None:
    """PNG strips (input, then each method) of the 3 frames of largest motion, cropped to where it moves."""
    folder.mkdir(parents=True, exist_ok=True)
    change = [np.abs(frames[t].astype(np.int16) - frames[t - 1]).mean(-1) for t in range(1, len(frames))]
    order = np.argsort([c.mean() for c in change])[::-1][:3]
    for t in sorted(int(i) + 1 for i in order):
        ys, xs = np.nonzero(change[t - 1] > 25)
        h, w = frames[t].shape[:2]
        cy, cx = (int(np.median(ys)), int(np.median(xs))) if len(ys) else (h // 2, w // 2)
        top, left = min(max(0, cy - 80), h - 160), min(max(0, cx - 120), w - 240)
        crop = (slice(top, top + 160), slice(left, left + 240))
        row = [frames[t][crop]] + [out[t][crop] for out in methods.values()]
        images.save_image(Image.fromarray(np.concatenate(row, axis=1)), folder / f"{name}_frame{t:03d}.png")


def clip_data(path: Path, count: int, style_frames: int) -> dict:
    """A clip's frames, their motion by the metric's flow (DIS medium, full resolution), its floor, scored frames."""
    frames = clip_frames(path, count)
    motions = clip_motion(frames)
    picks = [round(i) for i in np.linspace(1, len(frames) - 1, style_frames)]
    floor = warping_error(frames, motions=motions)
    return dict(name=path.stem, frames=frames, motions=motions, floor=floor, picks=picks)


def run_network(args, model_file: Path, clips: list[dict], config: SmoothConfig) -> list[dict]:
    """One network (engine chosen once, at 640x480) and every method on every clip: a row each."""
    network = make_backend(load_model(model_file), "auto", probe=(480, 640))
    objective = own_objective(model_file)[2]  # the network's own training objective
    rows = []
    for clip in clips:
        frames, motions, floor = clip["frames"], clip["motions"], clip["floor"]
        h, w = frames[0].shape[:2]
        cache = args.cache / f"{clip['name']}_{model_file.stem}_{len(frames)}.npz" if args.cache else None
        outputs, _ = per_frame(network, frames, cache)
        cost = interleaved_ms(network, frames, args.strengths, config, args.cost_frames)
        methods = {"per frame": (outputs, 0.0, 0, 0.0)}
        for strength in args.strengths:
            methods[f"smooth {strength:g}"] = (*smoothed(frames, outputs, strength, config), strength)
        base_style = None
        for method, (result, extra_ms, resets, strength) in methods.items():
            style = style_term(objective, result, clip["picks"])
            base_style = base_style or style
            error = warping_error(result, motions=motions)
            rows.append(dict(clip=clip["name"], size=f"{w}x{h}", frames=len(frames), network=model_file.stem,
                             engine=network.name, method=method, error=error, floor=floor, style=style,
                             style_ratio=style / base_style, ms=cost[strength][0], cost=cost[strength][1],
                             extra_ms=extra_ms, resets=resets))  # fmt: skip
            print(f"  {clip['name']} {model_file.stem} {method}: E_warp {1e3 * error:.2f} (floor {1e3 * floor:.2f}), "
                  f"style {style:.4g}, {cost[strength][0]:.0f} ms/frame (smoothing alone over the clip "
                  f"{extra_ms:.1f} ms), {resets} resets", flush=True)  # fmt: skip
        if args.crops:
            save_crops(args.crops, f"{clip['name']}_{model_file.stem}", frames, {k: v[0] for k, v in methods.items()})
    objective.close()
    return rows


def print_table(rows: list[dict]) -> None:
    """One Markdown table: clip x network x method."""
    print(
        "\n| clip (frames, size) | network (engine) | method | E_warp ×10³ | vs per frame | input floor ×10³ "
        "| style term | vs per frame | ms/frame | cost |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    base = {}
    for r in rows:
        key = (r["clip"], r["network"])
        base.setdefault(key, r)
        b = base[key]
        print(f"| {r['clip']} ({r['frames']}, {r['size']}) | {r['network']} ({r['engine']}) | {r['method']} "
              f"| {1e3 * r['error']:.2f} | {r['error'] / b['error']:.2f}× | {1e3 * r['floor']:.2f} "
              f"| {r['style']:.4g} | {100 * (r['style_ratio'] - 1):+.1f} % | {r['ms']:.0f} "
              f"| {100 * r['cost']:+.1f} % |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, nargs="*", help="model files (default: checkpoints/*.safetensors)")
    parser.add_argument("--clips", type=Path, nargs="*", help=f"video files (default: {', '.join(CLIPS)})")
    parser.add_argument("--frames", type=int, default=60, help="frames per clip (default: 60)")
    parser.add_argument("--strengths", type=float, nargs="*", default=[0.5, 0.8], help="smoothing strengths")
    parser.add_argument("--style-frames", type=int, default=4, help="frames per clip scored for style (default 4)")
    parser.add_argument("--cache", type=Path, help="keep the per-frame outputs here (re-runs skip the network)")
    parser.add_argument("--crops", type=Path, help="save PNG crops around the largest motion here")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--cost-frames", type=int, default=3, help="frames timed for ms/frame (default 3)")
    args = parser.parse_args()
    if not 1 <= args.cost_frames < args.frames:
        parser.error(f"--cost-frames must be from 1 to {args.frames - 1} (below --frames), got {args.cost_frames}.")
    models = model_files(args)
    clips = args.clips or [VIDEO / name for name in CLIPS]
    missing = [str(c) for c in clips if not c.is_file()]
    if missing:
        raise SystemExit(f"Clip(s) not found: {', '.join(missing)} (the real clips live in ../shared/video).")
    load = os.getloadavg()
    config = SmoothConfig()
    data = [clip_data(clip, args.frames, args.style_frames) for clip in clips]
    rows = []
    for model_file in models:
        rows += run_network(args, model_file, data, config)
    rows.sort(key=lambda r: [c["name"] for c in data].index(r["clip"]))  # by clip, networks in order
    print(f"\n{describe_machine()}; load average {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"smoother: {config}; clips: {CREDIT}")
    print_table(rows)


if __name__ == "__main__":
    main()
