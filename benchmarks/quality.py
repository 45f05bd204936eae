"""Quality of trained style networks: their perceptual objective against Gatys et al. on held-out photos.

    python benchmarks/quality.py                               # every checkpoints/*.safetensors
    python benchmarks/quality.py --models checkpoints/wave.safetensors --photos 2 --iterations 20
    python benchmarks/quality.py --grid checkpoints/pretrained_grid.jpg

Johnson et al. (ECCV 2016, Sec. 4.1, Fig. 5) compare a trained network's output with the per-image
optimisation of Gatys et al. on the *same* objective: the network's loss is about that of 50-100 L-BFGS
iterations. For each network this script takes its own training settings from the model file's metadata
(loss network and weights, layers, loss weights, style image and its size), and for each held-out photo
(centre square, `--size` px; default the BSDS500 validation photos in ../shared) computes

- the network's objective: `PerceptualLoss(photo, network(photo))`, and the forward time;
- the objective of `stlib.gatys.stylize` after `--iterations` L-BFGS iterations from noise, and its time.

A distilled slim network (`python -m stlib distill`; its metadata names its teacher and carries the teacher's
training settings) is scored with its teacher's objective and compared with the teacher instead (no Gatys run;
pass the teacher too). It prints a Markdown table (per network: mean objectives, the share of photos where
the network is at or below Gatys, the speed-up), a second one for slim networks against their teachers, and,
with ``--grid``, writes a picture grid: one row per photo, the photo then one column per network.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from stlib import gatys, plots
from stlib.checkpoint import load_model, read_metadata
from stlib.hardware import default_device
from stlib.perceptual import PerceptualLoss
from stlib.stylize import stylize_image
from stlib.train import TrainConfig, square_photo
from stlib.transformer import TransformerNet

if __package__ in (None, ""):  # python benchmarks/NAME.py: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import add_model_options, held_out_files, model_files, own_objective  # noqa: E402


def network_objective(
    model: TransformerNet, objective: PerceptualLoss, photo: torch.Tensor
) -> tuple[float, float, torch.Tensor]:
    """A network's objective on one photo (1, 3, S, S), its forward time in seconds (after a warm-up), its output."""
    stylize_image(model, photo)  # warm-up
    start = time.perf_counter()
    fast = stylize_image(model, photo)
    if photo.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        return float(objective(photo, fast)["total"]), seconds, fast


def gatys_objective(
    photo: torch.Tensor, style: torch.Tensor, config: TrainConfig, objective: PerceptualLoss, iterations: int
) -> tuple[float, float, list[float]]:
    """The objective after `iterations` L-BFGS iterations of Gatys from noise, its seconds, its value per iteration."""
    size = max(photo.shape[-2:])
    style_scale = (config.style_size or size) / size  # the style image at its training size
    settings = gatys.GatysConfig(
        objective=config.objective, size=size, style_scale=style_scale, iterations=iterations, init="noise",
        progress=False,
    )  # fmt: skip
    slow = gatys.stylize(photo, style, settings)
    with torch.no_grad():
        return float(objective(photo, slow.image)["total"]), slow.seconds, slow.losses("total")


