"""Command-line interface: ``python -m stlib <command> --help``.

Commands: ``gatys`` (Gatys et al. CVPR 2016, `stlib.gatys`), ``train`` / ``stylize`` /
``upscale`` / ``export`` / ``distill`` (Johnson et al. ECCV 2016: `stlib.train`, `stlib.stylize`, `stlib.upscale`,
`stlib.checkpoint`, `stlib.distill`), ``download-coco`` (`stlib.data`), ``video`` and ``webcam`` (`stlib.video`,
`stlib.desktop`). The options of ``gatys``, ``train`` and ``distill`` are built from their config dataclasses
(`stlib.options`). Only the chosen command's parser is built, so ``--help`` never imports torch. Every command
reports bad input as one clear line on stderr and exits with a non-zero code.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from stlib import __version__, short_openmp_spin

from .options import add_options, config_from, key_value, parse_type, positive_int


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _losses_line(losses: dict[str, float]) -> str:
    """'content 0.41  style 0.023  tv 0.011  total 0.75' from one history entry."""
    return "  ".join(f"{k} {losses[k]:.4g}" for k in ("pixel", "content", "style", "tv", "total") if k in losses)


def _check_writable(path: Path, suffixes: Sequence[str] | None = None, what: str = "output image") -> None:
    from .images import check_writable

    check_writable(path, suffixes, what)


def _add_device(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")


def _resolution(text: str) -> tuple[int, int]:
    from .video import parse_resolution

    try:
        return parse_resolution(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_live_arguments(p: argparse.ArgumentParser) -> None:
    """--model, --strength, --device and --backend: how a trained network runs on frames (video, webcam)."""
    from .backends import BACKENDS

    p.add_argument("--model", required=True, metavar="FILE", help="a model file (.safetensors)")
    p.add_argument(
        "--strength", type=parse_type(float, "fraction"), default=1.0, help="0: original .. 1: stylised (default: 1)"
    )
    _add_device(p)
    p.add_argument(
        "--backend", choices=("auto", *BACKENDS), default="auto",
        help="how to run the network (default: auto, the fastest correct engine here; see stlib.backends)",
    )  # fmt: skip


def _bound_network(args: argparse.Namespace, probe: tuple[int, int]):
    """--model loaded on --device and bound to --backend, timed at the (height, width) the command will use."""
    from .backends import make_backend
    from .checkpoint import load_model
    from .hardware import usable_device

    model = load_model(args.model, device=usable_device(args.device), task="style")
    return make_backend(model, args.backend, probe=probe)


def cmd_gatys(args: argparse.Namespace) -> int:
    """Style transfer by optimisation (Gatys et al.): photo + painting -> stylised image.

    The pixels change until their VGG features match a photo's content and the paintings' Gram matrices (Gatys et
    al., CVPR 2016); the losses are normalised (stlib.perceptual), so the weights work at every size and VGG.

    example: python -m stlib gatys --content photo.jpg --style style_images/starry_night.jpg --size 512 -o out.jpg
    """
    import torch

    from .gatys import GatysConfig, OptimizationDiverged, stylize
    from .hardware import usable_device
    from .images import load_tensor, save_image

    _check_writable(output := Path(args.output))
    if args.gif is not None:
        _check_writable(Path(args.gif), suffixes=(".gif",), what="GIF")
    config = config_from(GatysConfig, args)
    config.validate()  # bad settings fail before the images are loaded
    if args.gif:
        config.snapshot_every = args.gif_every or max(1, sum(config.iterations_per_scale()) // 40)
    device = usable_device(args.device)
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
    save_image(result.image, output)  # an OSError (a full disk ...) is one line in main
    if args.gif is not None:
        result.save_gif(args.gif)
    its, (h, w), times = len(result.history), result.image.shape[-2:], result.losses("time")
    per_iteration = (times[-1] - times[0]) / (its - 1) if its > 1 else times[0]
    print(f"final losses: {_losses_line(result.history[-1])}")
    print(f"time: {result.seconds:.1f} s in all, {its} iterations at {per_iteration:.3f} s/iteration on {device}")
    print(f"wrote {output} ({w}x{h})" + (f" and {args.gif} ({len(result.snapshots)} frames)" if args.gif else ""))
    return 0


def _add_gatys_arguments(p: argparse.ArgumentParser) -> None:
    from .gatys import GatysConfig

    groups = {name: p.add_argument_group(name) for name in ("images", "optimisation", "loss")}
    images = groups["images"]
    images.add_argument("--content", required=True, metavar="PATH", help="the photo whose content is kept")
    images.add_argument(
        "--style", required=True, action="append", metavar="PATH", help="a style painting; repeat to blend several"
    )
    images.add_argument("-o", "--output", required=True, metavar="OUT", help="the result image (.jpg, .png ...)")
    images.add_argument("--gif", metavar="PATH", help="also write an animated GIF of the optimisation (.gif)")
    images.add_argument(
        "--gif-every", type=positive_int, metavar="N", help="one GIF frame every N iterations (default: ~40 frames)"
    )
    _add_device(groups["optimisation"])
    add_options(p, GatysConfig, groups)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a feed-forward style or super-resolution network (Johnson et al.) on a folder of photos.

    --task superres trains the paper's second task: --upscale 4 or 8, --loss pixel or feat (network options not
    given take the task's network). Checkpoints and the training state are written every --checkpoint-every steps
    and when Ctrl-C or SIGTERM stops the run (after the current step); --resume continues exactly. GPUs:
    torchrun --nproc_per_node=N -m stlib train.

    example: python -m stlib train --style style_images/wave.jpg --data data/coco/train2017 -o wave.safetensors
    python -m stlib train --task superres --upscale 4 --loss pixel --data data/coco/train2017 --size 288
    """
    from .hardware import stop_on_signal
    from .train import TrainConfig, train

    data = Path(args.data)
    if not data.is_dir():
        raise CLIError(
            f"Training data folder '{data}' does not exist "
            "(python -m stlib download-coco --dest data/coco fetches COCO, or point --data at any photo folder)."
        )
    if args.out is not None:
        _check_writable(Path(args.out), suffixes=(".safetensors",), what="model file")
    config = config_from(TrainConfig, args, data=str(data))
    config.validate()
    with stop_on_signal() as stop_requested:
        result = train(config, callback=lambda step, losses: stop_requested())
    if result.step < config.steps:
        print(f"stopped at step {result.step} of {config.steps} with a checkpoint; continue with --resume")
    if result.history:
        print(f"step {result.step}: {_losses_line(result.history[-1])}")
    print(f"time: {result.seconds:.0f} s, {result.images_per_s:.2f} images/s ({result.precision} on {result.device})")
    print(f"wrote {result.checkpoint} (training state and logs in {result.run_dir})")
    return 0


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from .train import TrainConfig

    groups: dict[str, argparse._ArgumentGroup] = {}  # in the order of the fields: task, files, optimisation ...
    add_options(p, TrainConfig, groups)
    groups["network"].description = "not given: the task's network (TransformerConfig() or TransformerConfig.superres)"
    groups["loss"].description = "objective settings not given: the task's (Johnson et al.'s, ObjectiveConfig.johnson)"


