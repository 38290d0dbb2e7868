"""TensorRT's real Python bindings (and cuda-python's), importable on a machine without a GPU.

PyPI serves the compiled bindings alone (``tensorrt-cu12-bindings`` / ``tensorrt-cu13-bindings``,
about 1.3 MB); the native libraries they link to come from NVIDIA's own index. The bindings call
only nine C entry points of those libraries, so tiny stub libraries that define them (returning
NULL / 0) let the real module import, and its classes, keyword names and enum values be read.
The stub ``createInferBuilder_INTERNAL`` / ``createInferRuntime_INTERNAL`` also send one message
through the logger they are given (C++ ``ILogger::log``: the first virtual function in 10.x, the
fifth in 11.x, where ILogger gained two versioned-interface functions and kept its destructors
before ``log``), as real TensorRT does when it cannot start CUDA, then return NULL: the binding
then raises TypeError.

Everything is cached under ``.cache/tensorrt-real`` (git-ignored): wheels, unpacked wheels, the
compiled stubs and the JSON dump of each release's API (``tests/tensorrt_introspect.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "tensorrt-real"
PYTHON_TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"
INDEX_PROBE = "https://pypi.org/simple/tensorrt-cu12-bindings/"

# The entry points tensorrt.so links to (nm -D --undefined-only), all generations 10.0 .. 11.4.
STUB_SOURCE = r"""
#include <stddef.h>
typedef void (*log_fn)(void *self, int severity, const char *msg);
static void say(void *logger, const char *msg) {
    if (logger) { log_fn *vtable = *(log_fn **)logger; vtable[LOG_SLOT](logger, 1, msg); }  /* ILogger::log */
}
void *createInferBuilder_INTERNAL(void *logger, int version) {
    say(logger, "stub libnvinfer: CUDA initialization failure with error: 35"); return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) {
    say(logger, "stub libnvinfer: CUDA initialization failure with error: 35"); return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return NULL; }
