"""Command-line interface: ``python -m stlib <command> --help``.

Commands: ``demo`` (the course notebooks headless, then a Gatys transfer, every shipped network and a clip,
and a gallery ``outputs/index.html``; see `stlib.demo`), ``gatys`` (style transfer by optimisation, Gatys et
al. CVPR 2016, see `stlib.gatys`), ``train`` / ``stylize`` / ``export`` (feed-forward networks, Johnson et al.
ECCV 2016, see `stlib.train` and `stlib.stylize`) and ``download-coco`` (the training photos, see `stlib.data`).
Every command reports bad input as one clear line on stderr and exits with a non-zero code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from . import __version__
from .images import ImageError
from .vgg import WeightsUnavailableError


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the course demo (stlib.demo): the notebooks headless with progress, then outputs/index.html."""
    from .demo import DemoConfig, DemoError, run_demo

    mode = "quick" if args.quick else "full" if args.full else "demo"
    try:
        result = run_demo(DemoConfig(mode=mode, timeout=args.timeout, progress=not args.quiet))
    except DemoError as err:
        raise CLIError(str(err)) from None
    minutes, seconds = divmod(round(result.seconds), 60)
    print(f"Done in {minutes}:{seconds:02d} ({mode} mode): {len(result.figures)} figures in {result.out}")
    print(f"Open {result.gallery} in a browser.")
    return 0


# ----------------------------------------------------------------------------------------------------------
# gatys
# ----------------------------------------------------------------------------------------------------------


def _losses_line(losses: dict[str, float]) -> str:
    """'content 0.41  style 0.023  tv 0.011  total 0.75' from one history entry."""
    return "  ".join(f"{k} {losses[k]:.4g}" for k in ("content", "style", "tv", "total") if k in losses)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _layer_weight(text: str) -> tuple[str, float]:
    """'relu1_1' or 'relu1_1:0.5' -> (name, weight)."""
    name, _, weight = text.partition(":")
    return name, _non_negative_float(weight) if weight else 1.0


def _check_output(path: Path, suffixes: Sequence[str] | None = None, what: str = "output image") -> None:
    """Fail before any work when `path` cannot be written as an image (or one of `suffixes`)."""
    from PIL import Image

    if suffixes is not None:
        if path.suffix.lower() not in suffixes:
            raise CLIError(f"Cannot write {what} '{path}': its name must end in {' or '.join(suffixes)}.")
    else:
        image_format = Image.registered_extensions().get(path.suffix.lower())
        if image_format is None or image_format not in Image.SAVE:
            raise CLIError(
                f"Cannot write {what} '{path}': unknown image file suffix '{path.suffix}' (use .jpg or .png)."
            )
    if path.is_dir():
        raise CLIError(f"Cannot write {what} '{path}': it is a directory.")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise CLIError(f"Cannot write {what} '{path}': the folder {parent} is not writable.")


