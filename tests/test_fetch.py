"""export.fetch against a loopback HTTP server: nothing here reaches the internet.

The server (a thread) serves one file and can misbehave on purpose: drop the connection half-way
through the body, ignore Range, answer 404, or be gone. It also acts as an HTTP proxy (absolute-URI
requests) and records CONNECT lines, so the proxy variables are checked end to end. The files served
are real ONNX models: a tiny one built like an official download (no metadata, the input called
``input.1``, several outputs with numeric names) and the suite's random U²-NetP with its metadata removed.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from export import fetch as fetch_module
from export.fetch import SOURCES, main
from runtime.onnx_props import read_onnx_props

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy",
              "ALL_PROXY")  # fmt: skip


def official_like_onnx(size: int = 64) -> bytes:
    """A real ONNX model shaped like rembg's files: input 'input.1' (1,3,S,S), outputs '1959', '1960'
    (the fused map first), opset 11, no metadata_props."""
    nodes = [
        helper.make_node("ReduceMean", ["input.1"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Sigmoid", ["mean"], ["1959"]),
        helper.make_node("Identity", ["1959"], ["1960"]),
    ]
    graph = helper.make_graph(
        nodes, "official_like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 1, size, size]) for name in ("1959", "1960")],
        initializer=[helper.make_tensor("unused", TensorProto.FLOAT, [256], np.linspace(0, 1, 256).tolist())],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], producer_name="pytorch")
    model.ir_version = 6
    onnx.checker.check_model(model)
    return model.SerializeToString()


@dataclass
class Behaviour:
    body: bytes = b""
    drop_first: int = 0  # this many responses stop half-way through the body
    ignore_range: bool = False
    status: int = 200
    requests: list[dict] = field(default_factory=list)
    connects: list[str] = field(default_factory=list)


class Handler(http.server.BaseHTTPRequestHandler):
    behaviour: Behaviour  # set on the subclass made per server

    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass

    def do_CONNECT(self) -> None:  # noqa: N802 - an HTTPS request through this "proxy": record it, refuse it
        self.behaviour.connects.append(self.requestline)
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        b = self.behaviour
        b.requests.append({"path": self.path, "range": self.headers.get("Range"), "agent": self.headers.get("User-Agent")})
        if b.status != 200:
            self.send_error(b.status)
            return
        start = 0
        if self.headers.get("Range") and not b.ignore_range:
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            if start >= len(b.body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(b.body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(b.body) - 1}/{len(b.body)}")
        else:
            self.send_response(200)
        chunk = b.body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if b.drop_first > 0:
            b.drop_first -= 1
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(chunk)


@pytest.fixture
def server():
    behaviour = Behaviour()
    handler = type("BoundHandler", (Handler,), {"behaviour": behaviour})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    behaviour.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield behaviour
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch, tmp_path):
    """Loopback requests must not go through a proxy this machine may have configured; and the default
    folder must not be the user's cache."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(fetch_module.WEIGHTS_DIR_ENV, str(tmp_path / "default_cache"))


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def run(args: list[str], capsys) -> tuple[int, str, str]:
    status = main([*args, "--no-progress"])
    out, err = capsys.readouterr()
    return status, out, err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- the good path -------------------------------------------------------------------------------------------


