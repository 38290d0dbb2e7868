"""Start ``python -m runtime.serve`` (a real tritonserver through PyTriton) on free loopback ports, and stop it.

Used by the load test and by the tests. The server runs in its own venv (``make serve-venv``:
nvidia-pytriton pins numpy<2), found as ``$U2NET_SERVE_PYTHON`` or ``.venv-serve/bin/python``. HOME and
TMPDIR point into the given folder, so what the server leaves behind can be checked after it stops.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
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


@dataclass
class Server:
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
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(home), "TMPDIR": str(home / "tmp"),
           "ORT_DISABLE_TELEMETRY": "1"}  # fmt: skip
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
    return server


def leftovers(server: Server) -> list[str]:
    """What a stopped server left: processes still holding its ports, files in its TMPDIR or ~/.cache/pytriton."""
    found = []
    marker = f"--grpc-port {server.grpc}"
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(f"process {proc.name}: {cmdline[:120]}")
    found += [str(p) for p in (server.home / "tmp").iterdir()]
    cache = server.home / ".cache" / "pytriton"
    if cache.exists():
        found += [str(p) for p in cache.iterdir()]
    return found