def cmd_distill(args: argparse.Namespace) -> int:
    """Distil a slim, fast network from a trained one.

    A slim student (width 0.25, 5 residual blocks, sub-pixel output: 7%% of the FLOPs) learns a trained network's
    output: its pixels (L1), its features and Gram matrices in the teacher's own loss network (VGG), and the
    teacher's objective. The defaults are the first stage of the shipped slim network's recipe (checkpoints/README;
    all its stages: tools/slim_job.py). Ctrl-C or SIGTERM stops after the current step with a checkpoint; --resume
    continues.

    example: python -m stlib distill checkpoints/wave.safetensors --data photos/ -o checkpoints/wave_slim.safetensors
    """
    from .checkpoint import load_model
    from .distill import DistillConfig, distill
    from .hardware import stop_on_signal

    _check_writable(out := Path(args.out), suffixes=(".safetensors",), what="model file")
    load_model(args.teacher, task="style")  # a CheckpointError naming the file, before any work
    config = config_from(DistillConfig, args, out=str(out))
    with stop_on_signal() as stop_requested:  # Ctrl-C or SIGTERM: stop after this step, with a checkpoint
        result = distill(config, callback=lambda step, loss: stop_requested())
    if result.steps < config.steps:
        print(f"stopped at step {result.steps} of {config.steps} with a checkpoint; continue with --resume")
    difference = f"mean difference from the teacher {255 * result.l1:.1f} of 255 levels"
    print(f"wrote {result.path}: {result.student}; {result.flops_ratio:.0%} of the teacher's FLOPs; {difference}")
    print(f"{result.steps} steps in {result.seconds:.0f} s; final loss {result.loss:.4g}")
    return 0


