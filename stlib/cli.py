"""Command-line interface: ``python -m stlib <command> --help``.

Commands: ``demo`` (executes the course notebooks headless and writes their figures to ``outputs/``).
Every command reports bad input as one clear line on stderr and exits with a non-zero code.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .images import ImageError
from .vgg import WeightsUnavailableError

DEMO_NOTEBOOKS = ("01_vgg_features.ipynb",)


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _run_notebook(path: Path, out_dir: Path, quick: bool, timeout: int) -> float:
    """Execute a notebook headless (its figures land in outputs/) and save the executed copy."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_quick = os.environ.get("STLIB_QUICK")
    os.environ["STLIB_QUICK"] = "1" if quick else "0"
    start = time.perf_counter()
    try:
        NotebookClient(nb, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if env_quick is None:
            os.environ.pop("STLIB_QUICK", None)
        else:
            os.environ["STLIB_QUICK"] = env_quick
    executed = out_dir / "notebooks" / path.name
    executed.parent.mkdir(parents=True, exist_ok=True)
    tmp = executed.with_suffix(".tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, executed)
    return time.perf_counter() - start


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the course's main job non-interactively and write everything to outputs/."""
    from .assets import outputs_dir, repo_root

    out = outputs_dir()
    for name in DEMO_NOTEBOOKS:
        path = repo_root() / "notebooks" / name
        print(f"Running {name} ({'quick' if args.quick else 'full'} mode) ...", flush=True)
        seconds = _run_notebook(path, out, quick=args.quick, timeout=args.timeout)
        print(f"  done in {seconds:.0f} s", flush=True)
    figures = sorted(p.name for p in out.glob("*.png"))
    print(f"Wrote {len(figures)} figures to {out}: {', '.join(figures)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every command."""
    parser = argparse.ArgumentParser(prog="python -m stlib", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"stlib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="execute the course notebooks headless; figures go to outputs/")
    demo.add_argument("--quick", action="store_true", help="small sizes and few iterations (as in CI)")
    demo.add_argument("--timeout", type=int, default=3600, help="seconds allowed per notebook cell")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse `argv`, run the command, turn known errors into one line and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, ImageError, WeightsUnavailableError, FileNotFoundError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
