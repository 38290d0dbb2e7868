"""uvicorn set up for traffic: the listening socket, time limits on every stage of a request, a graceful stop.

- The socket is bound here (one ``error:`` line and exit 2 when the port is taken, instead of uvicorn's
  exit 1) with a listen backlog of ``backlog`` (2048: 50 clients connecting at once were reset by the
  standard library server's backlog of 5).
- Malformed requests (a bad or conflicting Content-Length, Content-Length with chunked encoding, a bad
  request line) are refused by h11 with 400 and one line naming h11's reason.
- Headers: ``header_timeout`` seconds from a connection's start (or its previous answer) to a complete
  request head, however slowly its bytes trickle in (uvicorn itself has no such limit; its keep-alive
  timer restarts on every byte), then 408 and close; at most ``max_header_bytes`` of head (h11).
- Body: the app reads it whole within ``--body-timeout`` (``runtime.serve.app``) before taking a worker.
- Connections: an idle keep-alive connection closes after ``keep_alive`` s; beyond ``max_connections``
  open at once uvicorn answers 503. One event loop holds them all: no thread per connection.
- SIGTERM/SIGINT: stop accepting, answer what is in flight (up to ``drain_seconds``), return; the
  signal is not re-raised, so the process exits 0.
"""

from __future__ import annotations

import logging
import resource
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("runtime.serve.images")

_SLOW_HEAD = b"the request's headers did not arrive in time\n"
_REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n%s")  # fmt: skip


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    backlog: int = 2048
    max_connections: int = 2048
    header_timeout: float = 10.0
    keep_alive: int = 5
    drain_seconds: int = 60
    max_header_bytes: int = 16 << 10


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request head that trickling bytes do not extend."""

    header_timeout = 10.0
    _deadline: Any = None
    _protocol_error = ""

    def connection_made(self, transport: Any) -> None:  # noqa: D102
        super().connection_made(transport)
        self._arm()
        parse = self.conn.next_event

        def next_event() -> Any:  # keep h11's reason: uvicorn's 400 says only "Invalid HTTP request received."
            try:
                return parse()
            except h11.RemoteProtocolError as exc:
                self._protocol_error = str(exc).encode("ascii", "replace").decode()[:200]
                raise

        self.conn.next_event = next_event  # type: ignore[method-assign]

    def send_400_response(self, msg: str) -> None:  # noqa: D102
        super().send_400_response(f"malformed HTTP request: {self._protocol_error or msg}\n")

    def on_response_complete(self) -> None:  # noqa: D102
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.header_timeout, self._head_overdue)

    def _head_overdue(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return  # a request is in progress: the body and the answer have their own limits
        if self.cycle is not None and not self.cycle.response_complete:
            return
        if self.conn.trailing_data[0]:  # part of a head came: say why the connection closes
            self.transport.write(_REQUEST_TIMEOUT % (len(_SLOW_HEAD), _SLOW_HEAD))
        self.transport.close()


def protocol(header_timeout: float) -> type[HeaderDeadline]:
    return type("ImageHttpProtocol", (HeaderDeadline,), {"header_timeout": header_timeout})


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; OSError (one line via ``strerror``) when it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def open_files_for(connections: int) -> int:
    """Raise the soft limit on open files toward the hard one; returns how many connections it allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256  # the engine's, the logs' and the threads' files
    if soft < wanted and (hard == resource.RLIM_INFINITY or soft < hard):
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return max(16, min(connections, soft - 256))


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_stop: Callable[[str], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop

    def handle_exit(self, sig: int, frame: Any) -> None:  # noqa: D102
        if not self.should_exit:
            self._on_stop(signal.Signals(sig).name)
        super().handle_exit(sig, frame)


def uvicorn_config(app: Any, settings: ServerSettings) -> uvicorn.Config:
    return uvicorn.Config(
        app, http=protocol(settings.header_timeout), loop="asyncio", ws="none", lifespan="off", interface="asgi3",
        access_log=False, log_config=None, server_header=False, backlog=settings.backlog,
        limit_concurrency=open_files_for(settings.max_connections), timeout_keep_alive=settings.keep_alive,
        timeout_graceful_shutdown=settings.drain_seconds, h11_max_incomplete_event_size=settings.max_header_bytes,
    )  # fmt: skip


def serve(app: Any, sock: socket.socket, settings: ServerSettings, on_stop: Callable[[str], None]) -> None:
    """Serve ``app`` on ``sock`` until SIGTERM/SIGINT, then answer what is in flight and return (main thread)."""
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        # uvicorn re-raises the stop signal once it has shut down: with this no-op handler in place the
        # process then carries on to release the engine and exit 0.
        _Server(uvicorn_config(app, settings), on_stop).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore(signum: int, frame: Any) -> None:
    pass


class BackgroundServer:
    """The same server on a thread of a process whose main thread has other work (``runtime.serve``)."""

    def __init__(self, app: Any, sock: socket.socket, settings: ServerSettings, on_stop: Callable[[str], None]):
        self._server = _Server(uvicorn_config(app, settings), on_stop)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="images",
                                        daemon=True)  # fmt: skip
        self._drain = settings.drain_seconds
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, answer what is in flight, return."""
        self._server.should_exit = True
        self._thread.join(self._drain + 5)