def test_good_file_is_checked_stamped_and_runs_as_u2netp(server, tmp_path, capsys):
    server.body = official_like_onnx()
    out = tmp_path / "models"
    status, stdout, err = run(["u2netp", "-o", str(out), "--from", f"{server.url}/u2netp.onnx",
                               "--md5", md5(server.body)], capsys)  # fmt: skip
    assert status == 0, err
    target = out / "u2netp.onnx"
    assert leftovers(out) == ["u2netp.onnx"]
    assert f"wrote {target}" in stdout and "u2netp fp32 64x64" in stdout
    assert server.requests[0]["path"] == "/u2netp.onnx" and server.requests[0]["agent"].startswith("u2net-toolkit/")

    props = read_onnx_props(target)
    assert props["u2net.variant"] == '"u2netp"' and props["u2net.precision"] == '"fp32"'
    assert props["u2net.size"] == "64" and props["u2net.divide_by_max"] == "true"
    assert props["u2net.source"] == '"u2netp.onnx"'
    assert props["u2net.source_sha256"] == f'"{hashlib.sha256(server.body).hexdigest()}"'
    assert props["u2net.outputs"] == '["1959", "1960"]' and props["u2net.opset"] == "11"
    model = onnx.load(str(target))  # the appended entries are real protobuf: onnx reads and checks them
    onnx.checker.check_model(model, full_check=True)
    assert {p.key for p in model.metadata_props} == set(props)
    stripped = onnx.load(str(target))
    del stripped.metadata_props[:]
    assert stripped.SerializeToString() == onnx.load_from_string(server.body).SerializeToString()

    from runtime.api import Remover

    with Remover(target) as remover:
        assert remover.backend.artifact.variant == "u2netp"
        assert "u2netp fp32 64x64" in remover.backend.describe()
        mask = remover.mask(np.full((40, 50, 3), 200, np.uint8))
        assert mask.shape == (40, 50)


def test_the_official_u2netp_export_keeps_its_masks(random_u2netp, server, tmp_path, capsys):
    """The suite's real U²-NetP, stripped of metadata as a download from elsewhere would be: after the fetch
    it runs as u2netp at its own size, with the same masks as the project's own export."""
    model = onnx.load(str(random_u2netp.fp32))
    del model.metadata_props[:]
    server.body = model.SerializeToString()
    status, _, err = run(["u2netp", "-o", str(tmp_path), "--from", f"{server.url}/u2netp.onnx",
                          "--md5", md5(server.body)], capsys)  # fmt: skip
    assert status == 0, err
    from runtime.api import Remover

    image = np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    with Remover(tmp_path / "u2netp.onnx", backend="onnxruntime") as fetched, \
            Remover(random_u2netp.fp32, backend="onnxruntime") as own:  # fmt: skip
        assert fetched.backend.artifact.summary() == f"u2netp fp32 {random_u2netp.size}x{random_u2netp.size}"
        assert np.array_equal(fetched.mask(image), own.mask(image))


def test_a_stamped_file_is_not_fetched_again(server, tmp_path, capsys):
    server.body = official_like_onnx()
    args = ["u2netp", "-o", str(tmp_path), "--from", f"{server.url}/u2netp.onnx", "--md5", md5(server.body)]
    assert run(args, capsys)[0] == 0
    status, stdout, _ = run(args, capsys)
    assert status == 0 and "already there" in stdout and len(server.requests) == 1
    assert run([*args, "--force"], capsys)[0] == 0 and len(server.requests) == 2


def test_a_foreign_file_at_the_target_is_left_alone(server, tmp_path, capsys):
    server.body = official_like_onnx()
    (tmp_path / "u2netp.onnx").write_bytes(b"mine")
    status, _, err = run(["u2netp", "-o", str(tmp_path), "--from", f"{server.url}/u2netp.onnx",
                          "--md5", md5(server.body)], capsys)  # fmt: skip
    assert status == 1 and "--force" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "u2netp.onnx").read_bytes() == b"mine" and not server.requests


def test_a_local_copy_is_checked_and_stamped(tmp_path, capsys):
    """The offline path: a file downloaded elsewhere, passed with --from."""
    data = official_like_onnx()
    copy = tmp_path / "Downloads" / "u2netp.onnx"
    copy.parent.mkdir()
    copy.write_bytes(data)
    status, stdout, err = run(["u2netp", "-o", str(tmp_path / "w"), "--from", str(copy), "--md5", md5(data)], capsys)
    assert status == 0, err
    assert read_onnx_props(tmp_path / "w" / "u2netp.onnx")["u2net.variant"] == '"u2netp"'
    assert copy.read_bytes() == data  # the source is only read


