"""stlib: the library behind the neural style transfer course.

Modules (one concept each), lowest layer first; a module imports only from the layers below it:

- `assets` (the course's files, caches, digests), `hardware` (device, precision, bf16 detection, several
  processes and their stop signals), `images` (load, convert, save, list, atomic writes, GIFs), `losses` (content,
  style, total variation, stability), `color` (colour preservation), `options` (config fields that are
  command-line options, their limits);
- `vgg` (the loss network: features by forward hooks), `transformer` (Johnson et al.'s feed-forward network),
  `data` (photo folders, resumable batches of (input, target) pairs, COCO download), `plots` (every figure: image
  grids, feature maps, Gram matrices, loss curves; the only module that imports matplotlib);
- `perceptual` (the objective: layers, weights and the normalised loss terms), `checkpoint` (model files and
  training states), `backends` (fast inference engines), `prune` (a narrower copy of a trained network),
  `runlog` (a training run's progress bar, CSV and validation grids);
- `gatys` (image optimisation: style transfer and feature inversion), `train` (the one training loop: any network,
  objective and (input, target) source), `stylize` (images and frames through a trained network), `distill` (slim
  students: a teacher's pictures and a student objective on train's loop), `temporal` (flicker of stylised video:
  the warping error and flow-guided smoothing);
- `video` (video files, the synthetic scene, live camera and file sources), `desktop` (the OpenCV window app),
  `webcam` (the live Jupyter widget);
- `cli` (``python -m stlib``).
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

SHORT_SPIN_ENV = "STLIB_SHORT_SPIN"
"""Environment variable: "0" makes `short_openmp_spin` leave OpenMP's busy-wait alone."""


def short_openmp_spin() -> bool:
    """Shorten OpenMP's busy-wait after parallel work, unless set already; call it before torch is imported.

    After each parallel call PyTorch's idle OpenMP threads spin before they sleep: GNU OpenMP (PyTorch's Linux
    wheels) 300,000 rounds, about 11 ms of one core after every frame of the slim network on a 2-core AMD EPYC;
    LLVM and Intel OpenMP (macOS, MKL builds) 200 ms. On a small CPU that core is taken from whatever runs next,
    such as the video smoothing. 10,000 rounds (and 1 ms) still bridge the gaps between one network's layers. The
    command line calls it before it loads torch; True if it set something, False where torch is loaded already
    (too late: OpenMP reads them once) or `STLIB_SHORT_SPIN=0` (docs/performance.md, "Short busy-wait").
    """
    if "torch" in _sys.modules or _os.environ.get(SHORT_SPIN_ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    _os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # GNU OpenMP: rounds of busy-wait
    _os.environ.setdefault("KMP_BLOCKTIME", "1")  # LLVM and Intel OpenMP: milliseconds of busy-wait
    return True
