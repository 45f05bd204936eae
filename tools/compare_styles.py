"""Score candidate style networks against the shipped ones, and ship those that are better on every count.

    python tools/compare_styles.py runs/styles-gpu/export            # the table (make styles-compare CANDIDATES=...)
    python tools/compare_styles.py runs/styles-gpu/export --ship     # ... and copy the winners into checkpoints/
    python tools/compare_styles.py DIR --gatys-iterations 100 --json compare.json

For every ``STYLE.safetensors`` in the candidates folder whose name is a shipped network in ``checkpoints/`` (e.g.
what ``tools/styles_job.py run`` exported to ``OUT/export``), on the same held-out photos (default: 8 BSDS500
validation photos from ../shared, centre squares at ``--size`` px; the bundled sample photo when absent):

- **objective**: both networks scored with the *shipped* file's training objective (Johnson et al., ECCV 2016,
  Eq. 3-5 as `stlib.perceptual.PerceptualLoss`: its loss network, layers and weights, its painting at its style
  size, fp32; `benchmarks.quality.network_objective`), the mean over the photos; with ``--gatys-iterations N`` also
  each network's ratio to N L-BFGS iterations of Gatys et al. from noise on the same objective (cached in a JSON
  file, so that a later comparison does not pay the L-BFGS again);
- **artefacts**: `benchmarks.artifacts.measure` on the same photos at the same size: period-4 grid (beside the
  painting's own), border band, noise flicker and warp error (Odena et al. 2016; Gupta et al. 2017);
- **clip flicker**: Lai et al.'s warping error (`stlib.temporal.warping_error`) of the per-frame output over the
  first ``--frames`` frames of each real clip in ../shared/video (`benchmarks.temporal`).

A candidate ships only when it is lower than the shipped file on the objective, on every artefact statistic and on
the clip flicker (a statistic that could not be measured keeps the shipped file). One Markdown table (the machine in
its header; each statistic shipped → candidate, the verdict with the first reason to keep), the same as JSON with
``--json``, pictures to judge by eye with ``--look DIR``; ``--ship`` copies each winner atomically over
``checkpoints/STYLE.safetensors``, checks that it loads and prints what a maintainer must still do.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # stlib and benchmarks from this repository

from benchmarks import artifacts as artifact_stats  # noqa: E402
from benchmarks import quality, temporal  # noqa: E402
from benchmarks.common import SHARED_VAL, held_out_files, own_objective  # noqa: E402
from stlib import assets, images  # noqa: E402
from stlib.checkpoint import CheckpointError, load_model, read_metadata  # noqa: E402
from stlib.hardware import default_device, describe_machine  # noqa: E402
from stlib.images import atomic_write  # noqa: E402
from stlib.stylize import stylize_image  # noqa: E402
from stlib.train import TrainConfig, square_photo  # noqa: E402

ARTEFACTS = ("grid p4", "border", "noise flicker", "warp error")  # benchmarks/artifacts.py's, grid p2 aside
DECIDING = ("objective", *ARTEFACTS, "clip flicker")  # in this order: the first one not lower is the reason
CACHE = Path.home() / ".cache" / "stlib" / "gatys_objectives.json"


@dataclasses.dataclass
class Pair:
    """A candidate file and the shipped file it may replace."""

    style: str  # the file name's stem, e.g. "the_scream"
    shipped: Path
    candidate: Path
    sha256: str  # the candidate's, when it was scored: --ship copies only that content


def find_pairs(candidates: Path, checkpoints: Path) -> tuple[list[Pair], list[str]]:
    """The candidates that have a shipped counterpart and are style networks, and one sentence per skipped file."""
    pairs, skipped = [], []
    for path in sorted(candidates.glob("*.safetensors")):
        shipped = checkpoints / path.name
        if not shipped.is_file():
            skipped.append(f"'{path}' has no shipped counterpart ({shipped} does not exist): skipped.")
            continue
        try:
            load_model(path, task="style")
            painting, theirs = artifact_stats.painting_of(path), artifact_stats.painting_of(shipped)
        except CheckpointError as err:
            skipped.append(f"Skipped: {str(err).rstrip('.')}.")
            continue
        except (KeyError, TypeError, ValueError):
            skipped.append(f"'{path}' carries no usable training settings (train_config) in its metadata: skipped.")
            continue
        if painting != theirs:
            skipped.append(f"'{path}' was trained on the painting {painting}, {shipped} on {theirs}: skipped.")
            continue
        pairs.append(Pair(path.stem, shipped, path, assets.file_sha256(path)))
    return pairs, skipped


def settings_note(pair: Pair) -> str | None:
    """One line when the candidate trained with other objective settings than the shipped file, else None."""

    def settings(path: Path) -> dict:
        info = read_metadata(path)["info"]
        config = TrainConfig.from_dict(info["train_config"])
        flat = dataclasses.asdict(config.objective)
        return {**flat, "style_size": config.style_size, "painting sha256": str(info.get("style_sha256"))[:12]}

    old, new = settings(pair.shipped), settings(pair.candidate)
    changes = [
        f"{key} {old.get(key)!r} → {new.get(key)!r}" for key in sorted(old | new) if old.get(key) != new.get(key)
    ]
    if not changes:
        return None
    listed = "; ".join(changes)
    return (
        f"{pair.style}: the candidate trained with other objective settings ({listed}); both are scored with the "
        "shipped file's."
    )


# ----------------------------------------------------------------------------------------------------------
# The statistics
# ----------------------------------------------------------------------------------------------------------


def load_cache(path: Path) -> dict:
    """The Gatys objectives computed before (empty when the file is absent or unreadable, with a note)."""
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        print(f"(the Gatys cache '{path}' cannot be read: it will be written again)")
        return {}


def gatys_key(config: TrainConfig, painting_sha: str, photo_sha: str, size: int, iterations: int) -> str:
    """The cache key of a Gatys run: a digest of the objective settings, painting, photo, size and iterations."""
    settings = {"objective": dataclasses.asdict(config.objective), "style_size": config.style_size}
    text = json.dumps([settings, painting_sha, photo_sha, size, iterations], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def objectives(pair: Pair, photos: list[tuple[str, torch.Tensor]], args: argparse.Namespace, cache: dict) -> dict:
    """Mean objective of both networks under the shipped file's objective; with Gatys, each one's ratio to it."""
    device = default_device()
    config, style, objective = own_objective(pair.shipped, device)
    result = {}
    for role, path in (("shipped", pair.shipped), ("candidate", pair.candidate)):
        model = load_model(path, device=device)
        losses = [quality.network_objective(model, objective, photo.to(device))[0] for _, photo in photos]
        result[role] = statistics.mean(losses)
    if args.gatys_iterations > 0:
        painting_sha = assets.file_sha256(assets.style_image(Path(config.style).stem))
        values = []
        for photo_sha, photo in photos:
            key = gatys_key(config, painting_sha, photo_sha, args.size, args.gatys_iterations)
            if key not in cache:
                value, seconds, _ = quality.gatys_objective(photo.to(device), style, config, objective,
                                                            args.gatys_iterations)  # fmt: skip
                cache[key] = {"objective": value, "seconds": seconds, "style": pair.style, "size": args.size}
            values.append(cache[key]["objective"])
        result["gatys"] = statistics.mean(values)
    objective.close()
    return result


def clip_flicker(path: Path, clips: list[dict]) -> float | None:
    """Mean warping error (Lai et al.) of the network's per-frame output over the clips (None: no clips)."""
    if not clips:
        return None
    model = load_model(path, task="style")
    errors = []
    for clip in clips:
        outputs, _ = temporal.per_frame(model, clip["frames"], None)
        errors.append(temporal.warping_error(outputs, motions=clip["motions"]))
    return statistics.mean(errors)


