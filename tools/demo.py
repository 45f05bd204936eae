"""The course demo: the notebooks executed headless with progress, then the results in one gallery (``make demo``).

The repository's tooling, not the library: it needs the notebooks of a clone, and nothing in `stlib` imports it.
Run it as ``python tools/demo.py [--quick | --full] [--data DIR]`` (what ``make demo`` does).

``run_demo`` executes notebooks 01, 02 and 04 with nbclient (all five in full mode), runs a Gatys transfer of the
sample photo, the sample photo through every network in ``checkpoints/``, a short stylised clip and the sample
upscaled by every super-resolution network in ``checkpoints/superres/`` (beside bicubic), and writes
``outputs/index.html``: every figure of the run with a one-line caption, grouped by notebook.

Three modes (`DemoConfig.mode`), passed to the notebooks as ``STLIB_QUICK`` / ``STLIB_DEMO``:

- ``"demo"`` (``make demo``): the notebooks at reduced but meaningful sizes, the whole course in minutes;
- ``"quick"`` (``make demo QUICK=1``): tiny sizes, as in CI;
- ``"full"`` (``make demo FULL=1``): every notebook at its own full size, 03 and 05 included (about an hour on a
  quiet 2-core CPU; 2 h under load). Notebook 03 trains a style network: on COCO (``data/coco/train2017`` or
  ``val2017``, see ``python -m stlib download-coco``) or on any folder of photos given as ``DemoConfig.data``
  (``make demo FULL=1 DATA=folder``), passed to the notebook as ``STLIB_DATA``; with neither, the demo skips
  notebook 03 and says so (a demo never starts a download).

Each cell has a timeout scaled to its expected time (`EXPECTED_SECONDS`, measured on a 2-core CPU); a cell that
runs past it stops the demo with one line naming the notebook and the cell.

Why notebooks run through `_HeadlessOutputWidget`: nbclient's stand-in for an ``ipywidgets.Output`` sends the
widget's new outputs back to the kernel on the shell socket while a cell is still running, and jupyter_client
sends through a plain (non-asyncio) shadow of that socket. That send consumes libzmq's edge-triggered
"readable" signal of an ``execute_reply`` that has already arrived, so nbclient's wait for the reply is never
woken and returns only at the cell timeout (up to an hour). It happens when the client processes the widget's
output after the kernel has replied: under load, at the interactive panel of notebook 02.

Kernels start with ``OMP_WAIT_POLICY=PASSIVE`` (unless set): on a busy machine, PyTorch's OpenMP threads that
spin while waiting for each other made L-BFGS iterations 4-5 times slower on 2 cores (load 9: 53-67 s instead
of 14 s for 20 iterations at 128 px); ``make demo`` sets it for the demo's own process too.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CAPTIONS",
    "DEMO_NOTEBOOKS",
    "FULL_NOTEBOOKS",
    "EXPECTED_SECONDS",
    "MODES",
    "DemoConfig",
    "DemoError",
    "DemoResult",
    "NotebookRun",
    "cell_timeout",
    "gatys_transfer",
    "run_demo",
    "run_notebook",
    "saved_figure_names",
    "shipped_networks",
    "stylised_clip",
    "superres_samples",
    "write_gallery",
]

MODES = ("quick", "demo", "full")
DEMO_NOTEBOOKS = ("01_vgg_features.ipynb", "02_gatys_lbfgs.ipynb", "04_webcam.ipynb")  # 03 trains, 05 too
FULL_NOTEBOOKS = ("01_vgg_features.ipynb", "02_gatys_lbfgs.ipynb", "03_johnson_training.ipynb", "04_webcam.ipynb",
                  "05_super_resolution.ipynb")  # fmt: skip
TRAINING_NOTEBOOK = "03_johnson_training.ipynb"  # needs a folder of photos (`DemoConfig.data`)
COCO_FOLDERS = ("data/coco/train2017", "data/coco/val2017")  # where `download-coco` puts COCO (relative to the repo)
GATYS_OUTPUT = "gatys_tubingen_starry_night.jpg"
CLIP_OUTPUT = "clip_the_scream.gif"
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")

# Expected seconds per code cell (by cell id) and mode, measured with `make demo` on the 2-core development CPU
# (tools/demo_times.json: "demo" on a quiet machine, 3 min 14 s in all; "quick" while other jobs ran, load 8-10;
# "full" at load 3-5, notebook 02's coarse-to-fine cell less a 520 s pause;
# `run_demo` writes each run's times to outputs/demo_times.json). Timeouts are ten times these, at least 300 s.
# A cell missing from the table is expected to take DEFAULT_CELL_SECONDS[mode]. The progress estimate rescales
# them by the pace of the cells already run.
EXPECTED_SECONDS: dict[str, dict[str, dict[str, float]]] = json.loads(
    (Path(__file__).with_name("demo_times.json")).read_text(encoding="utf-8")
)
DEFAULT_CELL_SECONDS = {"quick": 10.0, "demo": 30.0, "full": 300.0}

# One line per figure the notebooks and the demo write; a figure without one is captioned by its section.
CAPTIONS = {
    "01_inputs.png": "The two inputs: the photo whose content we keep and the painting whose style we take.",
    "01_feature_maps.png": "Feature maps of the photo in VGG16, one row per block: edges first, then whole parts.",
    "01_content_reconstruction.png": "Images rebuilt from noise to match one layer's features: early layers keep the "
    "pixels, deep layers only the layout.",
    "01_content_losses.png": "Content reconstruction: the loss of each layer per L-BFGS iteration.",
    "01_style_reconstruction.png": "Textures rebuilt from the painting's Gram matrices over growing layer sets: larger "
    "and larger brush strokes.",
    "01_gram_matrices.png": "Gram matrices (channel correlations) of relu1_1 for the painting and the photo.",
    "02_inputs.png": "Gatys et al.: the photo and the painting of the transfer.",
    "02_default.png": "The default transfer (L-BFGS from the photo) between the photo and the painting.",
    "02_your_loop.png": "Your own L-BFGS loop with your objective, beside the library's run of the same objective.",
    "02_default_losses.png": "The default run's weighted content, style and total-variation terms per iteration.",
    "02_ratio_sweep.png": "The content/style ratio α/β: smaller means more painting and less photo.",
    "02_style_layers.png": "Which layers define the style: early layers give colour and grain, late ones big motifs.",
    "02_init.png": "Starting from the photo or from noise, after the same number of iterations.",
    "02_init_losses.png": "Total loss per iteration when starting from the photo or from noise.",
    "02_tv.png": "Total variation: none, the default and 30× more (smooth blobs).",
    "02_panel.png": "The interactive panel's result with its default slider values (run headless).",
    "02_lbfgs_vs_adam.png": "L-BFGS versus Adam: total loss per iteration and per second.",
    "02_lbfgs_vs_adam_images.png": "The L-BFGS and Adam results after the same number of iterations.",
    "02_preserve_colors.png": "Keeping the photo's colours: luminance-only transfer and histogram matching.",
    "02_style_blend.png": "Blending two paintings' styles: Starry Night, a 70/30 mix and The Great Wave.",
    "02_hires.jpg": "High resolution, coarse to fine: the full result.",
    "02_hires.png": "High resolution, coarse to fine: the result and a detail.",
    "02_single_vs_multiscale.png": "One region at full size: single scale vs coarse to fine (times in the titles).",
    "02_evolution.gif": "The optimisation from noise, one frame every few iterations.",
    "02_evolution.png": "Snapshots of the optimisation from noise.",
    "03_instance_norm_contrast.png": "Instance norm: a trained network paints a photo and its washed-out copy alike.",
    "03_checkerboard.png": "Contributions per pixel: a transposed conv's checkerboard, nearest+conv's flat field.",
    "03_receptive_field.png": "Input pixels one output pixel sees: all with instance norm, ~100 px without.",
    "03_crops.png": "Random training crops, as the network sees them.",
    "03_schedules.png": "Learning-rate schedules: constant, one-cycle and cosine.",
    "03_lr.png": "Two short training runs, constant vs one-cycle learning rate: total loss (moving average).",
    "03_payoff.png": "The payoff: one forward pass of the network beside minutes of Gatys' L-BFGS.",
    "03_your_loop.png": "The loss of your own training loop (your perceptual loss, Adam), step by step.",
    "03_your_network.png": "Your network, trained by your loop, beside the shipped one on the same photo.",
    "03_fig5_objective.png": "Johnson et al. Fig. 5: the objective along Gatys' L-BFGS, the network as a line.",
    "03_style_scale.png": "Which size of the painting the network's output matches, for photos of three sizes: about "
    "its training style_size every time (the stroke scale is fixed in pixels).",
    "03_pixel_vs_perceptual.png": "A 2-pixel shift and a blur: pixel error prefers the blur, deep features the shift.",
    "04_clip_frames.png": "A synthetic moving scene and its stylised frames (notebook 04's clip).",
    GATYS_OUTPUT: "Gatys et al.: the Tübingen photo painted like The Starry Night by L-BFGS.",
    CLIP_OUTPUT: "A short moving scene: the original, the_scream network frame by frame, and the same with temporal "
    "smoothing (strength 0.8; compare how the textures hold still).",
    "04_flicker_before_after.png": "Flicker: a frame stylised frame by frame and smoothed along the optical flow, and "
    "how much each changes from the previous frame (the title names the clip).",
    **{
        f"superres_tubingen_x{f}_{loss}.jpg": f"Super-resolution x{f}: bicubic (left) and the {name} network (right)."
        for f in (4, 8)
        for loss, name in (("pixel", "l_pixel"), ("feat", "l_feat"))
    },
    **{
        f"05_{name}.png": text
        for name, text in (
            ("degradation", "The degradation model: the high-resolution photo, its x4 smaller input and bicubic."),
            ("mean_of_answers", "Plausible high-resolution answers and their mean, the blurry best answer under MSE."),
            ("compare_x4", "x4: bicubic, l_pixel and l_feat beside the original, with 3x zoomed crops."),
            ("compare_x8", "x8: bicubic, l_pixel and l_feat beside the original, with 3x zoomed crops."),
            ("psnr_vs_eye", "PSNR against the eye: a 1-pixel shift scores lower than a visible blur."),
            ("histograms", "Colour histograms of the input, an l_feat output and the output after histogram matching."),
        )
    },  # fmt: skip
}


class DemoError(Exception):
    """A demo step failed; the message is one line naming the notebook and cell or the step."""


@dataclass
class DemoConfig:
    """What `run_demo` runs and how long each notebook cell may take."""

    mode: str = "demo"  # "quick", "demo" or "full" (see the module docstring)
    notebooks: tuple[str, ...] | None = None  # names in notebooks/ (default: `chosen_notebooks`, by mode)
    data: str | None = None  # photos for notebook 03 (default: data/coco/train2017 or val2017, if there)
    extras: bool = True  # the Gatys transfer, the shipped networks and the clip after the notebooks
    out: str | None = None  # the output folder (default: stlib.assets.outputs_dir())
    timeout_factor: float = 10.0  # a cell may take this many times its expected time ...
    min_timeout: float = 300.0  # ... and at least this many seconds
    timeout: float | None = None  # a fixed timeout per cell in seconds instead
    progress: bool = True  # progress bars on stderr

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if self.mode not in MODES:
            raise ValueError(f"Unknown demo mode {self.mode!r}; choose one of {', '.join(MODES)}.")
        for name in ("timeout_factor", "min_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}.")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout!r}.")
        if self.data is not None and not Path(self.data).is_dir():
            raise ValueError(f"The photo folder '{self.data}' for notebook 03 does not exist.")

    def chosen_notebooks(self) -> tuple[str, ...]:
        """The notebooks to run: `notebooks`, or the mode's (all five in full mode)."""
        if self.notebooks is not None:
            return tuple(self.notebooks)
        return FULL_NOTEBOOKS if self.mode == "full" else DEMO_NOTEBOOKS

    def training_photos(self) -> Path | None:
        """Notebook 03's photos: `data`, else COCO where `download-coco` puts it, else None."""
        from stlib.assets import repo_root

        if self.data is not None:
            return Path(self.data).resolve()
        return next((repo_root() / f for f in COCO_FOLDERS if (repo_root() / f).is_dir()), None)


