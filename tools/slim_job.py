"""The slim companions' recipe as one resumable command: a chain of ``stlib distill`` stages per teacher.

The recipe (``RECIPE``) is the one that made ``checkpoints/the_scream_slim.safetensors`` (1.058x its teacher's
objective; ``benchmarks/RESULTS.md``, "The teacher's objective alone, a moving average of the weights, larger
photos"): Hinton et al.'s distillation of Johnson et al.'s network into a 0.25-width student (``stlib.distill``),
first on all four terms from the teacher pruned, then on the teacher's objective alone (Johnson Eq. 1) with a moving
average of the weights (Polyak and Juditsky 1992), last on 320-px photos. Each stage ``--init`` the file of the one
before. (That table's stage 4, a repeat of stage 3 stopped half way, is left out.)

For each teacher, the stages run in order as ``python -m stlib distill`` processes, the teachers' chains in
parallel (one process per teacher at a time). Each stage writes ``RUNS/STYLE/N-NAME.safetensors`` with its log
(``N-NAME.log``) and run folder (``N-NAME.run/``: ``train.csv``, the training state). A second command skips the
stages whose file is complete (its step is the stage's, distilled from the same teacher) and resumes an interrupted
one (``--resume``). With ``--budget`` the running stages get SIGTERM ``--reserve`` seconds before the budget ends
(``distill`` writes a checkpoint after its current step) and the chains stop there. The last file written, finished
or checkpointed, is exported in float16 with its metadata (as ``python -m stlib export`` does) to
``OUT/STYLE_slim.safetensors``; ``OUT/slim_summary.md`` / ``.json`` list every stage (steps reached, seconds, last
loss of its ``train.csv``). ``--steps-scale F`` multiplies every stage's steps (tiny rehearsals, long CPU runs).

Three situations:

1. After the teachers in a short GPU window: ``tools/styles_job.py run --budget 540 --students 120`` stops the
   teachers 120 s earlier and runs this recipe on the freshly trained teachers until the budget's reserve, into
   ``OUT/export/STYLE_slim.safetensors`` (its summary gains the students' rows).
2. In the background on a CPU with native bf16 (AVX512-BF16 or AMX, ``lscpu``), in a run folder outside the work
   tree; stop it (SIGTERM or ``--budget``) and start the same command again as often as needed::

       nohup python tools/slim_job.py --teachers checkpoints/{wave,the_scream}.safetensors --data BSDS500/train \\
           --out ~/slims --runs ~/slims/runs > ~/slims/job.log 2>&1 &

3. Overnight on any CPU (about 2.5 h of a 2-core AVX2 CPU per style at full scale; the teachers' chains share the
   cores, so give fewer teachers for the first students sooner), resumable the same way::

       make slims TEACHERS="checkpoints/wave.safetensors checkpoints/composition_vii.safetensors" DATA=BSDS500/train

Score every student before shipping it (``benchmarks/quality.py``; within 10 % of its teacher's objective).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # styles_job, beside this file
from styles_job import ROOT, Run, offline_config, start_process, watch  # noqa: E402

OBJECTIVE_ALONE = ("--l1-steps", "0", "--l1-weight", "0", "--feature-weight", "0", "--gram-weight", "0",
                   "--objective-weight", "1")  # fmt: skip


@dataclass(frozen=True)
class Stage:
    """One ``stlib distill`` command of the recipe: its name, steps and options (besides teacher, data, files)."""

    name: str
    steps: int
    options: tuple[str, ...] = ()
    l1_steps: int = 0  # the L1 warm-up (no VGG), scaled with the steps

    def arguments(self, scale: float, l1_steps: int | None = None) -> list[str]:
        """The stage's ``distill`` options with its steps (and warm-up, unless `l1_steps` is given) times `scale`."""
        steps = self.scaled_steps(scale)
        l1_steps = min(steps, round(self.l1_steps * scale)) if l1_steps is None else l1_steps
        return ["--steps", str(steps), *([] if "--l1-steps" in self.options else ["--l1-steps", str(l1_steps)])]

    def scaled_steps(self, scale: float) -> int:
        """The stage's steps multiplied by `scale` (at least one)."""
        return max(1, round(self.steps * scale))


