"""runtime.serve (a real tritonserver through PyTriton) and the grpc:// / http:// client backend.

One server serves the exported U²-NetP test model for the whole module; the last test stops it with
SIGTERM and checks that nothing is left behind. Loopback only, every request loop bounded.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import urllib.request

import cv2
import numpy as np
import pytest
from runtime_helpers import encoded, save, scene
from serve_helpers import REPO, command_lines, free_ports, http_status, leftovers, serve_python, start_server

from runtime.api import Remover, apply_cutout
from runtime.backends import BackendError, open_backend
from runtime.backends.triton import TritonBackend, TritonUrl
from runtime.infer import main as infer_main

pytest.importorskip("tritonclient.grpc", reason="tritonclient not installed (pip install '.[triton]')")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(random_u2netp):
    return random_u2netp.fp32  # the real exported U²-NetP (random weights), 64x64, FP32


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    serve_python()
    started = start_server(engine, tmp_path_factory.mktemp("serve"), "--name", "u2netp", "--max-batch", "4")
    yield started
    started.stop()


def photos(n: int) -> list[np.ndarray]:
    return [scene(40 + 7 * i, 90 - 5 * i, seed=i) for i in range(n)]


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_masks_from_the_server_equal_local_inference(server, engine, scheme):
    url = server.grpc_url if scheme == "grpc" else server.http_url
    images = photos(11)
    with Remover(engine, backend="onnxruntime", batch_size=1) as local:  # the server runs ONNX Runtime
        expected = local.masks(images)
        expected_rgba = local.cutout(images[0])
    with Remover(url) as remote:
        backend = remote.backend
        assert backend.name == "triton" and backend.spec == local.spec  # the spec came from config parameters
        assert backend.request_batch == 4 and remote.batch_size == backend.max_batch == 16  # 4 requests in flight
        got = remote.masks(images)
        np.testing.assert_array_equal(remote.cutout(images[0]), expected_rgba)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_runtime_infer_with_a_triton_url_writes_the_same_files(server, engine, tmp_path, capsys):
    for i, rgb in enumerate(photos(5)):
        save(tmp_path / "in" / f"sub/p{i}.png", rgb)
    args = [str(tmp_path / "in"), "--mode", "cutout", "--no-progress"]
    assert infer_main(["--engine", str(engine), "--backend", "onnxruntime", "-o", str(tmp_path / "local"), *args]) == 0
    assert infer_main(["--engine", server.grpc_url, "-o", str(tmp_path / "remote"), *args]) == 0
    local = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.png"))
    remote = sorted(p.relative_to(tmp_path / "remote") for p in (tmp_path / "remote").rglob("*.png"))
    assert local == remote and len(local) == 5
    for rel in local:
        assert (tmp_path / "local" / rel).read_bytes() == (tmp_path / "remote" / rel).read_bytes()
    assert "5 ok, 0 failed" in capsys.readouterr().err


def test_config_parameters_match_the_exported_repository(server, engine):
    """The served model's config says what export.to_triton's config.pbtxt says."""
    from export.to_triton import model_for, read_artifact

    with urllib.request.urlopen(f"http://127.0.0.1:{server.http}/v2/models/u2netp/config", timeout=10) as answer:
        served = json.loads(answer.read())
    args = type("Args", (), {"backend": "default", "kind": "cpu", "max_batch": 4, "instances": 1,
                             "queue_delay_us": 1000})()  # fmt: skip
    exported = model_for(read_artifact(engine), "u2netp", args)
    assert served["max_batch_size"] == exported.max_batch_size == 4
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in served["input"]] == [
        (t.name, t.data_type, list(t.dims)) for t in exported.inputs
    ]
    assert [(t["name"], [int(d) for d in t["dims"]]) for t in served["output"]] == [
        (t.name, list(t.dims)) for t in exported.outputs
    ]
    params = {k: v["string_value"] for k, v in served["parameters"].items()}
    for key in ("u2net.size", "u2net.mean", "u2net.std", "u2net.divide_by_max", "u2net.variant"):
        assert params[key] == exported.parameters[key]


def test_fps_benchmark_runs_against_the_server(server, engine, tmp_path):
    from benchmarks import fps

    out = tmp_path / "fps.json"
    assert fps.main(["--engine", server.grpc_url, "--engine", str(engine), "--seconds", "0.05", "--warmup", "1",
                     "--batch-sizes", "1,5", "--json", str(out)]) == 0  # fmt: skip
    rows = [r for r in json.loads(out.read_text()) if "paper" not in r["device"]]
    local = rows[2]["backend"]  # the CPU default for a file: ONNX Runtime, or OpenVINO where installed and faster
    assert local in ("onnxruntime", "openvino")
    assert [(r["backend"], r["device"], r["batch_size"]) for r in rows] == [
        ("triton", server.grpc_url, 1), ("triton", server.grpc_url, 5),
        (local, str(engine), 1), (local, str(engine), 5),
    ]
    assert all(r["throughput_fps"] > 0 and r["e2e_throughput_fps"] > 0 for r in rows)


def test_inconsistent_server_configs_are_one_line(server):
    """The real server's config, altered the ways a hand-written config.pbtxt can be wrong."""
    from runtime.backends.triton import ServedModel

    with urllib.request.urlopen(f"http://127.0.0.1:{server.http}/v2/models/u2netp/config", timeout=10) as answer:
        config = json.loads(answer.read())
    served = ServedModel.from_config(config, server.http_url)
    assert (served.input_name, served.output_names, served.request_batch) == ("image", ("mask",), 4)
    assert served.artifact.spec.size == 64 and served.artifact.variant == "u2netp"

    def fails(change, message):
        broken = json.loads(json.dumps(config))
        change(broken)
        with pytest.raises(BackendError, match=message):
            ServedModel.from_config(broken, server.http_url)

    fails(lambda c: c["input"][0].update(dims=["3", "32", "32"]), r"shape mismatch: the server's input is \[3, 32, 32\]")
    fails(lambda c: c["parameters"]["u2net.size"].update(string_value="128"), "parameters say 3x128x128")
    fails(lambda c: c["input"][0].update(data_type="TYPE_UINT8"), "not a float image type")
    fails(lambda c: c.update(max_batch_size=0), "without batching")
    fails(lambda c: c["input"].append(c["input"][0]), "has 2 inputs")
    fails(lambda c: c["parameters"]["u2net.size"].update(string_value="big"), "not valid JSON")


