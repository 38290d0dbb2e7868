"""The image endpoint as an ASGI application (Starlette): a photo in, its mask, cutout or composite out.

    POST /v1/MODE[?format=png|webp][&bg=COLOUR]   MODE from runtime.render.MODES (mask, cutout, composite);
         body: the image itself, or multipart/form-data with the image as field ``file`` and, for
         composites, field ``bg``: a background picture (a file part) or a colour (text)
    GET  /               a page to try it            GET /openapi.json    this API, described
    GET|HEAD /healthz    the process answers         GET|HEAD /readyz     the engine answers (503 while not)
    GET  /metrics        Prometheus text (runtime.serve.metrics)

Every answer is rendered by the one load -> run -> render path (``runtime.serve.engine``), so it is the
file ``python -m runtime.infer`` writes for the same image and options. An image request passes these
gates in order, each refusing with one line of text before the next costs anything: bearer token (401),
route, method and query (404, 405, 400), Content-Length (411; 413 above ``--max-body-mb``, nothing read),
room in the queue (503 + Retry-After), the whole body within ``--body-timeout`` (408), then a worker:
the image's header (413 for a decompression bomb, 415 for what cannot be decoded), decode, run, encode.
The body is read before a worker is taken, so a slow sender holds a connection, never the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.backends.base import BackendError
from runtime.errors import first_line
from runtime.io import ImageError
from runtime.render import FORMATS, MODES, WHITE, Backdrop, RenderOptions, parse_color
from runtime.serve.engine import RenderPool
from runtime.serve.forms import FormError, is_multipart, parse_form
from runtime.serve.metrics import Metrics

log = logging.getLogger("runtime.serve.images")
access_log = logging.getLogger("runtime.serve.access")

PAGE = Path(__file__).with_name("page.html")
BACKGROUND_MODES = ("composite",)  # the modes that draw over a background (``bg``)
READY_CACHE_S = 1.0  # a probe storm asks the engine at most once a second
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src blob: data:; "
               "connect-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """What one request and all of them together may hold (the ``python -m runtime.serve.images`` options)."""

    max_body: int = 50 << 20  # bytes of one body, checked from Content-Length before reading (413)
    max_queue: int = 512  # image requests admitted at once: reading, waiting or being worked on (503 beyond)
    max_buffered: int = 1 << 30  # body bytes held at once, by Content-Length (503 beyond)
    body_timeout: float = 30.0  # seconds for a whole body once its headers are in (408)


class BodyTimeout(Exception):
    pass


class ImageService:
    """The state the routes share: the render pool, the limits, the counters and the optional token.

    Admission counters change on the event loop's thread only (no lock)."""

    def __init__(self, pool: RenderPool, limits: Limits = Limits(), *, token: bytes | None = None,
                 ready: Callable[[], bool] | None = None) -> None:  # fmt: skip
        self.pool = pool
        self.limits = limits
        self.token = token
        self._ready = ready or (lambda: True)
        self._ready_at, self._ready_value = -math.inf, False
        self.admitted = 0
        self.buffered = 0
        self.active = 0
        self.draining = False
        self._slots: asyncio.Semaphore | None = None
        self.metrics = Metrics(in_flight=lambda: self.admitted, active=lambda: self.active)

    # -- gates -----------------------------------------------------------------------------------
    def authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credential.strip().encode("latin-1"), self.token)

    def admit(self, length: int) -> str | None:
        """Take a place in the queue for a body of ``length`` bytes, or say why not."""
        if self.draining:
            return "shutting down"
        if self.admitted >= self.limits.max_queue or self.buffered + length > self.limits.max_buffered:
            return "busy"
        self.admitted += 1
        self.buffered += length
        return None

    def release(self, length: int) -> None:
        self.admitted -= 1
        self.buffered -= length

    def retry_after(self) -> int:
        """Seconds until the queue ahead has likely drained, 1..60."""
        wait = self.admitted * self.pool.seconds_per_image / self.pool.max_active
        return max(1, min(60, math.ceil(wait)))

    @contextlib.asynccontextmanager
    async def worker(self) -> AsyncIterator[None]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.pool.max_active)
        async with self._slots:
            self.active += 1
            try:
                yield
            finally:
                self.active -= 1

    async def ready(self) -> bool:
        now = time.monotonic()
        if now - self._ready_at > READY_CACHE_S:
            loop = asyncio.get_running_loop()
            self._ready_value = bool(await loop.run_in_executor(None, self._ready))
            self._ready_at = now
        return self._ready_value


