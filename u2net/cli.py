"""``u2net COMMAND [ARGS...]``: each subcommand is one of the toolkit's ``python -m`` tools, unchanged.

    u2net fetch u2netp                          # = python -m export.fetch u2netp
    u2net infer -e u2netp.onnx photos/ -o out   # = python -m runtime.infer -e u2netp.onnx photos/ -o out
    u2net export onnx u2net.pth --fp16          # = python -m export.to_onnx u2net.pth --fp16
    u2net bench fps --models u2netp             # = python -m benchmarks.fps --models u2netp

The arguments after the command go to that tool's own parser and its exit status comes back, so the
``python -m`` form and this one are the same program. Only the chosen tool is imported: ``u2net infer``
never imports torch, and ``u2net --help`` imports nothing.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple


class Command(NamedTuple):
    module: str  # what `python -m` runs
    target: str  # "module:function", the function taking argv and returning the exit status
    summary: str
    extra: str | None = None  # the pyproject extra it needs beyond the base install


COMMANDS: dict[str, Command] = {
    "infer": Command("runtime.infer", "runtime.infer:main", "cut out photos and videos: masks, cutouts, composites"),
    "images": Command("runtime.serve.images", "runtime.serve.images:main", "the HTTP image endpoint", "web"),
    "serve": Command("runtime.serve", "runtime.serve.cli:main", "a Triton server (PyTriton) and the image endpoint",
                     "serve"),
    "fetch": Command("export.fetch", "export.fetch:main", "download the official U²-Net / U²-NetP weights as ONNX"),
    "train": Command("train", "train.__main__:cli", "train U²-Net or U²-NetP", "train"),
    "synthetic": Command("train.synthetic", "train.synthetic:main", "write a synthetic salient-object data set",
                         "train"),
    "demo": Command("benchmarks.demo", "benchmarks.demo:main", "the whole chain into demo_out/ (make demo)"),
}  # fmt: skip
GROUPS: dict[str, dict[str, Command]] = {
    "export": {
        "onnx": Command("export.to_onnx", "export.to_onnx:main", "checkpoint -> ONNX (FP32, FP16, INT8), verified",
                        "export"),
        "trt": Command("export.to_trt", "export.to_trt:main", "checkpoint or ONNX -> TensorRT engine, verified",
                       "export"),
        "triton": Command("export.to_triton", "export.to_triton:main", "ONNX files and engines -> a Triton model "
                          "repository"),
    },
    "bench": {
        "fps": Command("benchmarks.fps", "benchmarks.fps:main", "speed of every backend and precision here"),
        "pipeline": Command("benchmarks.pipeline", "benchmarks.pipeline:main", "whole folders against rembg",
                            "rembg"),
        "accuracy": Command("benchmarks.accuracy", "benchmarks.accuracy:main", "SOD metrics of any engine"),
        "codecs": Command("benchmarks.codecs", "benchmarks.codecs:main", "JPEG decode and PNG/WebP encode timings"),
        "memory": Command("benchmarks.memory", "benchmarks.memory:main", "peak memory of whole runs"),
        "headers": Command("benchmarks.headers", "benchmarks.headers:main", "header readers against Pillow"),
        "edges": Command("benchmarks.edges", "benchmarks.edges:main", "clean edges against rembg's"),
        "video": Command("benchmarks.video", "benchmarks.video:main", "video frames/s and temporal smoothing",
                         "video"),
        "make-clips": Command("benchmarks.make_clips", "benchmarks.make_clips:main", "clips for benchmarks.video",
                              "video"),
        "serve": Command("benchmarks.serve", "benchmarks.serve:main", "load tests of the servers"),
        "bulk": Command("benchmarks.bulk", "benchmarks.bulk:main", "Dask bulk jobs against a local run", "dask"),
    },
}  # fmt: skip


def resolve(argv: Sequence[str]) -> tuple[Command, list[str], str] | None:
    """(command, its arguments, the words that named it) for ``argv``, or None when no command is named."""
    if not argv:
        return None
    word = argv[0]
    if word in COMMANDS:
        return COMMANDS[word], list(argv[1:]), word
    if word in GROUPS and len(argv) > 1 and argv[1] in GROUPS[word]:
        return GROUPS[word][argv[1]], list(argv[2:]), f"{word} {argv[1]}"
    return None


def usage(only: str | None = None) -> str:
    """Every command (or only those of the group ``only``) with what it is and its ``python -m`` form."""
    lines = ["usage: u2net COMMAND [ARGS...]   (u2net COMMAND --help: that command's options)", "", "commands:"]
    rows = [] if only else [(name, c) for name, c in COMMANDS.items()]
    rows += [(f"{group} {name}", c) for group, table in GROUPS.items() for name, c in table.items()
             if only in (None, group)]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, command in rows:
        needs = f" [{command.extra}]" if command.extra else ""
        lines.append(f"  {name:<{width}}  {command.summary}{needs}  (python -m {command.module})")
    lines += ["", "[x]: needs the x extra, e.g. pip install -e '.[x]'"]
    return "\n".join(lines)


def entry(command: Command) -> Callable[[list[str]], int | None]:
    """The tool's main function (importing its module, and only it)."""
    module, _, function = command.target.partition(":")
    return getattr(importlib.import_module(module), function)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"], []):
        print(usage())
        return 0 if argv else 2
    if argv[:1] == ["--version"]:
        from runtime.artifact import PRODUCER, project_version  # numpy and the preprocessing spec, no engine

        print(f"{PRODUCER} {project_version()}")
        return 0
    found = resolve(argv)
    if found is None:
        group = argv[0] if argv[0] in GROUPS else None
        if group and argv[1:2] in (["-h"], ["--help"]):
            print(usage(group))
            return 0
        what = f"{group} needs one of: {', '.join(GROUPS[group])}" if group else f"unknown command {argv[0]!r}"
        print(f"{usage(group)}\n\nerror: {what}", file=sys.stderr)
        return 2
    command, args, _ = found
    try:
        status = entry(command)(args)
    except ModuleNotFoundError as exc:  # an extra that is not installed: say which
        if command.extra is None or exc.name is None or exc.name.split(".")[0] in ("runtime", "export", "train",
                                                                                 "benchmarks", "u2net"):
            raise
        print(f"error: {exc.name} is not installed: pip install -e '.[{command.extra}]'", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