def score(
    pair: Pair, photos: list[tuple[str, torch.Tensor]], clips: list[dict], args: argparse.Namespace, cache: dict
) -> dict:
    """Every statistic of one pair (shipped, candidate) and the verdict: a row of the table."""
    scored = objectives(pair, photos, args, cache)
    stats = {"objective": (scored["shipped"], scored["candidate"])}
    if "gatys" in scored:
        stats[f"ratio to Gatys-{args.gatys_iterations}"] = (
            scored["shipped"] / scored["gatys"],
            scored["candidate"] / scored["gatys"],
        )
    tensors = [photo for _, photo in photos]
    old, new = artifact_stats.network_rows(pair.shipped, tensors), artifact_stats.network_rows(pair.candidate, tensors)
    for key in (*ARTEFACTS, "grid p2"):
        stats[key] = (statistics.mean(r[key] for r in old), statistics.mean(r[key] for r in new))
    stats["clip flicker"] = (clip_flicker(pair.shipped, clips), clip_flicker(pair.candidate, clips))
    verdict, reason = decide(stats)
    painting = artifact_stats.painting_grid(artifact_stats.painting_of(pair.shipped), args.size, 4)
    return {
        "style": pair.style, "shipped": str(pair.shipped), "candidate": str(pair.candidate),
        "candidate_sha256": pair.sha256, "painting grid p4": painting, "stats": stats, "verdict": verdict,
        "reason": reason, "note": settings_note(pair),
    }  # fmt: skip


