"""Serve an engine on a real Triton Inference Server (PyTriton) on any machine, without the official container.

    python -m runtime.serve --engine u2netp.onnx                   # 127.0.0.1: HTTP 8000, gRPC 8001, metrics 8002
    python -m runtime.serve --engine u2net.plan --max-batch 16 --host 0.0.0.0    # reachable from other machines
    python -m runtime.infer --engine grpc://127.0.0.1:8001/u2netp photos/ -o out  # a client, same as for the container

The model has the name (default: the engine's variant) and the I/O of ``export.to_triton``'s repository
(``image`` float32 (3,S,S) -> ``mask`` float32 (1,S,S), dynamic batching, preprocessing ``parameters``), so
one client works against both. An image endpoint (``--image-port``, default 8080) takes encoded images and
returns PNG/WebP masks, cutouts and composites (see ``runtime.serve.images``). Readiness: Triton's ``/v2/models/NAME/ready`` or
``GET /readyz`` on the image port; liveness ``GET /healthz``.

SIGTERM and SIGINT stop the image endpoint, then Triton (its ``tritonserver`` and backend stubs), then
remove the private workspace (never ``~/.cache/pytriton``). Needs ``.venv-serve`` (``make serve-venv``):
nvidia-pytriton pins numpy<2. Exit status: 0 stopped cleanly, 2 could not start.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from runtime.argtypes import pixel_count, positive_int
from runtime.backends import BackendError, add_backend_arguments, open_backend
from runtime.errors import first_line
from runtime.logs import setup_logging

log = logging.getLogger("runtime.serve")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("-e", "--engine", required=True, help=".onnx (ONNX Runtime) or .plan (TensorRT) engine")
    p.add_argument("--name", help="model name (default: the engine's variant, as export.to_triton names it)")
    p.add_argument("--host", default="127.0.0.1", help="address every endpoint binds to (default: 127.0.0.1, "
                   "this machine only; 0.0.0.0 exposes them to the network)")  # fmt: skip
    p.add_argument("--http-port", type=positive_int, default=8000, help="Triton HTTP/REST (KServe v2)")
    p.add_argument("--grpc-port", type=positive_int, default=8001, help="Triton gRPC (KServe v2)")
    p.add_argument("--metrics-port", type=positive_int, default=8002, help="Triton Prometheus metrics")
    p.add_argument("--image-port", type=int, default=8080, help="encoded-image endpoint; 0 turns it off")
    p.add_argument("--max-batch", type=positive_int, default=8, help="largest batch Triton forms (default: 8; "
                   "capped by the engine's profile)")  # fmt: skip
    p.add_argument("--queue-delay-us", type=int, default=2000, help="longest wait for a fuller batch (default 2000)")
    add_backend_arguments(p)
    p.add_argument("--threads", type=positive_int, help="inference threads of ONNX Runtime or OpenVINO "
                   "(default: one per core)")
    p.add_argument("--max-body-mb", type=positive_int, default=50, help="image endpoint: largest body (default 50)")
    p.add_argument("--max-pixels", type=pixel_count, default=50_000_000, help="image endpoint: largest image, "
                   "from its header before decoding (default 50M)")  # fmt: skip
    p.add_argument("--max-active", type=positive_int, default=4, help="image endpoint: images in progress at once")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, Triton's own log too")
    return p


def python_library_path() -> None:
    """Let the Python backend stub load *this* Python's libpython (a pyenv build keeps it off the system path)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and sysconfig.get_config_var("Py_ENABLE_SHARED"):
        current = os.environ.get("LD_LIBRARY_PATH", "")
        if not current.startswith(libdir):
            os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


