"""Lean U²-Net runtime: numpy, OpenCV and the engine's own library (never torch)."""
