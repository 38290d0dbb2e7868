"""Lean U²-Net runtime: numpy, OpenCV and the engine's own library (never torch).

Importing any ``runtime`` module (every CLI of the project does, before ONNX Runtime) switches
ONNX Runtime's telemetry off unless the user chose otherwise: a batch tool must make no
outbound connection, and some ONNX Runtime builds resolve a telemetry host in ordinary use.
"""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