@dataclass
class NotebookRun:
    """One executed notebook: where its executed copy went and how long each code cell took."""

    name: str
    path: Path
    seconds: float
    cell_seconds: dict[str, float] = field(default_factory=dict)  # by cell id


@dataclass
class DemoResult:
    """Everything `run_demo` did."""

    mode: str
    out: Path
    gallery: Path
    notebooks: list[NotebookRun]
    figures: list[Path]
    seconds: float


def cell_timeout(expected: float, factor: float = 10.0, minimum: float = 300.0) -> float:
    """Seconds a cell expected to take `expected` seconds may run before the demo gives up on it."""
    return max(minimum, factor * expected)


def _format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _section_of(cells: Sequence, index: int) -> str:
    """The last markdown heading before cell `index` ('' when there is none)."""
    for cell in reversed(cells[:index]):
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


# ----------------------------------------------------------------------------------------------------------
# Executing a notebook
# ----------------------------------------------------------------------------------------------------------


def _headless_output_widget():
    """nbclient's Output-widget stand-in, less the write-back to the kernel (see the module docstring)."""
    from nbclient.output_widget import OutputWidget

    class _HeadlessOutputWidget(OutputWidget):
        """Keeps the widget's outputs in the executed notebook's widget state; never sends them to the kernel."""

        def sync_state(self) -> None:
            """No write-back: there is no view to mirror, and a send here can strand the cell's reply."""

    return _HeadlessOutputWidget


