"""Shared pieces of the store and Dask tests: an S3-compatible server on loopback, input trees, comparisons.

The S3 server is moto's (``moto[server]``, a dev extra), the one s3fs's own test suite runs against; it binds
127.0.0.1 on a free port and is stopped by the fixture that started it. Clients (this process, and Dask workers
started after it, which inherit the environment) find it through botocore's ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from runtime_helpers import save, scene

TEMP_MARK = ".u2tmp-"


@contextmanager
def s3_server() -> Iterator[str | None]:
    """An S3 endpoint on loopback for the block, with test credentials in the environment; None (and nothing
    started) when moto or s3fs is not installed, so the tests that need it can skip and the others run."""
    try:
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError:
        yield None
        return
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}  # fmt: skip
    saved = {key: os.environ.get(key) for key in [*env, "AWS_PROFILE"]}
    os.environ.update(env)
    os.environ.pop("AWS_PROFILE", None)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def s3(bucket: str):
    """A fresh s3fs filesystem (no listing cache from earlier steps) with ``bucket`` created."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    return fs


def photo_tree(root: Path, count: int, *, height: int = 60, width: int = 80, seed: int = 0) -> list[str]:
    """``count`` photos in three folders (JPEG and PNG), plus a hidden file that searches must skip; returns the
    relative names of the expected outputs (suffix .png)."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        folder = ("a", "b/c", "d")[i % 3]
        picture = scene(height + (i % 5), width, seed=seed + i)
        noise = rng.integers(0, 40, picture.shape, dtype=np.uint8)
        picture = np.clip(picture.astype(np.int16) + noise - 20, 0, 255).astype(np.uint8)
        suffix = ".jpg" if i % 2 else ".png"
        save(root / folder / f"img{i:03d}{suffix}", picture, **({"quality": 92} if suffix == ".jpg" else {}))
        names.append(f"{folder}/img{i:03d}.png")
    save(root / "a" / ".hidden.png", scene(20, 20))
    return sorted(names)


def files(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (temporaries included, so a test sees them) -> its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def objects(fs, prefix: str) -> dict[str, bytes]:
    """Every object below ``prefix`` in a store -> its bytes, keyed by the path below the prefix."""
    fs.invalidate_cache()
    return {key[len(prefix.rstrip("/")) + 1 :]: fs.cat_file(key) for key in sorted(fs.find(prefix))}


def temporaries(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.startswith(TEMP_MARK))
