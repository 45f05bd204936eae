"""Gatys benchmark: speed and memory of `stlib.gatys.stylize` on this machine; prints a Markdown table.

Gatys, Ecker & Bethge (CVPR 2016) style transfer by L-BFGS, one VGG16 forward + backward per iteration.

1. Seconds per L-BFGS iteration and peak memory at 256 and 512 px for
   (a) a plain fp32 path: the whole VGG16 convolutional stack (no truncation), NCHW layout, no autocast;
   (b) the optimised default: the VGG cut after the deepest layer used (relu5_1), channels_last, freed memory
       kept in the process on a CPU (`stlib.hardware.keep_freed_memory`; path (a) leaves malloc alone), and
       bf16 autocast when ``--precision bf16`` is given (worth it on GPUs; slow on CPUs without bf16 units).
   Both run the same number of iterations from the photo; their final objectives are compared.
   Targets: (b) at least 2x faster per iteration than (a), final objectives within 5 %.
2. Multi-scale: the objective that single-scale reaches at 1024 px after N iterations, and the time that
   coarse-to-fine (256 -> 512 -> 1024) needs to reach it (stopping at once when it does).
   Target: at most 1/3 of the single-scale time.

Every measurement runs in a fresh process, so peak memory (ru_maxrss on CPU, max_memory_allocated on
CUDA) belongs to that measurement alone. Timings on a shared machine are noisy: the script prints the load
average before and after. Usage::

    python benchmarks/gatys.py            # ~15 min on an idle 2-core CPU (much longer under load)
    python benchmarks/gatys.py --quick    # ~2 min: small sizes, few iterations
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time


def _worker(spec: dict) -> dict:
    """One measurement in this process: run stylize as `spec` says, return timings, objective and memory."""
    import torch

    from stlib import assets, gatys, images

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    if not spec["fast"]:  # plain PyTorch keeps malloc's defaults (`stlib.hardware.keep_freed_memory`)
        os.environ["STLIB_KEEP_MEMORY"] = "0"
    device = spec["device"]
    final = spec["scales"][-1] if spec.get("scales") else spec["size"]
    content = images.load_tensor(assets.content_image("tubingen"), size=final, device=device)
    style = images.load_tensor(assets.style_image("starry_night"), size=final, device=device)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    target = spec.get("target")

    def stop_at_target(step: int, image: torch.Tensor, losses: dict[str, float]) -> bool:
        return target is not None and losses.get("size", final) == final and losses["total"] <= target

    config = gatys.GatysConfig(
        objective={"vgg_weights": spec["weights"]},
        size=spec["size"],
        scales=tuple(spec["scales"]) if spec.get("scales") else None,
        iterations=tuple(spec["iterations"]) if isinstance(spec["iterations"], list) else spec["iterations"],
        channels_last=spec["fast"],
        truncate=spec["fast"],
        precision=spec.get("precision") or "fp32",
        progress=False,
    )
    start = time.perf_counter()
    result = gatys.stylize(content, style, config, callback=stop_at_target)
    seconds = time.perf_counter() - start
    times = result.losses("time")
    warm = min(2, len(times) - 2)  # the first iterations include one-off setup (allocation, kernel choice)
    per_iter = (times[-1] - times[warm]) / max(1, len(times) - 1 - warm)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    last = result.history[-1]
    return {
        "per_iter": per_iter,
        "seconds": seconds,
        "iterations": len(times),
        "objective": last["total"],
        "reached": target is not None and last["total"] <= target and last.get("size", final) == final,
        "peak_mib": peak,
        "base_mib": base_rss,
    }


def _measure(spec: dict) -> dict:
    """Run `_worker(spec)` in a fresh Python process and return its JSON answer."""
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark worker failed for {spec}:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Run every measurement and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few iterations (~2 min on a CPU)")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu", help="torch device")
    parser.add_argument("--weights", default=os.environ.get("STLIB_VGG_WEIGHTS", "offline"), help="VGG weights")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--precision", choices=("bf16", "fp16"), help="autocast for path (b) (GPUs)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0

    if args.quick:
        sizes, iters = (128, 256), (30, 10)
        scales, single_iters, scale_iters = (64, 128, 256), 30, (40, 20, 60)
    else:
        sizes, iters = (256, 512), (60, 15)
        scales, single_iters, scale_iters = (256, 512, 1024), 30, (60, 20, 30)
    common = {"device": args.device, "weights": args.weights, "threads": args.threads}
    load_before = os.getloadavg()
    start = time.perf_counter()

    import torch

    threads = args.threads or torch.get_num_threads()
    print(
        f"Gatys benchmark: {args.device} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{threads} torch threads), torch {torch.__version__}, VGG16 '{args.weights}' weights, "
        f"load average {load_before[0]:.1f} at the start",
        flush=True,
    )
    print()
    print("| size | path | s / L-BFGS iteration | speed-up | peak memory (MiB) | final objective | iterations |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    checks = []
    for size, n in zip(sizes, iters, strict=True):
        rows = {}
        for name, fast in (("(a) plain fp32", False), ("(b) optimised default", True)):
            spec = common | {"size": size, "iterations": n, "fast": fast}
            if fast and args.precision:
                spec["precision"] = args.precision
                name += f" + {args.precision}"
            rows[name] = r = _measure(spec)
            speed = rows[next(iter(rows))]["per_iter"] / r["per_iter"]
            print(
                f"| {size} | {name} | {r['per_iter']:.3f} | {speed:.2f}x | {r['peak_mib']:.0f} "
                f"| {r['objective']:.4g} | {r['iterations']} |",
                flush=True,
            )
        a, b = rows.values()
        checks.append((size, a["per_iter"] / b["per_iter"], abs(b["objective"] - a["objective"]) / a["objective"]))
    print()
    for size, speed, diff in checks:
        print(
            f"- {size} px: (b) is {speed:.2f}x faster per iteration than (a) (target >= 2x: "
            f"{'met' if speed >= 2 else 'MISSED'}); final objectives differ by {100 * diff:.2f} % "
            f"(target <= 5 %: {'met' if diff <= 0.05 else 'MISSED'})"
        )

    final = scales[-1]
    single = _measure(common | {"size": final, "iterations": single_iters, "fast": True, "precision": args.precision})
    multi = _measure(
        common
        | {
            "size": final,
            "scales": list(scales),
            "iterations": list(scale_iters),
            "fast": True,
            "precision": args.precision,
            "target": single["objective"],
        }
    )
    ratio = multi["seconds"] / single["seconds"]
    print()
    print(f"| {final} px result | iterations | seconds | objective at {final} px | peak memory (MiB) |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| single-scale {final} | {single['iterations']} | {single['seconds']:.0f} | {single['objective']:.4g} "
        f"| {single['peak_mib']:.0f} |"
    )
    label = " -> ".join(map(str, scales))
    print(
        f"| multi-scale {label} (stops at the single-scale objective) | {multi['iterations']} "
        f"| {multi['seconds']:.0f} | {multi['objective']:.4g} | {multi['peak_mib']:.0f} |"
    )
    print()
    if multi["reached"]:
        verdict = "met" if ratio <= 1 / 3 else "MISSED"
        print(f"- multi-scale reaches the single-scale objective in {ratio:.2f}x its time (target <= 0.33x: {verdict})")
    else:
        print(
            f"- multi-scale does NOT reach the single-scale objective within {scale_iters[-1]} iterations at "
            f"{final} px "
            f"(it ends {100 * (multi['objective'] / single['objective'] - 1):.1f} % above it after {ratio:.2f}x the "
            "single-scale time; target <= 0.33x: MISSED)"
        )
    load_after = os.getloadavg()
    print(
        f"- total {time.perf_counter() - start:.0f} s; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    raise SystemExit(main())