class _Progress:
    """A tqdm line per notebook: cell k/n, the section, elapsed time and an estimate of the time left."""

    def __init__(self, name: str, expected: list[float], enabled: bool) -> None:
        from tqdm.auto import tqdm

        class Bar(tqdm):
            status = ""

            @property
            def format_dict(self):
                return {**super().format_dict, "status": self.status}

        self.name, self.expected = name, expected
        self.start = time.perf_counter()
        self.cell_start = self.start
        self.done_expected = 0.0  # expected seconds of the finished cells
        self.k, self.section = 0, ""
        self.bar = Bar(
            total=max(sum(expected), 1e-9),
            disable=not enabled,
            bar_format="{desc} |{bar:20}| {status}",
            desc=name.removesuffix(".ipynb"),
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True, name="demo-progress")
        if enabled:
            self._ticker.start()

    def _show(self, status: str) -> None:
        self.bar.status = status
        self.bar.refresh()

    def left(self) -> float:
        """Estimated seconds left: the expected time of the cells still to run, scaled by this run's pace."""
        pace = (self.cell_start - self.start) / self.done_expected if self.done_expected > 1 else 1.0
        pace = min(max(pace, 0.3), 10.0)  # actual / expected seconds of the cells done so far
        current = pace * self.expected[self.k - 1] if self.k else 0.0
        return max(0.0, current - (time.perf_counter() - self.cell_start)) + pace * sum(self.expected[self.k :])

    def status(self) -> str:
        elapsed = time.perf_counter() - self.start
        where = f"cell {self.k}/{len(self.expected)}" + (f" ({self.section[:40]})" if self.section else "")
        return f"{where}, {_format_seconds(elapsed)} elapsed, ~{_format_seconds(self.left())} left"

    def _tick(self) -> None:
        interval = 1.0 if sys.stderr.isatty() else 30.0
        while not self._stop.wait(interval):
            self._show(self.status())

    def cell_started(self, k: int, section: str) -> None:
        if self.k:
            self.done_expected += self.expected[self.k - 1]
            self.bar.update(self.expected[self.k - 1])
        self.k, self.section, self.cell_start = k, section, time.perf_counter()
        self._show(self.status())

    def close(self, ok: bool) -> None:
        self._stop.set()
        if ok:
            self.bar.update(self.bar.total - self.bar.n)
            elapsed = time.perf_counter() - self.start
            self.bar.status = (
                f"{len(self.expected)} cells in {_format_seconds(elapsed)} "
                f"(expected ~{_format_seconds(sum(self.expected))})"
            )
        self.bar.close()


