"""What the model benchmarks share: their command-line options, the model files, the held-out photos and the
objective a network is scored with (its own training objective, from its metadata).

The scripts run as ``python benchmarks/NAME.py``; each puts the repository root on ``sys.path`` to import this.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from stlib import assets, images
from stlib.checkpoint import read_metadata
from stlib.data import ImageFolderDataset
from stlib.perceptual import PerceptualLoss
from stlib.train import TrainConfig

SHARED_VAL = assets.repo_root().parent / "shared" / "data" / "bsds500" / "val"


def add_model_options(parser: argparse.ArgumentParser, photos: int) -> None:
    """--models, --val, --photos (default `photos`) and --threads."""
    parser.add_argument("--models", type=Path, nargs="*", help="model files (default: checkpoints/*.safetensors)")
    parser.add_argument("--val", type=Path, default=SHARED_VAL, help="held-out photos (default: BSDS500 val)")
    parser.add_argument("--photos", type=int, default=photos, help=f"how many held-out photos (default: {photos})")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")


def model_files(args: argparse.Namespace) -> list[Path]:
    """Set the thread count; the model files asked for, or every checkpoints/*.safetensors (exit if none)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.models or sorted((assets.repo_root() / "checkpoints").glob("*.safetensors"))
    if not models:
        raise SystemExit("No model files: train one (python -m stlib train ...) or pass --models.")
    return models


def held_out_files(args: argparse.Namespace, size: int, fallback: bool = True) -> list[Path]:
    """The first --photos images of --val (at least `size` px), or the bundled sample photo (`fallback`) or exit."""
    if args.val.is_dir():
        return ImageFolderDataset(args.val, size=size).files[: args.photos]
    if not fallback:
        raise SystemExit(f"Held-out photo folder '{args.val}' does not exist; pass --val.")
    print(f"({args.val} not found: the bundled sample photo only)")
    return [assets.content_image("tubingen")]


def own_objective(model_file: Path, device: str = "cpu") -> tuple[TrainConfig, torch.Tensor, PerceptualLoss]:
    """A network's training settings, its painting at its training size and its training objective in fp32."""
    config = TrainConfig.from_dict(read_metadata(model_file)["info"]["train_config"])
    style = images.load_tensor(assets.style_image(Path(config.style).stem), size=config.style_size, device=device)
    return config, style, config.perceptual_loss(style, precision="fp32")  # the score: fp32 on any CPU