def _add_distill_arguments(p: argparse.ArgumentParser) -> None:
    from .distill import DistillConfig

    add_options(p, DistillConfig, {})


def _apply_network(args: argparse.Namespace, task: str, run) -> int:
    """Load `args.model` for `task`, run `run(model)` (-> written paths) and report what was written and how fast."""
    from .checkpoint import load_model
    from .hardware import usable_device

    device = usable_device(args.device)
    model = load_model(args.model, device=device, task=task)
    start = time.perf_counter()
    written = run(model)
    for path in written:
        print(f"wrote {path}")
    what = f"upscaled x{model.config.upscale} " if task == "superres" else ""
    print(f"{len(written)} image(s) {what}in {time.perf_counter() - start:.1f} s on {device}")
    return 0


def _add_image_arguments(p: argparse.ArgumentParser, model_help: str, tile_help: str) -> None:
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders")
    p.add_argument("--model", required=True, metavar="FILE", help=model_help)
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="an image file (one input) or a folder")
    p.add_argument("--tile", type=positive_int, metavar="PX", help=tile_help)
    _add_device(p)


def cmd_stylize(args: argparse.Namespace) -> int:
    """Stylise images with a trained network (one forward pass each).

    One output per input, any size; --tile N runs large images in overlapping N x N tiles (bounded memory).

    example: python -m stlib stylize --model checkpoints/starry_night.safetensors photo.jpg -o out.jpg
    """
    from .stylize import stylize_files

    return _apply_network(
        args, "style", lambda model: stylize_files(model, args.inputs, args.output, args.size, args.tile, args.overlap)
    )


def _add_stylize_arguments(p: argparse.ArgumentParser) -> None:
    _add_image_arguments(p, "a model file (.safetensors) from train or export", "process in tiles of PX x PX")
    p.add_argument("--size", type=positive_int, metavar="PX", help="resize the longest side first (default: keep)")
    p.add_argument("--overlap", type=int, default=32, metavar="PX", help="tile overlap (default: %(default)s)")


def cmd_upscale(args: argparse.Namespace) -> int:
    """Upscale images x4 or x8 with a super-resolution network (Johnson et al. Sec. 4.2).

    One PNG per input; --tile N runs large images in overlapping N x N tiles of the input (bounded memory);
    --match-histogram matches each output's colours to its input (the paper's post-processing).

    example: python -m stlib upscale --model checkpoints/superres/x4_pixel.safetensors photo.jpg -o big.png
    """
    from .upscale import upscale_files

    return _apply_network(
        args, "superres", lambda model: upscale_files(model, args.inputs, args.output, args.tile, args.match_histogram)
    )


def _add_upscale_arguments(p: argparse.ArgumentParser) -> None:
    _add_image_arguments(p, "a super-resolution model file (.safetensors)", "process in tiles of PX x PX input pixels")
    p.add_argument("--match-histogram", action="store_true", help="match the output's histogram to the input's")


def cmd_export(args: argparse.Namespace) -> int:
    """Write a compact float16 copy of a model file, or an ONNX file (--onnx).

    The ONNX export has a symbolic height and width and is checked against the PyTorch network on a photo.

    examples: python -m stlib export run.safetensors -o checkpoints/x.safetensors;
    python -m stlib export checkpoints/x.safetensors --onnx -o x.onnx
    """
    import torch

    from .checkpoint import export_weights

    output = Path(args.output)
    if args.onnx:
        if args.info:
            raise CLIError("--info applies to .safetensors copies; an ONNX file carries no stlib metadata.")
        return _export_onnx(args.model, output)
    _check_writable(output, suffixes=(".safetensors",), what="model file")
    extra = dict(args.info or [])
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    path = export_weights(args.model, output, dtype=dtype, extra_info=extra)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {args.dtype})")
    return 0