def test_default_folder_is_the_weights_dir(server, tmp_path, capsys):
    server.body = official_like_onnx()
    status, _, err = run(["u2netp", "--from", f"{server.url}/x/u2netp.onnx", "--md5", md5(server.body)], capsys)
    assert status == 0, err
    assert (tmp_path / "default_cache" / "u2netp.onnx").is_file()


# -- failures ------------------------------------------------------------------------------------------------


def test_wrong_checksum_leaves_nothing(server, tmp_path, capsys):
    server.body = official_like_onnx()
    status, stdout, err = run(["u2netp", "-o", str(tmp_path / "w"), "--from", f"{server.url}/u2netp.onnx"], capsys)
    assert status == 1 and stdout == ""
    assert err.count("\n") == 1 and f"expected {SOURCES['u2netp'].md5}" in err and md5(server.body) in err
    assert leftovers(tmp_path / "w") == []


def test_not_onnx_is_refused_after_the_checksum(server, tmp_path, capsys):
    server.body = b"<html>a login page, not a model</html>"
    status, _, err = run(["u2netp", "-o", str(tmp_path), "--from", f"{server.url}/u2netp.onnx",
                          "--md5", md5(server.body)], capsys)  # fmt: skip
    assert status == 1 and "nothing was written" in err and leftovers(tmp_path) == []


def test_http_error_is_one_line(server, tmp_path, capsys):
    server.status = 404
    status, _, err = run(["u2net", "-o", str(tmp_path), "--from", f"{server.url}/u2net.onnx"], capsys)
    assert status == 1 and err.strip() == f"error: {server.url}/u2net.onnx: HTTP 404 Not Found"
    assert len(server.requests) == 1  # a 404 is not retried


def test_server_gone_is_one_line_with_the_offline_hint(tmp_path, capsys):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    status, stdout, err = run(["u2net", "-o", str(tmp_path), "--from", f"http://127.0.0.1:{port}/u2net.onnx",
                               "--retries", "0"], capsys)  # fmt: skip
    assert status == 1 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: http://127.0.0.1:{port}/u2net.onnx: ")
    assert "offline? download https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx" in lines[0]
    assert "python -m export.fetch u2net --from PATH" in lines[0]
    assert leftovers(tmp_path) == []


def test_offline_hint_is_one_line():
    for source in SOURCES.values():
        hint = fetch_module.offline_hint(source)
        assert "\n" not in hint and source.url in hint and "--from" in hint


# -- resuming ------------------------------------------------------------------------------------------------


