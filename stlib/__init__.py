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

__version__ = "0.1.0"
