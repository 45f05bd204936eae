"""stlib: the library behind the neural style transfer course.

Modules (one concept each), lowest layer first; a module imports only from the layers below it:

- `assets` (the course's files, caches, digests), `hardware` (device, precision, bf16 detection, several
  processes), `images` (load, convert, show, save, list, atomic writes), `losses` (content, style, total
  variation), `color` (colour preservation), `options` (config fields that are command-line options);
- `vgg` (the loss network: features by forward hooks), `transformer` (Johnson et al.'s feed-forward network),
  `data` (photo folders, a resumable sampler, COCO download), `plots` (feature maps, Gram matrices, loss curves);
- `perceptual` (the objective: layers, weights and the normalised loss terms), `checkpoint` (model files and
  training states), `backends` (fast inference engines);
- `gatys` (image optimisation: style transfer and feature inversion), `train` (training a network on an
  objective), `stylize` (images and frames through a trained network), `distill` (slim students), `temporal`
  (flicker of stylised video: the warping error and flow-guided smoothing);
- `video` (video files, the synthetic scene, live camera and file sources), `desktop` (the OpenCV window app),
  `webcam` (the live Jupyter widget);
- `cli` (``python -m stlib``).
"""

__version__ = "0.1.0"
