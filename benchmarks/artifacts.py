"""Artefacts of trained style networks: grid, border and flicker statistics on held-out photos (`stlib.artifacts`).

    python benchmarks/artifacts.py                                  # every checkpoints/*.safetensors, 8 photos
    python benchmarks/artifacts.py --models checkpoints/wave.safetensors --photos 2 --size 256

For each network and each held-out photo (centre square, `--size` px; default the BSDS500 validation photos in
../shared, else the bundled sample photo) it measures, on the network's output:

- grid p2 / p4: `grid_strength` at periods 2 and 4 px (grey levels; the photos' own value is the first row);
- border: the largest `border_bands` value over the four sides *minus* the same side's value on the input photo
  (grey levels; what the network adds along the edges);
- noise flicker: `noise_flicker`, output change / input change under camera-like noise (std 2 grey levels);
- warp error: `warp_error` for a move of (3, 2) px, output's deviation from the moved output / the frame change.

It prints one Markdown table (means over the photos) with the machine in its header, plus the painting's grid
statistics at the same size for reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from stlib import artifacts, assets
from stlib.hardware import describe_machine
from stlib.stylize import load_model, read_metadata, stylize_image
from stlib.train import TrainConfig, square_photo

if __package__ in (None, ""):  # python benchmarks/NAME.py: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import add_model_options, held_out_files, model_files  # noqa: E402


def measure(run, photo: torch.Tensor) -> dict[str, float]:
    """The statistics of `run`'s output for one photo (1, 3, S, S)."""
    out = run(photo)
    before, after = artifacts.border_bands(photo), artifacts.border_bands(out)
    return {
        "grid p2": artifacts.grid_strength(out, 2),
        "grid p4": artifacts.grid_strength(out, 4),
        "border": max(after[side] - before[side] for side in artifacts.SIDES),
        "noise flicker": artifacts.noise_flicker(run, photo),
        "warp error": artifacts.warp_error(run, photo),
    }


def painting_of(model_file: Path) -> str:
    """The name of the painting a network was trained on (from its metadata), e.g. ``"wave"``."""
    return Path(TrainConfig.from_dict(read_metadata(model_file)["info"]["train_config"]).style).stem


def painting_grid(style: str, size: int, period: int = 4) -> float:
    """The painting's own grid statistic at `period` px, its centre square at `size` px (a network's reference)."""
    return artifacts.grid_strength(square_photo(assets.style_image(style), size), period)


def network_rows(model_file: Path, photos: list[torch.Tensor]) -> list[dict[str, float]]:
    """The statistics (`measure`) of one network's output for each photo."""
    model = load_model(model_file).eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        return stylize_image(model, x)

    return [measure(run, p) for p in photos]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_options(parser, photos=8)
    parser.add_argument("--size", type=int, default=512, help="photo side in pixels (default: 512)")
    args = parser.parse_args()
    models = model_files(args)
    files = held_out_files(args, args.size)
    photos = [square_photo(f, args.size) for f in files]
    print(f"# {len(photos)} photos from {files[0].parent} at {args.size}x{args.size}; {describe_machine()}")
    keys = ("grid p2", "grid p4", "border", "noise flicker", "warp error")
    print("| network | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    photo_rows = [{"grid p2": artifacts.grid_strength(p, 2), "grid p4": artifacts.grid_strength(p, 4)} for p in photos]
    print("| the photos themselves | " + " | ".join(
        f"{statistics.mean(r[k] for r in photo_rows):.2f}" if k in photo_rows[0] else "-" for k in keys
    ) + " |", flush=True)  # fmt: skip
    styles = []
    for path in models:
        styles.append(painting_of(path))
        rows = network_rows(path, photos)
        print(f"| {path.stem} | " + " | ".join(f"{statistics.mean(r[k] for r in rows):.2f}" for k in keys) + " |",
              flush=True)  # fmt: skip
    for style in dict.fromkeys(styles):
        print(f"| painting: {style} | {painting_grid(style, args.size, 2):.2f} | "
              f"{painting_grid(style, args.size, 4):.2f} | - | - | - |")  # fmt: skip


if __name__ == "__main__":
    main()