def test_errors_are_one_line_naming_the_url(server, tmp_path, capsys):
    missing = f"grpc://127.0.0.1:{server.grpc}/nosuchmodel"
    with pytest.raises(BackendError, match=rf"^{missing}: model 'nosuchmodel' is not ready"):
        open_backend(missing)
    down = f"grpc://127.0.0.1:{free_ports(1)[0]}/u2netp"  # nothing listens there
    with pytest.raises(BackendError, match=r"no Triton server reachable .* after 2 tries"):
        TritonBackend(down, retries=1)
    with pytest.raises(BackendError, match="no answer to a batch of 4 within 0.001 s"):
        with TritonBackend(server.grpc_url, timeout_s=0.001) as backend:
            backend.run(np.zeros((4, 3, 64, 64), np.float32))
    with TritonBackend(server.grpc_url) as backend, pytest.raises(BackendError, match="expected a float32 batch"):
        backend.run(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(BackendError, match="--provider does not apply"):
        open_backend(server.grpc_url, provider="cpu")
    save(tmp_path / "in" / "a.png", scene())
    assert infer_main(["--engine", missing, str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {missing}: model 'nosuchmodel' is not ready")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "url", ["grpc://127.0.0.1:8001", "ftp://h/m", "grpc://127.0.0.1:8001/m/latest", "http://h:99999/m"]
)
def test_bad_urls(url):
    with pytest.raises(BackendError, match=url.split("//")[0]):
        TritonUrl.parse(url)


def _post(url: str, body: bytes) -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read(), answer.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def _png_bomb(side: int = 40_000) -> bytes:
    """A valid small PNG whose header claims side x side pixels."""
    data = bytearray(encoded(scene(8, 8)))
    data[16:24] = side.to_bytes(4, "big") * 2  # IHDR width and height (the CRC is not checked before the limit)
    return bytes(data)


def test_image_endpoint_returns_png_masks_and_cutouts(server, engine):
    rgb = photos(1)[0]
    with Remover(engine, backend="onnxruntime") as local:  # what the server runs
        expected_mask, expected_rgba = local.mask(rgb), local.cutout(rgb)
    code, body, kind = _post(server.image_url("/v1/mask"), encoded(rgb))
    assert (code, kind) == (200, "image/png")
    mask = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask.shape == rgb.shape[:2] and np.abs(mask.astype(int) - expected_mask).max() <= 1
    code, body, _ = _post(server.image_url("/v1/cutout"), encoded(rgb))
    bgra = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
    assert code == 200 and bgra.shape == (*rgb.shape[:2], 4)
    np.testing.assert_array_equal(bgra[:, :, 3], mask)
    # The colours the CLI writes: the photo's, to the precision the (served) alpha shows.
    rgba = bgra[:, :, [2, 1, 0, 3]]
    np.testing.assert_array_equal(rgba, apply_cutout(expected_rgba[:, :, :3], mask, colours="visible"))
    code, body, _ = _post(server.image_url("/v1/composite?bg=%2300ff00"), encoded(rgb))
    assert code == 200 and cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED).shape == rgb.shape


def large_jpeg(path, height: int = 3000, width: int = 4000):
    """A 12 MP photo-like JPEG: smooth colour fields (as a camera's) with one bright object."""
    rng = np.random.default_rng(7)
    rgb = cv2.resize(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    rgb[height // 4 : height // 2, width // 4 : width // 2] = (240, 220, 40)
    return save(path, rgb, quality=90)


def test_one_render_path_gives_the_same_bytes_from_cli_api_and_http(server, tmp_path, capsys):
    """A 12 MP JPEG through python -m runtime.infer, Remover.render and the HTTP endpoint: identical files."""
    from runtime.render import Backdrop, RenderOptions

    photo = large_jpeg(tmp_path / "in" / "big.jpg")
    data = photo.read_bytes()
    cases = [("mask", "png", "", {}), ("cutout", "png", "", {}),
             ("composite", "png", "00ff00", {"background": Backdrop(color=(0, 255, 0))})]  # fmt: skip
    with Remover(server.grpc_url) as remover:
        for mode, fmt, bg, extra in cases:
            out = tmp_path / f"{mode}-{fmt}"
            argv = ["--engine", server.grpc_url, str(photo), "-o", str(out), "--mode", mode, "--format", fmt]
            assert infer_main(argv + (["--bg", f"#{bg}"] if bg else []) + ["--no-progress"]) == 0
            from_cli = (out / f"big.{fmt}").read_bytes()
            from_api = remover.render(data, RenderOptions(mode=mode, format=fmt, **extra))
            query = f"?format={fmt}" + (f"&bg=%23{bg}" if bg else "")
            code, from_http, kind = _post(server.image_url(f"/v1/{mode}{query}"), data)
            assert (code, kind) == (200, f"image/{fmt}"), from_http[:200]
            assert from_cli == from_api == from_http, (mode, _differences(from_cli, from_api, from_http))
    capsys.readouterr()


def _differences(*files: bytes) -> list[str]:
    """For a failure message: how far each decoded file is from the first."""
    first, *rest = (cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_UNCHANGED).astype(int) for f in files)
    return [f"{int((other != first).sum())} values differ, max {int(np.abs(other - first).max())}" for other in rest]


def test_image_endpoint_limits_and_bad_requests(server):
    code, body, _ = _post(server.image_url("/v1/cutout"), _png_bomb())
    assert code == 413 and b"exceeds the limit" in body  # refused from the header, never decoded
    code, body, _ = _post(server.image_url("/v1/mask"), b"\x89PNG but not really")
    assert code == 415
    # A body over the 50 MB default is refused from its Content-Length, before a byte of it is read.
    connection = http.client.HTTPConnection("127.0.0.1", server.image, timeout=30)
    connection.putrequest("POST", "/v1/mask")
    connection.putheader("Content-Length", str(51 << 20))
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status == 413 and b"exceeds the limit" in answer.read()
    connection.close()
    assert _post(server.image_url("/v1/composite?bg=notacolour"), encoded(scene()))[0] == 400
    assert _post(server.image_url("/v1/blur"), encoded(scene()))[0] == 404
    assert http_status(server.image_url("/healthz")) == 200
    assert http_status(server.image_url("/readyz")) == 200
    assert server.proc.poll() is None  # still serving after all of that


def test_control_apis_are_off_and_no_token_is_in_any_command_line(server):
    """Triton takes a restriction's header only on its command line, which ps shows to every local user, so
    the control APIs are restricted to a header no request can carry, and model control is off."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    ours = [line for _, line in command_lines() if f"--grpc-port {server.grpc}" in line
            or f"grpc://127.0.0.1:{server.grpc}/" in line]  # fmt: skip
    assert len(ours) >= 2  # tritonserver and the image endpoint
    assert not any("access-token" in line or "triton-access" in line for line in ours)
    tritonserver = next(line for line in ours if "tritonserver " in line)
    assert "--model-control-mode none" in tritonserver or "--model-control-mode=none" in tritonserver
    for call in ("unload_model", "load_model"):
        with pytest.raises(InferenceServerException):
            getattr(httpclient.InferenceServerClient(f"127.0.0.1:{server.http}"), call)("u2netp")
        with pytest.raises(InferenceServerException):
            getattr(grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}"), call)("u2netp")
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http}")
    for refused in (lambda: client.register_system_shared_memory("x", "/x", 64), client.get_log_settings,
                    lambda: client.update_log_settings({"log_verbose_level": 1}), client.get_trace_settings):  # fmt: skip
        with pytest.raises(InferenceServerException, match="restricted"):
            refused()
    # Not even with the header Triton's command line names: an HTTP/1.1 header name ends at its first colon.
    with socket.create_connection(("127.0.0.1", server.http), timeout=10) as sock:
        sock.sendall(b"GET /v2/logging HTTP/1.1\r\nHost: t\r\nx-u2net-control:off: off\r\nConnection: close\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 403")
    assert client.is_model_ready("u2netp")  # inference, metadata, statistics stay open
    assert client.get_inference_statistics("u2netp")["model_stats"]


def test_the_image_endpoint_runs_in_the_main_venv_and_reads_gifs(server, tmp_path):
    from PIL import Image

    frames = [Image.fromarray(scene(40, 60, seed=i)) for i in range(2)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100)
    code, body, kind = _post(server.image_url("/v1/mask"), (tmp_path / "a.gif").read_bytes())
    assert (code, kind) == (200, "image/png")  # .venv-serve's OpenCV 4.11 decodes no GIF; the main venv's does
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED).shape == (40, 60)
    child = [line for _, line in command_lines() if f"grpc://127.0.0.1:{server.grpc}/" in line]
    assert len(child) == 1 and "runtime.serve.images" in child[0] and "/.venv/bin/python" in child[0]


def test_with_a_token_file_triton_stays_on_loopback():
    from runtime.serve.cli import build_parser, triton_host

    parse = build_parser().parse_args
    assert triton_host(parse(["-e", "x.onnx", "--host", "0.0.0.0"])) == "0.0.0.0"
    assert triton_host(parse(["-e", "x.onnx", "--host", "0.0.0.0", "--token-file", "t"])) == "127.0.0.1"
    assert triton_host(parse(["-e", "x.onnx", "--token-file", "t"])) == "127.0.0.1"


def test_a_port_in_use_is_one_line_and_exit_2(server, engine, tmp_path):
    proc = subprocess.run(
        [str(serve_python()), "-m", "runtime.serve", "--engine", str(engine), "--http-port", str(server.http),
         "--grpc-port", str(server.grpc), "--metrics-port", str(server.metrics), "--image-port", "0"],
        cwd=REPO, env={"PYTHONPATH": str(REPO), "HOME": str(tmp_path), "TMPDIR": str(tmp_path),
                       "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"port {server.http} (HTTP), {server.grpc} (gRPC)" in errors[0], proc.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("u2s-")]


def test_sigterm_stops_everything_and_leaves_nothing(server):
    """Runs last in this module: the server is stopped here, then its traces are looked for."""
    assert server.stop(signal.SIGTERM) == 0, server.log_text()[-2000:]
    assert leftovers(server) == []
    log = server.log_text()
    assert "SIGTERM: shutting down" in log and "Traceback" not in log


def test_sigint_stops_it_too(engine, tmp_path_factory):
    serve_python()  # skips, saying why, where the server's venv could not be built
    started = start_server(engine, tmp_path_factory.mktemp("sig"), "--name", "u2netp", "--image-port", "0")
    try:
        with Remover(started.grpc_url) as remote:
            assert remote.mask(scene()).shape == (48, 72)
    finally:
        code = started.stop(signal.SIGINT)
    assert code == 0 and leftovers(started) == [], started.log_text()[-2000:]


def test_load_test_counts_every_request_and_the_batches_triton_formed(engine, tmp_path, capsys):
    from benchmarks.serve import main as bench_main

    out = tmp_path / "serve.json"
    assert bench_main(["--engine", str(engine), "--clients", "3", "--requests", "12", "--max-batch", "4",
                       "--json", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    served, batching = result["served"], result["batching"]
    assert served["images"] == 12 and served["errors"] == 0 and result["in_process"]["images"] == 12
    assert batching["inferences"] == 12  # the warm-up requests are not counted
    sizes = {int(b): n for b, n in batching["executions_per_batch_size"].items()}
    assert sum(b * n for b, n in sizes.items()) == 12 and max(sizes) <= 4
    assert batching["executions"] == sum(sizes.values()) and result["server_exit"] == 0
    assert served["p50_ms"] <= served["p90_ms"] <= served["p99_ms"]