RECIPE = (
    Stage("four-terms", 2600, l1_steps=500),  # distill's defaults: pruned start, 192 px, lr 2e-3
    Stage("four-terms-again", 1500, ("--lr", "1e-3")),
    Stage("objective", 1000, (*OBJECTIVE_ALONE, "--lr", "5e-4")),
    Stage("average-0.998", 1500, (*OBJECTIVE_ALONE, "--lr", "3e-4", "--average", "0.998")),
    Stage("average-0.999", 1500, (*OBJECTIVE_ALONE, "--lr", "2e-4", "--average", "0.999")),
    Stage(
        "photos-320",
        600,
        (*OBJECTIVE_ALONE, "--size", "320", "--lr", "2e-4", "--average", "0.995", "--checkpoint-every", "100"),
    ),
)
"""The stages that made ``the_scream_slim`` (benchmarks/RESULTS.md), each started from the file of the one before."""


@dataclass
class Settings:
    """What every chain shares: photos, folders, the deadline and the recipe's scale."""

    data: Path
    runs: Path  # the stages' files: RUNS/STYLE/N-NAME.*
    scale: float = 1.0
    deadline: float | None = None  # time.monotonic() at which the running stages get SIGTERM
    grace: float = 15.0  # seconds a stage may take after SIGTERM before it is killed
    extra: list[str] = field(default_factory=list)  # more distill options, last
    stop: threading.Event = field(default_factory=threading.Event)  # Ctrl-C: start no further stage


@dataclass
class Chain:
    """One teacher's stages: what each did, and the student (the last file written)."""

    style: str
    teacher: Path
    rows: list[dict] = field(default_factory=list)
    student: Path | None = None
    error: str | None = None
    current: Run | None = None  # the stage running now


class Terminated(Exception):
    """This job was sent SIGTERM: its running stages get it too (each writes a checkpoint)."""


# ----------------------------------------------------------------------------------------------------------
# One stage: done, to resume, or new; run and watched until it ends or the deadline
# ----------------------------------------------------------------------------------------------------------


def stage_file(settings: Settings, chain: Chain, index: int) -> Path:
    """Where stage `index` of `chain` writes its student: RUNS/STYLE/N-NAME.safetensors."""
    return settings.runs / chain.style / f"{index + 1}-{RECIPE[index].name}.safetensors"


def stage_row(settings: Settings, chain: Chain, index: int) -> dict:
    """A stage's summary row before it runs: teacher, stage, the steps it is to reach."""
    name, steps = f"{index + 1}-{RECIPE[index].name}", RECIPE[index].scaled_steps(settings.scale)
    return {
        "style": chain.style,
        "stage": name,
        "target": steps,
        "steps": 0,
        "seconds": 0.0,
        "loss": None,
        "file": None,
    }


def stage_log(model: Path) -> Path:
    """A stage's log beside its file: the command, then distill's output."""
    return model.with_suffix(".log")


def written_step(path: Path, teacher_sha256: str) -> int | None:
    """The step of a stage's file distilled from this teacher (None: no such file, or another teacher's)."""
    from stlib.checkpoint import read_metadata

    try:
        info = read_metadata(path)["info"]
    except (OSError, ValueError):
        return None
    return int(info.get("step") or 0) if info.get("teacher_sha256") == teacher_sha256 else None


def saved_l1_steps(path: Path) -> int:
    """The L1 warm-up a stage's file was distilled with (its metadata's distill settings)."""
    from stlib.checkpoint import read_metadata

    return int(read_metadata(path)["info"]["distill_config"]["l1_steps"])


def last_row(run: Run) -> dict[str, str]:
    """The last complete row of a stage's train.csv ({} when none)."""
    rows = run.rows()
    return rows[-1] if rows else {}


