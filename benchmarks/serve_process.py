"""Start servers on free loopback ports, and stop them: ``python -m runtime.serve`` (a real tritonserver
through PyTriton, with the image endpoint beside it), ``python -m runtime.serve.images`` on its own, and
rembg's ``rembg s`` for comparison.

Used by the load test and by the tests. ``runtime.serve`` runs in its own venv (``make serve-venv``:
nvidia-pytriton pins numpy<2), found as ``$U2NET_SERVE_PYTHON`` or ``.venv-serve/bin/python``; HOME and
TMPDIR point into the given folder, so what the server leaves behind can be checked after it stops.
The image endpoint runs in the main venv (``$U2NET_MAIN_PYTHON`` or ``.venv/bin/python``), rembg in
``.venv-rembg`` (``make rembg-venv``, or ``$U2NET_REMBG_PYTHON``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180  # a cold tritonserver + Python backend stub on a busy 2-core machine


def serve_python() -> Path:
    """The serve venv's interpreter (it may not exist: callers say what to do)."""
    return Path(os.environ.get("U2NET_SERVE_PYTHON", REPO / ".venv-serve" / "bin" / "python"))


def missing_serve_venv() -> str | None:
    """Why the serve venv cannot be used, or None. A venv whose install did not finish has no stamp."""
    path = serve_python()
    if not path.is_file():
        return f"runtime.serve needs its own venv (make serve-venv): no interpreter at {path}"
    venv = path.parents[1]
    if (venv / "pyvenv.cfg").is_file() and not (venv / ".installed-stamp").is_file():
        return f"{venv}: its install did not finish (no .installed-stamp): rerun make serve-venv"
    return None


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class _Process:
    """What every server process here has: ``proc`` and its ``log`` file; ``stop`` sends a signal and waits."""

    proc: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # never leave it behind, even when the test fails
                self.proc.wait(10)
        return self.proc.returncode


@dataclass
class Server(_Process):
    proc: subprocess.Popen
    name: str
    http: int
    grpc: int
    metrics: int
    image: int
    home: Path
    log: Path

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc}/{self.name}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http}/{self.name}"

    def image_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.image}{path}"