def _export_onnx(model_file: str, output: Path) -> int:
    """Export a model file to ONNX (symbolic H x W) and report its parity with PyTorch on the sample photo."""
    from .assets import content_image
    from .backends import TOLERANCE, check_onnx_export
    from .checkpoint import load_model
    from .images import load_tensor

    _check_writable(output, suffixes=(".onnx",), what="ONNX file")
    photo = load_tensor(content_image("tubingen"), size=(344, 256))  # (1, 3, 256, 344): multiples of 4
    path, difference = check_onnx_export(load_model(model_file), output, photo)
    verdict = "ok" if difference <= TOLERANCE["onnx"] else "TOO LARGE"
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); input 'image' (1, 3, H, W), H and W multiples of 4")
    print(f"parity with PyTorch on a 344x256 photo: max abs difference {difference:.2e} ({verdict})")
    if verdict != "ok":
        raise CLIError(f"The ONNX export '{path}' differs from the PyTorch network by {difference:.2e}.")
    return 0


def _add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="FILE", help="a model file (.safetensors)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the new file (.safetensors, or .onnx)")
    p.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16", help="weights (default: %(default)s)")
    p.add_argument("--onnx", action="store_true", help="export to ONNX (dynamic H x W) and check it against PyTorch")
    p.add_argument(
        "--info", action="append", metavar="KEY=VALUE", type=key_value,
        help="add an entry to the copy's metadata, e.g. dataset='BSDS500 train (200 photos)' (repeatable)",
    )  # fmt: skip


def cmd_download_coco(args: argparse.Namespace) -> int:
    """Download COCO 2017 images (train: 19 GB; val: 5,000 photos, 0.8 GB; resumable) for training.

    A partial download resumes (HTTP Range); the zip is verified (size, md5, CRCs) and extracted to DEST/SPLIT.
    """
    from .data import download_coco

    folder = download_coco(
        args.dest, url=args.url, keep=args.keep, progress=not args.quiet, md5=args.md5, split=args.split
    )
    print(f"{sum(1 for _ in folder.iterdir())} images in {folder}")
    return 0


def _add_download_coco_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dest", default="data/coco", help="target folder (default: %(default)s)")
    p.add_argument(
        "--split", choices=("train2017", "val2017"), default="train2017",
        help="train2017: the full 118k photos (19 GB); val2017: 5,000 photos (0.8 GB), a quick start",
    )  # fmt: skip
    p.add_argument("--keep", type=positive_int, metavar="N", help="extract only the first N images (a quick run)")
    p.add_argument("--url", help="another archive URL (e.g. a mirror)")
    p.add_argument("--md5", help="expected md5 of the archive at --url")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_video(args: argparse.Namespace) -> int:
    """Stylise a video file frame by frame with a trained network (audio is dropped).

    Every frame through a trained network (Johnson et al.), written with OpenCV; the output has no audio track.

    example: python -m stlib video in.mp4 -o out.mp4 --model checkpoints/starry_night.safetensors
    """
    from .video import VIDEO_SUFFIXES, probe, stylize_video

    source, output = Path(args.input), Path(args.output)
    _check_writable(output, suffixes=tuple(VIDEO_SUFFIXES), what="video")
    info = probe(source)  # a VideoError naming the file when it cannot be read
    if source.resolve() == output.resolve():
        raise CLIError(f"Refusing to overwrite the input video '{source}' with its stylised version.")
    width, height = args.size or (info.width, info.height)
    model = _bound_network(args, (height, width))
    print(
        f"{source}: {info.width}x{info.height}, {info.fps:g} fps, ~{info.frames} frames -> {width}x{height} on "
        f"{model.device} ({model.name} backend)"
    )
    result = stylize_video(
        model, source, output, size=args.size, fps=args.fps, max_frames=args.max_frames, strength=args.strength,
        progress=not args.quiet, smooth=args.smooth,
    )  # fmt: skip
    print(
        f"wrote {result.path} ({result.frames} frames, {result.width}x{result.height}, {result.fps:g} fps) in "
        f"{result.seconds:.1f} s ({result.frames_per_second:.2f} frames/s); no audio track (OpenCV writes video only)"
    )
    return 0


