"""Serve an engine on a real Triton Inference Server (PyTriton) on any machine, without the official container.

    python -m runtime.serve --engine u2netp.onnx                   # 127.0.0.1: HTTP 8000, gRPC 8001, metrics 8002
    python -m runtime.serve --engine u2net.plan --max-batch 16 --host 0.0.0.0    # reachable from other machines
    python -m runtime.infer --engine grpc://127.0.0.1:8001/u2netp photos/ -o out  # a client, same as for the container
    curl -F file=@photo.jpg -o cutout.png http://127.0.0.1:8080/v1/cutout        # the image endpoint beside it

The model has the name (default: the engine's variant) and the I/O of ``export.to_triton``'s repository
(``image`` float32 (3,S,S) -> ``mask`` float32 (1,S,S), dynamic batching, preprocessing ``parameters``), so
one client works against both. Triton's control APIs (model loading, shared memory, trace and log
settings) are off: see ``runtime.serve.triton``.

The HTTP image endpoint (``--image-port``, default 8080; 0 turns it off) is ``python -m runtime.serve.images``
started as a child process in the main environment (``--image-python``; default ``$U2NET_IMAGE_PYTHON``,
else ``.venv/bin/python`` beside this repository) with ``--engine grpc://...`` pointing at this Triton:
there it reads every format the CLI reads (this venv's OpenCV 4.x decodes no GIF) and renders the CLI's
bytes. ``--images-in-process`` serves it from this process instead. Readiness: Triton's
``/v2/models/NAME/ready`` or ``GET /readyz`` on the image port; liveness ``GET /healthz``.

SIGTERM and SIGINT stop the image endpoint (it answers what is in flight first), then Triton (its
``tritonserver`` and backend stubs), then remove the private workspace (never ``~/.cache/pytriton``).
Needs ``.venv-serve`` (``make serve-venv``): nvidia-pytriton pins numpy<2. Exit status: 0 stopped
cleanly, 2 could not start.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from runtime.argtypes import positive_int
from runtime.backends import BackendError, add_backend_arguments, open_backend
from runtime.errors import first_line
from runtime.logs import setup_logging
from runtime.serve.images import add_endpoint_arguments, endpoint_argv

log = logging.getLogger("runtime.serve")

REPO = Path(__file__).resolve().parents[2]
IMAGE_START_S = 120  # the child's imports and its first call to Triton, on a busy 2-core machine
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("-e", "--engine", required=True, help=".onnx (ONNX Runtime) or .plan (TensorRT) engine")
    p.add_argument("--name", help="model name (default: the engine's variant, as export.to_triton names it)")
    p.add_argument("--host", default="127.0.0.1", help="address every endpoint binds to (default: 127.0.0.1, "
                   "this machine only; 0.0.0.0 exposes them to the network; with --token-file Triton's own "
                   "ports stay on 127.0.0.1)")  # fmt: skip
    p.add_argument("--http-port", type=positive_int, default=8000, help="Triton HTTP/REST (KServe v2)")
    p.add_argument("--grpc-port", type=positive_int, default=8001, help="Triton gRPC (KServe v2)")
    p.add_argument("--metrics-port", type=positive_int, default=8002, help="Triton Prometheus metrics")
    p.add_argument("--image-port", type=int, default=8080, help="HTTP image endpoint; 0 turns it off")
    p.add_argument("--max-batch", type=positive_int, default=8, help="largest batch Triton forms (default: 8; "
                   "capped by the engine's profile)")  # fmt: skip
    p.add_argument("--queue-delay-us", type=int, default=2000, help="longest wait for a fuller batch (default 2000)")
    add_backend_arguments(p)
    p.add_argument("--threads", type=positive_int, help="inference threads of ONNX Runtime or OpenVINO "
                   "(default: one per core)")
    p.add_argument("--image-python", type=Path, help="Python of the main environment, which runs the image "
                   "endpoint (default: $U2NET_IMAGE_PYTHON, else .venv/bin/python beside this repository)")  # fmt: skip
    p.add_argument("--images-in-process", action="store_true", help="serve images from this process instead "
                   "(this venv's OpenCV 4.x: no GIF)")  # fmt: skip
    add_endpoint_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, Triton's own log too")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings only: no access lines")
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

    def wait(self, alive: Callable[[], str | None]) -> None:
        """Until a signal, or until ``alive()`` names a part that stopped on its own."""
        while not self.event.wait(1.0):
            stopped = alive()
            if stopped:
                log.error("%s stopped on its own; shutting down", stopped)
                return


def triton_host(args: argparse.Namespace) -> str:
    """Where Triton's ports bind: ``--host``, except that with a token file they stay on loopback (Triton
    cannot take a token without showing it in ``ps``; the token-guarded image endpoint is the way in)."""
    if args.token_file and args.host not in LOOPBACK:
        return "127.0.0.1"
    return args.host


def triton_config(args: argparse.Namespace, log_file: Path):
    from pytriton.triton import TritonConfig

    host = triton_host(args)
    return TritonConfig(
        log_file=None if args.verbose else log_file,  # Triton's start-up tables would bury our one line
        http_address=host, http_port=args.http_port, grpc_address=host, grpc_port=args.grpc_port,
        metrics_address=host, metrics_port=args.metrics_port, allow_metrics=True, allow_gpu_metrics=False,
        allow_cpu_metrics=True, log_verbose=1 if args.verbose else 0, exit_on_error=True,
    )  # fmt: skip


def image_python(args: argparse.Namespace) -> Path:
    if args.image_python:
        return args.image_python
    return Path(os.environ.get("U2NET_IMAGE_PYTHON") or REPO / ".venv" / "bin" / "python")


def serve(args: argparse.Namespace, stop: StopSignal) -> int:
    try:
        import pytriton.triton  # noqa: F401
    except ImportError as exc:
        print(f"error: runtime.serve needs nvidia-pytriton ({exc}); run it from .venv-serve (make serve-venv)",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.image_port and not args.images_in_process and not image_python(args).is_file():
        print(f"error: no Python for the image endpoint at {image_python(args)}: make venv, or pass "
              "--image-python, --images-in-process or --image-port 0", file=sys.stderr)  # fmt: skip
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
    triton = images = None
    try:
        python_library_path()
        from runtime.serve.triton import bind_backend, new_triton, start_triton

        triton = new_triton(triton_config(args, workspace / "tritonserver.log"), workspace / "p")
        max_batch = bind_backend(triton, backend, name, args.max_batch, args.queue_delay_us)
        start_triton(triton)  # tritonserver loads the model from its repository; returns once it is served
        host = triton_host(args)
        grpc_url = f"grpc://{_loopback(host)}:{args.grpc_port}/{name}"
        if args.image_port:
            images = InProcessImages(args, grpc_url) if args.images_in_process else ImageProcess(args, grpc_url)
        print(f"serving {backend.describe()} as model {name!r} (batches up to {max_batch}): "
              f"http://{host}:{args.http_port}  grpc://{host}:{args.grpc_port}  "
              f"metrics http://{host}:{args.metrics_port}/metrics"
              + (f"  images http://{args.host}:{args.image_port}/" if images else ""),
              file=sys.stderr, flush=True)  # fmt: skip

        def stopped() -> str | None:
            if not triton.is_alive():
                return "Triton"
            return "the image endpoint" if images is not None and not images.alive() else None

        stop.wait(stopped)
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
        if images is not None:
            images.stop()
        if triton is not None:
            _stop_triton(triton)
        backend.close()
        shutil.rmtree(workspace, ignore_errors=True)


class ImageProcess:
    """``python -m runtime.serve.images`` in the main environment, in front of this Triton over gRPC."""

    def __init__(self, args: argparse.Namespace, grpc_url: str) -> None:
        self.drain_s = args.drain_seconds
        cmd = [str(image_python(args)), "-m", "runtime.serve.images", "--engine", grpc_url, "--host", args.host,
               "--port", str(args.image_port), *endpoint_argv(args), *(["-v"] if args.verbose else []),
               *(["-q"] if args.quiet else [])]  # fmt: skip
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, preexec_fn=_die_with_parent)
        ready = f"http://{_loopback(args.host)}:{args.image_port}/readyz"
        deadline = time.monotonic() + IMAGE_START_S
        while not _answers(ready):
            if self.proc.poll() is not None:
                raise OSError(f"the image endpoint exited with status {self.proc.returncode} at start-up")
            if time.monotonic() > deadline:
                self.stop()
                raise OSError(f"the image endpoint was not ready after {IMAGE_START_S} s")
            time.sleep(0.2)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM: it answers the requests in flight, then exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.drain_s + 15)
            except subprocess.TimeoutExpired:
                log.warning("the image endpoint did not stop within %d s; killed", self.drain_s + 15)
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.returncode:
            log.warning("the image endpoint exited with status %d", self.proc.returncode)


class InProcessImages:
    """The image endpoint on a thread of this process (``--images-in-process``)."""

    def __init__(self, args: argparse.Namespace, grpc_url: str) -> None:
        from runtime.api import Remover
        from runtime.serve.app import ImageService, Limits, build_app
        from runtime.serve.engine import RenderPool
        from runtime.serve.images import model_ready, read_token
        from runtime.serve.server import BackgroundServer, ServerSettings, listen

        try:
            token = read_token(args.token_file) if args.token_file else None
        except ValueError as exc:
            raise OSError(str(exc)) from None
        self.pool = RenderPool(Remover(grpc_url, max_pixels=args.max_pixels), args.max_active)
        try:
            settings = ServerSettings(args.host, args.image_port, args.backlog, args.max_connections,
                                      args.header_timeout, args.keep_alive, args.drain_seconds)  # fmt: skip
            try:
                sock = listen(args.host, args.image_port, args.backlog)
            except OSError as exc:
                raise OSError(f"image endpoint {args.host}:{args.image_port}: {exc.strerror or exc}") from None
            limits = Limits(args.max_body_mb << 20, args.max_queue, args.max_buffered_mb << 20, args.body_timeout)
            self.service = ImageService(self.pool, limits, token=token, ready=lambda: model_ready(grpc_url))
            self.server = BackgroundServer(build_app(self.service), sock, settings, lambda name: None)
        except BaseException:
            self.pool.close()
            raise

    def alive(self) -> bool:
        return True

    def stop(self) -> None:
        self.service.draining = True
        self.server.stop()
        self.pool.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when runtime.serve dies, even by SIGKILL (Linux; elsewhere nothing)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def private_workspace() -> Path:
    """A fresh folder for PyTriton's files (removed at exit), never ``~/.cache/pytriton``.

    Short on purpose: PyTriton puts Unix sockets in it, and a socket path has at most 107 bytes.
    """
    base = tempfile.gettempdir()
    if len(base) > 40:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="u2s-", dir=base))


def ports_in_use(args: argparse.Namespace) -> list[str]:
    """The requested ports that cannot be bound right now, as 'PORT (NAME)'."""
    host = triton_host(args)
    wanted = {"HTTP": (host, args.http_port), "gRPC": (host, args.grpc_port), "metrics": (host, args.metrics_port),
              "image": (args.host, args.image_port)}  # fmt: skip
    busy = []
    for label, (address, port) in wanted.items():
        if not port:
            continue
        try:
            with socket.create_server((address, port)):
                pass
        except OSError:
            busy.append(f"{port} ({label})")
    return busy


def _stop_triton(triton) -> None:
    """Stop tritonserver and its backend stubs; one line if PyTriton's own clean-up fails halfway."""
    try:
        triton.stop()  # stops tritonserver, then cleans PyTriton's workspace
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(verbose=args.verbose, quiet=args.quiet)
    if not args.verbose:
        for noisy in ("pytriton", "tritonclient", "sh", "uvicorn"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = StopSignal()  # before anything starts, so a signal during start-up still cleans up
    return serve(args, stop)
