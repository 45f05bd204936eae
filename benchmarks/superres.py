"""Super-resolution networks under the field's protocol (`stlib.superres.evaluate`) and their speed.

    python benchmarks/superres.py                                   # every checkpoints/superres/*.safetensors
    python benchmarks/superres.py --models run.safetensors --sets Set5 --no-speed
    python benchmarks/superres.py --speed-only                      # on a quiet machine

Quality, for x4 and x8 on Set5 and BSD100 (the 100 BSDS500 validation photos; both from ../shared): PSNR and SSIM
on the BT.601 luminance with the scale factor cropped from each border, averaged per image, and the feature error
(relu2_2 of the loss network, squared error relative to the ground truth's features, the quantity l_feat
minimises; lower is closer in the loss network's eyes). Rows: bicubic, each network, and each network with the
paper's histogram matching (+hist). A network is scored on the degradation it was trained on (its metadata's
``blur_sigma``; the protocol's plain bicubic is 0). The paper's numbers (Johnson et al. 2016, Sec. 4.2) are
quoted beside ours; they come from their own protocol and are shown for orientation, not as equals.

Speed: milliseconds per 320x240 input (a 1280x960 output at x4) for each backend that runs here (eager,
channels_last, onnx, bf16 on CPUs with native bf16); the median of `--repeats` runs after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from stlib import assets, superres
from stlib.backends import BackendError, make_backend, unavailable_reason
from stlib.checkpoint import load_model, read_metadata
from stlib.hardware import describe_machine
from stlib.images import to_pil, to_tensor
from stlib.perceptual import FeatureError
from stlib.upscale import upscale_image

SHARED = assets.repo_root().parent / "shared" / "data"
SETS = {"Set5": SHARED / "sr" / "Set5", "BSD100": SHARED / "bsds500" / "val"}

# Johnson et al., ECCV 2016, Sec. 4.2, x4 on Set5 (PSNR, SSIM), as summarised in github.com/wqi/papers
# (perceptual_loss.md); SRCNN is Dong et al.'s figure quoted there. Their protocol blurs (sigma 1) before the
# bicubic downsampling; the paper's other sets and x8 could not be read where this table was made.
PAPER: dict[tuple[str, int, str], tuple[float, float]] = {
    ("Set5", 4, "bicubic"): (28.43, 0.8114),
    ("Set5", 4, "pixel"): (28.40, 0.8205),
    ("Set5", 4, "feat"): (27.09, 0.7680),
}
SRCNN_SET5_X4 = (30.48, 0.8628)


def model_upscaler(model, histogram: bool):
    """`superres.evaluate`'s callable for a network: PIL low-resolution image -> PIL upscaled image."""

    def run(low):
        return to_pil(upscale_image(model, to_tensor(low), histogram=histogram))

    return run


def quality(models: list[Path], sets: list[str], weights: str) -> None:
    """Print the quality table."""
    extra = FeatureError("relu2_2", vgg_weights=weights)
    print(f"# Quality ({describe_machine()}; feature error with {extra.source} VGG16 weights)")
    srcnn = f"{SRCNN_SET5_X4[0]:.2f} dB / {SRCNN_SET5_X4[1]:.4f}"
    print(f"(SRCNN, x4 Set5: {srcnn}; Johnson et al.'s own figures are in the last column)")
    print("| scale | set | method | trained on | PSNR (dB) | SSIM | feature error | paper PSNR / SSIM |")
    print("|---:|---|---|---|---:|---:|---:|---|")
    loaded = [(path, load_model(path, task="superres"), read_metadata(path)["info"]) for path in models]
    for scale in (4, 8):
        nets = [(p, m, i) for p, m, i in loaded if m.config.upscale == scale]
        if not nets and models:
            continue
        for name in sets:
            folder = SETS[name]
            if not folder.is_dir():
                print(f"| x{scale} | {name} | (skipped: {folder} not found) | | | | | |")
                continue
            rows = [("bicubic", "-", 0.0, lambda low, s=scale: superres.bicubic_upscale(low, s))]
            for path, model, info in nets:
                config = info.get("train_config", {})
                sigma = float(config.get("blur_sigma", 0.0))
                what = str(info.get("dataset", Path(str(config.get("data", "?"))).name)).split(",")[0]
                what += f", blur {sigma:g}" if sigma else ""
                rows.append((path.stem, what, sigma, model_upscaler(model, False)))
                rows.append((f"{path.stem} +hist", what, sigma, model_upscaler(model, True)))
            for method, trained, sigma, run in rows:
                score = superres.evaluate(run, folder, scale, blur_sigma=sigma, extra=extra)
                loss_name = method.split("_")[-1].split(" ")[0] if method != "bicubic" else "bicubic"
                paper = PAPER.get((name, scale, loss_name))
                quoted = f"{paper[0]:.2f} / {paper[1]:.4f}" if paper else "-"
                print(
                    f"| x{scale} | {name} | {method} | {trained} | {score.mean_psnr:.2f} | {score.mean_ssim:.4f} | "
                    f"{score.mean_extra:.4f} | {quoted} |",
                    flush=True,
                )
    extra.close()


def speed(models: list[Path], repeats: int) -> None:
    """Print the speed table: ms per 320x240 input for every backend that runs here."""
    print(f"\n# Speed: one 320x240 input ({describe_machine()})")
    print("| network | output | backend | ms (median) |")
    print("|---|---|---|---:|")
    x = torch.rand(1, 3, 240, 320)
    for path in models:
        model = load_model(path, task="superres")
        scale = model.config.upscale
        for name in ("eager", "channels_last", "onnx", "bf16"):
            reason = unavailable_reason(name, torch.device("cpu"))
            if name == "bf16" and reason is None and not _fast_bf16():
                reason = "no native bf16 on this CPU"
            if reason is not None:
                print(f"| {path.stem} | {320 * scale}x{240 * scale} | {name} | ({reason}) |")
                continue
            try:
                backend = make_backend(model, name, probe=(64, 64))
            except BackendError as err:
                print(f"| {path.stem} | {320 * scale}x{240 * scale} | {name} | ({err}) |")
                continue
            with torch.inference_mode():
                backend(x)  # warm-up
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    backend(x)
                    times.append(1000 * (time.perf_counter() - start))
            print(
                f"| {path.stem} | {320 * scale}x{240 * scale} | {name} | {statistics.median(times):.0f} |", flush=True
            )


def _fast_bf16() -> bool:
    from stlib.hardware import cpu_has_fast_bf16

    return cpu_has_fast_bf16()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, nargs="*", help="model files (default: checkpoints/superres/*)")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS), help="image sets")
    parser.add_argument("--weights", default="auto", help="VGG16 weights of the feature error (default: auto)")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed table")
    parser.add_argument("--speed-only", action="store_true", help="only the speed table")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per backend (default: 5)")
    args = parser.parse_args()
    folder = assets.repo_root() / "checkpoints" / "superres"
    shipped = sorted(folder.glob("*.safetensors"), key=lambda p: (p.stem.split("_")[0], "feat" in p.stem))
    models = args.models if args.models is not None else shipped
    if not models:
        print("(no super-resolution networks in checkpoints/superres: bicubic only)")
    if not args.speed_only:
        quality(models, args.sets, args.weights)
    if not args.no_speed and models:
        speed(models, args.repeats)


if __name__ == "__main__":
    main()
