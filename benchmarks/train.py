"""Training-step throughput: the plain pytorch/examples step against stlib.train's, in the same run.

    python benchmarks/train.py                 # 256 x 256, batch 4 (Johnson et al.'s setting)
    python benchmarks/train.py --quick         # 128 x 128, 2 timed steps per variant
    python benchmarks/train.py --size 192 --steps 5 --bf16 --compile
    python benchmarks/train.py --only plain,ours      # a subset (on slow or shared CPUs)

Variants (every one trains the same default TransformerNet with Adam on random batches, data loading
excluded; VGG16 weights "offline" unless --weights says otherwise, the speed does not depend on them):

- plain: pytorch/examples' fast_neural_style step: separate VGG passes to relu4_3 for the output and the
  photos, NCHW, float32, style Grams computed once; run first, with malloc's default settings.
- plain, memory kept: the same step after `stlib.hardware.keep_freed_memory` (what `train` does on a CPU: freed
  activations stay in the process instead of faulting in again each step), to separate that gain from the rest.
- fused: stlib's loss with one VGG pass over [photos; outputs] (``vgg_pass="fused"``).
- ours fp32: stlib's loss: content targets from a no-grad pass truncated at relu2_2 (``vgg_pass="split"``).
- ours channels_last, ours bf16 (--bf16), ours compile (--compile), ours bf16 + compile (both): each option on top
  of "ours fp32".
- ours auto: what `train` picks here (``precision="auto"``, ``channels_last`` on CUDA only).

Prints a Markdown table: seconds per step, images/s and the speed-up over "plain"; on a GPU also the
projected time of the paper's 40,000 steps x 4 images.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from stlib.hardware import describe_machine, keep_freed_memory, resolve_device, resolve_precision
from stlib.perceptual import JOHNSON_CONTENT_LAYER as CONTENT_LAYER
from stlib.perceptual import JOHNSON_STYLE_LAYERS as STYLE_LAYERS
from stlib.perceptual import PerceptualLoss
from stlib.train import TrainConfig
from stlib.transformer import TransformerNet
from stlib.vgg import VGGFeatures


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gram_matrix(y: torch.Tensor) -> torch.Tensor:
    """pytorch/examples fast_neural_style's Gram matrix (utils.gram_matrix), as it is there."""
    b, ch, h, w = y.size()
    features = y.view(b, ch, w * h)
    return features.bmm(features.transpose(1, 2)) / (ch * h * w)


def plain_step(
    style: torch.Tensor, weights: str, device: torch.device, keep_memory: bool = False
) -> Callable[[torch.Tensor], float]:
    """pytorch/examples fast_neural_style: one training step (content 1e5, style 1e10, MSE of Grams)."""
    if keep_memory and device.type == "cpu":
        keep_freed_memory()
    model = TransformerNet().to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    vgg = VGGFeatures([*STYLE_LAYERS], weights=weights).to(device)  # relu2_2 is one of them
    with torch.no_grad():
        grams = {k: gram_matrix(v) for k, v in vgg(style).items()}

    def step(x: torch.Tensor) -> float:
        optimizer.zero_grad()
        y = model(x)
        features_y = vgg(y)
        features_x = vgg(x)  # no graph: x and the VGG need no gradient
        content = 1e5 * F.mse_loss(features_y[CONTENT_LAYER], features_x[CONTENT_LAYER])
        style = 1e10 * sum(F.mse_loss(gram_matrix(features_y[k]), grams[k].expand(x.shape[0], -1, -1)) for k in grams)
        total = content + style
        total.backward()
        optimizer.step()
        return float(total.detach())

    return step


def ours_step(
    style: torch.Tensor,
    weights: str,
    device: torch.device,
    vgg_pass: str = "split",
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
) -> Callable[[torch.Tensor], float]:
    """stlib.train's step (the same code path as `train`, without data loading and logging)."""
    if device.type == "cpu":
        keep_freed_memory()  # as `train` does
    model = TransformerNet().to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    objective = TrainConfig(objective={"vgg_weights": weights}).objective  # the training defaults: Johnson's layers
    loss_fn = PerceptualLoss(style, objective, vgg_pass=vgg_pass, precision=precision, channels_last=channels_last)
    forward = torch.compile(model) if compile else model
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def step(x: torch.Tensor) -> float:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            y = forward(x)
        terms = loss_fn(x, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["total"]).backward()
        scaler.step(optimizer)
        scaler.update()
        return float(terms["total"].detach())

    return step