def run_notebook(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    mode: str = "demo",
    timeout: float | Callable[[str, float], float] | None = None,
    expected: dict[str, float] | None = None,
    progress: bool = True,
    env: dict[str, str] | None = None,
) -> NotebookRun:
    """Execute a notebook headless in `mode` (figures go to `out_dir`); save the executed copy to out_dir/notebooks.

    `timeout`: seconds per cell, or a function of (cell id, expected seconds); `expected`: cell id -> seconds
    (default: `EXPECTED_SECONDS`); `env`: added to the kernel's. A DemoError names the notebook and cell.
    """
    import nbformat
    from nbclient import NotebookClient

    if mode not in MODES:
        raise ValueError(f"Unknown demo mode {mode!r}; choose one of {', '.join(MODES)}.")
    path, out_dir = Path(path), Path(out_dir)
    name = path.name
    nb = nbformat.read(path, as_version=4)
    expected = EXPECTED_SECONDS.get(mode, {}).get(name, {}) if expected is None else expected
    ids = [cell.get("id") or str(i) for i, cell in enumerate(nb.cells)]
    code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    position = {i: k for k, i in enumerate(code, start=1)}  # cell index -> k of the n code cells
    expect = {i: float(expected.get(ids[i], DEFAULT_CELL_SECONDS[mode])) for i in code}
    index_of = {id(cell): i for i, cell in enumerate(nb.cells)}
    limit = timeout if callable(timeout) else lambda _, seconds: timeout or cell_timeout(seconds)  # None: scaled

    logs = out_dir / "notebooks"
    logs.mkdir(parents=True, exist_ok=True)
    kernel_log = logs / f"{path.stem}.kernel.log"
    bar = _Progress(name, [expect[i] for i in code], progress)
    state = {"index": None, "start": 0.0}
    cell_seconds: dict[str, float] = {}

    def on_start(cell, cell_index):
        if cell_index in position:  # nbclient calls this for markdown cells too
            state.update(index=cell_index, start=time.perf_counter())
            bar.cell_started(position[cell_index], _section_of(nb.cells, cell_index))

    def on_executed(cell, cell_index, execute_reply):
        if cell_index == state["index"]:
            cell_seconds[ids[cell_index]] = round(time.perf_counter() - state["start"], 2)

    def timeout_for(cell) -> int:
        i = index_of[id(cell)]
        return max(1, round(limit(ids[i], expect.get(i, DEFAULT_CELL_SECONDS[mode]))))

    client = NotebookClient(
        nb,
        timeout_func=timeout_for,
        resources={"metadata": {"path": str(path.parent)}},
        on_cell_start=on_start,
        on_cell_executed=on_executed,
    )
    client.widget_registry["@jupyter-widgets/output"]["OutputModel"] = _headless_output_widget()

    def where() -> str:
        i = state["index"]
        if i is None:
            return f"Notebook {name}"
        section = _section_of(nb.cells, i)
        return f"Notebook {name}, cell {position[i]}/{len(code)}" + (f" ({section})" if section else "")

    def allowed() -> tuple[int, float]:  # (timeout, expected seconds) of the running cell
        i = state["index"]
        return (timeout_for(nb.cells[i]), expect[i]) if i is not None else (0, 0.0)

    start = time.perf_counter()
    ok = False
    try:
        _execute(client, {**_kernel_env(mode, out_dir), **(env or {})}, kernel_log, where, allowed)
        ok = True
    finally:
        bar.close(ok)
    executed = logs / name
    _atomic_write_text(executed, nbformat.writes(nb))
    return NotebookRun(name, executed, time.perf_counter() - start, cell_seconds)