def save_looks(pair: Pair, photos: list[tuple[str, torch.Tensor]], folder: Path, count: int = 2) -> list[Path]:
    """PNGs to judge by eye: photo | shipped | candidate at 100 %, under it their centre thirds at 3x (nearest)."""
    models = [load_model(pair.shipped), load_model(pair.candidate)]
    paths = []
    for index, (_, photo) in enumerate(photos[:count]):
        row = [photo, *(stylize_image(model, photo) for model in models)]  # each (1, 3, S, S)
        side, s = photo.shape[-1], photo.shape[-1] // 3
        pad = (0, side - 3 * s, 0, side - 3 * s)  # exactly 3x (every pixel a 3x3 block), black where S % 3 > 0
        zoom = [F.pad(F.interpolate(x[..., s : 2 * s, s : 2 * s], scale_factor=3, mode="nearest"), pad) for x in row]
        sheet = torch.cat([torch.cat(row, dim=-1), torch.cat(zoom, dim=-1)], dim=-2).clamp(0, 1)
        paths.append(images.save_image(sheet, folder / f"{pair.style}_photo{index}.png"))
    return paths


def decide(stats: dict[str, tuple[float | None, float | None]]) -> tuple[str, str]:
    """("ship", why) when the candidate is lower on every deciding statistic, else ("keep", the first reason)."""
    for key in DECIDING:
        old, new = stats.get(key, (None, None))
        if old is None or new is None:
            return "keep", f"{key} not measured"
        if not new < old:  # equal is not better; NaN is never lower
            return "keep", f"{key} not lower ({old:.4g} → {new:.4g})"
    return "ship", "lower on the objective, every artefact statistic and the clip flicker"


# ----------------------------------------------------------------------------------------------------------
# The table, the JSON and shipping
# ----------------------------------------------------------------------------------------------------------


