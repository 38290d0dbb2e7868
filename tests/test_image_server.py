"""The HTTP image endpoint (``python -m runtime.serve.images``) as a real server on free loopback ports.

One row of issue 24's table per test where it can be: 50 simultaneous POSTs, slow and stalled clients,
hundreds of idle connections, malformed requests, GIFs, the CLI's bytes on a 2400x1800 JPEG, HEAD,
multipart uploads, the bearer token; plus busy (503 + Retry-After), metrics, memory and SIGTERM with
requests in flight. Every wait is bounded: the servers run with 2-second header, body and keep-alive limits.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_helpers import encoded, save, scene
from serve_helpers import start_images

from runtime.infer import main as infer_main

pytestmark = pytest.mark.slow
FAST = ("--header-timeout", "2", "--body-timeout", "2", "--keep-alive", "2")


@pytest.fixture(scope="module")
def engine(random_u2netp):
    return random_u2netp.fp32  # the exported U²-NetP (random weights), 64x64: on this CPU's default backend


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    started = start_images(engine, tmp_path_factory.mktemp("images"), *FAST, python=Path(sys.executable))
    yield started
    started.stop()


def exchange(port: int, data: bytes, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; (status, headers, body) of the answer. Status 0: the connection closed unanswered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = http.client.HTTPResponse(sock, method=data.split(b" ", 1)[0].decode())
        try:
            answer.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return 0, {}, b""
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()


def post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return exchange(port, head.encode() + b"\r\n" + body)


def one_line(body: bytes) -> str:
    text = body.decode()
    assert text.endswith("\n") and text.count("\n") == 1 and "Traceback" not in text, text
    return text.strip()


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def threads_of(server) -> int:
    return int(re.search(r"^Threads:\s+(\d+)", Path(f"/proc/{server.proc.pid}/status").read_text(), re.M).group(1))


def rss_mb(server) -> float:
    return int(re.search(r"^VmRSS:\s+(\d+)", Path(f"/proc/{server.proc.pid}/status").read_text(), re.M).group(1)) / 1024


def test_fifty_simultaneous_posts_are_all_answered(server):
    photo = encoded(scene(48, 72))
    barrier = threading.Barrier(50, timeout=30)
    codes: list[int] = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        connection.connect()
        barrier.wait()  # all 50 connected before any sends
        connection.request("POST", "/v1/mask", photo)
        codes.append(connection.getresponse().status)
        connection.close()

    workers = [threading.Thread(target=client) for _ in range(50)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(180)
    assert codes == [200] * 50


def test_stalled_clients_do_not_block_others_and_are_dropped_in_bounded_time(server):
    photo = encoded(scene(48, 72))
    stalled = []
    for _ in range(4):  # headers with a Content-Length, then nothing: each holds a connection, not a worker
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"POST /v1/mask HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n" + photo[:100])
        stalled.append(sock)
    slow_head = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    slow_head.sendall(b"POST /v1/mask HTTP/1.1\r\nHost: t\r\n")  # a head that never ends
    started = time.monotonic()
    code, _, body = post(server.port, "/v1/mask", photo)
    assert code == 200 and decode(body).shape == (48, 72)
    assert time.monotonic() - started < 2, "an ordinary request waited for the stalled ones"
    for sock in [*stalled, slow_head]:
        answer = http.client.HTTPResponse(sock)
        answer.begin()  # within the 2 s limits (the socket gives up after 10 s)
        assert answer.status == 408, answer.status
        assert one_line(answer.read()) and sock.recv(1) == b""  # then the server closes the connection
        sock.close()
    assert time.monotonic() - started < 6


def test_hundreds_of_idle_connections_make_no_threads(server):
    before = threads_of(server)
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(300)]
    try:
        time.sleep(0.5)
        assert threads_of(server) <= before + 2  # one event loop holds them all
        code, _, _ = post(server.port, "/v1/mask", encoded(scene()))
        assert code == 200
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize("head, expected", [
    (b"Content-Length: \xc2\xb2\r\n", 400),  # '²', a digit to str.isdigit, not to HTTP
    (b"Content-Length: 12abc\r\n", 400),
    (b"Content-Length: 10\r\nContent-Length: 20\r\n", 400),
    (b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n", 400),
    (b"Transfer-Encoding: chunked\r\n", 411),  # no Content-Length to check against the limit
    (b"Content-Length: 52428801\r\n", 413),  # one byte over 50 MB: refused from the header
])  # fmt: skip
def test_malformed_requests_get_one_line_4xx(server, head, expected):
    code, _, body = exchange(server.port, b"POST /v1/mask HTTP/1.1\r\nHost: t\r\n" + head + b"\r\n0123456789")
    assert code == expected
    assert one_line(body)


def test_short_body_is_408_and_bad_queries_methods_paths_are_one_line(server):
    started = time.monotonic()
    code, headers, body = exchange(server.port, b"POST /v1/mask HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nshort")
    assert code == 408 and headers["connection"] == "close" and "1000" not in one_line(body)
    assert time.monotonic() - started < 5
    photo = encoded(scene())
    for path, expected, words in [("/v1/mask?colour=red", 400, "unknown query parameter"),
                                  ("/v1/mask?format=png&format=webp", 400, "twice"),
                                  ("/v1/mask?format=gif", 400, "format"),
                                  ("/v1/cutout?bg=red", 400, "takes format"),
                                  ("/v1/composite?bg=%2Fetc%2Fpasswd", 400, "not a colour"),
                                  ("/v1/blur", 404, "/v1/{mask,cutout,composite}")]:  # fmt: skip
        code, _, body = post(server.port, path, photo)
        assert code == expected and words in one_line(body), (path, body)
    code, headers, body = exchange(server.port, b"GET /v1/mask HTTP/1.1\r\nHost: t\r\n\r\n")
    assert code == 405 and headers["allow"] == "POST" and one_line(body)
    code, _, body = post(server.port, "/v1/mask", b"")
    assert code == 400 and "empty" in one_line(body)


def test_bombs_and_undecodable_bodies(server):
    bomb = bytearray(encoded(scene(8, 8)))
    bomb[16:24] = (40_000).to_bytes(4, "big") * 2  # IHDR says 40000x40000
    code, _, body = post(server.port, "/v1/mask", bytes(bomb))
    assert code == 413 and "exceeds the limit" in one_line(body)
    code, _, body = post(server.port, "/v1/mask", b"\x89PNG but not really")
    assert code == 415 and one_line(body).startswith("image: ")


def test_gifs_static_and_animated(server, tmp_path):
    from PIL import Image

    frames = [Image.fromarray(scene(40, 60, seed=i)) for i in range(3)]
    frames[0].save(tmp_path / "still.gif")
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    for name in ("still.gif", "moving.gif"):
        code, headers, body = post(server.port, "/v1/mask", (tmp_path / name).read_bytes())
        assert (code, headers["content-type"]) == (200, "image/png"), body[:200]
        assert decode(body).shape == (40, 60)


def big_jpeg(path: Path, height: int = 1800, width: int = 2400) -> Path:
    """A photo-like JPEG: smooth colour fields with one bright object (decoded at reduced scale for masks)."""
    rng = np.random.default_rng(11)
    rgb = cv2.resize(rng.integers(0, 256, (18, 24, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    rgb[height // 4 : height // 2, width // 3 : width // 2] = (230, 200, 60)
    return save(path, rgb, quality=90)


def form(fields: dict[str, tuple[str | None, bytes]]) -> tuple[str, bytes]:
    boundary = "test-boundary-7f3a"
    parts = []
    for name, (filename, data) in fields.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        kind = "Content-Type: image/jpeg\r\n" if filename else ""
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{kind}\r\n".encode() + data + b"\r\n")
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + f"--{boundary}--\r\n".encode()


def test_outputs_are_the_cli_files_byte_for_byte_on_a_large_jpeg(server, engine, tmp_path, capsys):
    photo = big_jpeg(tmp_path / "in" / "big.jpg")
    backdrop = save(tmp_path / "beach.jpg", scene(300, 500, seed=5), quality=85)
    cases = [  # (mode, format, CLI options, query, form's bg part)
        ("mask", "png", [], "", None),
        ("cutout", "png", [], "", None),
        ("composite", "webp", ["--bg", "#00ff00"], "&bg=%2300ff00", None),
        ("composite", "png", ["--bg", str(backdrop)], "", ("beach.jpg", backdrop.read_bytes())),
    ]
    for i, (mode, fmt, cli, query, bg) in enumerate(cases):
        out = tmp_path / f"out{i}"
        argv = ["--engine", str(engine), str(photo), "-o", str(out), "--mode", mode, "--format", fmt, "--no-progress"]
        assert infer_main(argv + cli) == 0
        fields = {"file": ("big.jpg", photo.read_bytes()), **({"bg": bg} if bg else {})}
        kind, body = form(fields)
        code, headers, answer = post(server.port, f"/v1/{mode}?format={fmt}{query}", body, {"Content-Type": kind})
        assert (code, headers["content-type"]) == (200, f"image/{fmt}"), answer[:200]
        assert headers["content-disposition"] == f'inline; filename="big-{mode}.{fmt}"'
        assert answer == (out / f"big.{fmt}").read_bytes(), (mode, fmt, cli)
    capsys.readouterr()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_form_upload_and_raw_body(server, tmp_path):
    photo = save(tmp_path / "photo.jpg", scene(60, 80), quality=92)
    for args in (["-F", f"file=@{photo}"], ["--data-binary", f"@{photo}"]):
        out = tmp_path / "mask.png"
        done = subprocess.run(["curl", "-sS", "-o", str(out), "-w", "%{http_code}", *args,
                               f"http://127.0.0.1:{server.port}/v1/mask"], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.stdout == "200", done.stderr
        assert decode(out.read_bytes()).shape == (60, 80)


def test_form_errors_are_one_line(server):
    photo = encoded(scene())
    for fields, words in [({"image": ("a.png", photo)}, "unknown form field 'image'"),
                          ({"bg": (None, b"red")}, "unknown form field 'bg'")]:  # fmt: skip
        kind, body = form(fields)
        code, _, answer = post(server.port, "/v1/mask", body, {"Content-Type": kind})
        assert code == 400 and words in one_line(answer)
    kind, body = form({"file": ("a.png", photo)})
    code, _, answer = post(server.port, "/v1/mask", body[:-20], {"Content-Type": kind})  # no closing boundary
    assert code == 400 and "multipart" in one_line(answer)
    kind, body = form({"file": ("a.png", photo), "bg": (None, b"#123456")})
    code, _, answer = post(server.port, "/v1/composite", body, {"Content-Type": kind})
    assert code == 200 and decode(answer).shape == (48, 72, 3)


def test_health_readiness_page_openapi_and_metrics(server):
    for method in ("HEAD", "GET"):
        for path, text in (("/healthz", b"ok\n"), ("/readyz", b"ready\n")):
            code, _, body = exchange(server.port, f"{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            assert code == 200 and body == (text if method == "GET" else b"")
    code, headers, page = exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert code == 200 and headers["content-type"].startswith("text/html")
    assert b'<option value="cutout" selected>' in page and b'<option value="composite">' in page
    assert b'<option value="webp">' in page
    assert "default-src 'none'" in headers["content-security-policy"]
    code, _, doc = exchange(server.port, b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n")
    paths = json.loads(doc)["paths"]
    assert {"/v1/mask", "/v1/cutout", "/v1/composite"} <= set(paths)
    code, headers, text = exchange(server.port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
    metrics = text.decode()
    assert code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    assert re.search(r'^u2net_image_requests_total\{mode="mask",status="200"\} [1-9]', metrics, re.M)
    assert re.search(r'^u2net_image_request_seconds_bucket\{mode="mask",le="\+Inf"\} [1-9]', metrics, re.M)
    assert re.search(r"^u2net_image_requests_in_flight 0$", metrics, re.M)
    assert re.search(r'^u2net_image_requests_rejected_total\{reason="too_large"\} [1-9]', metrics, re.M)
    assert re.search(r"^127\.0\.0\.1 POST /v1/mask 200 \d+ bytes \d+ ms$", server.log_text(), re.M)


def test_memory_stays_flat_over_hundreds_of_requests(server):
    photos = [encoded(scene(120, 160, seed=i)) for i in range(8)]
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)

    def burst(n: int) -> None:
        for i in range(n):
            connection.request("POST", "/v1/cutout" if i % 2 else "/v1/mask", photos[i % len(photos)])
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200

    burst(60)  # warm: the engine's and the allocator's first growth
    before = rss_mb(server)
    burst(300)
    connection.close()
    assert rss_mb(server) - before < 25, f"{before:.0f} -> {rss_mb(server):.0f} MB"


def test_token_file_401_without_it_nothing_processed(engine, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-for-the-test\n")
    token_file.chmod(0o644)
    refused = subprocess.run([sys.executable, "-m", "runtime.serve.images", "--engine", str(engine),
                              "--token-file", str(token_file), "--port", "1"], capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    assert refused.returncode == 2 and "readable by other users" in refused.stderr
    token_file.chmod(0o600)
    guarded = start_images(engine, tmp_path / "srv", "--token-file", str(token_file), "--instances", "2", *FAST,
                           python=Path(sys.executable))  # fmt: skip
    try:
        started = time.monotonic()  # a huge declared body: refused from the headers, nothing read
        code, headers, body = exchange(guarded.port, b"POST /v1/mask HTTP/1.1\r\nHost: t\r\nContent-Length: 9999999\r\n\r\n")
        assert code == 401 and headers["www-authenticate"].startswith("Bearer") and one_line(body)
        assert time.monotonic() - started < 1.5
        photo = encoded(scene())
        assert post(guarded.port, "/v1/mask", photo, {"Authorization": "Bearer wrong-token-of-same-size"})[0] == 401
        assert post(guarded.port, "/v1/mask", photo, {"Authorization": "Bearer s3cret-token-for-the-test"})[0] == 200
        assert exchange(guarded.port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 401
        assert exchange(guarded.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200  # probes stay open
        code, _, metrics = exchange(guarded.port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n"
                                    b"Authorization: Bearer s3cret-token-for-the-test\r\n\r\n")  # fmt: skip
        assert re.search(r'^u2net_image_requests_total\{mode="mask",status="200"\} 1$', metrics.decode(), re.M)
        assert re.search(r'^u2net_image_requests_rejected_total\{reason="unauthorized"\} [3-9]', metrics.decode(), re.M)
        assert "s3cret" not in guarded.log_text() and "serving 2 x " in guarded.log_text()
    finally:
        guarded.stop()


def test_busy_is_503_with_retry_after_then_sigterm_answers_what_is_in_flight(engine, tmp_path):
    busy = start_images(engine, tmp_path / "srv", "--max-queue", "1", "--body-timeout", "20",
                        python=Path(sys.executable))  # fmt: skip
    try:
        photo = encoded(scene(64, 64))
        holder = socket.create_connection(("127.0.0.1", busy.port), timeout=30)  # the one place in the queue
        holder.sendall(f"POST /v1/mask HTTP/1.1\r\nHost: t\r\nContent-Length: {len(photo)}\r\n\r\n".encode())
        time.sleep(0.3)
        code, headers, body = post(busy.port, "/v1/mask", encoded(scene()))
        assert code == 503 and 1 <= int(headers["retry-after"]) <= 60 and one_line(body).startswith("busy")
        # SIGTERM while the held request is still sending: it is answered, then the process exits 0.
        busy.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        holder.sendall(photo)
        answer = http.client.HTTPResponse(holder)
        answer.begin()
        assert answer.status == 200 and decode(answer.read()).shape == (64, 64)
        holder.close()
        assert busy.proc.wait(30) == 0
        log = busy.log_text()
        assert "SIGTERM: answering the 1 requests in flight" in log and "Traceback" not in log
    finally:
        busy.stop()
