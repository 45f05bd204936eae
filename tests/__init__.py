"""The test suite (a package, so that `tests.browser` is importable: ``python -m benchmarks.webcam``)."""