def cmd_gatys(args: argparse.Namespace) -> int:
    """Style transfer by optimisation; prints the final losses and time, writes the image atomically."""
    import torch

    from .gatys import GatysConfig, OptimizationDiverged, stylize
    from .hardware import default_device
    from .images import load_tensor, save_image

    output = Path(args.output)
    _check_output(output)
    if args.gif is not None:
        _check_output(Path(args.gif), suffixes=(".gif",), what="GIF")
    if args.blend is not None and len(args.blend) != len(args.style):
        raise CLIError(
            f"Got {len(args.style)} --style image(s) but {len(args.blend)} --blend weight(s); give one per style."
        )
    n_scales = len(args.scales) if args.scales else 1
    if len(args.iterations) not in (1, n_scales):
        raise CLIError(f"--iterations takes one count, or one per scale ({n_scales}), not {len(args.iterations)}.")
    total_iterations = sum(args.iterations) if len(args.iterations) > 1 else args.iterations[0] * n_scales
    d = GatysConfig()
    config = GatysConfig(
        arch=args.arch,
        weights=args.weights,
        pool=args.pool,
        content_layers=tuple(args.content_layers) if args.content_layers else d.content_layers,
        style_layers=dict(args.style_layers) if args.style_layers else d.style_layers,
        content_weight=args.content_weight,
        style_weight=args.style_weight,
        tv_weight=args.tv_weight,
        optimizer=args.optimizer,
        lr=args.lr,
        iterations=args.iterations[0] if len(args.iterations) == 1 else tuple(args.iterations),
        size=args.size,
        style_scale=args.style_scale,
        init=args.init,
        seed=args.seed,
        style_blend=tuple(args.blend) if args.blend else None,
        preserve_colors=args.preserve_colors,
        color_method=args.color_method,
        scales=tuple(args.scales) if args.scales else None,
        snapshot_every=(args.gif_every or max(1, total_iterations // 40)) if args.gif else 0,
        progress=not args.quiet,
        autocast=args.autocast,
    )
    config.validate()  # bad settings fail before the images are loaded
    device = args.device or default_device()
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        raise CLIError(f"Cannot use --device {device}: {str(err).splitlines()[0]}") from None
    size = config.scales[-1] if config.scales else config.size
    content = load_tensor(args.content, size=size, device=device)
    style_size = max(16, round(config.style_scale * size))
    styles = [load_tensor(path, size=style_size, device=device) for path in args.style]

    try:
        result = stylize(content, styles, config)
    except OptimizationDiverged as err:
        raise CLIError(f"The optimisation diverged: {err}") from None
    except torch.cuda.OutOfMemoryError:
        raise CLIError(f"Out of memory at {size} px on {device}; lower --size or use --scales.") from None

    try:
        save_image(result.image, output)
        if args.gif is not None:
            result.save_gif(args.gif)
    except OSError as err:
        raise CLIError(f"Cannot write '{err.filename or output}': {err.strerror or err}.") from None
    its = len(result.history)
    h, w = result.image.shape[-2:]
    print(f"final losses: {_losses_line(result.history[-1])}")
    times = result.losses("time")
    per_iteration = (times[-1] - times[0]) / (its - 1) if its > 1 else times[0]
    print(f"time: {result.seconds:.1f} s in all, {its} iterations at {per_iteration:.3f} s/iteration on {device}")
    print(f"wrote {output} ({w}x{h})" + (f" and {args.gif} ({len(result.snapshots)} frames)" if args.gif else ""))
    return 0


def _add_gatys_parser(sub: argparse._SubParsersAction) -> None:
    from .gatys import CONTENT_LAYERS, STYLE_LAYERS, GatysConfig

    d = GatysConfig()
    p = sub.add_parser(
        "gatys",
        help="style transfer by optimisation (Gatys et al.): photo + painting -> stylised image",
        description=(
            "Style transfer by optimisation (Gatys et al., CVPR 2016): change the pixels of an image until its "
            "VGG features match the content of a photo and the style (Gram matrices) of one or more paintings. "
            "Losses are normalised (see stlib.gatys), so the weights below work for every size and VGG weights."
        ),
        epilog=(
            "example: python -m stlib gatys --content data/samples/tubingen.jpg "
            "--style style_images/starry_night.jpg --size 512 --iterations 300 -o out.jpg"
        ),
    )
    io_ = p.add_argument_group("images")
    io_.add_argument("--content", required=True, metavar="PATH", help="the photo whose content is kept")
    io_.add_argument(
        "--style", required=True, action="append", metavar="PATH", help="a style painting; repeat to blend several"
    )
    io_.add_argument(
        "--blend",
        type=_non_negative_float,
        nargs="+",
        metavar="W",
        help="one blend weight per --style (default: equal)",
    )
    io_.add_argument("-o", "--output", required=True, metavar="OUT", help="the result image (.jpg, .png ...)")
    io_.add_argument("--gif", metavar="PATH", help="also write an animated GIF of the optimisation (.gif)")
    io_.add_argument(
        "--gif-every",
        type=_positive_int,
        metavar="N",
        help="one GIF frame every N iterations (default: about 40 frames in all)",
    )

    opt = p.add_argument_group("optimisation")
    opt.add_argument(
        "--size",
        type=_positive_int,
        default=d.size,
        metavar="PX",
        help="longest side of the result in pixels (default: %(default)s)",
    )
    opt.add_argument(
        "--iterations",
        type=_positive_int,
        nargs="+",
        default=[d.iterations],
        metavar="N",
        help=f"L-BFGS/Adam iterations: one count, or one per scale (default: {d.iterations})",
    )
    opt.add_argument(
        "--scales",
        type=_positive_int,
        nargs="+",
        metavar="PX",
        help="coarse-to-fine sizes, e.g. 256 512 (overrides --size)",
    )
    opt.add_argument(
        "--init",
        choices=("content", "noise", "blurred-noise"),
        default=d.init,
        help="starting image (default: %(default)s)",
    )
    opt.add_argument(
        "--optimizer",
        choices=("lbfgs", "adam"),
        default=d.optimizer,
        help="L-BFGS (the paper's) or Adam (default: %(default)s)",
    )
    opt.add_argument("--lr", type=float, help="step size (default 1.0 for lbfgs, 0.02 for adam)")
    opt.add_argument("--seed", type=int, default=d.seed, help="seed of the noise inits (default: %(default)s)")
    opt.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    opt.add_argument("--autocast", choices=("bf16", "fp16"), help="low-precision VGG activations (fast on GPUs only)")
    opt.add_argument("--quiet", action="store_true", help="no progress bar")

    loss = p.add_argument_group("loss")
    loss.add_argument(
        "--content-weight",
        type=_non_negative_float,
        default=d.content_weight,
        help="alpha, weight of the content loss (default: %(default)s)",
    )
    loss.add_argument(
        "--style-weight",
        type=_non_negative_float,
        default=d.style_weight,
        help="beta, weight of the style loss (default: %(default)s)",
    )
    loss.add_argument(
        "--tv-weight",
        type=_non_negative_float,
        default=d.tv_weight,
        help="weight of the total variation loss (default: %(default)s)",
    )
    loss.add_argument(
        "--content-layers", nargs="+", metavar="LAYER", help=f"content layers (default: {' '.join(CONTENT_LAYERS)})"
    )
    loss.add_argument(
        "--style-layers",
        type=_layer_weight,
        nargs="+",
        metavar="LAYER[:W]",
        help=f"style layers with optional weights, e.g. relu1_1:2 relu3_1 (default: {' '.join(STYLE_LAYERS)})",
    )
    loss.add_argument(
        "--style-scale",
        type=float,
        default=d.style_scale,
        help="size of the style image relative to the content (default: %(default)s)",
    )
    loss.add_argument("--preserve-colors", action="store_true", help="keep the photo's colours (Gatys et al. 2017)")
    loss.add_argument(
        "--color-method",
        choices=("luminance", "histogram"),
        default=d.color_method,
        help=(
            "with --preserve-colors: transfer luminance only, or recolour the style to the photo's colours "
            "(default: %(default)s)"
        ),
    )
    loss.add_argument("--arch", choices=("vgg16", "vgg19"), default=d.arch, help="loss network (default: %(default)s)")
    loss.add_argument(
        "--weights",
        default=d.weights,
        help="VGG weights: auto, imagenet, offline (VGG16 only) or a state-dict path (default: %(default)s)",
    )
    loss.add_argument("--pool", choices=("max", "avg"), default=d.pool, help="VGG pooling (default: %(default)s)")
    p.set_defaults(func=cmd_gatys)


# ----------------------------------------------------------------------------------------------------------
# train / stylize / export / download-coco (Johnson et al.)
# ----------------------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    """Train a feed-forward style network; under torchrun every process runs this with the same arguments."""
    from .train import ResumeError, TrainConfig, TrainingDiverged, train
    from .transformer import TransformerConfig

    style = Path(args.style)
    if not style.is_file():
        raise CLIError(f"Style image '{style}' does not exist.")
    data = Path(args.data)
    if not data.is_dir():
        raise CLIError(
            f"Training data folder '{data}' does not exist "
            "(python -m stlib download-coco --dest data/coco fetches COCO, or point --data at any photo folder)."
        )
    if args.out is not None:
        _check_output(Path(args.out), suffixes=(".safetensors",), what="model file")
    d = TrainConfig()
    transformer = TransformerConfig(
        norm=args.norm,
        upsample=args.upsample,
        output=args.output_activation,
        width=args.width,
        num_residual_blocks=args.blocks,
        input_skip=args.input_skip,
    )
    config = TrainConfig(
        style=str(style),
        data=str(data),
        out=args.out,
        run_dir=args.run_dir,
        size=args.size,
        style_size=args.style_size or None,
        batch_size=args.batch_size,
        steps=args.steps,
        lr=args.lr,
        schedule=args.schedule,
        warmup_steps=args.warmup_steps,
        content_layer=args.content_layer or d.content_layer,
        style_layers=tuple(args.style_layers) if args.style_layers else d.style_layers,
        content_weight=args.content_weight,
        style_weight=args.style_weight,
        tv_weight=args.tv_weight,
        seed=args.seed,
        limit=args.limit,
        log_every=args.log_every,
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
        val=args.val,
        vgg_weights=args.weights,
        transformer=transformer,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
        device=args.device,
        num_workers=args.num_workers,
        resume=args.resume,
        init=args.init,
        progress=not args.quiet,
    )
    config.validate()
    try:
        with _stop_on_signal() as stop_requested:
            result = train(config, callback=lambda step, losses: stop_requested())
    except TrainingDiverged as err:
        raise CLIError(str(err)) from None
    except ResumeError as err:
        raise CLIError(f"Cannot resume: {err}") from None
    if result.step < config.steps:
        print(f"stopped at step {result.step} of {config.steps} with a checkpoint; continue with --resume")
    if result.history:
        last = result.history[-1]
        print(f"step {result.step}: {_losses_line(last)}")
    print(f"time: {result.seconds:.0f} s, {result.images_per_s:.2f} images/s ({result.precision} on {result.device})")
    print(f"wrote {result.checkpoint} (training state and logs in {result.run_dir})")
    return 0


@contextlib.contextmanager
def _stop_on_signal() -> Iterator[Callable[[], bool]]:
    """Ctrl-C or SIGTERM asks a single-process training run to stop after the current step, with a checkpoint.

    Yields a function telling whether a stop was asked for; a second signal stops at once (KeyboardInterrupt).
    Under torchrun (several processes) the signals keep their default meaning: ranks stopping at different
    steps would wait on each other forever.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    asked: list[str] = []

    def handler(signum: int, frame: object) -> None:
        if asked:
            raise KeyboardInterrupt
        asked.append(signal.Signals(signum).name)
        print(f"\n{asked[0]}: stopping after this step with a checkpoint (again to stop at once)", file=sys.stderr)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(asked)
    finally:
        for sig, old_handler in previous.items():
            signal.signal(sig, old_handler)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    from .hardware import PRECISIONS
    from .train import SCHEDULES, TrainConfig
    from .transformer import NORMS, OUTPUTS, UPSAMPLINGS, TransformerConfig

    d, t = TrainConfig(), TransformerConfig()
    p = sub.add_parser(
        "train",
        help="train a feed-forward style network (Johnson et al.) on a folder of photos",
        description=(
            "Train one image transformation network for one style with the perceptual loss (Johnson et al., "
            "ECCV 2016). Checkpoints (safetensors + JSON metadata) and the full training state are written every "
            "--checkpoint-every steps and when Ctrl-C or SIGTERM stops the run (after the current step); --resume "
            "continues exactly where a run stopped. Multi-GPU: "
            "torchrun --nproc_per_node=N -m stlib train ..."
        ),
        epilog=(
            "example: python -m stlib train --style style_images/starry_night.jpg --data data/coco/train2017 "
            "--steps 40000 -o checkpoints/starry_night.safetensors"
        ),
    )
    io_ = p.add_argument_group("files")
    io_.add_argument("--style", required=True, metavar="PATH", help="the style image")
    io_.add_argument("--data", required=True, metavar="DIR", help="folder of training photos (any tree of images)")
    io_.add_argument(
        "-o", "--out", metavar="FILE", help="model file (.safetensors; default: checkpoints/<style>.safetensors)"
    )
    io_.add_argument("--run-dir", metavar="DIR", help="logs, validation grids and state (default: <out>.run/)")
    io_.add_argument("--val", metavar="DIR", help="validation photos (default: the first 4 training photos)")
    io_.add_argument("--limit", type=_positive_int, metavar="N", help="use only the first N training photos")
    io_.add_argument("--resume", action="store_true", help="continue from the run folder's training state")
    io_.add_argument(
        "--init", metavar="MODEL", help="start from a model file's weights, e.g. a shipped style (fresh optimiser)"
    )

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--steps", type=_positive_int, default=d.steps, help="optimiser steps (default: %(default)s)")
    opt.add_argument(
        "--batch-size", type=_positive_int, default=d.batch_size, help="per process (default: %(default)s)"
    )
    opt.add_argument("--size", type=_positive_int, default=d.size, help="training crop size (default: %(default)s)")
    opt.add_argument(
        "--style-size",
        type=int,
        default=d.style_size,
        help="longest side of the style image; 0: as the file (default: %(default)s)",
    )
    opt.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default: %(default)s)")
    opt.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help="LR schedule (default: %(default)s)")
    opt.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="linear LR warm-up (default: 0)")
    opt.add_argument("--seed", type=int, default=d.seed, help="weights, data order and crops (default: %(default)s)")
    opt.add_argument("--precision", choices=PRECISIONS, default=d.precision, help="autocast (default: %(default)s)")
    opt.add_argument("--channels-last", action="store_true", help="NHWC memory layout (faster on GPUs)")
    opt.add_argument("--compile", action="store_true", help="torch.compile the network (GPUs)")
    opt.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1 ... (default: %(default)s)")
    opt.add_argument(
        "--num-workers", type=int, help="data-loading processes (default: 0 on CPU, min(8, cores / 2) with CUDA)"
    )
    opt.add_argument("--quiet", action="store_true", help="no progress bar")

    log = p.add_argument_group("logging")
    log.add_argument(
        "--log-every", type=_positive_int, default=d.log_every, help="CSV row every N steps (default: %(default)s)"
    )
    log.add_argument(
        "--val-every",
        type=int,
        default=d.val_every,
        help="validation grid every N steps, 0: none (default: %(default)s)",
    )
    log.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=d.checkpoint_every,
        help="model file + training state every N steps (default: %(default)s)",
    )

    loss = p.add_argument_group("loss")
    loss.add_argument(
        "--content-weight", type=_non_negative_float, default=d.content_weight, help="default: %(default)s"
    )
    loss.add_argument("--style-weight", type=_non_negative_float, default=d.style_weight, help="default: %(default)s")
    loss.add_argument("--tv-weight", type=_non_negative_float, default=d.tv_weight, help="default: %(default)s")
    loss.add_argument("--content-layer", metavar="LAYER", help=f"default: {d.content_layer}")
    loss.add_argument("--style-layers", nargs="+", metavar="LAYER", help=f"default: {' '.join(d.style_layers)}")
    loss.add_argument(
        "--weights",
        default=d.vgg_weights,
        help="VGG16 loss network weights: auto, imagenet, offline or a file (default: %(default)s)",
    )

    net = p.add_argument_group("network")
    net.add_argument("--norm", choices=NORMS, default=t.norm, help="normalisation (default: %(default)s)")
    net.add_argument("--upsample", choices=UPSAMPLINGS, default=t.upsample, help="upsampling (default: %(default)s)")
    net.add_argument(
        "--output-activation", choices=OUTPUTS, default=t.output, help="output layer (default: %(default)s)"
    )
    net.add_argument("--width", type=float, default=t.width, help="channel multiplier (default: %(default)s)")
    net.add_argument(
        "--blocks", type=_positive_int, default=t.num_residual_blocks, help="residual blocks (default: %(default)s)"
    )
    net.add_argument(
        "--input-skip",
        action="store_true",
        help="output = input + f(input), starting from the identity (not in the paper; converges fast on CPUs)",
    )
    p.set_defaults(func=cmd_train)


def cmd_stylize(args: argparse.Namespace) -> int:
    """Stylise images or folders with a trained network; one output per input."""
    from .hardware import default_device
    from .stylize import load_model, stylize_files

    device = args.device or default_device()
    model = load_model(args.model, device=device)
    start = time.perf_counter()
    written = stylize_files(model, args.inputs, args.output, size=args.size, tile=args.tile, overlap=args.overlap)
    seconds = time.perf_counter() - start
    for path in written:
        print(f"wrote {path}")
    print(f"{len(written)} image(s) in {seconds:.1f} s on {device}")
    return 0


def _add_stylize_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stylize",
        help="stylise images with a trained network (one forward pass each)",
        description=(
            "Stylise image files or folders with a trained style network (Johnson et al.). Any size works; "
            "--tile N processes large images in overlapping N x N tiles so memory stays bounded."
        ),
        epilog="example: python -m stlib stylize --model checkpoints/starry_night.safetensors photo.jpg -o out.jpg",
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders")
    p.add_argument("--model", required=True, metavar="FILE", help="a model file (.safetensors) from train or export")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="an image file (one input) or a folder")
    p.add_argument("--size", type=_positive_int, metavar="PX", help="resize the longest side first (default: keep)")
    p.add_argument("--tile", type=_positive_int, metavar="PX", help="process in tiles of PX x PX (large images)")
    p.add_argument("--overlap", type=int, default=32, metavar="PX", help="tile overlap (default: %(default)s)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.set_defaults(func=cmd_stylize)


def cmd_export(args: argparse.Namespace) -> int:
    """Write a compact (float16) copy of a model file."""
    import torch

    from .stylize import export_weights

    output = Path(args.output)
    if args.onnx:
        if args.info:
            raise CLIError("--info applies to .safetensors copies; an ONNX file carries no stlib metadata.")
        return _export_onnx(args.model, output)
    _check_output(output, suffixes=(".safetensors",), what="model file")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    extra = {}
    for item in args.info or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--info expects KEY=VALUE, got {item!r}.")
        extra[key.strip()] = value
    path = export_weights(args.model, output, dtype=dtype, extra_info=extra)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {args.dtype})")
    return 0


def _export_onnx(model_file: str, output: Path) -> int:
    """Export a model file to ONNX (symbolic H x W) and report its parity with PyTorch on the sample photo."""
    import numpy as np
    import torch

    from .assets import content_image
    from .backends import TOLERANCE, BackendError, export_onnx
    from .images import load_tensor
    from .stylize import load_model

    _check_output(output, suffixes=(".onnx",), what="ONNX file")
    model = load_model(model_file)
    try:
        path = export_onnx(model, output)
        import onnxruntime as ort
    except (BackendError, ImportError) as err:
        missing = "onnxruntime is not installed: pip install 'stlib[fast]'."
        raise CLIError(str(err) if isinstance(err, BackendError) else missing) from None
    photo = load_tensor(content_image("tubingen"), size=(344, 256))  # (1, 3, 256, 344): multiples of 4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"image": photo.numpy()})[0]
    with torch.inference_mode():
        reference = model(photo).numpy()
    difference = float(np.abs(ours - reference).max())
    verdict = "ok" if difference <= TOLERANCE["onnx"] else "TOO LARGE"
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); input 'image' (1, 3, H, W), H and W multiples of 4")
    print(f"parity with PyTorch on a 344x256 photo: max abs difference {difference:.2e} ({verdict})")
    if difference > TOLERANCE["onnx"]:
        raise CLIError(f"The ONNX export '{path}' differs from the PyTorch network by {difference:.2e}.")
    return 0


def _add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a compact float16 copy of a model file, or an ONNX file (--onnx)",
        epilog="examples: python -m stlib export run.safetensors -o checkpoints/x.safetensors; "
        "python -m stlib export checkpoints/x.safetensors --onnx -o x.onnx",
    )
    p.add_argument("model", metavar="FILE", help="a model file (.safetensors)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the new file (.safetensors, or .onnx)")
    p.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16", help="weights (default: %(default)s)")
    p.add_argument(
        "--onnx", action="store_true", help="export to ONNX (dynamic H x W) and check it against PyTorch instead"
    )
    p.add_argument(
        "--info",
        action="append",
        metavar="KEY=VALUE",
        help="add an entry to the copy's metadata, e.g. dataset='BSDS500 train (200 photos)' (repeatable)",
    )
    p.set_defaults(func=cmd_export)


def cmd_distill(args: argparse.Namespace) -> int:
    """Distil a slim, fast student network from a trained style network."""
    from .distill import DistillConfig, distill
    from .stylize import load_model

    output = Path(args.output)
    _check_output(output, suffixes=(".safetensors",), what="model file")
    load_model(args.teacher)  # a CheckpointError naming the file, before any work
    config = DistillConfig(
        teacher=args.teacher,
        data=args.data,
        output=str(output),
        width=args.width,
        num_residual_blocks=args.blocks,
        size=args.size,
        limit=args.limit,
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        resume=args.resume,
        progress=not args.quiet,
    )
    result = distill(config)
    print(
        f"wrote {result.path}: {result.student}; {result.flops_ratio:.0%} of the teacher's FLOPs; "
        f"mean difference from the teacher {255 * result.l1:.1f} of 255 levels after {result.steps} steps "
        f"({result.seconds:.0f} s)"
    )
    return 0


def _add_distill_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="distil a slim, fast network from a trained one (no VGG needed)",
        description=(
            "Train a slim student network (width 0.25, 3 residual blocks by default: 7%% of the FLOPs) to "
            "reproduce a trained style network's output on a folder of photos (L1 on pixels)."
        ),
        epilog="example: python -m stlib distill checkpoints/wave.safetensors --data photos/ "
        "-o checkpoints/wave_slim.safetensors",
    )
    p.add_argument("teacher", metavar="FILE", help="the trained network (.safetensors)")
    p.add_argument("--data", required=True, metavar="DIR", help="a folder of photos (any tree)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the student's model file (.safetensors)")
    p.add_argument("--width", type=_positive_float, default=0.25, help="channel multiplier (default: %(default)s)")
    p.add_argument("--blocks", type=int, default=3, help="residual blocks (default: %(default)s)")
    p.add_argument("--size", type=_positive_int, default=384, help="shorter photo side (default: %(default)s)")
    p.add_argument(
        "--limit", type=_positive_int, default=1000, metavar="N", help="use at most N photos (default: %(default)s)"
    )
    p.add_argument("--steps", type=_positive_int, default=3000, help="default: %(default)s")
    p.add_argument("--lr", type=_positive_float, default=2e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="student initialisation and photo order (default: 0)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's saved state (NAME.distill.pt)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_distill)


def cmd_download_coco(args: argparse.Namespace) -> int:
    """Download, verify and extract COCO 2017 train images (resumable)."""
    from .data import COCO_TRAIN_URL, DownloadError, download_coco

    try:
        folder = download_coco(
            args.dest, url=args.url or COCO_TRAIN_URL, keep=args.keep, progress=not args.quiet, md5=args.md5
        )
    except DownloadError as err:
        raise CLIError(str(err)) from None
    count = sum(1 for _ in folder.iterdir())
    print(f"{count} images in {folder}")
    return 0


def _add_download_coco_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download-coco",
        help="download COCO 2017 train images (18 GB; resumable) for training",
        description=(
            "Download the official COCO 2017 train zip with a progress bar, resume a partial download (HTTP "
            "Range), verify the archive (size, md5, CRCs) and extract it to DEST/train2017."
        ),
    )
    p.add_argument("--dest", default="data/coco", help="target folder (default: %(default)s)")
    p.add_argument("--keep", type=_positive_int, metavar="N", help="extract only the first N images (a quick run)")
    p.add_argument("--url", help="another archive URL (e.g. a mirror)")
    p.add_argument("--md5", help="expected md5 of the archive at --url")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_download_coco)


# ----------------------------------------------------------------------------------------------------------
# video / webcam (stlib.video, stlib.webcam)
# ----------------------------------------------------------------------------------------------------------


def _resolution(text: str) -> tuple[int, int]:
    from .webcam import parse_resolution

    try:
        return parse_resolution(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _strength(text: str) -> float:
    value = _non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text}")
    return value


def cmd_video(args: argparse.Namespace) -> int:
    """Stylise every frame of a video file with a trained network; the output is silent (audio is dropped)."""
    from .hardware import default_device
    from .stylize import load_model
    from .video import VIDEO_SUFFIXES, probe, stylize_video

    source, output = Path(args.input), Path(args.output)
    _check_output(output, suffixes=tuple(VIDEO_SUFFIXES), what="video")
    info = probe(source)  # a VideoError naming the file when it cannot be read
    if source.resolve() == output.resolve():
        raise CLIError(f"Refusing to overwrite the input video '{source}' with its stylised version.")
    device = args.device or default_device()
    width, height = args.size or (info.width, info.height)
    model = _backend(load_model(args.model, device=device), args.backend, (height, width))
    print(
        f"{source}: {info.width}x{info.height}, {info.fps:g} fps, ~{info.frames} frames -> {width}x{height} on "
        f"{device} ({model.name} backend)"
    )
    result = stylize_video(
        model,
        source,
        output,
        size=args.size,
        fps=args.fps,
        max_frames=args.max_frames,
        strength=args.strength,
        progress=not args.quiet,
    )
    print(
        f"wrote {result.path} ({result.frames} frames, {result.width}x{result.height}, {result.fps:g} fps) in "
        f"{result.seconds:.1f} s ({result.frames_per_second:.2f} frames/s); no audio track (OpenCV writes video only)"
    )
    return 0


def _add_video_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "video",
        help="stylise a video file frame by frame with a trained network (audio is dropped)",
        description=(
            "Stylise every frame of a video file with a trained style network (Johnson et al.) and write a new "
            "video with OpenCV. The output has no audio track."
        ),
        epilog="example: python -m stlib video in.mp4 -o out.mp4 --model checkpoints/starry_night.safetensors",
    )
    p.add_argument("input", metavar="IN", help="a video file (anything OpenCV/FFmpeg reads: .mp4, .avi, .mov ...)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the stylised video (.mp4, .avi, .mkv ...)")
    p.add_argument("--model", required=True, metavar="FILE", help="a model file (.safetensors)")
    p.add_argument("--size", type=_resolution, metavar="WxH", help="fit frames to WxH first, e.g. 640x480")
    p.add_argument("--fps", type=float, help="output frame rate (default: the input's)")
    p.add_argument("--max-frames", type=_positive_int, metavar="N", help="stop after N frames")
    p.add_argument("--strength", type=_strength, default=1.0, help="0: original .. 1: stylised (default: 1)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    _add_backend_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_video)


def cmd_webcam(args: argparse.Namespace) -> int:
    """Stylise a local camera live in an OpenCV window (the desktop app)."""
    from .hardware import default_device
    from .stylize import load_model
    from .webcam import CameraError, run_desktop

    device = args.device or default_device()
    model = _backend(load_model(args.model, device=device), args.backend, (args.size[1], args.size[0]))
    print(f"{model.name} backend on {device}")
    try:
        stats = run_desktop(
            model, camera=args.camera, resolution=args.size, mirror=not args.no_mirror, strength=args.strength
        )
    except CameraError as err:
        raise CLIError(str(err)) from None
    print(f"{stats['frames']} frames in {stats['seconds']:.1f} s ({stats['fps']:.2f} fps)")
    return 0


def _add_webcam_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "webcam",
        help="live style transfer of a local camera in a desktop window (needs opencv-python)",
        description=(
            "Stylise a camera on this machine live in an OpenCV window (keys: q quit, m mirror, s snapshot to "
            "outputs/, +/- strength). For notebooks and Colab use stlib.webcam.WebcamStylizer instead."
        ),
        epilog="example: python -m stlib webcam --model checkpoints/starry_night.safetensors --size 320x240",
    )
    p.add_argument("--model", required=True, metavar="FILE", help="a model file (.safetensors)")
    p.add_argument("--camera", type=int, default=0, help="OpenCV camera index (default: %(default)s)")
    p.add_argument("--size", type=_resolution, default=(640, 480), metavar="WxH", help="default: 640x480")
    p.add_argument("--no-mirror", action="store_true", help="do not flip the picture left-right")
    p.add_argument("--strength", type=_strength, default=1.0, help="0: original .. 1: stylised (default: 1)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    _add_backend_argument(p)
    p.set_defaults(func=cmd_webcam)


def _add_backend_argument(p: argparse.ArgumentParser) -> None:
    from .backends import BACKENDS

    p.add_argument(
        "--backend",
        choices=("auto", *BACKENDS),
        default="auto",
        help="how to run the network (default: auto, the fastest correct engine here; see stlib.backends)",
    )


def _backend(model, name: str, probe: tuple[int, int]):
    """`model` bound to backend `name`, timed at the (height, width) the command will use."""
    from .backends import BackendError, make_backend

    try:
        return make_backend(model, name, probe=probe)
    except BackendError as err:
        raise CLIError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every command."""
    parser = argparse.ArgumentParser(prog="python -m stlib", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"stlib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the course headless with progress; results and outputs/index.html go to outputs/",
        description=(
            "Execute notebooks 01, 02 and 04 headless, then a Gatys transfer, the sample photo through every "
            "network in checkpoints/ and a short stylised clip; write outputs/index.html, a gallery of every "
            "figure. Default: reduced sizes, a few minutes on a CPU."
        ),
    )
    size = demo.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny sizes and few iterations (as in CI)")
    size.add_argument("--full", action="store_true", help="the notebooks' full sizes (about an hour on a CPU)")
    demo.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="seconds allowed per notebook cell (default: ten times the cell's expected time, at least 300)",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)
    _add_gatys_parser(sub)
    _add_train_parser(sub)
    _add_stylize_parser(sub)
    _add_export_parser(sub)
    _add_distill_parser(sub)
    _add_download_coco_parser(sub)
    _add_video_parser(sub)
    _add_webcam_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse `argv`, run the command, turn known errors into one line and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, ImageError, WeightsUnavailableError, FileNotFoundError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. a full disk or a read-only output folder
        where = f" '{err.filename}'" if err.filename else ""
        print(f"error: cannot access{where}: {err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
