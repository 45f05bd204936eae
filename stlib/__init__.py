"""stlib: the library behind the neural style transfer course.

Modules (one concept each): `images` (load, convert, show, save), `vgg` (feature extraction with forward
hooks), `losses` (content, style, total variation), `gatys` (optimisation-based style transfer and
feature inversion), `color` (colour preservation), `plots` (feature maps, Gram matrices, loss curves),
`transformer` (Johnson et al.'s feed-forward network), `data` (photo folders, COCO download), `train`
(perceptual-loss training), `stylize` (model files, images, tiles, frames), `video` (video files),
`webcam` (the live Jupyter widget), `assets` (the bundled photos and paintings), `cli` (``python -m stlib``).
"""

__version__ = "0.1.0"