def _kernel_env(mode: str, out_dir: Path) -> dict[str, str]:
    """The kernel's environment: the mode's switches, outputs to `out_dir`, inline figures, passive OpenMP."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline figures
    env.update(STLIB_QUICK="1" if mode == "quick" else "0", STLIB_DEMO="1" if mode == "demo" else "0")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see the module docstring
    env["STLIB_OUTPUTS"] = str(out_dir.resolve())
    return env


def _execute(
    client, env: dict[str, str], kernel_log: Path, where: Callable[[], str], allowed: Callable[[], tuple[int, float]]
) -> None:
    """Run `client` with the kernel's stderr in `kernel_log`; a DemoError of one line names the cell on failure."""
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    try:
        with open(kernel_log, "w", encoding="utf-8") as log:  # the kernel's stderr: ZMQ/TCP warnings, tracebacks
            client.execute(env=env, stderr=log)
    except CellTimeoutError:
        seconds, usual = allowed()
        raise DemoError(
            f"{where()} gave no result within {seconds} s (expected about {usual:.0f} s); "
            f"stopped it (kernel log: {kernel_log})."
        ) from None
    except CellExecutionError as err:
        lines = [line for line in _ANSI.sub("", str(err)).splitlines() if line.strip()]
        raise DemoError(f"{where()} failed: {lines[-1] if lines else err}") from None
    except DeadKernelError:
        raise DemoError(f"{where()}: the kernel died (kernel log: {kernel_log}).") from None