def evaluate(model_file: Path, photos: list[torch.Tensor], iterations: int, device: str) -> dict:
    """Objectives and times of one network and of Gatys on `photos`; returns the rows and the outputs."""
    info = read_metadata(model_file)["info"]
    config, style, objective = own_objective(model_file, device)
    model = load_model(model_file, device=device)
    rows, outputs = [], []
    for photo in photos:
        photo = photo.to(device)
        net_loss, fast_s, fast = network_objective(model, objective, photo)
        row = {"net": net_loss, "net_s": fast_s}
        if iterations > 0:
            value, seconds, curve = gatys_objective(photo, style, config, objective, iterations)
            row.update(gatys=value, gatys_s=seconds)
            # the first L-BFGS iteration whose objective is at or below the network's (None: not within the run)
            row["match"] = next((i for i, t in enumerate(curve, 1) if t <= net_loss), None)
        rows.append(row)
        outputs.append(fast.cpu())
        gatys_part = (
            f", Gatys {row['gatys']:.3f} ({row['gatys_s']:.0f} s), reaches the network at iteration {row['match']}"
            if "gatys" in row
            else ""
        )
        print(f"  {model_file.stem}: network {net_loss:.3f} ({fast_s:.2f} s){gatys_part}", flush=True)
    return {
        "rows": rows,
        "outputs": outputs,
        "steps": info.get("step"),
        "data": Path(config.data or "?").name,
        "teacher": info.get("distilled_from"),
    }


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, photos=4)
    parser.add_argument("--size", type=int, default=512, help="square photo size (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=100, help="Gatys L-BFGS iterations (default: 100)")
    parser.add_argument("--grid", type=Path, help="also write a picture grid (.jpg)")
    args = parser.parse_args()
    models = model_files(args)
    files = held_out_files(args, args.size, fallback=False)
    device = default_device()
    photos = [square_photo(f, args.size) for f in files]
    print(f"{len(photos)} photos from {args.val} at {args.size}x{args.size}, Gatys: {args.iterations} L-BFGS "
          f"iterations from noise, on {device} ({torch.get_num_threads()} threads)", flush=True)  # fmt: skip

    # Distilled students are scored against their teachers (same objective), so they need no Gatys runs.
    students = {m.stem for m in models if read_metadata(m)["info"].get("kind") == "distilled"}
    results = {m.stem: evaluate(m, photos, 0 if m.stem in students else args.iterations, device) for m in models}
    print()
    gatys_name = f"Gatys-{args.iterations}" if args.iterations else "Gatys"
    print(f"| network | trained on, steps | objective: network | objective: {gatys_name} | "
          "network <= Gatys | Gatys iterations to match (median) | network ms | Gatys s | speed-up |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        if name in students:
            continue
        rows = r["rows"]
        net, net_s = statistics.mean(x["net"] for x in rows), statistics.median(x["net_s"] for x in rows)
        if "gatys" not in rows[0]:  # --iterations 0: the networks only
            print(f"| {name} | {r['data']}, {r['steps']} | {net:.3f} | - | - | - | {net_s * 1e3:.0f} | - | - |")
            continue
        ref, ref_s = statistics.mean(x["gatys"] for x in rows), statistics.median(x["gatys_s"] for x in rows)
        wins = sum(x["net"] <= x["gatys"] for x in rows)
        # photos where Gatys never reached the network count as "more than the run's iterations"
        matches = [x["match"] if x["match"] is not None else args.iterations + 1 for x in rows]
        match = statistics.median_low(matches)
        match_text = f"> {args.iterations}" if match > args.iterations else str(match)
        print(f"| {name} | {r['data']}, {r['steps']} | {net:.3f} | {ref:.3f} | {wins}/{len(rows)} | {match_text} | "
              f"{net_s * 1e3:.0f} | {ref_s:.0f} | {ref_s / net_s:.0f}x |")  # fmt: skip
    if students:
        print()
        print("| slim network | teacher | objective: slim | objective: teacher | slim / teacher (target <= 1.10) | "
              "slim ms | teacher ms |")  # fmt: skip
        print("|---|---|---:|---:|---:|---:|---:|")
        for name in sorted(students):
            r = results[name]
            teacher = results.get(Path(r["teacher"] or "").stem)
            slim = statistics.mean(x["net"] for x in r["rows"])
            slim_s = statistics.median(x["net_s"] for x in r["rows"])
            if teacher is None:
                missing = f"{r['teacher']} (not evaluated: pass it with --models)"
                print(f"| {name} | {missing} | {slim:.3f} | | | {slim_s * 1e3:.0f} | |")
                continue
            ref = statistics.mean(x["net"] for x in teacher["rows"])
            ref_s = statistics.median(x["net_s"] for x in teacher["rows"])
            times = f"{slim_s * 1e3:.0f} | {ref_s * 1e3:.0f}"
            print(f"| {name} | {r['teacher']} | {slim:.3f} | {ref:.3f} | {slim / ref:.3f} | {times} |")
    if args.grid is not None:
        rows = [[photo, *(r["outputs"][i] for r in results.values())] for i, photo in enumerate(photos)]
        titles = [title for _ in photos for title in ["photo", *results]]
        fig = plots.image_grid([img for row in rows for img in row], titles=titles, ncols=len(results) + 1)
        print(f"wrote {plots.save_figure(fig, args.grid)}")


if __name__ == "__main__":
    main()