class StopSignal:
    """SIGTERM/SIGINT set an event the main thread waits on; cleanup then runs in order, once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: str | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        self.received = signal.Signals(signum).name
        self.event.set()

    def wait(self, alive: Callable[[], bool]) -> None:
        while not self.event.wait(1.0):
            if not alive():
                log.error("Triton stopped on its own; shutting down")
                return


def triton_config(args: argparse.Namespace, log_file: Path):
    from pytriton.triton import TritonConfig

    return TritonConfig(
        log_file=None if args.verbose else log_file,  # Triton's start-up tables would bury our one line
        http_address=args.host, http_port=args.http_port, grpc_address=args.host, grpc_port=args.grpc_port,
        metrics_address=args.host, metrics_port=args.metrics_port, allow_metrics=True, allow_gpu_metrics=False,
        allow_cpu_metrics=True, log_verbose=1 if args.verbose else 0, exit_on_error=True,
    )  # fmt: skip


def security_config():
    """PyTriton's access token on what can change the server (model loading, shared memory, tracing, log
    settings); statistics stay readable, so a load test can see the batch sizes Triton formed."""
    from pytriton.triton import TritonSecurityConfig

    return TritonSecurityConfig(restricted_endpoints=["shared-memory", "model-repository", "trace", "logging"])


def model_ready(url: str) -> bool:
    """Whether the Triton model behind ``url`` (grpc://host:port/name) answers ready."""
    from runtime.backends.triton import TritonUrl

    target = TritonUrl.parse(url)
    try:
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(target.host) as client:
            return bool(client.is_model_ready(target.model))
    except Exception:
        return False


def serve(args: argparse.Namespace, stop: StopSignal) -> int:
    try:
        from pytriton.triton import Triton
    except ImportError as exc:
        print(f"error: runtime.serve needs nvidia-pytriton ({exc}); run it from .venv-serve (make serve-venv)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        backend = open_backend(args.engine, backend=args.backend, provider=args.provider, threads=args.threads,
                               precision=args.precision)  # fmt: skip
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    busy = ports_in_use(args)
    if busy:
        backend.close()
        # Checked up front: PyTriton would otherwise talk to whatever already listens there, as if its own.
        print(f"error: {args.host}: port {', '.join(busy)} already in use; choose others with "
              "--http-port/--grpc-port/--metrics-port/--image-port", file=sys.stderr)  # fmt: skip
        return 2
    name = args.name or backend.artifact.model_name
    workspace = private_workspace()
    triton = image_server = remover = None
    try:
        python_library_path()
        triton = Triton(config=triton_config(args, workspace / "tritonserver.log"), workspace=workspace / "p",
                        security_config=security_config())
        from runtime.serve.triton import bind_backend

        max_batch = bind_backend(triton, backend, name, args.max_batch, args.queue_delay_us)
        triton.run()  # starts tritonserver and waits until the model is loaded
        grpc_url = f"grpc://{_loopback(args.host)}:{args.grpc_port}/{name}"
        if args.image_port:
            image_server, remover = _start_images(args, grpc_url)
        print(f"serving {backend.describe()} as model {name!r} (batches up to {max_batch}): "
              f"http://{args.host}:{args.http_port}  grpc://{args.host}:{args.grpc_port}  "
              f"metrics http://{args.host}:{args.metrics_port}/metrics"
              + (f"  images http://{args.host}:{args.image_port}/v1/cutout" if image_server else ""),
              file=sys.stderr, flush=True)  # fmt: skip
        stop.wait(triton.is_alive)
        return 0
    except (BackendError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # PyTriton's start-up errors (port taken, server died) come in several types
        print(f"error: Triton did not start: {first_line(exc)}{_log_tail(workspace / 'tritonserver.log')}", file=sys.stderr)
        return 2
    finally:
        if stop.received:
            print(f"{stop.received}: shutting down", file=sys.stderr, flush=True)
        if image_server is not None:
            image_server.shutdown()
            image_server.server_close()
        if remover is not None:
            remover.close()
        if triton is not None:
            _stop_triton(triton)
        backend.close()
        shutil.rmtree(workspace, ignore_errors=True)


def private_workspace() -> Path:
    """A fresh folder for PyTriton's files (removed at exit), never ``~/.cache/pytriton``.

    Short on purpose: PyTriton puts Unix sockets in it, and a socket path has at most 107 bytes.
    """
    base = tempfile.gettempdir()
    if len(base) > 40:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="u2s-", dir=base))


def ports_in_use(args: argparse.Namespace) -> list[str]:
    """The requested ports that cannot be bound on ``args.host`` right now, as 'NAME PORT'."""
    wanted = {"HTTP": args.http_port, "gRPC": args.grpc_port, "metrics": args.metrics_port, "image": args.image_port}
    busy = []
    for label, port in wanted.items():
        if not port:
            continue
        try:
            with socket.create_server((args.host, port)):
                pass
        except OSError:
            busy.append(f"{port} ({label})")
    return busy


def _stop_triton(triton) -> None:
    """Stop tritonserver and its backend stubs; one line if PyTriton's own clean-up fails halfway."""
    try:
        triton.stop()  # stops tritonserver, unloads, then cleans PyTriton's workspace
    except Exception as exc:  # noqa: BLE001 - shutting down must go on to remove the workspace
        server = getattr(triton, "_triton_server", None)
        if server is not None:
            try:
                server.stop()
            except Exception:  # noqa: BLE001
                pass
        log.warning("Triton stopped with an error: %s", first_line(exc))


def _log_tail(path: Path) -> str:
    """The last error lines of Triton's own log, to say why it did not start."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines()
                 if ln.startswith("E") and "CudaDriverHelper" not in ln]  # that one is every CPU machine's
    except OSError:
        return ""
    return "".join(f"\n  {ln[:300]}" for ln in lines[-3:])


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host


def _start_images(args: argparse.Namespace, grpc_url: str):
    from runtime.api import Remover
    from runtime.serve.images import ImageService, start_image_server

    remover = Remover(grpc_url, max_pixels=args.max_pixels)
    service = ImageService(remover, max_bytes=args.max_body_mb << 20, max_active=args.max_active,
                           ready=lambda: model_ready(grpc_url))  # fmt: skip
    try:
        return start_image_server(service, args.host, args.image_port), remover
    except OSError as exc:
        remover.close()
        raise OSError(f"image endpoint {args.host}:{args.image_port}: {exc.strerror or exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(verbose=args.verbose)
    if not args.verbose:
        for noisy in ("pytriton", "tritonclient", "sh"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = StopSignal()  # before anything starts, so a signal during start-up still cleans up
    return serve(args, stop)
