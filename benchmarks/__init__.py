"""Speed and quality benchmarks (scripts; ``python -m benchmarks.webcam`` imports the tests' browser harness)."""