def error(status: int, message: str, headers: dict[str, str] | None = None, *, close: bool = False) -> Response:
    """One line of text; ``close`` when the request's body was not read (it must not be taken for a request)."""
    headers = dict(headers or {})
    if close:
        headers["Connection"] = "close"
    return PlainTextResponse(" ".join(str(message).split()) + "\n", status, headers)


def _has_body(request: Request) -> bool:
    return request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers


def query_for(request: Request, mode: str) -> dict[str, str]:
    """The query of ``/v1/MODE``, checked: known parameters, each once, valid values; ValueError otherwise."""
    allowed = ("format", "bg") if mode in BACKGROUND_MODES else ("format",)
    query: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key not in allowed:
            raise ValueError(f"unknown query parameter {key!r}; /v1/{mode} takes {' and '.join(allowed)}")
        if key in query:
            raise ValueError(f"query parameter {key!r} given twice")
        query[key] = value
    if query.get("format", "png") not in FORMATS:
        raise ValueError(f"format: {query['format']!r} is not one of {', '.join(FORMATS)}")
    if "bg" in query:
        parse_color(query["bg"])  # a colour only: the server never reads a file a client names
    return query


async def read_body(request: Request, timeout: float) -> bytearray | None:
    """The whole body within ``timeout`` seconds (BodyTimeout), or None when the client went away."""
    body = bytearray()

    async def pull() -> None:
        async for chunk in request.stream():
            body.extend(chunk)

    try:
        await asyncio.wait_for(pull(), timeout)
    except asyncio.TimeoutError:
        raise BodyTimeout(f"the body did not arrive within {timeout:g} s ({len(body)} bytes came)") from None
    except ClientDisconnect:
        return None
    return body


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def download_name(upload: str | None, mode: str, fmt: str) -> str:
    stem = _SAFE_NAME.sub("_", Path(upload or "image").stem)[:80].strip("._") or "image"
    return f"{stem}-{mode}{FORMATS[fmt].suffix}"


def _image_problem(exc: ImageError, what: str) -> ImageError:
    return ImageError(str(exc).replace("<bytes>", what, 1))


def render_request(pool: RenderPool, mode: str, query: dict[str, str], body: bytearray,
                   content_type: str) -> tuple[bytes, str, str]:  # fmt: skip
    """On a worker thread: the body (raw image or form) -> (encoded output, media type, download name)."""
    image, upload, bg_text, backdrop = body, None, query.get("bg"), WHITE
    if is_multipart(content_type):
        form = parse_form(body, content_type, ("file", "bg") if mode in BACKGROUND_MODES else ("file",))
        if "file" not in form:
            raise FormError("no form field 'file' holding the image")
        image, upload = form["file"].data, form["file"].filename
        bg = form.get("bg")
        if bg is not None and "bg" in query:
            raise FormError("bg given both in the query and in the form")
        if bg is not None and (bg.filename is not None or bg.content_type.startswith("image/")):
            try:
                backdrop = Backdrop.of(bytes(bg.data), max_pixels=pool.remover.max_pixels)
            except ImageError as exc:
                raise _image_problem(exc, "bg") from None
        elif bg is not None:
            bg_text = bg.text
    if bg_text:
        backdrop = Backdrop(color=parse_color(bg_text))
    options = RenderOptions(mode=mode, format=query.get("format", "png"), background=backdrop)
    try:
        data = pool.render(image, options)
    except ImageError as exc:
        raise _image_problem(exc, "image") from None
    return data, options.media_type, download_name(upload, mode, options.format)


