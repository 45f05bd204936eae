"""The demo (tools/demo.py): widget cells executed headless without a stall, per-cell timeouts that name the cell,
captions for every figure, and a quick demo's gallery checked in a real browser (Chromium via Playwright)."""

from __future__ import annotations

import io
import json
import sys
from contextlib import redirect_stderr
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from stlib import assets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import demo  # noqa: E402  (tools/demo.py)

KERNELSPEC = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def _notebook(path: Path, cells: list) -> Path:
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata=KERNELSPEC), path)
    return path


def _widget_state(executed: Path) -> dict:
    nb = nbformat.read(executed, as_version=4)
    return nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]


def test_widget_output_cells_never_wait_for_their_timeout(tmp_path):
    """The stall of issue 12: output shown inside an ipywidgets Output widget, the pattern of notebook 02's panel.

    nbclient's stock Output stand-in writes each new output back to the kernel on the shell socket; when that
    happens after the kernel's reply has arrived, the reply's wake-up is lost and the cell waits for its whole
    timeout (with the stock client, 14 of 21 such cells did). A stall costs exactly the timeout, so no cell may
    come near it.
    """
    setup = nbformat.v4.new_code_cell(
        "import ipywidgets as widgets\n"
        "from IPython.display import HTML, display\n"
        "out = widgets.Output()\n"
        "display(out)\n"
        "payload = HTML('<p>' + 'x' * 2_000_000 + '</p>')  # large: the client is still busy when the reply comes"
    )
    show = "out.clear_output(wait=True)\nwith out:\n    display(payload)\n    print('cell {}')"
    cells = [setup] + [nbformat.v4.new_code_cell(show.format(i)) for i in range(10)]
    path = _notebook(tmp_path / "widgets.ipynb", cells)
    timeout = 30
    run = demo.run_notebook(path, tmp_path / "out", mode="quick", timeout=timeout, progress=False)
    assert len(run.cell_seconds) == 11
    slowest = max(run.cell_seconds.values())
    assert slowest < timeout - 5, f"a cell waited {slowest:.0f} s, its whole timeout: the reply was stranded"
    (state,) = [s["state"] for s in _widget_state(run.path).values() if s["model_name"] == "OutputModel"]
    kinds = [o["output_type"] for o in state["outputs"]]
    assert kinds == ["display_data", "stream"] and state["outputs"][1]["text"] == "cell 9\n"  # the last cell's


def test_the_panel_cell_of_notebook_02_runs_headless(tmp_path, offline_weights):
    source = nbformat.read(ROOT / "notebooks" / "02_gatys_lbfgs.ipynb", as_version=4)
    code = [c for c in source.cells if c.cell_type == "code"]
    needed = ["import ipywidgets", "QUICK = ", "content = images.load_tensor", "panel_output = widgets.Output()"]
    cells = [next(c for c in code if marker in c.source) for marker in needed]
    path = _notebook(tmp_path / "02_panel.ipynb", cells)
    out = tmp_path / "out"
    run = demo.run_notebook(path, out, mode="quick", timeout=600, progress=False)
    assert len(run.cell_seconds) == 4
    with Image.open(out / "02_panel.png") as figure:
        assert figure.width > 100 and figure.height > 100
    nb = nbformat.read(run.path, as_version=4)
    shown = [o for o in nb.cells[-1].outputs if o.output_type == "display_data"]
    assert shown and "application/vnd.jupyter.widget-view+json" in shown[0].data  # the panel itself
    panel = [s["state"] for s in _widget_state(run.path).values() if s["model_name"] == "OutputModel"]
    assert len(panel) == 1 and any("image/png" in o.get("data", {}) for o in panel[0]["outputs"])