def table(rows: list[dict], header: str) -> str:
    """The Markdown table: per style, each statistic shipped → candidate, then the verdict."""
    keys = [k for k in rows[0]["stats"] if k != "grid p2"] if rows else list(DECIDING)
    names = {"grid p4": "grid p4 (painting)", "clip flicker": "clip flicker ×10³"}
    lines = [header, "", "| style | " + " | ".join(names.get(k, k) for k in keys) + " | verdict |"]
    lines.append("|---|" + "---:|" * len(keys) + "---|")
    for row in rows:
        cells = []
        for key in keys:
            scale = 1e3 if key == "clip flicker" else 1.0
            old, new = (f"{scale * v:.3f}" if v is not None else "-" for v in row["stats"][key])
            extra = f" ({row['painting grid p4']:.2f})" if key == "grid p4" else ""
            cells.append(f"{old} → {new}{extra}")
        verdict = "**ship**" if row["verdict"] == "ship" else f"keep: {row['reason']}"
        lines.append(f"| {row['style']} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines)


def write_json(path: Path, data: dict) -> Path:
    """Write `data` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def ship(decisions: list[dict], checkpoints: Path) -> list[Path]:
    """Copy each "ship" row's candidate atomically over checkpoints/STYLE.safetensors and check it loads."""
    shipped = []
    for row in decisions:
        if row["verdict"] != "ship":
            continue
        candidate, target = Path(row["candidate"]), checkpoints / f"{row['style']}.safetensors"
        try:
            load_model(candidate, task="style")
        except CheckpointError as err:
            print(f"Not shipped: {str(err).rstrip('.')}.")
            continue
        data = candidate.read_bytes()
        if hashlib.sha256(data).hexdigest() != row["candidate_sha256"]:
            print(f"Not shipped: '{candidate}' changed since it was scored; compare again.")
            continue
        before = target.read_bytes() if target.is_file() else None
        atomic_write(target, lambda f, data=data: f.write(data))
        try:
            load_model(target, task="style")
        except CheckpointError as err:  # never leave a broken network in checkpoints/
            if before is not None:
                atomic_write(target, lambda f, before=before: f.write(before))
            print(f"Not shipped: the copy did not load ({str(err).rstrip('.')}); {target} is as it was.")
            continue
        print(f"shipped {candidate} → {target}")
        shipped.append(target)
    return shipped


FOLLOW_UP = """Still to do by hand for the shipped styles ({styles}):
  1. the README picture: python benchmarks/quality.py --photos 4 --iterations 0 --grid checkpoints/pretrained_grid.jpg
  2. benchmarks/RESULTS.md: new rows from benchmarks/quality.py, benchmarks/artifacts.py and benchmarks/temporal.py
     (the table above, with its machine), and checkpoints/README.md ("The shipped styles": steps, recipe, machine)
  3. tests/test_artifacts.py: a network with antialiased downsampling loses its xfail by itself; run that file
  4. a slim companion distilled from an older teacher (STYLE_slim.safetensors) must be distilled again
  5. the metadata came with the export (trained, dataset, steps_in_all): correct it if needed with
     python -m stlib export FILE -o FILE --info key=value; then git add checkpoints/ and commit with the table above"""


# ----------------------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------------------


def load_clips(args: argparse.Namespace) -> tuple[list[dict], str]:
    """The real clips' frames and motions (`benchmarks.temporal.clip_data`), and a line saying what was used."""
    if args.frames < 2:
        return [], "clip flicker: not measured (--frames below 2), so nothing can ship"
    paths = [args.video / name for name in (args.clips or temporal.CLIPS)]
    found = [p for p in paths if p.is_file()]
    if not found:
        return [], f"clip flicker: not measured (no clips in {args.video}), so nothing can ship"
    clips = [temporal.clip_data(path, args.frames, style_frames=1) for path in found]
    missing = f"; not found: {', '.join(p.name for p in paths if not p.is_file())}" if len(found) < len(paths) else ""
    frames = ", ".join(f"{c['name']} ({len(c['frames'])} frames)" for c in clips)
    return clips, f"clip flicker: E_warp ×10³ of the per-frame output, mean over {frames}{missing}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", type=Path, help="folder of candidate STYLE.safetensors files")
    parser.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints", help="the shipped networks")
    parser.add_argument("--val", type=Path, default=SHARED_VAL, help="held-out photos (default: BSDS500 val)")
    parser.add_argument("--photos", type=int, default=8, help="how many held-out photos (default: %(default)s)")
    parser.add_argument("--size", type=int, default=512, help="square photo side in px (default: %(default)s)")
    parser.add_argument("--video", type=Path, default=temporal.VIDEO, help="folder of the real clips")
    parser.add_argument("--clips", nargs="*", help=f"clip file names (default: {', '.join(temporal.CLIPS)})")
    parser.add_argument("--frames", type=int, default=30, help="frames per clip; 0: no clips (default: 30)")
    parser.add_argument("--gatys-iterations", type=int, default=0, help="also the ratio to Gatys-N (default: off)")
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"the Gatys results (default: {CACHE})")
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    parser.add_argument("--look", type=Path, help="also write PNGs (100 %% and 3x zoom) of both networks here")
    parser.add_argument("--ship", action="store_true", help="copy the winners over the shipped files")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Score every candidate, print the table, optionally ship the winners; 0 unless no candidate could be scored."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.candidates.is_dir():
        raise SystemExit(f"error: the candidates folder '{args.candidates}' does not exist.")
    pairs, skipped = find_pairs(args.candidates, args.checkpoints)
    for sentence in skipped:
        print(sentence)
    if not pairs:
        raise SystemExit(
            f"error: no file in '{args.candidates}' is a style network named as one in {args.checkpoints}."
        )
    files = held_out_files(args, args.size)
    photos = [(assets.file_sha256(f), square_photo(f, args.size)) for f in files]
    clips, clip_line = load_clips(args)
    cache = load_cache(args.cache) if args.gatys_iterations > 0 else {}
    rows = []
    for pair in pairs:
        print(f"scoring {pair.candidate} against {pair.shipped} ...", flush=True)
        rows.append(score(pair, photos, clips, args, cache))
        if args.look:
            looks = save_looks(pair, photos, args.look)
            print(f"  look: {', '.join(str(p) for p in looks)} (photo | shipped | candidate; under it 3x zoom)")
    if cache:
        write_json(args.cache, cache)
    header = (
        f"# Shipped → candidate: {len(photos)} photos from {files[0].parent} at {args.size}x{args.size} (objective: "
        f"the shipped file's, fp32; artefacts at the same size); {clip_line}; {describe_machine()}"
    )
    notes = [row["note"] for row in rows if row["note"]]
    print("\n" + "\n".join(notes + [table(rows, header)]))
    if args.json:
        write_json(args.json, {"header": header, "rows": rows, "skipped": skipped, "notes": notes})
    if args.ship:
        done = ship(rows, args.checkpoints)
        if done:
            print(FOLLOW_UP.format(styles=", ".join(p.stem for p in done)))
        else:
            print("Nothing shipped: no candidate is lower on every statistic.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