async def image(request: Request, mode: str) -> Response:
    service: ImageService = request.app.state.service
    if not service.authorized(request):
        service.metrics.reject("unauthorized")
        return error(401, "a bearer token is required (Authorization: Bearer TOKEN)",
                     {"WWW-Authenticate": 'Bearer realm="u2net"'}, close=True)  # fmt: skip
    try:
        query = query_for(request, mode)
    except ValueError as exc:
        return error(400, str(exc), close=True)
    declared = request.headers.get("content-length")  # h11 has refused malformed and conflicting ones (400)
    if "transfer-encoding" in request.headers:  # its size unknown before reading: refused, ambiguous with a length
        if declared is not None:
            return error(400, "Content-Length and Transfer-Encoding together; send only a Content-Length", close=True)
        return error(411, "send the image with a Content-Length, not chunked", close=True)
    if declared is None:
        return error(411, "send the image with a Content-Length (a raw body or multipart/form-data)", close=True)
    length = int(declared)
    if length == 0:
        return error(400, "the body is empty: send an image")
    if length > service.limits.max_body:
        service.metrics.reject("too_large")
        return error(413, f"body of {length} bytes exceeds the limit of {service.limits.max_body}", close=True)
    refusal = service.admit(length)
    if refusal:
        service.metrics.reject(refusal.replace(" ", "_"))
        return error(503, f"{refusal}: try again later", {"Retry-After": str(service.retry_after())}, close=True)
    try:
        return await _answer(request, service, mode, query)
    finally:
        service.release(length)


async def _answer(request: Request, service: ImageService, mode: str, query: dict[str, str]) -> Response:
    try:
        body = await read_body(request, service.limits.body_timeout)
    except BodyTimeout as exc:
        service.metrics.reject("body_timeout")
        return error(408, str(exc), close=True)
    if body is None:
        service.metrics.reject("disconnected")
        return error(400, "the client went away before its body was complete", close=True)
    content_type = request.headers.get("content-type", "")
    async with service.worker():
        if await request.is_disconnected():  # gave up while queued: its answer would reach no one
            service.metrics.reject("disconnected")
            return error(400, "the client went away while its image was queued", close=True)
        try:
            data, media_type, name = await service.pool.run(
                lambda: render_request(service.pool, mode, query, body, content_type))
        except (FormError, ImageError, BackendError, ValueError) as exc:
            return _failure(exc, service)
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the endpoint down
            log.error("/v1/%s: %s: %s", mode, type(exc).__name__, first_line(exc))
            log.debug("/v1/%s failed", mode, exc_info=True)
            return error(500, f"internal error: {type(exc).__name__}")
    headers = {"Content-Disposition": f'inline; filename="{name}"', "Cache-Control": "no-store"}
    return Response(data, 200, headers, media_type=media_type)


def _failure(exc: Exception, service: ImageService) -> Response:
    if isinstance(exc, ImageError):
        return error(413 if "exceeds the limit" in str(exc) else 415, str(exc))
    if isinstance(exc, BackendError) and not isinstance(exc, ValueError):
        log.error("%s", first_line(exc))
        return error(503, f"inference failed: {first_line(exc)}", {"Retry-After": str(service.retry_after())})
    return error(400, first_line(exc))


def image_route(mode: str) -> Route:
    async def endpoint(request: Request) -> Response:
        return await image(request, mode)

    return Route(f"/v1/{mode}", endpoint, methods=["POST"], name=mode)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def readyz(request: Request) -> Response:
    service: ImageService = request.app.state.service
    if service.draining:
        return error(503, "shutting down")
    if not await service.ready():
        return error(503, "not ready: the engine does not answer")
    return PlainTextResponse("ready\n")


