"""The benchmarks' logic on tiny inputs: records, ratios, JSON, comparisons. No speed is asserted."""

from __future__ import annotations

import importlib.util
import json

import cv2
import numpy as np
import pytest

from benchmarks import accuracy, fps, runners
from benchmarks.common import PAPER_FPS, Timing, measure
from runtime.preprocess import PreprocessSpec, preprocess

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_measure_counts_warmup_and_minimum_iterations():
    calls = []
    timing = measure(lambda: calls.append(1), batch_size=4, seconds=0.0, warmup=3, min_iters=5)
    assert len(calls) == 8 and len(timing.latencies_ms) == 5
    t = Timing([10.0, 10.0, 40.0], batch_size=4)
    assert t.throughput == pytest.approx(4 * 1000 / 20.0)
    assert t.percentile(50) == 10.0


def test_torch_and_onnxruntime_runners_agree(random_u2netp):
    from runtime.backends.onnxrt import OnnxRuntimeBackend

    fp32, _ = random_u2netp.onnx
    ort_runner = OnnxRuntimeBackend(fp32, provider="cpu")
    torch_runner = runners.torch_backend(random_u2netp.model, ort_runner.spec)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (50, 70, 3), dtype=np.uint8) for _ in range(2)]
    batch = preprocess(images, ort_runner.spec)
    np.testing.assert_allclose(torch_runner.run(batch), ort_runner.run(batch), atol=1e-4)
    staged = torch_runner.stage(batch)
    assert tuple(torch_runner.run_staged(staged).shape) == (2, 1, 64, 64)


def test_fps_json_rows_and_paper_ratio(tmp_path, monkeypatch):
    monkeypatch.setattr(runners, "CACHE_DIR", tmp_path / "cache")
    out = tmp_path / "fps.json"
    status = fps.main(["--models", "u2netp", "--size", "64", "--seconds", "0.05", "--warmup", "1",
                       "--json", str(out), "--plot", str(tmp_path / "fps.png")])
    assert status == 0
    rows = json.loads(out.read_text())
    paper = [r for r in rows if "paper" in r["device"]]
    measured = [r for r in rows if "paper" not in r["device"]]
    assert [r["throughput_fps"] for r in paper] == [PAPER_FPS["u2netp"]]
    installed = {"openvino"} if importlib.util.find_spec("openvino") else set()
    assert {r["backend"] for r in measured} == {"onnxruntime", "pytorch", *installed}
    precisions = {(r["backend"], r["precision"]) for r in measured}
    assert {("onnxruntime", "fp32"), ("onnxruntime", "int8 (u8s8)")} <= precisions
    if installed:
        assert {("openvino", "fp32"), ("openvino", "int8 (u8s8)"), ("openvino", "int8 (s8s8)")} <= precisions
    for r in measured:  # every row's ratio to the ONNX Runtime FP32 row of the same run
        assert r["vs_ort_fp32"] > 0
    base = next(r for r in measured if (r["backend"], r["precision"]) == ("onnxruntime", "fp32"))
    assert base["vs_ort_fp32"] == pytest.approx(1.0)
    for r in measured:
        for key in ("model", "backend", "precision", "batch_size", "latency_ms_p50", "throughput_fps", "vs_1080ti"):
            assert key in r
        assert r["vs_1080ti"] == pytest.approx(r["throughput_fps"] / PAPER_FPS["u2netp"])
        assert r["latency_ms_p50"] <= r["latency_ms_p90"] <= r["latency_ms_p99"]
        assert r["e2e_throughput_fps"] > 0
    assert (tmp_path / "fps.png").stat().st_size > 1000
    assert (tmp_path / "cache").is_dir()  # exported once, reused by later runs


def test_fps_rejects_unknown_model(capsys):
    assert fps.main(["--models", "u2netx"]) == 2
    assert "unknown model" in capsys.readouterr().err


def _tiny_dataset(root, n=6):
    import cv2

    from train.synthetic import make_sample

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image, mask = make_sample(i, size=96)
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "masks" / f"{i}.png"), mask)
    return root


def test_accuracy_compare_reports_both_engines_and_deltas(tmp_path, random_u2netp):
    fp32, fp16 = random_u2netp.onnx
    data = _tiny_dataset(tmp_path / "data")
    out = tmp_path / "acc.json"
    assert accuracy.main(["--engine", str(fp32), "--compare", str(fp16), "--data", str(data), "--json", str(out),
                          "--backend", "onnxruntime"]) == 0
    doc = json.loads(out.read_text())
    for key in ("max_f", "mean_f", "mae", "s_measure", "e_measure", "weighted_f", "n_images"):
        assert key in doc and key in doc["compare"]
    assert doc["n_images"] == doc["compare"]["n_images"] == 6
    assert doc["delta"]["mae"] == pytest.approx(doc["compare"]["mae"] - doc["mae"])
    # The probability maps themselves: FP16 differs from FP32, within the FP16 tolerance.
    assert doc["outputs"]["ok"] is True and 0 < doc["outputs"]["max_abs"] <= 5e-2
    assert doc["outputs"]["checks"] == ["batch 1 at 64x64"] * 6
    # FP16 must score like FP32 on the same images.
    assert abs(doc["delta"]["max_f"]) < 0.02 and abs(doc["delta"]["mae"]) < 0.01
    assert 0 <= doc["mae"] <= 1 and 0 <= doc["max_f"] <= 1


