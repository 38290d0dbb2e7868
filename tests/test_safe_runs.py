"""Safe batch runs (issue 9): one test per rule, on real files, real signals and real subprocesses.

1 no input modified, nothing outside -o   2 only regular files opened   3 each file once, loops end
4 memory bounded                           5 one reader                  6 API says no clearly
7 SIGTERM = Ctrl-C, no temporaries         8 fail early                  9 one line per problem
10 no outbound network
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import make_tiny_onnx, save, scene

from runtime import atomic
from runtime.io import ImageError, jpeg_end, read_image
from runtime.memory import bytes_per_image, cpu_batch_limit

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_onnx(tmp_path_factory.mktemp("engine") / "tiny.onnx")


def cli(*argv, timeout: float = 120, prefix: tuple[str, ...] = (), cwd: Path | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """The real command line in its own process (signals, FIFOs and stderr as a user sees them)."""
    return subprocess.run([*prefix, sys.executable, "-m", "runtime.infer", "--no-progress", *map(str, argv)],
                          capture_output=True, text=True, timeout=timeout, env=env or ENV, cwd=cwd)


def lines(proc: subprocess.CompletedProcess) -> list[str]:
    return proc.stderr.strip().splitlines()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def outputs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def unprivileged() -> tuple[str, ...]:
    """A prefix that drops root's right to ignore file permissions (root in CI and in containers)."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-U", "true"]).returncode != 0:
        pytest.skip("running as root and cannot drop privileges with unshare -U")
    return ("unshare", "-U")


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


# --- rule 1: no input file is ever modified, nothing is written outside -o ---


@pytest.mark.parametrize("via_symlink", [False, True])
def test_output_folder_equal_to_the_input_folder_never_replaces_an_input(tmp_path, tiny, via_symlink):
    photos = tmp_path / "photos"
    save(photos / "cat.jpg", scene(), quality=95)
    save(photos / "cat.png", scene(seed=1))
    before = {p.name: digest(p) for p in photos.iterdir()}
    out = photos
    if via_symlink:
        out = tmp_path / "link"
        out.symlink_to(photos)
    proc = cli("--engine", tiny, photos, "-o", out, "--mode", "mask")
    assert proc.returncode == 1
    errors = [line for line in lines(proc) if line.startswith("error:")]
    assert len(errors) == 2 and all("would replace the input" in line for line in errors), errors
    assert {p.name: digest(p) for p in photos.iterdir()} == before  # byte-identical, nothing added


def test_glob_with_dotdot_after_a_wildcard_writes_only_inside_out(tmp_path, tiny):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    save(tmp_path / "other" / "a.jpg", scene(), quality=95)
    victim = save(tmp_path / "other" / "a.png", scene(seed=3))  # where the old code wrote a.jpg's mask
    before = digest(victim)
    proc = cli("--engine", tiny, "in/*/../../other/*.jpg", "-o", "out", "--mode", "mask", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert digest(victim) == before
    assert outputs(tmp_path / "out") == ["a.png"]


def test_a_symlink_inside_out_cannot_lead_outputs_elsewhere(tmp_path, tiny):
    save(tmp_path / "in" / "sub" / "x.jpg", scene(), quality=95)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").symlink_to(elsewhere)
    proc = cli("--engine", tiny, tmp_path / "in", "-o", tmp_path / "out")
    assert proc.returncode == 1 and "would be written outside -o" in proc.stderr
    assert list(elsewhere.iterdir()) == []


# --- rule 2: only regular files are opened; a run can always be interrupted ---


def test_fifos_and_sockets_named_like_images_are_reported_never_opened(tmp_path, tiny):
    folder = tmp_path / "in"
    save(folder / "good.jpg", scene(), quality=95)
    os.mkfifo(folder / "x.jpg")  # opening it for reading would block until a writer appears
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "s.png"))
    try:
        proc = cli("--engine", tiny, folder, "-o", tmp_path / "out", "--mode", "mask", timeout=60)
    finally:
        server.close()
    assert proc.returncode == 1
    errors = sorted(line for line in lines(proc) if line.startswith("error:"))
    assert len(errors) == 2
    assert "s.png: is a socket" in errors[0] and "x.jpg: is a FIFO (named pipe)" in errors[1]
    assert lines(proc)[-1].startswith("1 ok, 2 failed")
    with pytest.raises(ImageError, match="is a FIFO"):
        read_image(folder / "x.jpg")  # the reader itself, in this process: no block either


# --- rule 3: each resolved source processed once; directory symlink loops followed at most once ---


