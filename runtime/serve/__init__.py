"""Serving: an engine on a real Triton Inference Server (PyTriton), and an HTTP image endpoint.

- ``runtime.serve.cli``: ``python -m runtime.serve``, Triton plus the image endpoint beside it (a child
  process in the main environment, over gRPC); stops both on SIGTERM;
- ``runtime.serve.triton``: binds one of the project's backends to PyTriton under ``export.to_triton``'s
  model name and I/O, and starts Triton with its control APIs off;
- ``runtime.serve.images``: ``python -m runtime.serve.images``, the image endpoint on its own (any engine
  the CLI opens, or a Triton URL);
- ``runtime.serve.app`` (the Starlette application), ``server`` (uvicorn's settings, time limits, graceful
  stop), ``engine`` (the render pool around one ``Remover``), ``forms`` (multipart bodies), ``metrics``
  (Prometheus text) and ``page.html`` (the try-it page).
"""
