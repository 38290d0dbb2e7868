"""Store URLs as inputs and outputs of python -m runtime.infer, against a real S3-compatible server on loopback.

The server is moto's (as in s3fs's own tests), started and stopped by this module; everything here is a local
run (no Dask): listing, globs, the header read by a ranged request before the body, one put per output, one line
per bad object, --skip-existing, and the planner's rules (no output over an input, clashes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bulk_helpers import files, objects, photo_tree, s3, s3_server
from runtime_helpers import make_tiny_onnx, save, scene

from runtime import store
from runtime.infer import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def endpoint():
    with s3_server() as url:
        if url is None:
            pytest.skip("moto[server] and s3fs are not installed (pip install -e '.[dev,s3]')")
        yield url


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_onnx(tmp_path_factory.mktemp("engine") / "tiny.onnx")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    return root, photo_tree(root, 9)


def run(capsys, *argv) -> tuple[int, list[str]]:
    code = main([str(a) for a in argv] + ["--no-progress", "--threads", "1"])
    return code, capsys.readouterr().err.strip().splitlines()


def upload(fs, root: Path, prefix: str) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{prefix}/{path.relative_to(root).as_posix()}", path.read_bytes())


def test_a_bucket_in_and_out_gives_the_local_run_s_files(endpoint, tmp_path, capsys, tiny, tree):
    root, names = tree
    fs = s3("photos")
    upload(fs, root, "photos/in")
    fs.pipe_file("photos/in/b/broken.jpg", b"\xff\xd8\xff\xe0 not really")
    code, err = run(capsys, "-e", tiny, root, "-o", tmp_path / "local")
    assert code == 0, err
    code, err = run(capsys, "-e", tiny, "s3://photos/in/", "-o", "s3://photos/out")
    assert code == 1 and err[-1].startswith("9 ok, 1 failed, 0 skipped"), err
    assert err[-1].endswith("outputs in s3://photos/out")
    assert [line for line in err if line.startswith("error:")] == [
        "error: s3://photos/in/b/broken.jpg: truncated header"]  # one line per bad object, named by URL
    assert objects(fs, "photos/out") == files(tmp_path / "local")  # same tree, same bytes, the hidden file skipped

    # Store in, local out; and a pattern, whose outputs are relative to its fixed prefix.
    code, err = run(capsys, "-e", tiny, "s3://photos/in/**/img*.jpg", "-o", tmp_path / "back", "--mode", "mask")
    assert code == 0 and err[-1].startswith("4 ok"), err
    assert sorted(files(tmp_path / "back")) == [n for n in names if int(n[-7:-4]) % 2]
    # One object named by URL goes to OUT/<name>.
    code, err = run(capsys, "-e", tiny, "s3://photos/in/b/c/img001.jpg", "-o", "s3://photos/one")
    assert code == 0 and list(objects(fs, "photos/one")) == ["img001.png"]


def test_one_put_per_output_and_nothing_else(endpoint, tmp_path, capsys, tiny, tree, monkeypatch):
    """No temporary objects and no multipart uploads: the whole file goes up in one PUT (atomic on S3)."""
    import s3fs

    root, names = tree
    calls: list[str] = []
    original = s3fs.S3FileSystem._call_s3

    async def counting(self, method, *args, **kwargs):
        calls.append(method)
        return await original(self, method, *args, **kwargs)

    fs = s3("puts")
    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counting)
    code, err = run(capsys, "-e", tiny, root, "-o", "s3://puts/out", "--mode", "mask")
    assert code == 0, err
    writes = [c for c in calls if c in ("put_object", "create_multipart_upload", "upload_part", "copy_object")]
    assert writes == ["put_object"] * (len(names) + 1)  # one per output, and the -o probe
    assert sorted(objects(fs, "puts/out")) == names  # the -o probe object is gone too


def test_pixel_limit_is_read_from_a_ranged_header_before_the_body(endpoint, tmp_path, capsys, tiny, monkeypatch):
    import s3fs

    fs = s3("bombs")
    small = scene(40, 60)
    fs.pipe_file("bombs/in/ok.png", save(tmp_path / "ok.png", small).read_bytes())
    # A PNG header declaring 60000 x 60000 pixels, followed by 8 MB that must never be fetched.
    header = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + (60000).to_bytes(4, "big") * 2 + b"\x08\x02\0\0\0"
    fs.pipe_file("bombs/in/bomb.png", header + bytes(8 << 20))
    fetched: list[int] = []
    original = s3fs.core.S3File._fetch_range

    def counting(self, start, end):
        fetched.append(end - start)
        return original(self, start, end)

    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", counting)
    code, err = run(capsys, "-e", tiny, "s3://bombs/in", "-o", "s3://bombs/out", "--max-pixels", "10M")
    assert code == 1 and err[-1].startswith("1 ok, 1 failed"), err
    assert "error: s3://bombs/in/bomb.png: 60000x60000 = 3600.0 MP exceeds the limit of 10 MP" in err[-2]
    assert len(fetched) == 2 and sum(fetched) < 2 * store.HEADER_BLOCK, fetched  # one block each, never the 8 MB


def test_skip_existing_on_a_store(endpoint, capsys, caplog, tiny, tree):
    root, names = tree
    fs = s3("again")
    code, _ = run(capsys, "-e", tiny, root, "-o", "s3://again/out")
    assert code == 0
    before = objects(fs, "again/out")
    fs.pipe_file(f"again/out/{names[0]}", before[names[0]][:100])  # a cut output, as from another tool
    code, err = run(capsys, "-e", tiny, root, "-o", "s3://again/out", "--skip-existing")
    assert code == 0 and err[-1].startswith(f"1 ok, 0 failed, {len(names) - 1} skipped"), err
    assert f"again/out/{names[0]}: the existing output is not a complete PNG file" in caplog.text
    assert objects(fs, "again/out") == before


def test_outputs_never_replace_inputs_and_clashes_are_named(endpoint, tmp_path, capsys, tiny):
    fs = s3("same")
    masks = {f"m{i}.png": np.full((8, 8), 40 * i, np.uint8) for i in range(3)}
    for name, mask in masks.items():
        fs.pipe_file(f"same/in/{name}", save(tmp_path / name, mask, mode="L").read_bytes())
    fs.pipe_file("same/in/m0.jpg", fs.cat_file("same/in/m0.png"))  # m0.jpg and m0.png: one output
    before = objects(fs, "same/in")
    code, err = run(capsys, "-e", tiny, "s3://same/in", "-o", "s3://same/in", "--mode", "mask")
    assert code == 1 and err[-1].startswith("0 ok, 4 failed"), err
    assert sum("would replace an input of this run" in line for line in err) == 4  # m0.jpg's would be m0.png
    assert objects(fs, "same/in") == before  # the inputs are left as they were
    code, err = run(capsys, "-e", tiny, "s3://same/in", "-o", "s3://same/out", "--mode", "mask")
    assert code == 1 and "error: s3://same/in/m0.png: its output s3://same/out/m0.png is also the output of " \
        "s3://same/in/m0.jpg; rename one" in err


def test_bad_urls_are_one_line_each(endpoint, tmp_path, capsys, tiny):
    s3("present")
    code, err = run(capsys, "-e", tiny, "s3://present/nothing/here.jpg", "s3://present/empty/",
                    "s3://present/in/*.png", "-o", tmp_path / "o")  # fmt: skip
    assert code == 1 and err[-1].startswith("0 ok, 3 failed"), err
    assert "error: s3://present/nothing/here.jpg: no such object or folder" in err
    assert "error: s3://present/in/*.png: no image files match this pattern" in err
    # -o in a bucket that does not exist: exit 2 before the engine loads (this engine does not exist either).
    code, err = run(capsys, "-e", tmp_path / "none.onnx", "s3://present/nothing", "-o", "s3://no-such-bucket/out")
    assert code == 2 and len(err) == 1 and err[0].startswith("error: -o s3://no-such-bucket/out: cannot write there")


def test_a_protocol_without_its_package_is_one_line(tmp_path, capsys, tiny):
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401

        pytest.skip("gcsfs is installed here")
    except ImportError:
        pass
    save(tmp_path / "a.png", scene())
    code, err = run(capsys, "-e", tiny, "gs://bucket/photo.jpg", tmp_path / "a.png", "-o", tmp_path / "o")
    assert code == 1 and err[-1].startswith("1 ok, 1 failed"), err
    assert err[0].startswith("error: gs://bucket/photo.jpg: gs:// needs a package that is not installed "
                             "(pip install 'u2net-toolkit[gcs]')")  # fmt: skip


def test_memory_and_file_urls_need_no_server(tmp_path, capsys, tiny):
    fsspec = pytest.importorskip("fsspec")
    root = tmp_path / "in"
    names = photo_tree(root, 4)
    code, _ = run(capsys, "-e", tiny, root, "-o", tmp_path / "local")
    code, err = run(capsys, "-e", tiny, f"file://{root}", "-o", "memory://bucket/out")
    assert code == 0 and err[-1].endswith("outputs in memory://bucket/out"), err
    memory = fsspec.filesystem("memory")
    assert objects(memory, "/bucket/out") == files(tmp_path / "local")
    code, err = run(capsys, "-e", tiny, "memory://bucket/out", "-o", f"file://{tmp_path}/again", "--mode", "mask")
    assert code == 0 and sorted(files(tmp_path / "again")) == names
    memory.rm("/bucket", recursive=True)