def _add_video_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="a video file (anything OpenCV/FFmpeg reads: .mp4, .avi, .mov ...)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the stylised video (.mp4, .avi, .mkv ...)")
    p.add_argument("--size", type=_resolution, metavar="WxH", help="fit frames to WxH first, e.g. 640x480")
    p.add_argument("--fps", type=float, help="output frame rate (default: the input's)")
    p.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after N frames")
    p.add_argument(
        "--smooth", type=parse_type(float, "fraction"), default=0.0, metavar="S",
        help="less flicker: blend each frame with the previous one moved along the motion, 0 (off) .. 1 (default: 0)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_live_arguments(p)


def cmd_webcam(args: argparse.Namespace) -> int:
    """Live style transfer of a local camera in a desktop window (needs opencv-python).

    Keys: q quit, m mirror, s snapshot to outputs/, +/- strength. Notebooks and Colab: stlib.webcam.WebcamStylizer.

    example: python -m stlib webcam --model checkpoints/starry_night.safetensors --size 320x240
    """
    from .desktop import run_desktop

    model = _bound_network(args, (args.size[1], args.size[0]))
    print(f"{model.name} backend on {model.device}")
    stats = run_desktop(
        model, camera=args.camera, resolution=args.size, mirror=not args.no_mirror, strength=args.strength
    )
    print(f"{stats['frames']} frames in {stats['seconds']:.1f} s ({stats['fps']:.2f} fps)")
    return 0


def _add_webcam_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--camera", type=int, default=0, help="OpenCV camera index (default: %(default)s)")
    p.add_argument("--size", type=_resolution, default=(640, 480), metavar="WxH", help="default: 640x480")
    p.add_argument("--no-mirror", action="store_true", help="do not flip the picture left-right")
    _add_live_arguments(p)


_COMMANDS = ("gatys", "train", "stylize", "upscale", "export", "distill", "download-coco", "video", "webcam")
"""Every command: NAME runs `cmd_NAME` (whose docstring is its help) with `_add_NAME_arguments`' options."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argparse parser of every command; with `command`, only that one's arguments (the others are names)."""
    parser = argparse.ArgumentParser(prog="python -m stlib", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"stlib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        key = name.replace("-", "_")
        run, add_arguments = globals()[f"cmd_{key}"], globals()[f"_add_{key}_arguments"]
        summary, _, rest = inspect.cleandoc(run.__doc__).partition("\n\n")
        description, _, example = rest.partition("\n\nexample")
        brief = summary[0].lower() + summary[1:].removesuffix(".")  # as argparse's own help lines
        p = sub.add_parser(
            name, help=brief, description=f"{summary} {description}", epilog=example and "example" + example
        )
        if command in (None, name):
            add_arguments(p)
        p.set_defaults(func=run)
    return parser


_ONE_SENTENCE_ERRORS = {"vgg": "WeightsUnavailableError", "backends": "BackendError", "video": "CameraError"}
_ONE_SENTENCE_ERRORS |= {"data": "DownloadError", "train": "TrainingDiverged"}
"""stlib's errors that are not ValueErrors but also say in one sentence what went wrong and what to do."""


def _is_user_error(err: BaseException) -> bool:
    """Errors reported as one line: bad input (ValueError, missing files ...) and stlib's one-sentence errors."""
    if isinstance(err, (CLIError, FileNotFoundError, KeyError, ValueError)):
        return True
    modules = {name: sys.modules.get(f"{__package__}.{name}") for name in _ONE_SENTENCE_ERRORS}  # those imported
    return any(m is not None and isinstance(err, getattr(m, _ONE_SENTENCE_ERRORS[n])) for n, m in modules.items())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse `argv`, run the command, turn known errors into one line and exit code 2."""
    short_openmp_spin()  # before anything loads torch (a core kept busy after every network call otherwise)
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in _COMMANDS else "").parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if _is_user_error(err):
            message = err.args[0] if isinstance(err, KeyError) and err.args else err
            print(f"error: {message}", file=sys.stderr)
            return 2
        if isinstance(err, OSError):  # e.g. a full disk or a read-only output folder
            where = f" '{err.filename}'" if err.filename else ""
            print(f"error: cannot access{where}: {err.strerror or err}", file=sys.stderr)
            return 2
        raise