def run_stage(settings: Settings, chain: Chain, index: int, teacher_sha256: str) -> dict:
    """Run (or skip, or resume) stage `index` of a chain until it ends or the deadline; its summary row."""
    stage, model = RECIPE[index], stage_file(settings, chain, index)
    steps, run = stage.scaled_steps(settings.scale), Run(f"{chain.style} {stage.name}", model, stage_log(model))
    row = stage_row(settings, chain, index)
    done = written_step(model, teacher_sha256)
    if done is not None and done >= steps:
        return row | {"steps": done, "loss": _loss(last_row(run)), "status": "skipped (complete)", "file": str(model)}
    if settings.stop.is_set() or (settings.deadline is not None and time.monotonic() >= settings.deadline):
        return row | {"status": "not started"}
    resumed = done is not None and (model.with_suffix(".run") / "state.pt").is_file()
    warm_up = saved_l1_steps(model) if resumed else None  # a resumed stage keeps its warm-up (another scale)
    command = [sys.executable, "-m", "stlib", "distill", str(chain.teacher), "--data", str(settings.data),
               "-o", str(model), *stage.arguments(settings.scale, warm_up), *stage.options, "--quiet"]  # fmt: skip
    if index > 0:
        command += ["--init", str(stage_file(settings, chain, index - 1))]
    command += ["--resume"] if resumed else []
    model.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    run.process = start_process([*command, *settings.extra], run.log)
    chain.current = run
    hard = None if settings.deadline is None else settings.deadline + settings.grace
    watch([run], 1, settings.deadline, hard, settings.grace)  # one photo a step: images/s are steps/s
    reached = written_step(model, teacher_sha256)
    row |= {"seconds": round(time.monotonic() - started, 1), "returncode": run.returncode, "steps": reached or 0}
    row |= {"loss": _loss(last_row(run)), "file": str(model) if reached else None}
    row["status"] = _status(run, reached, steps, resumed)
    return row


def _loss(row: dict[str, str]) -> float | None:
    """The logged total of a train.csv row (None when there is none)."""
    return float(row["total"]) if row.get("total") else None


def _status(run: Run, reached: int | None, steps: int, resumed: bool) -> str:
    """A stage's outcome in words: finished, stopped at the deadline, or failed."""
    if run.returncode == 0 and reached is not None and reached >= steps:
        return "resumed, finished" if resumed else "finished"
    if run.signalled:  # by the deadline, or a SIGTERM to this job
        return f"stopped by SIGTERM ({'checkpointed' if reached else 'no file'})"
    if run.returncode == 0 and reached:  # Ctrl-C: distill checkpoints and exits 0
        return "stopped (checkpointed)"
    return "failed"


def run_chain(settings: Settings, chain: Chain) -> None:
    """Every stage of one teacher in order, each from the file of the one before; stop at a failure or deadline."""
    from stlib.assets import file_sha256

    teacher_sha256, over = file_sha256(chain.teacher), False
    for index in range(len(RECIPE)):
        if over:  # after a failure, the deadline or Ctrl-C: the last file written is the student
            chain.rows.append(stage_row(settings, chain, index) | {"status": "not started"})
            continue
        row = run_stage(settings, chain, index, teacher_sha256)
        chain.rows.append(row)
        print(f"{chain.style}: stage {row['stage']}: {row['status']} at step {row['steps']}", flush=True)
        chain.student = Path(row["file"]) if row["file"] else chain.student
        if row["status"] == "failed":
            log = stage_log(stage_file(settings, chain, index))
            chain.error = f"{chain.style}: stage {row['stage']} failed (exit {row.get('returncode')}); see {log}."
            print(chain.error, flush=True)
        over = row["status"] not in ("finished", "resumed, finished", "skipped (complete)")


# ----------------------------------------------------------------------------------------------------------
# The teachers, the chains in parallel, the students' export and the summary
# ----------------------------------------------------------------------------------------------------------


def check_teacher(path: Path) -> str:
    """The style name of a teacher file; one sentence and exit when it is missing or not a style network."""
    from stlib.checkpoint import CheckpointError, load_model, read_metadata

    try:
        load_model(path, task="style")
    except CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    if not isinstance(read_metadata(path)["info"].get("train_config"), dict):
        raise SystemExit(f"error: '{path}' has no training settings in its metadata, which the VGG stages need.")
    return path.stem


