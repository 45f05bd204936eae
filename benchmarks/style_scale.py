"""Stroke scale of trained style networks: at which size of the painting do their outputs match its style?

    python benchmarks/style_scale.py                                   # every checkpoints/*.safetensors
    python benchmarks/style_scale.py --models checkpoints/wave.safetensors --photos 2 --test-sizes 512

A feed-forward network paints strokes of a fixed size in *pixels*: the Gram targets it was trained on come from
the painting resized to the training config's ``style_size`` (256 by default, the crop size), and it paints that
texture whatever the photo's size. So at 512 px or more its strokes are a fraction of the painting's own, relative
to the picture (issue 15: "a fine ripple"). This script measures it: for each network, test size T and held-out
photo (centre square, T px; the BSDS500 validation photos in ../shared, else the bundled sample photo), the
network's output is compared with the painting resized to each size S of a ladder, by the network's own style
term (`stlib.perceptual.style_size_curve`: its training objective's layers and weights); the matched size is the
S with the lowest term (mean over the photos). A network that paints the painting as it looks at the
photo's own size has matched size ~ T; the shipped networks match ~ their ``style_size`` at every T.

It prints one Markdown table with the machine in its header: network, trained style size, then the matched size
and the curve's minimum at each test size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from stlib import assets
from stlib.checkpoint import load_model, read_metadata
from stlib.hardware import describe_machine
from stlib.perceptual import style_size_curve
from stlib.stylize import stylize_image
from stlib.train import TrainConfig, square_photo

if __package__ in (None, ""):  # python benchmarks/NAME.py: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import add_model_options, held_out_files, model_files  # noqa: E402

LADDER = (128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_options(parser, photos=4)
    parser.add_argument("--test-sizes", type=int, nargs="+", default=[256, 512, 1024], help="photo sides (px)")
    args = parser.parse_args()
    models = model_files(args)
    files = held_out_files(args, max(args.test_sizes))
    print(f"# {len(files)} photos from {files[0].parent}; painting sizes {', '.join(map(str, LADDER))}; "
          f"{describe_machine()}")  # fmt: skip
    heads = [f"matched at {t} px (term)" for t in args.test_sizes]
    print("| network | trained style size | " + " | ".join(heads) + " |")
    print("|---|---:|" + "---:|" * len(heads))
    for path in models:
        info = read_metadata(path)["info"]
        if "train_config" not in info or "distilled_from" in info:
            continue  # a distilled student carries its teacher's settings: score the teacher
        config = TrainConfig.from_dict(info["train_config"])
        if config.task != "style":
            continue
        model = load_model(path).eval()
        style_file = assets.style_image(Path(config.style).stem)
        cells = []
        for test in args.test_sizes:
            outputs = torch.cat([stylize_image(model, square_photo(f, test)) for f in files])  # (N, 3, T, T)
            curve = style_size_curve(outputs, style_file, config.objective, LADDER)  # mean over the photos
            best = min(range(len(LADDER)), key=curve.__getitem__)
            cells.append(f"{LADDER[best]} ({curve[best]:.3f})")
        print(f"| {path.stem} | {config.style_size or 'file'} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