def _atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` in one step (`images.atomic_write`)."""
    from stlib.images import atomic_write

    return atomic_write(path, lambda file: file.write(text.encode("utf-8")))


# ----------------------------------------------------------------------------------------------------------
# The steps after the notebooks
# ----------------------------------------------------------------------------------------------------------


def gatys_transfer(out_dir: str | os.PathLike, mode: str = "demo") -> Path:
    """A Gatys transfer of the Tübingen photo with The Starry Night, coarse to fine; returns the JPEG's path."""
    import torch

    from stlib.assets import content_image, style_image
    from stlib.gatys import GatysConfig, stylize
    from stlib.images import load_tensor, save_image

    if mode == "quick":
        config = GatysConfig(size=128, iterations=30, progress=False)
    elif mode == "demo":
        config = GatysConfig(scales=(160, 320), iterations=(50, 20), progress=False)
    else:  # coarse to fine: most iterations at 256 px, a few at 512 px for the detail
        config = GatysConfig(scales=(256, 512), iterations=(150, 50), progress=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = config.scales[-1] if config.scales else config.size
    content = load_tensor(content_image("tubingen"), size=size, device=device)
    style = load_tensor(style_image("starry_night"), size=size, device=device)
    result = stylize(content, style, config)
    return save_image(result.image, Path(out_dir) / GATYS_OUTPUT)


def shipped_networks(out_dir: str | os.PathLike, size: int = 512) -> list[Path]:
    """The sample photo through every network in checkpoints/ (one forward pass each); the JPEGs' paths."""
    from stlib.assets import content_image, repo_root
    from stlib.checkpoint import load_model
    from stlib.images import load_tensor, save_image
    from stlib.stylize import stylize_image

    photo = load_tensor(content_image("tubingen"), size=size)
    written = []
    for path in sorted((repo_root() / "checkpoints").glob("*.safetensors")):
        result = stylize_image(load_model(path, task="style"), photo)
        written.append(save_image(result, Path(out_dir) / f"johnson_tubingen_{path.stem}.jpg"))
    return written


def superres_samples(out_dir: str | os.PathLike, networks: Sequence[Path], size: int = 256) -> list[Path]:
    """Part of the sample photo downscaled, then upscaled by bicubic (left) and each network (right); the JPEGs."""
    import numpy as np
    from PIL import Image

    from stlib.assets import content_image
    from stlib.checkpoint import load_model
    from stlib.images import load_image, save_image, to_pil, to_tensor
    from stlib.superres import bicubic_upscale, crop_to_multiple, downscale
    from stlib.upscale import upscale_image

    photo = load_image(content_image("tubingen"), size=512)
    square = crop_to_multiple(photo.crop((128, 96, 128 + size, 96 + size)), 8)  # (size, size), the town's roofs
    written = []
    for path in networks:
        model = load_model(path, task="superres")
        scale = model.config.upscale
        low = downscale(square, scale)
        ours = np.asarray(to_pil(upscale_image(model, to_tensor(low))))
        pair = np.concatenate([np.asarray(bicubic_upscale(low, scale)), ours], axis=1)  # (size, 2 * size, 3)
        written.append(save_image(Image.fromarray(pair), Path(out_dir) / f"superres_tubingen_{path.stem}.jpg"))
    return written


def stylised_clip(
    out_dir: str | os.PathLike,
    network: str | os.PathLike,
    frames: int = 30,
    size: tuple[int, int] = (320, 240),
    smooth: float = 0.0,
) -> Path:
    """A moving synthetic scene beside its stylised version, frame by frame, as a looping GIF; returns its path.

    With `smooth` > 0 a third panel shows the same frames after temporal smoothing (`stlib.temporal`): before/after.
    """
    import numpy as np
    from PIL import Image

    from stlib.checkpoint import load_model
    from stlib.images import save_gif
    from stlib.stylize import stylize_frame
    from stlib.temporal import TemporalSmoother
    from stlib.video import SyntheticScene

    model = load_model(network, task="style")
    scene = SyntheticScene(*size, fps=12)
    smoother = TemporalSmoother(smooth) if smooth > 0 else None
    pairs = []
    for frame in scene.frames(frames):
        styled = stylize_frame(model, frame)
        panels = [frame, styled] + ([smoother(frame, styled)] if smoother is not None else [])
        pairs.append(Image.fromarray(np.concatenate(panels, axis=1)))
    return save_gif(pairs, Path(out_dir) / f"clip_{Path(network).stem}.gif", round(1000 / scene.fps), None)


# ----------------------------------------------------------------------------------------------------------
# The gallery
# ----------------------------------------------------------------------------------------------------------

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>stlib demo: {mode} mode</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #222; }}
h1 {{ margin-bottom: 0.2rem; }}
.meta {{ color: #666; margin-top: 0; }}
section {{ margin-top: 2.5rem; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 1.2rem; }}
figure {{ margin: 0; background: #f6f6f6; border-radius: 6px; padding: 0.6rem; }}
figure img {{ width: 100%; height: auto; display: block; }}
figcaption {{ font-size: 0.9rem; margin-top: 0.4rem; }}
figcaption code {{ color: #777; font-size: 0.8rem; }}
</style>
</head>
<body>
<h1>Neural style transfer, step by step: the demo</h1>
<p class="meta">{summary}</p>
{sections}
</body>
</html>
"""


def _figure_caption(name: str, nb=None) -> str:
    """CAPTIONS[name], else the heading of the notebook section that saves it, else the file name."""
    if name in CAPTIONS:
        return CAPTIONS[name]
    if name.startswith("johnson_tubingen_"):
        return f"Johnson et al.: the photo through the shipped {name[17:].rsplit('.', 1)[0]} network, one forward pass."
    if nb is not None:
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and name in cell.source:
                section = _section_of(nb.cells, i)
                if section:
                    return section
    return name


def _notebook_title(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def write_gallery(
    out_dir: str | os.PathLike,
    groups: Sequence[tuple[str, str | None, Sequence[Path]]],
    summary: str,
    mode: str = "demo",
) -> Path:
    """Write out_dir/index.html: one section per (title, link or None, figures), each figure with its caption."""
    import nbformat

    out_dir = Path(out_dir)
    parts = []
    for title, link, figures in groups:
        nb = None
        if link is not None and (out_dir / link).suffix == ".ipynb" and (out_dir / link).is_file():
            nb = nbformat.read(out_dir / link, as_version=4)
        items = []
        for figure in figures:
            rel = Path(os.path.relpath(figure, out_dir)).as_posix()
            caption = html.escape(_figure_caption(figure.name, nb))
            items.append(
                f'<figure><a href="{html.escape(rel)}"><img src="{html.escape(rel)}" alt="{caption}" loading="lazy">'
                f"</a><figcaption>{caption} <code>{html.escape(figure.name)}</code></figcaption></figure>"
            )
        heading = html.escape(title)
        if link is not None:
            heading += f' <small>(<a href="{html.escape(link)}">executed notebook</a>)</small>'
        parts.append(f'<section><h2>{heading}</h2>\n<div class="grid">\n' + "\n".join(items) + "\n</div></section>")
    page = _PAGE.format(mode=html.escape(mode), summary=html.escape(summary), sections="\n".join(parts))
    return _atomic_write_text(out_dir / "index.html", page)


# ----------------------------------------------------------------------------------------------------------
# The whole demo
# ----------------------------------------------------------------------------------------------------------


def _step(label: str, progress: bool) -> Callable[[str], None]:
    """Print '<label> ...' now and return a function printing the outcome with the elapsed time."""
    start = time.perf_counter()
    if progress:
        print(f"{label} ...", file=sys.stderr, flush=True)

    def done(what: str) -> None:
        print(f"  {what} ({time.perf_counter() - start:.0f} s)", flush=True)

    return done


def run_demo(config: DemoConfig | None = None) -> DemoResult:
    """Run the notebooks and the extra steps of `config` and write the gallery; return what was done."""
    import nbformat

    from stlib.assets import outputs_dir, repo_root

    config = config or DemoConfig()
    config.validate()
    out = Path(config.out) if config.out else outputs_dir()
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    notebooks_dir = repo_root() / "notebooks"
    notebooks, env = _notebooks_and_env(config)
    for name in notebooks:
        if not (notebooks_dir / name).is_file():
            raise DemoError(f"No notebook {name} in {notebooks_dir}.")

    def timeout(cell_id: str, expected: float) -> float:
        if config.timeout is not None:
            return config.timeout
        return cell_timeout(expected, config.timeout_factor, config.min_timeout)

    runs: list[NotebookRun] = []
    groups: list[tuple[str, str | None, list[Path]]] = []
    for name in notebooks:
        before = time.time()
        run = run_notebook(notebooks_dir / name, out, config.mode, timeout=timeout, progress=config.progress, env=env)
        runs.append(run)
        prefix = name.split("_", 1)[0] + "_"
        order = {figure: k for k, figure in enumerate(saved_figure_names(notebooks_dir / name))}
        figures = sorted(_new_figures(out, before, prefix), key=lambda p: (order.get(p.name, len(order)), p.name))
        print(f"{name}: {len(figures)} figure{'s' * (len(figures) != 1)} in {run.seconds:.0f} s", flush=True)
        title = _notebook_title(nbformat.read(run.path, as_version=4), name)
        groups.append((title, Path(os.path.relpath(run.path, out)).as_posix(), figures))

    if config.extras:
        groups.append(
            ("The demo's own results: a Gatys transfer, the shipped networks and a clip", None, _extras(out, config))
        )

    seconds = time.time() - start
    minutes, secs = divmod(round(seconds), 60)
    summary = (
        f"{config.mode} mode: notebooks {', '.join(n.split('_', 1)[0] for n in notebooks) or 'none'}"
        f"{' and the extra steps' if config.extras else ''} in {minutes} min {secs} s on {os.cpu_count()} CPU "
        f"cores, finished {time.strftime('%Y-%m-%d %H:%M')}."
    )
    gallery = write_gallery(out, groups, summary, mode=config.mode)
    times = {run.name: run.cell_seconds for run in runs}
    _atomic_write_text(out / "demo_times.json", json.dumps({config.mode: times}, indent=1) + "\n")
    figures = [f for _, _, group in groups for f in group]
    return DemoResult(config.mode, out, gallery, runs, figures, seconds)


def _notebooks_and_env(config: DemoConfig) -> tuple[tuple[str, ...], dict[str, str]]:
    """The notebooks to run and what the kernels' environment adds: notebook 03's photos, or 03 left out."""
    notebooks = config.chosen_notebooks()
    if TRAINING_NOTEBOOK not in notebooks or config.mode == "quick":  # QUICK: the notebook's bundled sample
        return notebooks, {}
    photos = config.training_photos()
    if photos is None:
        print(
            f"Skipping {TRAINING_NOTEBOOK}: it trains on photos and there are none in {' or '.join(COCO_FOLDERS)} "
            "(`python -m stlib download-coco --split val2017`, 0.8 GB) nor a folder given (`make demo FULL=1 "
            "DATA=folder`).",
            flush=True,
        )
        return tuple(n for n in notebooks if n != TRAINING_NOTEBOOK), {}
    return notebooks, {"STLIB_DATA": str(photos)}