void *getPluginRegistry(void) { return NULL; }
void *getBuilderPluginRegistry(int capability) { return NULL; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
int initLibNvInferPlugins(void *logger, const char *ns) { return 0; }
"""
STUB_LIBRARIES = ("nvinfer", "nvonnxparser", "nvinfer_plugin")
LOG_SLOT = {10: 0, 11: 4}  # ILogger::log's place in the vtable, read from each generation's binary


@dataclass(frozen=True)
class Release:
    """One release of the bindings on PyPI."""

    dist: str  # tensorrt-cu12-bindings or tensorrt-cu13-bindings
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def cuda_major(self) -> int:
        return int(self.dist.split("-cu")[1].split("-")[0])

    def __str__(self) -> str:
        return f"{self.dist}=={self.version}"


# What the comparison covers: the first 10.x, a pre-10.12 weakly typed release (10.8), the first
# release whose FP16 path is strongly typed (10.12), the one the fake defaults to (10.13), the
# newest 10.x, the first 11.x and the newest 11.x (CUDA 13 build, the one `pip install tensorrt` gets).
RELEASES = (
    Release("tensorrt-cu12-bindings", "10.0.1"),
    Release("tensorrt-cu12-bindings", "10.8.0.43"),
    Release("tensorrt-cu12-bindings", "10.12.0.36"),
    Release("tensorrt-cu12-bindings", "10.13.0.35"),
    Release("tensorrt-cu12-bindings", "10.16.1.11"),
    Release("tensorrt-cu12-bindings", "11.0.0.114"),
    Release("tensorrt-cu13-bindings", "11.4.0.106"),
)
CUDA_BINDINGS = ("12.9.4", "13.0.3")  # cuda-python's compiled part, one release per CUDA major
CUDA_PATHFINDER = "1.9.0"  # what cuda-bindings imports to find libraries


class RegistryUnreachable(Exception):
    """PyPI cannot be reached from here: the only reason the real-bindings tests may skip."""


class NoWheelForThisPython(Exception):
    """PyPI answers, but has no wheel of this release for this interpreter."""


def registry_reachable() -> bool:
    try:
        with urllib.request.urlopen(INDEX_PROBE, timeout=15) as response:
            return response.status == 200
    except OSError:
        return False


def download(dist: str, version: str) -> Path:
    """The wheel of ``dist==version`` for this interpreter, downloaded once with pip."""
    folder = CACHE / "wheels"
    stem = f"{dist.replace('-', '_')}-{version}-"
    for wheel in sorted(folder.glob(f"{stem}*.whl")):
        if PYTHON_TAG in wheel.name or "-py3-none-" in wheel.name:
            return wheel
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", "--dest", str(folder), f"{dist}=={version}"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    for wheel in sorted(folder.glob(f"{stem}*.whl")):
        return wheel
    if not registry_reachable():
        raise RegistryUnreachable(f"PyPI is not reachable from here ({INDEX_PROBE}): cannot download {dist}=={version}")
    if "No matching distribution" in proc.stderr or "from versions" in proc.stderr:
        raise NoWheelForThisPython(f"PyPI has no {PYTHON_TAG} wheel of {dist}=={version}")
    raise RuntimeError(f"pip download {dist}=={version} failed: {proc.stderr.strip()[-400:]}")


def unpack(wheel: Path) -> Path:
    target = CACHE / "unpacked" / wheel.stem
    marker = target / ".complete"
    if not marker.exists():
        shutil.rmtree(target, ignore_errors=True)
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
        marker.touch()
    return target


def stub_libraries(major: int) -> Path:
    """A folder of stub ``libnvinfer.so.<major>`` etc., compiled once with the C compiler."""
    folder = CACHE / "stubs" / str(major)
    if all((folder / f"lib{name}.so.{major}").exists() for name in STUB_LIBRARIES):
        return folder
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc or gcc) to build the stub TensorRT libraries")
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "stub.c"
    source.write_text(STUB_SOURCE)
    for name in STUB_LIBRARIES:
        soname = f"lib{name}.so.{major}"
        subprocess.run([compiler, "-shared", "-fPIC", "-O1", f"-DLOG_SLOT={LOG_SLOT[major]}", f"-Wl,-soname,{soname}",
                        "-o", str(folder / soname), str(source)], check=True, capture_output=True, timeout=120)  # fmt: skip
    return folder


@dataclass(frozen=True)
class RealTensorRT:
    """One release, ready to import in a subprocess."""

    release: Release
    site: Path  # the unpacked wheel: tensorrt_bindings/ and its .dist-info
    stubs: Path

    @property
    def library(self) -> Path:
        return self.site / "tensorrt_bindings" / "tensorrt.so"

    def env(self, *extra_paths: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (self.site, *extra_paths, REPO, REPO / "tests"))
        env["LD_LIBRARY_PATH"] = str(self.stubs)
        env["ORT_DISABLE_TELEMETRY"] = "1"
        return env

    def run(self, code: str, *extra_paths: Path, timeout: int = 120) -> subprocess.CompletedProcess:
        """Run ``code`` where ``import tensorrt`` is the real module (installed as tensorrt_bindings)."""
        prelude = "import sys, tensorrt_bindings; sys.modules['tensorrt'] = tensorrt_bindings\n"
        return subprocess.run([sys.executable, "-c", prelude + code], env=self.env(*extra_paths), cwd=REPO,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def dump(self) -> dict:
        """The release's API as ``tests/tensorrt_introspect.py`` reads it (cached as JSON)."""
        path = CACHE / "dumps" / f"{self.release.dist}-{self.release.version}-{PYTHON_TAG}.json"
        script = REPO / "tests" / "tensorrt_introspect.py"
        if path.exists() and path.stat().st_mtime >= script.stat().st_mtime:
            return json.loads(path.read_text())
        proc = subprocess.run([sys.executable, str(script), "tensorrt_bindings"], env=self.env(), capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"{self.release}: introspection failed: {proc.stderr.strip()[-600:]}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(proc.stdout)
        return json.loads(proc.stdout)


def real_tensorrt(release: Release) -> RealTensorRT:
    return RealTensorRT(release, unpack(download(release.dist, release.version)), stub_libraries(release.major))


def cuda_bindings_site(version: str) -> Path:
    """cuda-bindings ``version`` and cuda-pathfinder unpacked into one folder for PYTHONPATH."""
    target = CACHE / "cuda-site" / version
    marker = target / ".complete"
    if not marker.exists():
        shutil.rmtree(target, ignore_errors=True)
        for wheel in (download("cuda-bindings", version), download("cuda-pathfinder", CUDA_PATHFINDER)):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(target)
        marker.touch()
    return target
