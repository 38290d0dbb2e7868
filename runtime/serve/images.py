"""The HTTP image endpoint on its own: ``python -m runtime.serve.images --engine ENGINE``.

    python -m runtime.serve.images --engine models/u2netp.onnx          # http://127.0.0.1:8080, OpenVINO where faster
    python -m runtime.serve.images --engine grpc://127.0.0.1:8001/u2netp   # in front of a Triton server
    python -m runtime.serve.images --engine u2netp.onnx --host 0.0.0.0 --token-file /run/secrets/u2net-token
    curl -F file=@photo.jpg -o cutout.png http://127.0.0.1:8080/v1/cutout
    curl --data-binary @photo.jpg -o mask.webp 'http://127.0.0.1:8080/v1/mask?format=webp'
    curl -F file=@photo.jpg -F bg=@beach.jpg -o card.png http://127.0.0.1:8080/v1/composite

A Starlette application (``runtime.serve.app``) on uvicorn (``runtime.serve.server``). The engine is any
the CLI opens, chosen by the same backend table and arguments (``--backend/--provider/--precision``,
``--threads``); ``python -m runtime.serve`` starts this command beside its Triton server with
``--engine grpc://...``. Open ``http://127.0.0.1:8080/`` for a page to try it; ``/openapi.json``
describes the API, ``/metrics`` counts it. SIGTERM and SIGINT stop accepting, answer the requests in
flight, then exit 0; 2 means it could not start (engine, token file or port).
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from runtime.argtypes import pixel_count, positive_float, positive_int
from runtime.backends import BackendError, add_backend_arguments
from runtime.logs import setup_logging

log = logging.getLogger("runtime.serve.images")

DEFAULT_PORT = 8080
DEFAULT_MAX_PIXELS = 50_000_000


def add_endpoint_arguments(p: argparse.ArgumentParser) -> list[argparse.Action]:
    """The endpoint's limits and token, shared with ``python -m runtime.serve`` (which passes them on)."""
    g = p.add_argument_group("image endpoint")
    added: list[argparse.Action] = []

    def add(*names: str, **options) -> None:  # noqa: ANN003 - argparse's
        added.append(g.add_argument(*names, **options))

    add("--token-file", type=Path, help="require 'Authorization: Bearer TOKEN' on /v1/* and /metrics, "
                   "TOKEN being this file's content (one line; keep the file private)")  # fmt: skip
    add("--max-body-mb", type=positive_int, default=50, help="largest body, refused from its "
                   "Content-Length before reading (413; default 50)")  # fmt: skip
    add("--max-pixels", type=pixel_count, default=DEFAULT_MAX_PIXELS, help="largest image, from its "
                   "header before decoding (413; default 50M)")  # fmt: skip
    add("--max-active", type=positive_int, help="images decoded, run or encoded at once (default: 2 "
                   "for an in-process engine, 8 for a Triton URL)")  # fmt: skip
    add("--max-queue", type=positive_int, default=512, help="image requests admitted at once, "
                   "reading, waiting or working; beyond it 503 + Retry-After (default 512)")  # fmt: skip
    add("--max-buffered-mb", type=positive_int, default=1024, help="request bodies held at once "
                   "(503 beyond; default 1024)")  # fmt: skip
    add("--body-timeout", type=positive_float, default=30.0, help="seconds for a whole body once its "
                   "headers are in (408; default 30)")  # fmt: skip
    add("--header-timeout", type=positive_float, default=10.0, help="seconds for a request's headers "
                   "(408; default 10)")  # fmt: skip
    add("--keep-alive", type=positive_int, default=5, help="seconds an idle connection stays open (5)")
    add("--max-connections", type=positive_int, default=2048, help="open connections at once; "
                   "beyond it 503 (default 2048)")  # fmt: skip
    add("--backlog", type=positive_int, default=2048, help="listen backlog (default 2048)")
    add("--drain-seconds", type=positive_int, default=60, help="on SIGTERM, longest wait for the "
                   "requests in flight (default 60)")  # fmt: skip
    return added


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.serve.images", description=__doc__.split("\n\n")[0],
                                epilog="See the module docstring (and docs/serving.md) for examples.")  # fmt: skip
    p.add_argument("-e", "--engine", required=True, help="engine file (.onnx, .plan) or Triton URL (grpc://HOST:PORT/MODEL)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only; "
                   "0.0.0.0 exposes it to the network)")  # fmt: skip
    p.add_argument("--port", "--image-port", dest="port", type=positive_int, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT})")  # fmt: skip
    add_backend_arguments(p)
    p.add_argument("--threads", type=positive_int, help="inference threads of each engine instance (default: "
                   "the cores shared out among --instances)")  # fmt: skip
    p.add_argument("--instances", type=positive_int, default=1, help="copies of an in-process engine running "
                   "at once, like Triton's instance groups (default 1)")  # fmt: skip
    add_endpoint_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (uvicorn's too)")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings only: no access lines")
    return p


def endpoint_argv(args: argparse.Namespace) -> list[str]:
    """``add_endpoint_arguments``' values as command-line arguments again (for a child process)."""
    argv: list[str] = []
    for action in add_endpoint_arguments(argparse.ArgumentParser(add_help=False)):
        value = getattr(args, action.dest, None)
        if value is not None:
            argv += [action.option_strings[0], str(value)]
    return argv


def read_token(path: Path) -> bytes:
    """The bearer token from ``path``: one non-empty line. ValueError saying what is wrong; a file that other
    users can read is refused (the token would not be secret)."""
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the token file: {getattr(exc, 'strerror', None) or exc}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{path}: the token file is readable by other users; chmod 600 it")
    if not text or "\n" in text or len(text) < 16:
        raise ValueError(f"{path}: the token file must hold one line of at least 16 characters")
    return text.encode("utf-8")


def model_ready(url: str) -> bool:
    """Whether the Triton model behind ``url`` (grpc://host:port/name) answers ready."""
    from runtime.backends.triton import TritonUrl

    target = TritonUrl.parse(url)
    try:
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(target.host) as client:
            return bool(client.is_model_ready(target.model))
    except Exception:  # noqa: BLE001 - unreachable or not loaded: not ready, whatever the cause
        return False


def run(args: argparse.Namespace) -> int:
    """Bind, open the engine, serve until SIGTERM/SIGINT; 0 after a clean stop, 2 when it could not start."""
    from runtime.api import Remover
    from runtime.render import MODES
    from runtime.serve.app import ImageService, Limits, build_app
    from runtime.serve.engine import RenderPool
    from runtime.serve.server import ServerSettings, listen, serve

    try:
        token = read_token(args.token_file) if args.token_file else None
        sock = listen(args.host, args.port, args.backlog)  # before the engine: a taken port fails at once
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: image endpoint {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    threads = args.threads or (max(1, (os.cpu_count() or 1) // args.instances) if args.instances > 1 else None)
    removers: list[Remover] = []
    try:
        for _ in range(args.instances):
            removers.append(Remover(args.engine, provider=args.provider, threads=threads, backend=args.backend,
                                    precision=args.precision, max_pixels=args.max_pixels))  # fmt: skip
            if removers[0].backend.name == "triton" and args.instances > 1:
                raise BackendError(f"{args.engine}: --instances is for in-process engines (Triton has its own)")
    except BackendError as exc:
        for remover in removers:
            remover.close()
        sock.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    remover = removers[0]
    pool = RenderPool(removers, args.max_active)
    try:
        settings = ServerSettings(args.host, args.port, args.backlog, args.max_connections, args.header_timeout,
                                  args.keep_alive, args.drain_seconds)  # fmt: skip
        ready = (lambda: model_ready(args.engine)) if remover.backend.name == "triton" else None
        limits = Limits(args.max_body_mb << 20, args.max_queue, args.max_buffered_mb << 20, args.body_timeout)
        service = ImageService(pool, limits, token=token, ready=ready)
        host = f"[{args.host}]" if ":" in args.host else args.host
        copies = f"{args.instances} x " if args.instances > 1 else ""
        print(f"serving {copies}{remover.backend.describe()}: images http://{host}:{args.port}/v1/{{{','.join(MODES)}}} "
              f"({pool.max_active} at once{', bearer token required' if token else ''})", file=sys.stderr, flush=True)

        def stopping(name: str) -> None:
            service.draining = True
            log.info("%s: answering the %d requests in flight, then stopping", name, service.admitted)

        serve(build_app(service), sock, settings, stopping)
        return 0
    finally:
        pool.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(verbose=args.verbose, quiet=args.quiet)
    if not args.verbose:
        logging.getLogger("uvicorn").setLevel(logging.WARNING)
        for noisy in ("tritonclient",):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