def http_status(url: str, timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def start_server(engine: Path, folder: Path, *extra: str) -> Server:
    """Start the server and wait until its model is ready (Triton's own model-ready endpoint)."""
    python = serve_python()
    if not python.is_file():
        raise FileNotFoundError(missing_serve_venv())
    http, grpc, metrics, image = free_ports(4)
    home = folder / "h"  # short: the server's Unix sockets live under TMPDIR
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    log = folder / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(home), "TMPDIR": str(home / "tmp")}
    cmd = [str(python), "-m", "runtime.serve", "--engine", str(engine), "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--image-port", str(image), *extra]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    if "--name" not in extra:
        raise ValueError("start_server needs --name NAME among the extra arguments")
    name = extra[extra.index("--name") + 1]
    server = Server(proc, name, http, grpc, metrics, image, home, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    # Triton's server-ready answers before the model bound by PyTriton is loaded: wait for the model.
    while http_status(f"http://127.0.0.1:{http}/v2/models/{name}/ready") != 200:
        if proc.poll() is not None:
            raise AssertionError(f"runtime.serve exited with {proc.returncode}:\n{server.log_text()[-3000:]}")
        if time.monotonic() > deadline:
            server.stop(signal.SIGKILL)
            raise AssertionError(f"runtime.serve not ready after {START_TIMEOUT_S} s:\n{server.log_text()[-3000:]}")
        time.sleep(0.5)
    images_off = "--image-port" in extra and extra[extra.index("--image-port") + 1] == "0"
    while not images_off and http_status(server.image_url("/readyz")) != 200:  # the image endpoint starts after
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop(signal.SIGKILL)
            raise AssertionError(f"runtime.serve's image endpoint did not start:\n{server.log_text()[-3000:]}")
        time.sleep(0.3)
    return server


def command_lines() -> list[tuple[int, str]]:
    """(pid, command line) of every process this user can see, as ``ps`` shows them to anyone."""
    lines = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                lines.append((int(proc.name), (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")))
            except OSError:
                continue
    return lines


def leftovers(server: Server) -> list[str]:
    """What a stopped server left: processes still holding its ports, files in its TMPDIR or ~/.cache/pytriton."""
    found = []
    markers = (f"--grpc-port {server.grpc}", f"grpc://127.0.0.1:{server.grpc}/")  # tritonserver, the image endpoint
    for pid, cmdline in command_lines():
        if any(marker in cmdline for marker in markers):
            found.append(f"process {pid}: {cmdline[:120]}")
    found += [str(p) for p in (server.home / "tmp").iterdir()]
    cache = server.home / ".cache" / "pytriton"
    if cache.exists():
        found += [str(p) for p in cache.iterdir()]
    return found


# --- the image endpoint on its own, and rembg's server: the two sides of the image load test -------------

IMAGE_START_TIMEOUT_S = 180  # the main venv's imports (OpenCV, OpenVINO) on a busy 2-core machine
REMBG_START_TIMEOUT_S = 300  # rembg imports scipy, scikit-image and pymatting (numba): ~30 s cold here


@dataclass
class HttpServer(_Process):
    """A server process on a loopback port, with its log file; ``stop`` sends SIGTERM and waits."""

    proc: subprocess.Popen
    port: int
    log: Path
    name: str = "image endpoint"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"



def main_python() -> Path:
    """The main venv's interpreter: ``$U2NET_MAIN_PYTHON``, else ``.venv/bin/python`` beside this repository."""
    return Path(os.environ.get("U2NET_MAIN_PYTHON", REPO / ".venv" / "bin" / "python"))


def _wait_until(server: HttpServer, url: str, timeout_s: float) -> HttpServer:
    deadline = time.monotonic() + timeout_s
    while http_status(url) != 200:
        if server.proc.poll() is not None:
            raise AssertionError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_text()[-3000:]}")
        if time.monotonic() > deadline:
            server.stop(signal.SIGKILL)
            raise AssertionError(f"{server.name} not ready after {timeout_s:g} s:\n{server.log_text()[-3000:]}")
        time.sleep(0.3)
    return server


def start_images(engine: str | Path, folder: Path, *extra: str, python: Path | None = None,
                 port: int | None = None) -> HttpServer:  # fmt: skip
    """``python -m runtime.serve.images --engine ENGINE`` on a free loopback port, once its ``/readyz`` says 200."""
    port = port or free_ports(1)[0]
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"images-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # runtime/__init__.py turns ONNX Runtime's telemetry off
    cmd = [str(python or main_python()), "-m", "runtime.serve.images", "--engine", str(engine), "--port", str(port),
           *extra]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    return _wait_until(HttpServer(proc, port, log), f"http://127.0.0.1:{port}/readyz", IMAGE_START_TIMEOUT_S)


def rembg_python() -> Path:
    """The interpreter of rembg's server: ``$U2NET_REMBG_PYTHON``, else ``.venv-rembg/bin/python`` (``make rembg-venv``)."""
    return Path(os.environ.get("U2NET_REMBG_PYTHON", REPO / ".venv-rembg" / "bin" / "python"))


def missing_rembg() -> str | None:
    python = rembg_python()
    if not (python.parent / "rembg").is_file():
        return f"rembg's server needs its venv (make rembg-venv): no rembg command beside {python}"
    return None


REMBG_MODEL = "u2netp.onnx"


def start_rembg(onnx: Path, folder: Path) -> HttpServer:
    """``rembg s`` (rembg's own FastAPI server, its web UI off) on a free loopback port, serving ``onnx``.

    rembg takes a custom ONNX file through its ``u2net_custom`` model with ``extras={"model_path": ...}``
    and, since 2.0.86, only from below its models folder: ``U2NET_HOME`` is a private folder holding the
    same file (a hard link, or a copy across file systems). Requests: see ``rembg_request_fields``.
    """
    port = free_ports(1)[0]
    home = folder / "rembg-home"
    home.mkdir(parents=True, exist_ok=True)
    target = home / REMBG_MODEL
    if not target.exists():
        try:
            os.link(onnx, target)
        except OSError:
            shutil.copyfile(onnx, target)
    log = folder / f"rembg-{port}.log"
    env = {**os.environ, "U2NET_HOME": str(home), "HOME": str(folder), "ORT_DISABLE_TELEMETRY": "1"}  # rembg's ORT
    env.pop("REMBG_HOME", None)
    cmd = [str(rembg_python().parent / "rembg"), "s", "--no-ui", "-h", "127.0.0.1", "-p", str(port), "-l", "warning"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = HttpServer(proc, port, log, name="rembg s")
    return _wait_until(server, f"http://127.0.0.1:{port}/api", REMBG_START_TIMEOUT_S)


def rembg_request(server: HttpServer) -> tuple[str, dict[str, str]]:
    """(path with query, text form fields) of a mask request to rembg's ``POST /api/remove`` for our ONNX file."""
    home = Path(server.log).parent / "rembg-home"
    extras = urllib.parse.quote(json.dumps({"model_path": str(home / REMBG_MODEL)}))
    return f"/api/remove?extras={extras}", {"model": "u2net_custom", "om": "true"}