def distill_all(settings: Settings, teachers: list[Path], names: list[str] | None = None) -> list[Chain]:
    """Every teacher's chain, in parallel (one thread watching one process each); the chains when all are over."""
    names = names or [check_teacher(t) for t in teachers]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: two teachers share a style name ({', '.join(names)}); rename one.")
    chains = [Chain(name, teacher) for name, teacher in zip(names, teachers, strict=True)]
    threads = [threading.Thread(target=run_chain, args=(settings, c), name=c.style) for c in chains]
    for thread in threads:
        thread.start()
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(0.5)
    except (KeyboardInterrupt, Terminated) as stop:  # start no further stage; the running ones checkpoint
        settings.stop.set()
        running = [c.current for c in chains if c.current and c.current.process.poll() is None]
        for run in running if isinstance(stop, Terminated) else []:  # Ctrl-C reached them already
            run.signalled = True
            run.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return chains


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM to this job: raise `Terminated` in the main thread."""
    raise Terminated


def export_student(chain: Chain, dest: Path, note: str) -> Path | None:
    """The chain's last file in float16 at `dest` (its metadata kept, the stages reached added); None without one."""
    from stlib.checkpoint import export_weights, read_metadata

    if chain.student is None:
        return None
    info = read_metadata(chain.student)["info"]
    reached = [f"{r['stage']} ({r['steps']}/{r['target']} steps)" for r in chain.rows if r["file"]]
    extra = {"slim_recipe": "tools/slim_job.py stages " + ", ".join(reached), "trained": note}
    if isinstance(info.get("train_config"), dict):  # a teacher trained on the GPU pack's VGG16 file: offline
        extra["train_config"], objective = offline_config(info["train_config"])
        extra |= {"vgg_weights": "offline"} if objective.get("vgg_weights") == "offline" else {}
    return export_weights(chain.student, dest, extra_info=extra)


def summary_lines(chains: list[Chain]) -> list[str]:
    """The students' table: one row per stage and teacher."""
    lines = ["| student | stage | steps | seconds | last loss | status | file |", "|---|---|---:|---:|---:|---|---|"]
    for chain in chains:
        for r in chain.rows:
            loss = f"{r['loss']:.4g}" if r.get("loss") is not None else "-"
            file = Path(r["file"]).name if r["file"] else "-"
            lines.append(f"| {r['style']} | {r['stage']} | {r['steps']}/{r['target']} | {r['seconds']:.0f} | {loss} "
                         f"| {r['status']} | {file} |")  # fmt: skip
    return lines


def students(settings: Settings, teachers: list[Path], dest: Path, note: str, names: list[str] | None = None) -> list:
    """Distil every teacher with the recipe and export each student to DEST/STYLE_slim.safetensors; the chains."""
    chains = distill_all(settings, teachers, names)
    for chain in chains:
        path = export_student(chain, dest / f"{chain.style}_slim.safetensors", note)
        status = "exported" if path else "no student"
        row = {"style": chain.style, "stage": "export", "target": "-", "steps": "-", "seconds": 0.0, "loss": None}
        chain.rows.append(row | {"status": status, "file": path and str(path)})
    return chains


def main(argv: list[str] | None = None) -> int:
    """The command line: the recipe for one or several teachers; 0 when every teacher has a student."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teachers", nargs="+", required=True, type=Path, help="trained style networks")
    parser.add_argument("--data", required=True, type=Path, help="a folder of photos (e.g. BSDS500 train)")
    parser.add_argument("--out", required=True, type=Path, help="where STYLE_slim.safetensors and the summary go")
    parser.add_argument("--runs", type=Path, help="the stages' files, logs and states (default: OUT/runs)")
    parser.add_argument("--budget", type=float, default=0, help="seconds for the whole command; 0: no deadline")
    parser.add_argument("--reserve", type=float, default=30, help="seconds before the budget's end to stop (30)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's steps (default 1)")
    parser.add_argument("--distill-args", nargs=argparse.REMAINDER, default=[], help="more distill options, last")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if not args.data.is_dir():
        raise SystemExit(f"error: the photo folder '{args.data}' does not exist.")
    if args.budget and args.reserve >= args.budget:
        raise SystemExit(f"error: --reserve {args.reserve:g} leaves nothing of --budget {args.budget:g} seconds.")
    names = [check_teacher(teacher) for teacher in args.teachers]  # before anything is written
    deadline = started + args.budget - args.reserve if args.budget else None
    settings = Settings(args.data, args.runs or args.out / "runs", args.steps_scale, deadline,
                        args.reserve / 2, args.distill_args)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    note = f"tools/slim_job.py on {args.data}, steps x{args.steps_scale:g}"
    chains = students(settings, args.teachers, args.out, note, names)
    lines = [f"# Slim job: {time.monotonic() - started:.0f} s of a {args.budget or 'open'} s budget", "",
             *summary_lines(chains)]  # fmt: skip
    (args.out / "slim_summary.md").write_text("\n".join(lines) + "\n")
    (args.out / "slim_summary.json").write_text(json.dumps([r for c in chains for r in c.rows], indent=2) + "\n")
    print("\n".join(lines), flush=True)
    return 0 if all(c.student and not c.error for c in chains) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # stlib from this repository, also where it is not installed
    sys.exit(main())