def _extras(out: Path, config: DemoConfig) -> list[Path]:
    """The steps after the notebooks: a Gatys transfer, every shipped network, a clip, the upscaled sample."""
    from stlib.assets import repo_root

    extras: list[Path] = []
    done = _step(f"Gatys transfer of the photo with The Starry Night ({config.mode} mode)", config.progress)
    try:
        extras.append(gatys_transfer(out, config.mode))
    except Exception as err:
        raise DemoError(f"The Gatys transfer failed: {err}") from None
    done(f"wrote {extras[-1]}")
    networks = sorted((repo_root() / "checkpoints").glob("*.safetensors"))
    if networks:
        done = _step(f"The photo through the {len(networks)} shipped networks", config.progress)
        written = shipped_networks(out, size=256 if config.mode == "quick" else 512)
        extras.extend(written)
        done(f"wrote {', '.join(p.name for p in written)}")
        clip_net = next((p for p in networks if p.stem == "the_scream"), networks[0])
        done = _step(f"A short clip stylised with {clip_net.stem}", config.progress)
        frames = {"quick": 6, "demo": 20, "full": 48}[config.mode]
        size = (160, 120) if config.mode == "quick" else (320, 240)
        extras.append(stylised_clip(out, clip_net, frames=frames, size=size, smooth=0.8))
        done(f"wrote {extras[-1]}")
    else:
        print("No trained networks in checkpoints/: skipping the feed-forward steps.", flush=True)
    upscalers = sorted((repo_root() / "checkpoints" / "superres").glob("*.safetensors"))
    if upscalers:
        done = _step(f"The photo upscaled by the {len(upscalers)} super-resolution networks", config.progress)
        written = superres_samples(out, upscalers, size=128 if config.mode == "quick" else 256)
        extras.extend(written)
        done(f"wrote {', '.join(p.name for p in written)}")
    return extras


