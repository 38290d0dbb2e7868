"""Serving: an engine on a real Triton Inference Server (PyTriton), and an HTTP image endpoint beside it.

- ``runtime.serve.cli``: ``python -m runtime.serve``, which starts both and stops both on SIGTERM;
- ``runtime.serve.triton``: binds one of the project's backends to PyTriton under ``export.to_triton``'s
  model name and I/O;
- ``runtime.serve.images``: the encoded-image endpoint, a thin layer over ``Remover.render``.
"""