def test_accuracy_missing_data_is_one_line(tmp_path, random_u2netp, capsys):
    assert accuracy.main(["--engine", str(random_u2netp.onnx[0]), "--data", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "absent" in err and "\n" not in err


def test_spec_round_trip_through_runner_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(runners, "CACHE_DIR", tmp_path)
    path = runners.cached_onnx("u2netp", 64, None)
    from runtime.backends.onnxrt import OnnxRuntimeBackend

    assert OnnxRuntimeBackend(path, provider="cpu").spec == PreprocessSpec(size=64)
    mtime = path.stat().st_mtime_ns
    assert runners.cached_onnx("u2netp", 64, None) == path and path.stat().st_mtime_ns == mtime


def test_pipeline_small_photos_ratio_is_pipeline_over_bare_model(tmp_path, monkeypatch, capsys):
    import tempfile

    from benchmarks import pipeline

    monkeypatch.setattr(runners, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # so the check below sees its work folder
    out = tmp_path / "pipeline.json"
    args = ["--skip-rembg", "--photos", "0", "--size", "64", "--small", "6", "--batch-size", "2", "--rounds", "2", "--json", str(out),
            "--int8", "--backend", "onnxruntime"]
    assert pipeline.main(args) == 0
    printed = capsys.readouterr().out
    assert "Model: ONNX Runtime" in printed and "u2netp.int8-ort.onnx: u2netp int8" in printed  # what really ran
    (row,) = json.loads(out.read_text())
    assert row["images"] == 6 and row["batch_size"] == 2
    assert len(row["rounds"]) == 2
    for r in row["rounds"]:  # each round: the pipeline over the bare model, measured back to back
        assert r["ratio_vs_bare_model"] == pytest.approx(r["pipeline_images_per_s"] / r["bare_model_images_per_s"])
    assert row["ratio_vs_bare_model"] == pytest.approx(np.median([r["ratio_vs_bare_model"] for r in row["rounds"]]))
    for r in row["rounds"]:  # the work outside the model, and the best ratio it leaves room for
        assert r["pipeline_cpu_ms_per_image"] > 0 and 0 < r["bare_model_cores_busy"] <= row["cores"] + 0.5
        assert r["ceiling_vs_bare_model"] == pytest.approx(pipeline.ceiling(
            r["bare_model_images_per_s"], r["bare_model_cores_busy"], r["pipeline_cpu_ms_per_image"], row["cores"]))
    assert "best ratio this machine allows" in printed
    assert (tmp_path / "cache").is_dir() and not list(tmp_path.glob("u2net_pipeline_*"))  # work folder removed


def test_pipeline_ceiling_counts_the_cores_the_model_leaves_idle():
    from benchmarks.pipeline import ceiling

    # 100 ms per image on both of 2 cores, plus 10 ms of pipeline work: (200 + 10) / 2 = 105 ms.
    assert ceiling(10.0, 2.0, 10.0, 2) == pytest.approx(100 / 105)
    assert ceiling(10.0, 1.0, 10.0, 2) == 1.0  # a model on one core leaves the other for the pipeline
    assert ceiling(10.0, 1.0, 250.0, 2) == pytest.approx(100 / 175)  # unless the pipeline needs more than that


def test_pipeline_step_times_cover_every_step_for_both_codec_sets(tmp_path, monkeypatch):
    from benchmarks import pipeline
    from runtime import codecs

    monkeypatch.setattr(runners, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(pipeline, "LARGE_SIZE", (400, 300))  # the same steps on a small photo
    photos = pipeline.make_large_photos(tmp_path / "photos", 1)
    fast = codecs.simplejpeg, codecs.isal_zlib, codecs.deflate
    onnx = runners.cached_onnx("u2netp", 64, None)
    row = pipeline.step_times(pipeline.Engine(onnx, onnx, "onnxruntime"), photos, tmp_path, rounds=1)
    assert (codecs.simplejpeg, codecs.isal_zlib, codecs.deflate) == fast  # the libraries are put back
    for which in ("runtime_ms", "opencv_ms"):
        assert list(row[which]) == list(pipeline.STEPS) and all(ms > 0 for ms in row[which].values())
    fast_png = cv2.imread(str(tmp_path / "runtime.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(fast_png, cv2.imread(str(tmp_path / "opencv.png"), cv2.IMREAD_UNCHANGED))


def test_codec_benchmark_checks_pixels_and_reports_ratios(tmp_path, monkeypatch):
    from benchmarks import codecs as codec_bench

    monkeypatch.setattr(codec_bench, "LARGE_SIZE", (200, 150))
    out = tmp_path / "codecs.json"
    assert codec_bench.main(["--photos", "1", "--rounds", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    decode = {r["name"]: r for r in rows if r["step"] == "JPEG decode"}
    assert decode["cv2.imdecode, full size (before)"]["time_ratio"] == 1.0 and len(decode) == 4
    for masks in ("object", "soft"):
        encode = {r["name"]: r for r in rows if r["step"] == "encode" and r["masks"] == masks}
        assert encode["OpenCV PNG level 1, up filter (before)"]["size_ratio"] == 1.0
        assert encode["runtime PNG --png-level 12"]["mb"] < encode["runtime PNG --png-level 2"]["mb"]


def test_demo_never_deletes_a_folder_it_did_not_make(tmp_path):
    from benchmarks import demo

    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "keep.jpg").write_bytes(b"not really a photo")
    with pytest.raises(SystemExit, match="was not made by the demo"):
        demo.main(["--out", str(precious)])
    assert (precious / "keep.jpg").exists()
