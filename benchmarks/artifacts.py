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
from pathlib import Path

import torch

from stlib import artifacts, assets
from stlib.data import ImageFolderDataset
from stlib.hardware import describe_machine
from stlib.stylize import load_model, read_metadata, stylize_image
from stlib.train import TrainConfig, square_photo

SHARED_VAL = assets.repo_root().parent / "shared" / "data" / "bsds500" / "val"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, nargs="*", help="model files (default: checkpoints/*.safetensors)")
    parser.add_argument("--val", type=Path, default=SHARED_VAL, help="held-out photos (default: BSDS500 val)")
    parser.add_argument("--photos", type=int, default=8, help="how many held-out photos (default: 8)")
    parser.add_argument("--size", type=int, default=512, help="photo side in pixels (default: 512)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.models or sorted((assets.repo_root() / "checkpoints").glob("*.safetensors"))
    if not models:
        raise SystemExit("No model files: train one (python -m stlib train ...) or pass --models.")
    if args.val.is_dir():
        files = ImageFolderDataset(args.val, size=args.size).files[: args.photos]
    else:
        print(f"({args.val} not found: the bundled sample photo only)")
        files = [assets.content_image("tubingen")]
    photos = [square_photo(f, args.size) for f in files]
    print(f"# {len(photos)} photos from {files[0].parent} at {args.size}x{args.size}; {describe_machine()}")
    keys = ("grid p2", "grid p4", "border", "noise flicker", "warp error")
    print("| network | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    photo_rows = [{"grid p2": artifacts.grid_strength(p, 2), "grid p4": artifacts.grid_strength(p, 4)} for p in photos]
    print("| the photos themselves | " + " | ".join(
        f"{statistics.mean(r[k] for r in photo_rows):.2f}" if k in photo_rows[0] else "-" for k in keys
    ) + " |", flush=True)  # fmt: skip
    paintings = {}
    for path in models:
        model = load_model(path).eval()
        style = Path(TrainConfig.from_dict(read_metadata(path)["info"]["train_config"]).style).stem
        paintings.setdefault(style, square_photo(assets.style_image(style), args.size))

        def run(x: torch.Tensor, model=model) -> torch.Tensor:
            return stylize_image(model, x)

        rows = [measure(run, p) for p in photos]
        print(f"| {path.stem} | " + " | ".join(f"{statistics.mean(r[k] for r in rows):.2f}" for k in keys) + " |",
              flush=True)  # fmt: skip
    for style, painting in paintings.items():
        print(f"| painting: {style} | {artifacts.grid_strength(painting, 2):.2f} | "
              f"{artifacts.grid_strength(painting, 4):.2f} | - | - | - |")  # fmt: skip


if __name__ == "__main__":
    main()