def test_a_cell_past_its_timeout_stops_with_one_line_naming_notebook_and_cell(tmp_path):
    cells = [
        nbformat.v4.new_code_cell("import time"),
        nbformat.v4.new_markdown_cell("## A slow section"),
        nbformat.v4.new_code_cell("time.sleep(120)"),
    ]
    path = _notebook(tmp_path / "slow.ipynb", cells)
    with pytest.raises(demo.DemoError) as err:
        demo.run_notebook(path, tmp_path / "out", mode="quick", timeout=lambda cell_id, expected: 4, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("Notebook slow.ipynb, cell 2/2 (A slow section) gave no result within 4 s"), message


def test_a_failing_cell_is_one_line_naming_notebook_and_cell(tmp_path):
    cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('bad input here')")]
    path = _notebook(tmp_path / "broken.ipynb", cells)
    with pytest.raises(demo.DemoError) as err:
        demo.run_notebook(path, tmp_path / "out", mode="quick", timeout=60, progress=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith("Notebook broken.ipynb, cell 2/2 failed: ")
    assert "ValueError: bad input here" in message


def test_cell_timeouts_scale_with_the_expected_time():
    assert demo.cell_timeout(2.0) == 300  # the floor
    assert demo.cell_timeout(100.0) == 1000
    assert demo.cell_timeout(100.0, factor=3, minimum=10) == 300


def test_expected_times_name_real_code_cells():
    for mode, notebooks in demo.EXPECTED_SECONDS.items():
        assert mode in demo.MODES
        for name, cells in notebooks.items():
            nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
            code_ids = {c.id for c in nb.cells if c.cell_type == "code"}
            assert set(cells) <= code_ids, f"{mode}/{name}: stale cell ids {sorted(set(cells) - code_ids)}"
            assert all(seconds >= 0 for seconds in cells.values())


def test_every_figure_the_notebooks_save_has_a_caption():
    for name in demo.FULL_NOTEBOOKS:
        saved = demo.saved_figure_names(ROOT / "notebooks" / name)
        assert len(saved) >= 1, name
        missing = [figure for figure in saved if figure not in demo.CAPTIONS]
        assert not missing, f"{name} saves figures without a caption in tools/demo.py's CAPTIONS: {missing}"


def test_full_mode_runs_every_notebook_and_gives_notebook_03_its_photos(tmp_path, capsys, monkeypatch):
    assert demo.DemoConfig().chosen_notebooks() == demo.DEMO_NOTEBOOKS
    assert tuple(sorted(p.name for p in (ROOT / "notebooks").glob("0*.ipynb"))) == demo.FULL_NOTEBOOKS
    with_photos = demo.DemoConfig(mode="full", data=str(tmp_path))
    notebooks, env = demo._notebooks_and_env(with_photos)
    assert notebooks == demo.FULL_NOTEBOOKS and env == {"STLIB_DATA": str(tmp_path.resolve())}
    monkeypatch.setattr(demo, "COCO_FOLDERS", ("no/such/folder",))  # as on a machine without COCO
    notebooks, env = demo._notebooks_and_env(demo.DemoConfig(mode="full"))
    assert demo.TRAINING_NOTEBOOK not in notebooks and len(notebooks) == 4 and env == {}
    assert "Skipping 03_johnson_training.ipynb" in capsys.readouterr().out  # said, not silent
    monkeypatch.setattr(demo, "COCO_FOLDERS", ("no/such/folder", str(tmp_path)))  # e.g. only val2017 downloaded
    assert demo._notebooks_and_env(demo.DemoConfig(mode="full"))[1] == {"STLIB_DATA": str(tmp_path)}
    assert demo._notebooks_and_env(demo.DemoConfig(mode="quick", notebooks=demo.FULL_NOTEBOOKS))[1] == {}


def test_config_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        demo.DemoConfig(mode="full", data=str(tmp_path / "missing")).validate()
    for bad in (dict(mode="slow"), dict(timeout=0), dict(timeout_factor=-1), dict(min_timeout=0)):
        with pytest.raises(ValueError):
            demo.DemoConfig(**bad).validate()


def test_the_command_line_reports_a_bad_setting_in_one_line(tmp_path, capsys):
    assert demo.main(["--full", "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "does not exist" in err


# --------------------------------------------------------------------------------------------------------
# A quick demo and its gallery in a real browser
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory, offline_weights):
    """A quick demo of notebook 01 plus the extra steps, into a temporary folder; (result, progress text)."""
    out = tmp_path_factory.mktemp("demo-out")
    progress = io.StringIO()
    with redirect_stderr(progress):
        result = demo.run_demo(demo.DemoConfig(mode="quick", notebooks=("01_vgg_features.ipynb",), out=str(out)))
    return result, progress.getvalue()


def test_quick_demo_writes_figures_progress_and_a_gallery(quick_demo):
    result, progress = quick_demo
    notebook = json.loads((assets.repo_root() / "notebooks" / "01_vgg_features.ipynb").read_text(encoding="utf-8"))
    code_cells = sum(cell["cell_type"] == "code" for cell in notebook["cells"])
    assert "01_vgg_features" in progress and f"cell 1/{code_cells}" in progress
    assert "elapsed" in progress and "left" in progress
    names = [f.name for f in result.figures]
    assert "01_feature_maps.png" in names and demo.GATYS_OUTPUT in names and demo.CLIP_OUTPUT in names
    networks = sorted(p.stem for p in (assets.repo_root() / "checkpoints").glob("*.safetensors"))
    assert [n for n in names if n.startswith("johnson_")] == [f"johnson_tubingen_{n}.jpg" for n in networks]
    with Image.open(result.out / demo.GATYS_OUTPUT) as image:
        assert max(image.size) == 128
    with Image.open(result.out / demo.CLIP_OUTPUT) as clip:
        assert clip.n_frames == 6 and clip.size == (480, 120)  # original | stylised | smoothed, side by side
    assert (result.out / "notebooks" / "01_vgg_features.ipynb").is_file()
    times = json.loads((result.out / "demo_times.json").read_text())["quick"]["01_vgg_features.ipynb"]
    assert len(times) == code_cells  # one measured time per code cell
    page = result.gallery.read_text(encoding="utf-8")
    for figure in result.figures:
        assert f'src="{figure.name}"' in page  # relative paths: the folder can be moved or opened offline


def test_every_image_of_the_gallery_loads_in_chromium(quick_demo):
    from tests.browser import chromium_problem, launch_chromium

    problem = chromium_problem()
    if problem:
        pytest.skip(problem)
    from playwright.sync_api import Error, sync_playwright

    result, _ = quick_demo
    try:
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            try:
                page = browser.new_page()
                page.goto(result.gallery.as_uri(), wait_until="load")
                page.wait_for_function("Array.from(document.images).every(img => img.complete)", timeout=30_000)
                loaded = page.evaluate(
                    "Array.from(document.images).map(img => [img.getAttribute('src'), img.naturalWidth])"
                )
                sections = page.locator("section h2").all_inner_texts()
                captions = page.locator("figcaption").all_inner_texts()
            finally:
                browser.close()
    except Error as err:
        first = next((line for line in str(err).splitlines() if line.strip()), repr(err))
        pytest.skip(f"Chromium cannot be launched here: {first}")
    assert sorted(src for src, _ in loaded) == sorted(f.name for f in result.figures)
    broken = [src for src, width in loaded if width == 0]
    assert not broken, f"images that did not load: {broken}"
    assert len(sections) == 2 and sections[0].startswith("01")
    assert len(captions) == len(loaded) and all(len(c.split()) > 3 for c in captions)


def test_shipped_networks_stylise_the_photo_with_every_network_in_checkpoints(tmp_path, monkeypatch):
    import shutil

    import torch

    from stlib.checkpoint import save_model
    from tests.networks import tiny_net

    home = tmp_path / "home"
    (home / "style_images").mkdir(parents=True)
    (home / "data" / "samples").mkdir(parents=True)
    (home / "checkpoints").mkdir()
    shutil.copy(assets.content_image("tubingen"), home / "data" / "samples" / "tubingen.jpg")
    monkeypatch.setenv("STLIB_HOME", str(home))
    out = tmp_path / "out"
    assert demo.shipped_networks(out) == []

    torch.manual_seed(0)
    for name in ("wave", "udnie"):
        save_model(
            tiny_net(),
            home / "checkpoints" / f"{name}.safetensors",
        )
    written = demo.shipped_networks(out)
    assert [p.name for p in written] == ["johnson_tubingen_udnie.jpg", "johnson_tubingen_wave.jpg"]
    with Image.open(written[0]) as img:
        assert max(img.size) == 512
