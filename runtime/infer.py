"""Remove backgrounds from files and folders: a thin command line over ``runtime.api`` and ``runtime.pipeline``.

    python -m runtime.infer --engine u2netp.onnx photos/ -o out             # cutouts (RGBA PNG)
    python -m runtime.infer --engine u2netp.onnx 'shots/**/*.jpg' --mode mask
    python -m runtime.infer --engine u2net.plan photos/ --mode composite --bg '#00ff00' --batch-size 16
    python -m runtime.infer --engine u2netp.onnx clip.mp4                  # clip.webm: VP9 with alpha, sound kept
    python -m runtime.infer --engine u2netp.onnx s3://bucket/in -o s3://bucket/out --dask tcp://scheduler:8786

Exit status: 0 all done, 1 some inputs failed (one line each on stderr), 2 unusable engine or options.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from runtime import allocator, atomic, store
from runtime.api import Remover
from runtime.argtypes import int_in_range, pixel_count, positive_int
from runtime.backends import BackendError, add_backend_arguments
from runtime.bulk.cli import add_dask_arguments, run_from_args
from runtime.io import DEFAULT_MAX_PIXELS, ImageError
from runtime.logs import setup_logging
from runtime.pipeline import IO_THREADS, Pipeline
from runtime.quiet import library_lines_filtered
from runtime.render import COLOR_NAMES, COLOUR_PNG_LEVEL, FORMATS, MASK_PNG_LEVEL, MODES, Backdrop, RenderOptions
from runtime.shard import Shard
from runtime.signals import interrupted, sigterm_as_interrupt
from runtime.video import FORMAT_CHOICES, SMOOTH_SETTINGS, VIDEO_FORMATS, VIDEO_SUFFIXES, VideoOptions, choose
from runtime.video.formats import parse_frames

log = logging.getLogger("runtime.infer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m runtime.infer",
        description="Cut out the salient object of each image with a U²-Net engine (.onnx or TensorRT .plan).",
        epilog="Outputs go to OUT_DIR/<input path relative to its folder or pattern, extension replaced>. "
        "Exit status: 0 ok, 1 some inputs failed, 2 unusable engine or options.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively) or "
                   "glob patterns such as 'photos/**/*.jpg' (quote them); any of them may be a store URL "
                   "(s3://, gs://, az://, file://, ...) with the protocol's extra installed")
    p.add_argument("-e", "--engine", required=True, help="model: .onnx (ONNX Runtime), .plan/.engine (TensorRT), "
                   "or a Triton server's grpc://HOST:PORT/MODEL or http://HOST:PORT/MODEL")
    p.add_argument("-o", "--output", default="out", metavar="OUT_DIR",
                   help="output folder, created if needed, or a store URL such as s3://bucket/out (default: ./out)")
    p.add_argument("--mode", choices=MODES, default=RenderOptions.mode,
                   help="; ".join(f"{m.name}: {m.help}" for m in MODES.values()) + " (default: %(default)s)")
    p.add_argument("--bg", default="white", metavar="COLOR|IMAGE",
                   help=f"composite background: a colour ({', '.join(COLOR_NAMES)}, #RRGGBB, R,G,B) or an image "
                   "file, scaled to cover and centre-cropped (default: white)")
    p.add_argument("--format", choices=FORMATS, default=RenderOptions.format,
                   help="output file format (default: %(default)s)")
    p.add_argument("--png-level", type=int_in_range(0, 12), metavar="0-12",
                   help="PNG compression: 1-12 are libdeflate's levels, smaller and slower as they rise; 0 is "
                   "the fastest writer (ISA-L: about half the time of 1, colour files about 7%% larger); see the "
                   f"codec tables in docs/runtime.md (default: {COLOUR_PNG_LEVEL} for cutouts and composites, "
                   f"{MASK_PNG_LEVEL} for masks)")
    p.add_argument("--quality", type=int_in_range(1, 100), default=RenderOptions.quality, metavar="1-100",
                   help="WebP quality; 100 = lossless (default: %(default)s)")
    p.add_argument("--colours", choices=("visible", "exact"), default=RenderOptions.colours,
                   help="cutout colours under a semi-transparent alpha: visible keeps what a viewer can see "
                   "(composites within one level of exact, files much smaller where the mask is faint); exact "
                   "keeps every bit (default: %(default)s)")
    p.add_argument("--decontaminate", action=argparse.BooleanOptionalAction, default=RenderOptions.decontaminate,
                   help="cutouts and composites: re-estimate the colours under partial alpha so the old background "
                   "does not bleed into hair and soft edges (default: %(default)s)")
    add_backend_arguments(p)
    p.add_argument("--batch-size", type=positive_int, metavar="N",
                   help="images per engine call, capped by the engine's profile (default: the TensorRT profile's "
                   "optimum; 8 with CUDA; 1 on a CPU, where batching does not speed up inference)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="inference threads of ONNX Runtime or OpenVINO (default: one per core)")
    p.add_argument("--io-threads", type=positive_int, default=IO_THREADS, metavar="N",
                   help="threads decoding, resizing and encoding images alongside inference (default: %(default)s)")
    p.add_argument("--shard", type=Shard.parse, metavar="K/N",
                   help="process only shard K of N (1 <= K <= N), split by relative path: N jobs with the same "
                   "arguments (a Kubernetes indexed Job, a Slurm array) cover every input exactly once")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip inputs whose output is already a complete file of --format (a 0-byte, cut or foreign "
                   "file is made again, with a line saying so)")
    p.add_argument("--release-memory", action="store_true",
                   help="hand freed memory back to the system after each image (the C library's default) instead of "
                   "keeping it for the next one: a smaller footprint, slower on large photos")
    p.add_argument("--max-pixels", type=pixel_count, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse larger images, checked from the file header before decoding "
                   "(decompression bombs); e.g. 100M or 1e8 (default: 100M)")
    add_video_arguments(p)
    add_dask_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is off anyway when not a terminal)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors and the summary line")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def add_video_arguments(p: argparse.ArgumentParser) -> None:
    """Options for video inputs; their choices come from ``runtime.video``'s tables."""
    g = p.add_argument_group("video", f"video files ({', '.join(sorted(VIDEO_SUFFIXES))}, animated GIFs) become "
                             "videos: frame count, timestamps, rotation and sound as the input's")
    g.add_argument("--video-format", choices=FORMAT_CHOICES, default=VideoOptions.format,
                   help="; ".join(f"{f.name}: {f.help}" for f in VIDEO_FORMATS.values()) + "; auto (default): "
                   "cutouts webm, masks and composites the input's codec and container")
    g.add_argument("--lossless", action="store_true",
                   help="the codec's exact mode (auto: FFV1 in Matroska; webm: VP9 lossless; h264/hevc: lossless)")
    g.add_argument("--frames", type=_frame_range, metavar="A:B", default=(0, None),
                   help="only frames A..B-1 (counted from 0; A: or :B), e.g. for a preview; sound is cut to match")
    g.add_argument("--frame-step", type=positive_int, default=1, metavar="N",
                   help="every Nth frame of --frames (each keeps its time, so the preview plays at full speed)")
    g.add_argument("--smooth", choices=SMOOTH_SETTINGS, default=VideoOptions.smooth,
                   help="steady the mask over time where it barely changes (flicker), never where it moves "
                   "(see docs/video.md for the measurements) (default: %(default)s)")
    g.add_argument("--max-frames", type=positive_int, default=VideoOptions.max_frames, metavar="N",
                   help="refuse videos with more frames (default: %(default)s)")