async def metrics(request: Request) -> Response:
    service: ImageService = request.app.state.service
    if not service.authorized(request):
        service.metrics.reject("unauthorized")
        return error(401, "a bearer token is required (Authorization: Bearer TOKEN)",
                     {"WWW-Authenticate": 'Bearer realm="u2net"'})  # fmt: skip
    return PlainTextResponse(service.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's 404 and 405 (and any other HTTPException) as one line that says what exists."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 404:
        message = f"no such endpoint {path}; POST an image to /v1/{{{','.join(MODES)}}}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {path}; use {(exc.headers or {}).get('Allow', 'another method')}"
    else:
        message = str(exc.detail)
    return error(exc.status_code, message, exc.headers, close=_has_body(request))


def page_html(token_required: bool) -> str:
    """The try-it page with the mode and format choices of the tables filled in."""
    default = RenderOptions().mode  # the CLI's default: cutout
    modes = "".join(f'<option value="{m.name}"{" selected" if m.name == default else ""}>{m.name}: {m.help}</option>'
                    for m in MODES.values())  # fmt: skip
    formats = "".join(f'<option value="{f}">{f}</option>' for f in FORMATS)
    return (PAGE.read_text(encoding="utf-8").replace("<!--MODES-->", modes).replace("<!--FORMATS-->", formats)
            .replace("data-token-required=\"\"", f'data-token-required="{"yes" if token_required else ""}"'))  # fmt: skip


def openapi(token_required: bool) -> dict[str, Any]:
    """An OpenAPI 3.1 description of the endpoints, generated from the MODES and FORMATS tables."""
    text = {"text/plain": {"schema": {"type": "string"}}}
    errors = {str(code): {"description": why, "content": text} for code, why in (
        (400, "bad query or form"), (401, "missing or wrong bearer token"), (408, "body too slow"),
        (411, "no Content-Length"), (413, "body or image too large"), (415, "not a decodable image"),
        (503, "busy (see Retry-After) or the engine is down"))}  # fmt: skip
    paths: dict[str, Any] = {}
    for mode in MODES.values():
        params = [{"name": "format", "in": "query", "schema": {"enum": list(FORMATS), "default": "png"}}]
        form = {"file": {"type": "string", "format": "binary"}}
        if mode.name in BACKGROUND_MODES:
            params.append({"name": "bg", "in": "query", "description": "colour: a name, #RRGGBB, #RGB or R,G,B",
                           "schema": {"type": "string", "default": "white"}})  # fmt: skip
            form["bg"] = {"description": "a background picture (file) or colour (text)"}
        paths[f"/v1/{mode.name}"] = {"post": {
            "summary": mode.help, "parameters": params,
            "requestBody": {"required": True, "content": {
                "image/*": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {"schema": {"type": "object", "properties": form, "required": ["file"]}}}},
            "responses": {"200": {"description": mode.help, "content": {
                f.media_type: {"schema": {"type": "string", "format": "binary"}} for f in FORMATS.values()}},
                **errors}}}  # fmt: skip
    for path, what in (("/healthz", "the process answers"), ("/readyz", "the engine answers"),
                       ("/metrics", "Prometheus text")):  # fmt: skip
        paths[path] = {"get": {"summary": what, "responses": {"200": {"description": what, "content": text}}}}
    doc: dict[str, Any] = {"openapi": "3.1.0", "info": {"title": "U²-Net background removal", "version": "1"},
                           "paths": paths}  # fmt: skip
    if token_required:
        doc["components"] = {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
        for path in [f"/v1/{m}" for m in MODES] + ["/metrics"]:
            for operation in paths[path].values():
                operation["security"] = [{"bearer": []}]
    return doc


class AccessLog:
    """Outermost ASGI layer: one access line per request in the project's log format, and the image metrics."""

    def __init__(self, app: ASGIApp, service: ImageService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        sent = {"status": 0, "bytes": 0}

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            elif message["type"] == "http.response.body" and scope["method"] != "HEAD":
                sent["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            seconds = time.perf_counter() - start
            path = scope["path"]
            mode = path.removeprefix("/v1/") if path.startswith("/v1/") else ""
            if mode in MODES:
                self.service.metrics.answered(mode, sent["status"], seconds)
            client = (scope.get("client") or ("-", 0))[0]
            query = f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else ""
            access_log.info("%s %s %s%s %d %d bytes %.0f ms", client, scope["method"], path, query,
                            sent["status"], sent["bytes"], seconds * 1000)  # fmt: skip


def build_app(service: ImageService) -> ASGIApp:
    """The ASGI application: routes from the MODES table, one-line errors, access lines and metrics."""
    token_required = service.token is not None
    page = page_html(token_required)
    description = openapi(token_required)

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"})

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(description)

    routes = [Route("/", index, methods=["GET"]), Route("/healthz", healthz, methods=["GET"]),
              Route("/readyz", readyz, methods=["GET"]), Route("/metrics", metrics, methods=["GET"]),
              Route("/openapi.json", openapi_json, methods=["GET"])]  # fmt: skip
    routes += [image_route(mode) for mode in MODES]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.service = service
    return AccessLog(app, service)