def _new_figures(out: Path, since: float, prefix: str) -> list[Path]:
    """Figures in `out` named prefix* and written at or after `since` (seconds since the epoch), by name."""
    return sorted(
        p
        for p in out.iterdir()
        if p.is_file()
        and p.name.startswith(prefix)
        and p.suffix.lower() in FIGURE_SUFFIXES
        and p.stat().st_mtime >= since - 1
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colours in kernel tracebacks
_FIGURE_NAME = re.compile(r"""OUT\s*/\s*f?["']([0-9]{2}_[A-Za-z0-9_]+\.(?:png|jpg|jpeg|gif))["']""")


def saved_figure_names(notebook: str | os.PathLike) -> list[str]:
    """The figure file names a notebook saves as ``OUT / "NN_name.png"``, in the order the notebook saves them."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    names = [m for c in nb.cells if c.cell_type == "code" for m in _FIGURE_NAME.findall(c.source)]
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    """The command line (``make demo``): run the course headless; one line and exit code 2 for a known problem."""
    parser = argparse.ArgumentParser(
        prog="tools/demo.py",
        description="Run the course headless with progress: notebooks 01, 02 and 04 (all five with --full), a Gatys "
        "transfer, the sample photo through every network in checkpoints/, a short stylised clip and the sample "
        "upscaled by every super-resolution network; results and outputs/index.html, a gallery of every figure, go "
        "to outputs/. Default: reduced sizes, a few minutes on a CPU.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny sizes and few iterations (as in CI)")
    size.add_argument("--full", action="store_true", help="every notebook at full size (about an hour on a CPU)")
    parser.add_argument(
        "--data", metavar="DIR",
        help="--full: photos for notebook 03's training (default: data/coco/train2017; without it 03 is skipped)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, metavar="S",
        help="seconds allowed per notebook cell (default: ten times the cell's expected time, at least 300)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full" if args.full else "demo"
    config = DemoConfig(mode=mode, data=args.data, timeout=args.timeout, progress=not args.quiet)
    try:
        config.validate()
        result = run_demo(config)
    except (ValueError, DemoError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    minutes, seconds = divmod(round(result.seconds), 60)
    print(f"Done in {minutes}:{seconds:02d} ({mode} mode): {len(result.figures)} figures in {result.out}")
    print(f"Open {result.gallery} in a browser.")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # stlib from this repository, also uninstalled
    sys.exit(main())