def time_steps(step: Callable[[torch.Tensor], float], x: torch.Tensor, steps: int, warmup: int) -> float:
    """Median seconds per step after `warmup` untimed steps."""
    for _ in range(warmup):
        step(x)
    _sync(x.device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(x)
        _sync(x.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Parse the arguments, time every variant, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="crop size (default 256, the paper's)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per step (default 4, the paper's)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant")
    parser.add_argument("--quick", action="store_true", help="128 x 128, 2 timed steps")
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast (slow on AVX2-only CPUs)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow first step)")
    parser.add_argument("--weights", default="offline", help="VGG16 weights (default offline: no download)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated subset of plain,plainkept,fused,ours,cl,bf16,bf16cl,compile,bf16compile,auto",
    )
    args = parser.parse_args()
    if args.quick:
        args.size, args.steps = 128, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, 3, args.size, args.size, device=device)
    style = torch.rand(1, 3, args.size, args.size, device=device)
    auto_precision = resolve_precision("auto", device)

    auto_name = f"ours auto ({auto_precision}{', channels_last' if device.type == 'cuda' else ''})"
    variants: list[tuple[str, str, Callable[[], Callable[[torch.Tensor], float]]]] = [
        ("plain", "plain (pytorch/examples)", lambda: plain_step(style, args.weights, device)),
        ("plainkept", "plain, memory kept", lambda: plain_step(style, args.weights, device, keep_memory=True)),
        ("fused", "fused VGG pass", lambda: ours_step(style, args.weights, device, vgg_pass="fused")),
        ("ours", "ours fp32", lambda: ours_step(style, args.weights, device)),
        ("cl", "ours channels_last", lambda: ours_step(style, args.weights, device, channels_last=True)),
        ("bf16", "ours bf16", lambda: ours_step(style, args.weights, device, precision="bf16")),
        ("bf16cl", "ours bf16 channels_last", lambda: ours_step(style, args.weights, device, "split", "bf16", True)),
        ("compile", "ours compile", lambda: ours_step(style, args.weights, device, compile=True)),
        (
            "bf16compile",
            "ours bf16 + compile",
            lambda: ours_step(style, args.weights, device, "split", "bf16", compile=True),
        ),
        (
            "auto",
            auto_name,
            lambda: ours_step(style, args.weights, device, "split", auto_precision, device.type == "cuda"),
        ),
    ]
    wanted = set(args.only.split(",")) if args.only else {"plain", "plainkept", "fused", "ours", "cl", "auto"}
    if not args.only:
        wanted |= {"bf16", "bf16cl"} if args.bf16 else set()
        wanted |= {"compile"} if args.compile else set()
        wanted |= {"bf16compile"} if args.compile and args.bf16 else set()
    unknown = wanted - {key for key, _, _ in variants}
    if unknown:
        parser.error(f"--only: unknown variant(s) {', '.join(sorted(unknown))}")
    variants = [v for v in variants if v[0] in wanted]

    steps = f"median of {args.steps} steps after {args.warmup} warm-up"
    print(f"# {args.size}x{args.size}, batch {args.batch_size}, {steps}")
    print(f"# on {device.type}: {describe_machine()}")  # the CPU model and whether it has bf16 in hardware
    print("| variant | s/step | images/s | vs plain |")
    print("|---|---:|---:|---:|")
    base = None
    for _, name, make in variants:
        seconds = time_steps(make(), x, args.steps, args.warmup)
        base = base or seconds
        print(f"| {name} | {seconds:.3f} | {args.batch_size / seconds:.2f} | {base / seconds:.2f}x |", flush=True)
        if device.type == "cuda":
            print(f"|   40k steps x {args.batch_size} images | {40_000 * seconds / 3600:.2f} h | | |")


if __name__ == "__main__":
    main()
