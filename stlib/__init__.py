"""stlib: the library behind the neural style transfer course.

Modules (one concept each): `images` (load, convert, show, save), `vgg` (feature extraction with forward
hooks), `losses` (content, style, total variation), `gatys` (optimisation-based style transfer and
feature inversion), `assets` (the bundled photos and paintings), `cli` (``python -m stlib``).
"""

__version__ = "0.1.0"