def test_recursive_glob_over_symlink_loops_processes_each_file_once(tmp_path, tiny):
    folder = tmp_path / "lib"
    save(folder / "a" / "one.jpg", scene(), quality=95)
    save(folder / "b" / "two.png", scene(seed=1))
    (folder / "a" / "up").symlink_to(folder)  # two loops back to the top: the old glob never ended
    (folder / "b" / "up").symlink_to(folder)
    proc = cli("--engine", tiny, f"{folder}/**/*.*", "-o", tmp_path / "out", "--mode", "mask", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert outputs(tmp_path / "out") == ["a/one.png", "b/two.png"]
    proc = cli("--engine", tiny, folder, "-o", tmp_path / "out2", "--mode", "mask", timeout=60)
    assert proc.returncode == 0 and outputs(tmp_path / "out2") == ["a/one.png", "b/two.png"]


def test_a_folder_and_a_file_inside_it_are_done_once(tmp_path, tiny):
    one = save(tmp_path / "in" / "sub" / "x.jpg", scene(), quality=95)
    link = tmp_path / "alias.jpg"
    link.symlink_to(one)
    proc = cli("--engine", tiny, tmp_path / "in", one, link, "-o", tmp_path / "out", "--mode", "mask")
    assert proc.returncode == 0 and lines(proc)[-1].startswith("1 ok, 0 failed"), proc.stderr
    assert outputs(tmp_path / "out") == ["sub/x.png"]


# --- rule 4: memory is bounded whatever the options ---


def test_cpu_batch_limit_follows_the_memory_available():
    per = bytes_per_image(320)
    assert cpu_batch_limit(320, available=0) == 1
    assert cpu_batch_limit(320, available=4 * 40 * per) == 40
    assert cpu_batch_limit(160, available=4 * 40 * per) == 160  # a quarter of the pixels, 4x the images


def test_huge_batch_size_is_reduced_and_the_run_fits_under_rlimit_as(tmp_path, random_u2netp):
    engine = random_u2netp.fp32  # the real U²-NetP architecture at a test size
    for i in range(3):
        save(tmp_path / "in" / f"{i}.jpg", scene(seed=i), quality=95)
    # Limit this process's address space to what it maps after loading its libraries plus 2 GiB:
    # batch 64 (the engine's cap without the memory rule) would not fit in a quarter of it.
    code = (
        "import resource, sys, numpy, cv2, onnxruntime\n"
        "vm = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:'))\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + 2 * 2**30, resource.RLIM_INFINITY))\n"
        "from runtime.infer import main\n"
        f"sys.exit(main(['--engine', {str(engine)!r}, {str(tmp_path / 'in')!r}, '-o', {str(tmp_path / 'out')!r},"
        " '--mode', 'mask', '--batch-size', '100000', '--provider', 'cpu', '--threads', '1', '--no-progress']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr
    reduced = [line for line in lines(proc) if "batch size 100000 reduced to" in line]
    assert len(reduced) == 1, proc.stderr
    assert int(reduced[0].split("reduced to ")[1].split(":")[0]) < 64
    assert len(outputs(tmp_path / "out")) == 3


# --- rule 5: one image reader, the same decision everywhere ---


def test_motion_photo_accepted_and_cut_jpeg_refused(tmp_path, tiny):
    jpeg = jpeg_bytes(scene(96, 128))
    video = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40  # what a phone appends after the photo
    motion = tmp_path / "in" / "motion.jpg"
    motion.parent.mkdir()
    motion.write_bytes(jpeg + video)
    # A tail with bytes that look like markers (the old check searched the whole file for them).
    (tmp_path / "in" / "tricky.jpg").write_bytes(jpeg + b"\xff\xda\x00\x08junk" * 10)
    (tmp_path / "in" / "cut.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])
    assert jpeg_end(jpeg + video) == len(jpeg)
    assert np.array_equal(read_image(motion)[0], read_image(jpeg)[0])
    with pytest.raises(ImageError, match="cut.jpg: truncated JPEG"):
        read_image(tmp_path / "in" / "cut.jpg")
    proc = cli("--engine", tiny, tmp_path / "in", "-o", tmp_path / "out", "--mode", "mask")
    assert lines(proc)[-1].startswith("2 ok, 1 failed"), proc.stderr
    assert [line for line in lines(proc) if line.startswith("error:")] == [
        f"error: {tmp_path / 'in' / 'cut.jpg'}: truncated JPEG (image data ends before the end-of-image marker)"]


def test_training_data_check_decides_like_the_runtime(tmp_path):
    from train.data import collect_pairs

    images, masks = tmp_path / "d" / "images", tmp_path / "d" / "masks"
    jpeg = jpeg_bytes(scene(96, 128))
    for name, data in [("motion", jpeg + b"\x00\x00\x00\x18ftypmp42" * 50), ("cut", jpeg[: len(jpeg) // 2])]:
        images.mkdir(parents=True, exist_ok=True)
        (images / f"{name}.jpg").write_bytes(data)
        save(masks / f"{name}.png", np.zeros((96, 128), np.uint8), mode="L")
    (images / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(100))
    report = collect_pairs(tmp_path / "d", progress=False)
    assert [p.name for p in report.pairs] == ["motion.jpg"]
    unreadable = " | ".join(report.problems["unreadable"])
    assert "cut.jpg: truncated JPEG" in unreadable and "phone.heic: HEIC" in unreadable


def test_undecodable_formats_in_a_folder_are_named(tmp_path, tiny):
    save(tmp_path / "in" / "ok.png", scene())
    (tmp_path / "in" / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    (tmp_path / "in" / "pic.avif").write_bytes(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1" + bytes(64))
    proc = cli("--engine", tiny, tmp_path / "in", "-o", tmp_path / "out", "--mode", "mask")
    errors = [line for line in lines(proc) if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 2
    assert "phone.heic: HEIC image" in errors[0] and "pic.avif: AVIF image" in errors[1]


def test_accuracy_benchmark_handles_motion_photos_missing_json_folders_and_bad_numbers(tmp_path, tiny, capsys):
    from benchmarks.accuracy import main as accuracy

    images, masks = tmp_path / "d" / "images", tmp_path / "d" / "masks"
    images.mkdir(parents=True)
    for i in range(3):
        img = scene(48, 72, seed=i)
        (images / f"{i}.jpg").write_bytes(jpeg_bytes(img) + (b"\x00\x00\x00\x18ftypmp42" * 20 if i == 0 else b""))
        save(masks / f"{i}.png", np.where(img.mean(axis=2) > 128, 255, 0).astype(np.uint8), mode="L")
    report = tmp_path / "not" / "yet" / "acc.json"
    assert accuracy(["--engine", str(tiny), "--data", str(tmp_path / "d"), "--json", str(report)]) == 0
    assert '"n_images": 3' in report.read_text()  # the motion photo counted, the missing folders created
    for option in ("--batch-size", "--limit"):
        with pytest.raises(SystemExit) as exit_:
            accuracy(["--engine", str(tiny), "--data", str(tmp_path / "d"), option, "0"])
        assert exit_.value.code == 2 and "must be at least 1, not 0" in capsys.readouterr().err


# --- rule 6: the API takes what numpy users pass, or says no ---


def test_float_images_in_0_to_1_mean_the_same_as_uint8(tiny):
    from runtime.api import Remover

    rgb = scene(48, 72)
    with Remover(tiny) as r:
        as_float = rgb.astype(np.float64) / 255.0  # what skimage.img_as_float gives
        assert np.array_equal(r.mask(as_float), r.mask(rgb))
        assert np.array_equal(r.cutout(as_float.astype(np.float32))[..., :3], rgb)  # colours, not black
        with pytest.raises(ValueError, match=r"float images must hold 0\.\.1"):
            r.mask(rgb.astype(np.float32))  # 0..255 floats: refused, never clipped to 0/1
        with pytest.raises(ValueError, match="values in"):
            r.mask(np.full((8, 8, 3), np.nan, np.float32))


@pytest.mark.parametrize(("shape", "message"), [((20, 30, 5), "C = 1, 2, 3 or 4"), ((3, 20, 30), "channels-first"),
                                                ((0, 0, 3), "empty"), ((2, 20, 30, 3), "expected")])
def test_bad_array_shapes_are_value_errors_naming_the_shape(tiny, shape, message):
    from runtime.api import Remover

    with Remover(tiny) as r, pytest.raises(ValueError, match=message):
        r.mask(np.zeros(shape, np.uint8))


def test_closed_remover_and_bad_colours_say_what_is_wrong(tiny):
    from runtime.api import Remover, apply_composite

    r = Remover(tiny)
    rgb = scene()
    with pytest.raises(ValueError, match=r"not a colour: \(300, 0, 0\)"):
        r.composite(rgb, (300, 0, 0))
    with pytest.raises(ValueError, match="not a colour"):
        apply_composite(rgb, np.zeros(rgb.shape[:2], np.uint8), (1, 2))
    r.close()
    r.close()  # twice is fine
    for call in (r.mask, r.cutout, r.composite):
        with pytest.raises(RuntimeError, match="Remover is closed"):
            call(rgb)


# --- rule 7: SIGTERM = Ctrl-C; leftovers of killed runs removed; short temporary names ---


@pytest.mark.parametrize(("sig", "status", "cause"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_signals_end_a_run_with_a_message_and_no_partial_files(tmp_path, tiny, sig, status, cause):
    big = scene(1500, 2000)
    for i in range(40):  # enough work that the run is surely in the middle of writing when signalled
        save(tmp_path / "in" / f"{i:02d}.png", np.roll(big, i, axis=1), compress_level=0)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "runtime.infer", "--no-progress", "--engine", str(tiny),
                             str(tmp_path / "in"), "-o", str(out), "--png-level", "9"],
                            stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.iterdir())) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert f"interrupted by {cause}" in err and "Traceback" not in err
    assert not [p for p in out.iterdir() if p.name.startswith(atomic.TEMP_PREFIX)]
    assert 0 < len(outputs(out)) < 40


def test_temporaries_of_a_killed_run_are_removed_by_the_next_run(tmp_path, tiny):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs, as after SIGKILL or a power loss
    (tmp_path / "out" / "sub").mkdir(parents=True)
    stale = [tmp_path / "out" / f"{atomic.TEMP_PREFIX}{dead.pid}-0123456789ab.png",
             tmp_path / "out" / "sub" / f"{atomic.TEMP_PREFIX}{dead.pid}-ba9876543210.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    save(tmp_path / "in" / "sub" / "x.jpg", scene(), quality=95)
    proc = cli("--engine", tiny, tmp_path / "in", "-o", tmp_path / "out", "--mode", "mask")
    assert proc.returncode == 0, proc.stderr
    assert outputs(tmp_path / "out") == ["sub/x.png"]


def test_a_250_byte_file_name_works(tmp_path, tiny):
    name = "a" * 246
    save(tmp_path / "in" / f"{name}.jpg", scene(), quality=95)
    proc = cli("--engine", tiny, tmp_path / "in", "-o", tmp_path / "out", "--mode", "mask")
    assert proc.returncode == 0, proc.stderr
    assert outputs(tmp_path / "out") == [f"{name}.png"]


# --- rule 8: fail early; and the smaller cases of unreadable paths ---


def test_occupied_or_unwritable_output_fails_before_the_engine_loads(tmp_path, tiny):
    save(tmp_path / "in" / "x.jpg", scene(), quality=95)
    (tmp_path / "file").write_text("not a folder")
    # A missing engine would be exit 2 too, but with another line: -o is checked first.
    proc = cli("--engine", tmp_path / "missing.onnx", tmp_path / "in", "-o", tmp_path / "file")
    assert proc.returncode == 2 and lines(proc) == [f"error: -o {tmp_path / 'file'}: cannot write there: "
                                                    "exists and is not a folder"]
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    proc = cli("--engine", tmp_path / "missing.onnx", tmp_path / "in", "-o", locked / "out", prefix=unprivileged())
    assert proc.returncode == 2 and "cannot write there" in proc.stderr and "missing.onnx" not in proc.stderr


def test_unsearchable_and_unlistable_folders_are_one_line_each(tmp_path, tiny):
    save(tmp_path / "in" / "ok.jpg", scene(), quality=95)
    hidden_file = save(tmp_path / "locked" / "x.jpg", scene(), quality=95)
    save(tmp_path / "in" / "closed" / "y.jpg", scene(), quality=95)
    os.chmod(tmp_path / "locked", 0o000)
    os.chmod(tmp_path / "in" / "closed", 0o000)
    try:
        proc = cli("--engine", tiny, tmp_path / "in", hidden_file, "-o", tmp_path / "out", "--mode", "mask",
                   prefix=unprivileged())
    finally:
        os.chmod(tmp_path / "locked", 0o755)
        os.chmod(tmp_path / "in" / "closed", 0o755)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in lines(proc) if line.startswith("error:")]
    assert len(errors) == 2, proc.stderr
    assert "closed: cannot list this folder: Permission denied" in errors[0]
    assert f"{hidden_file}: cannot access: Permission denied" in errors[1]
    assert lines(proc)[-1].startswith("1 ok, 2 failed")


def test_a_recursive_glob_reports_an_unlistable_folder_once(tmp_path, tiny):
    save(tmp_path / "in" / "ok.jpg", scene(), quality=95)
    save(tmp_path / "in" / "closed" / "y.jpg", scene(), quality=95)
    os.chmod(tmp_path / "in" / "closed", 0o000)
    try:
        proc = cli("--engine", tiny, str(tmp_path / "in" / "**" / "*.jpg"), "-o", tmp_path / "out", "--mode", "mask",
                   prefix=unprivileged())
    finally:
        os.chmod(tmp_path / "in" / "closed", 0o755)
    errors = [line for line in lines(proc) if line.startswith("error:")]
    assert len(errors) == 1 and "closed: cannot list this folder" in errors[0], proc.stderr
    assert proc.returncode == 1 and lines(proc)[-1].startswith("1 ok, 1 failed")


# --- rule 9: one line per problem on stderr ---


def test_decoder_messages_never_reach_stderr(tmp_path, tiny):
    import cv2

    good = scene(64, 96)
    png = bytearray(cv2.imencode(".png", good)[1].tobytes())
    png[60] ^= 0xFF  # a flipped byte in the image data: libpng would print "IDAT: CRC error"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "crc.png").write_bytes(bytes(png))
    jpeg = bytearray(jpeg_bytes(scene(256, 256, seed=2)))
    jpeg[len(jpeg) // 2 : len(jpeg) // 2 + 64] = b"\x00" * 64  # libjpeg: "Corrupt JPEG data: ..." warning
    (tmp_path / "in" / "corrupt.jpg").write_bytes(bytes(jpeg))
    proc = cli("--engine", tiny, tmp_path / "in", "-o", tmp_path / "out", "--mode", "mask", "-q")
    err = lines(proc)
    assert not [line for line in err if "libpng" in line or "Corrupt JPEG" in line or "[ WARN" in line], err
    assert err[-1].startswith(("1 ok, 1 failed", "0 ok, 2 failed"))  # libjpeg may or may not give up
    assert [line for line in err if not line.startswith("error:")] == [err[-1]]


# --- rule 10: no outbound network ---

_CLIS = ["runtime.infer", "benchmarks.accuracy", "benchmarks.fps", "benchmarks.pipeline", "benchmarks.demo",
         "benchmarks.memory",
         "export.to_onnx", "export.to_trt", "train"]


@pytest.mark.parametrize("module", _CLIS)
def test_every_cli_disables_onnxruntime_telemetry_before_importing_it(module):
    env = {k: v for k, v in ENV.items() if k != "ORT_DISABLE_TELEMETRY"}
    code = (f"import importlib, os; importlib.import_module({module!r} if {module!r} != 'train' "
            "else 'train.__main__'); print(os.environ.get('ORT_DISABLE_TELEMETRY'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "1", proc.stderr[-2000:]


def test_a_users_own_telemetry_setting_is_kept():
    code = "import os, runtime.infer; print(os.environ['ORT_DISABLE_TELEMETRY'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**ENV, "ORT_DISABLE_TELEMETRY": "0"})
    assert proc.stdout.strip() == "0"


def test_a_run_makes_no_outbound_connection(tmp_path, tiny):
    """Audit every connection attempt of a real run: Python's by audit hook, the C libraries' by strace."""
    save(tmp_path / "in" / "x.jpg", scene(), quality=95)
    env = {k: v for k, v in ENV.items() if k != "ORT_DISABLE_TELEMETRY"}
    hook = (
        "import sys, os\n"
        "events = []\n"
        "def audit(event, args):\n"
        "    if event in ('socket.connect', 'socket.getaddrinfo', 'socket.gethostbyname'):\n"
        "        events.append((event, repr(args)[:200]))\n"
        "    if event == 'import' and args[0] == 'onnxruntime':\n"
        "        events.append(('onnxruntime imported with telemetry', os.environ.get('ORT_DISABLE_TELEMETRY')))\n"
        "sys.addaudithook(audit)\n"
        "from runtime.infer import main\n"
        f"code = main(['--engine', {str(tiny)!r}, {str(tmp_path / 'in')!r}, '-o', {str(tmp_path / 'o')!r}, '--no-progress'])\n"
        "print(events)\n"
        "sys.exit(code)\n"
    )
    command = [sys.executable, "-c", hook]
    strace = shutil.which("strace")
    if strace and subprocess.run([strace, "-o", os.devnull, "true"], capture_output=True).returncode == 0:
        command = [strace, "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(tmp_path / "trace"), *command]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[('onnxruntime imported with telemetry', '1')]"
    if (tmp_path / "trace").exists():
        inet = [line for line in (tmp_path / "trace").read_text().splitlines() if "AF_INET" in line]
        assert not [line for line in inet if "127.0.0.1" not in line and "::1" not in line], inet