def _frame_range(text: str) -> tuple[int, int | None]:
    try:
        return parse_frames(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _video_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> VideoOptions:
    """Video options checked before any work: a format that cannot hold the mode (h264 cutouts) is a usage error."""
    start, stop = args.frames
    try:
        video = VideoOptions(format=args.video_format, lossless=args.lossless, start=start, stop=stop,
                             step=args.frame_step, smooth=args.smooth, max_frames=args.max_frames)  # fmt: skip
        choose(args.mode, video, "input.mp4")
    except ValueError as exc:
        parser.error(f"--video-format: {exc}")
    return video


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose, quiet=args.quiet)
    video = _video_options(args, parser)
    try:
        options = _render_options(args, parser)
    except ImageError as exc:
        print(f"error: background image {exc}", file=sys.stderr)
        return 2
    if not args.release_memory and allocator.keep_freed_memory():
        log.debug("malloc keeps freed memory for reuse (--release-memory to hand it back)")
    with sigterm_as_interrupt(), library_lines_filtered():
        try:
            return _run(args, options, video)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM by way of sigterm_as_interrupt
            return interrupted(exc, f"outputs written so far are complete, in {args.output}")


def _render_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RenderOptions:
    """The options every output of the run is made with, before any work: a --bg that is neither a colour nor
    a file is a usage error; a background file that cannot be read is an ImageError."""
    if args.mode != "composite" and args.bg != parser.get_default("bg"):
        log.warning("--bg is only used with --mode composite; ignoring it")
    try:
        background = Backdrop.of(args.bg, max_pixels=args.max_pixels) if args.mode == "composite" else None
    except ValueError as exc:
        parser.error(f"--bg: {exc}")
    return RenderOptions(mode=args.mode, format=args.format, png_level=args.png_level, quality=args.quality,
                         colours=args.colours, decontaminate=args.decontaminate,
                         **({"background": background} if background else {}))  # fmt: skip


def _run(args: argparse.Namespace, options: RenderOptions, video: VideoOptions) -> int:
    try:  # before the engine loads or any image is decoded: a wrong -o costs nothing
        out = store.location(args.output)
        if isinstance(out, str):
            store.check_writable(out)
        else:
            atomic.check_writable(out)
    except OSError as exc:
        print(f"error: -o {args.output}: cannot write there: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except store.StoreError as exc:
        print(f"error: -o {args.output}: {str(exc).removeprefix(args.output + ': ')}", file=sys.stderr)
        return 2
    if args.dask:
        return run_from_args(args, options, video)
    try:
        remover = Remover(args.engine, backend=args.backend, provider=args.provider, threads=args.threads,
                          batch_size=args.batch_size, max_pixels=args.max_pixels, precision=args.precision)
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # e.g. the TensorRT backend's own dependencies
        print(f"error: {args.engine}: cannot load its backend: {exc}", file=sys.stderr)
        return 2
    with remover:
        pipeline = Pipeline(remover, args.output, options=options, skip_existing=args.skip_existing,
                            io_threads=args.io_threads, progress=not (args.no_progress or args.quiet),
                            shard=args.shard, video=video)  # fmt: skip
        summary = pipeline.run(args.inputs)
    print(summary.line(), file=sys.stderr)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
