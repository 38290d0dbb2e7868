"""A small HTTP endpoint for clients that are not Python: encoded image in, PNG mask or cutout out.

    curl --data-binary @photo.jpg -o cutout.png  http://127.0.0.1:8080/v1/cutout
    curl --data-binary @photo.jpg -o mask.png    http://127.0.0.1:8080/v1/mask
    curl --data-binary @photo.jpg -o card.png   'http://127.0.0.1:8080/v1/composite?bg=%2300ff00'
    curl http://127.0.0.1:8080/healthz ; curl http://127.0.0.1:8080/readyz

The network runs on the Triton server (through a ``Remover`` on ``grpc://...``, the client backend of
``--engine grpc://...``), so these requests join the dynamic batcher with everyone else's. Every answer
comes from ``Remover.render``: the same load -> run -> render path as the CLI, so the bytes are the
CLI's for the same file and options. Limits, checked before any pixel is decoded: the body size (413),
the image's pixel count from its header (413: a decompression bomb is refused, never decoded), and the
number of images being worked on at once (503 when busy). ``bg`` is a colour only: the server never
reads a file named by a client.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from runtime.api import Remover
from runtime.backends.base import BackendError
from runtime.io import ImageError
from runtime.render import FORMATS, MODES, Backdrop, RenderOptions, parse_color

log = logging.getLogger(__name__)


class ImageService:
    """Limits + one ``Remover`` (thread-safe over the Triton client backend), shared by the handler threads."""

    def __init__(self, remover: Remover, *, max_bytes: int, max_active: int, ready: Callable[[], bool]) -> None:
        self.remover = remover
        self.max_bytes = max_bytes
        self.ready = ready
        self.slots = threading.BoundedSemaphore(max_active)

    def render(self, data: bytes, options: RenderOptions) -> bytes:
        """ImageError (client's fault) or BackendError (server's) on failure."""
        return self.remover.render(data, options)


def options_from_query(mode: str, query: str) -> RenderOptions:
    """``/v1/MODE?bg=...&format=...`` -> RenderOptions; ValueError with one line for a bad value. ``bg`` is
    a colour only (a picture would be a file on the server)."""
    params = parse_qs(query)
    unknown = sorted(set(params) - {"bg", "format"})
    if unknown:
        raise ValueError(f"unknown query parameter {unknown[0]!r}; this endpoint takes bg and format")
    fmt = params.get("format", ["png"])[-1]
    if fmt not in FORMATS:
        raise ValueError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    background = Backdrop(color=parse_color(params["bg"][-1])) if "bg" in params else None
    return RenderOptions(mode=mode, format=fmt, **({"background": background} if background else {}))


class ImageHandler(BaseHTTPRequestHandler):
    """One request; ``service`` is set on the subclass ``make_handler`` makes."""

    service: ImageService
    protocol_version = "HTTP/1.1"
    server_version = "u2net-serve"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s - %s", self.address_string(), format % args)

    def _reply(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code: int, message: str) -> None:
        self.close_connection = True  # the unread rest of a refused body must not be taken for a request
        self._reply(code, (message + "\n").encode("utf-8"))

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._reply(200, b"ok\n")
        elif path == "/readyz":
            ok = self.service.ready()
            self._reply(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
        else:
            self._error(404, f"no such endpoint {path}; POST an image to /v1/{{{','.join(MODES)}}}")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        mode = url.path.removeprefix("/v1/")
        if not url.path.startswith("/v1/") or mode not in MODES:
            return self._error(404, f"no such endpoint {url.path}; POST an image to /v1/{{{','.join(MODES)}}}")
        try:
            options = options_from_query(mode, url.query)
        except ValueError as exc:
            return self._error(400, str(exc))
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._error(411, "send the image as the body with a Content-Length")
        if int(length) > self.service.max_bytes:
            return self._error(413, f"body of {int(length)} bytes exceeds the limit of {self.service.max_bytes}")
        if not self.service.slots.acquire(timeout=30):
            return self._error(503, "busy: too many images in progress, try again")
        try:
            data = self.rfile.read(int(length))
            self._answer(data, options)
        finally:
            self.service.slots.release()

    def _answer(self, data: bytes, options: RenderOptions) -> None:
        try:
            body = self.service.render(data, options)
        except ImageError as exc:
            code = 413 if "exceeds the limit" in str(exc) else 415
            return self._error(code, str(exc))
        except BackendError as exc:
            log.error("%s", exc)
            return self._error(503, f"inference failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the endpoint down
            log.exception("image endpoint")
            return self._error(500, f"internal error: {type(exc).__name__}")
        self._reply(200, body, options.media_type)


def make_handler(service: ImageService) -> type[ImageHandler]:
    return type("BoundImageHandler", (ImageHandler,), {"service": service})


def start_image_server(service: ImageService, host: str, port: int) -> ThreadingHTTPServer:
    """Bind (raises OSError when the port is taken) and serve in a daemon thread."""
    server = ThreadingHTTPServer((host, port), make_handler(service))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="image-endpoint", daemon=True).start()
    return server