def test_dropped_connection_resumes_with_range_in_the_same_run(server, tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.setattr(fetch_module.time, "sleep", lambda s: None)
    server.body = official_like_onnx()
    server.drop_first = 1
    status, _, err = run(["u2netp", "-o", str(tmp_path), "--from", f"{server.url}/u2netp.onnx",
                          "--md5", md5(server.body)], capsys)  # fmt: skip
    assert status == 0, err
    assert "trying again in 0.5 s (1 of 3)" in caplog.text
    half = len(server.body) // 2
    assert [r["range"] for r in server.requests] == [None, f"bytes={half}-"]
    assert leftovers(tmp_path) == ["u2netp.onnx"]


def test_interrupted_download_is_kept_and_resumed_by_the_next_run(server, tmp_path, capsys):
    server.body = official_like_onnx()
    server.drop_first = 1
    args = ["u2netp", "-o", str(tmp_path), "--from", f"{server.url}/u2netp.onnx", "--md5", md5(server.body)]
    status, _, err = run([*args, "--retries", "0"], capsys)
    half = len(server.body) // 2
    partial = tmp_path / ".u2netp.onnx.part"
    assert status == 1 and "run the same command again to resume" in err and len(err.strip().splitlines()) == 1
    assert partial.read_bytes() == server.body[:half] and not (tmp_path / "u2netp.onnx").exists()

    status, _, err = run(args, capsys)
    assert status == 0, err
    assert server.requests[-1]["range"] == f"bytes={half}-"
    assert leftovers(tmp_path) == ["u2netp.onnx"]


def test_a_server_that_ignores_range_is_read_from_the_start(server, tmp_path, capsys):
    server.body = official_like_onnx()
    server.ignore_range = True
    (tmp_path / ".u2netp.onnx.part").write_bytes(server.body[:100])
    status, _, err = run(["u2netp", "-o", str(tmp_path), "--from", f"{server.url}/u2netp.onnx",
                          "--md5", md5(server.body)], capsys)  # fmt: skip
    assert status == 0, err
    assert server.requests[0]["range"] == "bytes=100-" and leftovers(tmp_path) == ["u2netp.onnx"]


def test_a_complete_partial_file_needs_no_more_bytes(server, tmp_path, capsys):
    server.body = official_like_onnx()
    (tmp_path / ".u2netp.onnx.part").write_bytes(server.body)
    status, _, err = run(["u2netp", "-o", str(tmp_path), "--from", f"{server.url}/u2netp.onnx",
                          "--md5", md5(server.body)], capsys)  # fmt: skip
    assert status == 0, err  # the server said 416 Range Not Satisfiable; the checksum decided
    assert leftovers(tmp_path) == ["u2netp.onnx"]


# -- proxies -------------------------------------------------------------------------------------------------


def test_http_proxy_variable_carries_the_request(server, tmp_path, capsys, monkeypatch):
    server.body = official_like_onnx()
    monkeypatch.setenv("http_proxy", server.url)
    status, _, err = run(["u2netp", "-o", str(tmp_path), "--from", "http://weights.invalid/u2netp.onnx",
                          "--md5", md5(server.body)], capsys)  # fmt: skip
    assert status == 0, err
    assert server.requests[0]["path"] == "http://weights.invalid/u2netp.onnx"  # an absolute URI: a proxy request


def test_https_proxy_variable_is_used(server, tmp_path, capsys, monkeypatch):
    """The default source is https: with HTTPS_PROXY set, the request must reach the proxy as a CONNECT."""
    monkeypatch.setenv("HTTPS_PROXY", server.url)
    status, _, err = run(["u2net", "-o", str(tmp_path), "--retries", "0"], capsys)
    assert status == 1 and len(err.strip().splitlines()) == 1
    assert [line.rsplit(" ", 1)[0] for line in server.connects] == ["CONNECT github.com:443"]
    assert leftovers(tmp_path) == []


# -- the command ---------------------------------------------------------------------------------------------


def test_bad_md5_option_is_a_usage_error(capsys):
    assert main(["u2net", "--md5", "xyz"]) == 2
    assert "32 hex digits" in capsys.readouterr().err


def test_runs_on_the_base_install(server, tmp_path):
    """No torch and no onnx package: a subprocess where importing either fails."""
    server.body = official_like_onnx()
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None; "
            "from export.fetch import main; sys.exit(main(sys.argv[1:]))")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    proc = subprocess.run([sys.executable, "-c", code, "u2netp", "-o", str(tmp_path), "--from",
                           f"{server.url}/u2netp.onnx", "--md5", md5(server.body)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert read_onnx_props(tmp_path / "u2netp.onnx")["u2net.variant"] == '"u2netp"'


def test_nothing_else_downloads_weights():
    """export.fetch is the one place that knows where the weights are, and nothing calls its downloader: the
    runtime, the tests and the demo never download on their own."""
    hits = []
    for path in [*REPO.glob("runtime/**/*.py"), *REPO.glob("export/*.py"), *REPO.glob("train/*.py"),
                 *REPO.glob("benchmarks/*.py"), *REPO.glob("u2net/*.py")]:  # fmt: skip
        if path == REPO / "export" / "fetch.py":
            continue
        text = path.read_text(encoding="utf-8")
        if any(s in text for s in ("releases/download", "drive.google", "import download", "import fetch")):
            hits.append(str(path.relative_to(REPO)))
    assert not hits


# -- make demo: the official weights when they are here, never a download ------------------------------------


def test_demo_finds_weights_in_order(tmp_path, monkeypatch):
    from benchmarks import demo

    folder = tmp_path / "default_cache"
    monkeypatch.delenv(demo.WEIGHTS_ENV, raising=False)
    assert demo.find_weights() is None
    folder.mkdir()
    (folder / "u2netp.pth").write_bytes(b"x")
    assert demo.find_weights() == folder / "u2netp.pth"
    (folder / "u2netp.onnx").write_bytes(b"x")
    assert demo.find_weights() == folder / "u2netp.onnx"
    (folder / "u2net.onnx").write_bytes(b"x")
    assert demo.find_weights() == folder / "u2net.onnx"
    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"x")
    monkeypatch.setenv(demo.WEIGHTS_ENV, str(mine))
    assert demo.find_weights() == mine
    assert demo.find_weights(folder / "u2netp.onnx") == folder / "u2netp.onnx"
    monkeypatch.setenv(demo.WEIGHTS_ENV, str(tmp_path / "gone.onnx"))
    with pytest.raises(SystemExit, match="gone.onnx: no such file"):
        demo.find_weights()


def test_demo_plans(tmp_path):
    from benchmarks import demo

    out = tmp_path / "demo_out"
    default = demo.default_plan(out, 300, 128, tensorrt=False, photos=[], sod=False)
    steps = [s for s in default if isinstance(s, demo.Step)]
    assert [s.args[0] for s in steps] == ["train.synthetic", "train.synthetic", "train", "export.to_onnx",
                                          "runtime.infer", "benchmarks.accuracy", "benchmarks.fps"]  # fmt: skip
    onnx_file = tmp_path / "u2netp.onnx"
    onnx_file.write_bytes(official_like_onnx())
    official = [s for s in demo.official_plan(out, onnx_file, tensorrt=False, photos=[Path("a.jpg")], sod=True)
                if isinstance(s, demo.Step)]  # fmt: skip
    assert [s.args[0] for s in official] == ["train.synthetic", "runtime.infer", "runtime.infer",
                                             "benchmarks.accuracy", "benchmarks.accuracy", "benchmarks.fps"]
    assert all(str(onnx_file) in s.args for s in official[1:])
    assert official[-1].args[:3] == ["benchmarks.fps", "--models", "u2netp"]  # from the file name
    pth = [s for s in demo.official_plan(out, tmp_path / "u2net.pth", tensorrt=True, photos=[], sod=False)
           if isinstance(s, demo.Step)]  # fmt: skip
    assert [s.args[0] for s in pth][:3] == ["train.synthetic", "export.to_onnx", "export.to_trt"]
    assert "--compare" in pth[-2].args  # FP32 vs the FP16 export


@pytest.mark.slow
def test_demo_runs_the_chain_on_fetched_weights(server, tmp_path, capsys):
    """`make demo` with a fetched file: no training, the runtime on that file, and no request to any server."""
    server.body = official_like_onnx()
    folder = tmp_path / "default_cache"
    assert run(["u2netp", "--from", f"{server.url}/u2netp.onnx", "--md5", md5(server.body)], capsys)[0] == 0
    requests = len(server.requests)
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS and k != "U2NET_WEIGHTS"}
    env[fetch_module.WEIGHTS_DIR_ENV] = str(folder)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.demo", "--out", str(tmp_path / "demo_out")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"showing the official weights {folder / 'u2netp.onnx'}" in proc.stdout
    assert "2. training: skipped" in proc.stdout and "python -m train " not in proc.stdout
    assert any((tmp_path / "demo_out" / "cutouts").rglob("*.png"))
    assert (tmp_path / "demo_out" / "fps.json").is_file()
    assert "Note:" not in proc.stdout and len(server.requests) == requests
