"""Accuracy of any engine (.onnx or .plan) on a salient-object data set, through the runtime itself.

    python -m benchmarks.accuracy --engine u2net.onnx                       # ../shared/data/SOD
    python -m benchmarks.accuracy --engine u2net.plan --compare u2net.onnx --data DUTS-TE --json acc.json

Masks come from ``runtime.Remover`` (the runtime's own decoding, pre- and postprocessing) and the
metrics from ``train.metrics``; with ``--compare`` the two engines' probability maps are also compared
on the first images (``export.compare``, the export's own tolerances) (maxFβ, mean Fβ, MAE, S-measure, E-measure, weighted Fβ). A centred
ellipse "prior" row shows what a model that learned nothing would score.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from export.compare import TOLERANCES, Comparison, compare
from export.samples import SOD_DIR
from runtime import atomic
from runtime.api import Remover
from runtime.argtypes import positive_int
from runtime.backends import BackendError, add_backend_arguments
from runtime.io import ImageError
from runtime.logs import setup_logging
from runtime.names import engine_location
from runtime.preprocess import preprocess
from runtime.quiet import library_lines_filtered
from runtime.signals import interrupted, sigterm_as_interrupt
from train.data import DataError, collect_pairs, read_mask
from train.metrics import SODMetrics, centred_prior

# (result key, label, higher is better)
METRICS = [("max_f", "max Fβ", True), ("mean_f", "mean Fβ", True), ("adaptive_f", "adaptive Fβ", True),
           ("weighted_f", "weighted Fβ", True), ("s_measure", "S-measure", True), ("e_measure", "mean E-measure", True),
           ("mae", "MAE", False)]
COMPARE_IMAGES = 8  # images whose probability maps --compare also compares pixel by pixel


def evaluate(remover: Remover | None, pairs: list, label: str) -> dict:
    """Metrics over ``pairs``; ``remover`` None scores the centred-ellipse prior."""
    metrics = SODMetrics()
    step = remover.batch_size if remover else 32
    started = time.perf_counter()
    with tqdm(total=len(pairs), desc=label, unit="img", leave=False) as bar:
        for i in range(0, len(pairs), step):
            chunk = pairs[i : i + step]
            gts = [read_mask(p.mask) for p in chunk]
            if remover is None:
                preds = [centred_prior(*gt.shape) for gt in gts]
            else:
                preds = remover.masks([p.image for p in chunk])
            for pred, gt in zip(preds, gts, strict=True):
                metrics.step(pred, gt)
            bar.update(len(chunk))
    out = metrics.results()
    out["seconds"] = time.perf_counter() - started
    return out


def compare_outputs(removers: list[Remover], pairs: list, n_images: int = COMPARE_IMAGES) -> Comparison | None:
    """The two engines' probability maps on the same preprocessed images (``export.compare``);
    None, with a note, when they expect different inputs."""
    first, second = (r.backend for r in removers)
    if first.spec != second.spec:
        print(f"outputs not compared: the engines expect different inputs ({first.spec} vs {second.spec})")
        return None
    images = [removers[0].load(p.image) for p in pairs[:n_images]]
    batches = [preprocess(images[i : i + 1], first.spec) for i in range(len(images))]
    precision = getattr(second, "precision", second.artifact.precision)  # what runs (OpenVINO: bf16 of an FP32 file)
    result = compare((first, second), batches, TOLERANCES.get(precision, TOLERANCES["fp16"]),
                     labels=(first.label, second.label), inputs=f"{len(images)} images")  # fmt: skip
    print(f"outputs: {result.summary()}{'' if result.ok else ' (OUT OF TOLERANCE)'}")
    return result


def table(columns: dict[str, dict]) -> str:
    """Every engine's metrics, the prior last, and for each engine after the first its Δ against the first."""
    names = list(columns)
    engines = [n for n in names if n != PRIOR]
    deltas = engines[1:]
    head = names + [f"Δ {i + 2}−1" for i in range(len(deltas))]
    lines = ["| metric | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for key, label, _ in METRICS:
        cells = [f"{columns[n][key]:.4f}" for n in names]
        cells += [f"{columns[d][key] - columns[engines[0]][key]:+.4f}" for d in deltas]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| images | " + " | ".join([str(columns[n]["n_images"]) for n in names] + [""] * len(deltas)) + " |")
    return "\n".join(lines)


PRIOR = "centred prior"
TARGET = {"max_f": 0.01, "mae": 0.005}  # the largest change a precision may make (docs/backends.md)


def parse_engine(text: str) -> tuple[str | Path, str | None, str | None]:
    """``ENGINE[@BACKEND[:PRECISION]]`` -> (file or URL, backend, precision), e.g. ``u2netp.onnx@openvino:bf16``."""
    path, _, rest = text.rpartition("@") if "@" in text else (text, "", "")
    backend, _, precision = rest.partition(":")
    return engine_location(path), backend or None, precision or None


def open_remover(spec: str, args: argparse.Namespace) -> Remover:
    path, backend, precision = parse_engine(spec)
    return Remover(path, backend=backend or args.backend, provider=args.provider, batch_size=args.batch_size,
                   precision=precision or args.precision)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", required=True, metavar="ENGINE[@BACKEND[:PRECISION]]",
                   help="a model file (.onnx, .plan), optionally with the backend and precision to run it on, "
                   "e.g. u2netp.onnx@openvino:bf16")
    p.add_argument("--compare", nargs="+", metavar="ENGINE[@BACKEND[:PRECISION]]",
                   help="more engines (same form): all are printed with per-metric deltas against --engine, "
                   "e.g. --compare u2netp.onnx@openvino:bf16 u2netp.int8-ort.onnx")
    p.add_argument("--data", type=Path, help="images/+masks/ or DUTS layout (default: ../shared/data/SOD)")
    add_backend_arguments(p)
    p.add_argument("--batch-size", type=positive_int, default=8, metavar="N",
                   help="images per engine call (default: 8; reduced on a CPU when memory is short)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="evaluate only the first N pairs")
    p.add_argument("--json", type=Path, help="write the results as one JSON object")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(verbose=args.verbose, default=logging.WARNING)

    with sigterm_as_interrupt(), library_lines_filtered():
        try:
            return _run(args)
        except KeyboardInterrupt as exc:
            return interrupted(exc)


def _run(args: argparse.Namespace) -> int:
    if args.json:
        try:  # before the evaluation: a wrong path must not cost the whole run
            atomic.check_writable(args.json.parent)
        except OSError as exc:
            print(f"error: --json {args.json}: cannot write there: {exc.strerror or exc}", file=sys.stderr)
            return 2
    data = args.data or SOD_DIR
    try:
        report = collect_pairs(data, role="test", progress=True)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in report.summary()[1:]:
        print(line, file=sys.stderr)
    pairs = report.pairs[: args.limit] if args.limit else report.pairs
    print(f"{data}: {len(pairs)} image/mask pairs")

    engines = [args.engine, *(args.compare or [])]
    results: dict[str, dict] = {}
    described: dict[str, str] = {}
    outputs: dict[str, Comparison | None] = {}
    reference: Remover | None = None
    try:
        for engine in engines:
            try:
                remover = open_remover(engine, args)
            except BackendError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            described[engine] = remover.backend.describe()
            print(f"{engine}: {described[engine]}")
            try:
                results[engine] = evaluate(remover, pairs, Path(parse_engine(engine)[0]).name)
            except (ImageError, DataError) as exc:  # a file that changed since the data check
                remover.close()
                print(f"error: {exc}", file=sys.stderr)
                return 1
            if reference is None:
                reference = remover
                continue
            outputs[engine] = compare_outputs([reference, remover], pairs)
            remover.close()
    finally:
        if reference is not None:
            reference.close()
    results[PRIOR] = evaluate(None, pairs, "prior")
    print(table(results))
    for engine in engines[1:]:
        within = all(abs(results[engine][k] - results[engines[0]][k]) <= v for k, v in TARGET.items())
        print(f"{engine}: |Δ max Fβ| ≤ {TARGET['max_f']} and |Δ MAE| ≤ {TARGET['mae']}: {'yes' if within else 'NO'}")
    if args.json:
        first = results[args.engine]
        doc = {"engine": args.engine, "describe": described[args.engine], "data": str(data), **first,
               "prior": results[PRIOR], "compares": []}
        for engine in engines[1:]:
            entry = {"engine": engine, "describe": described[engine], **results[engine],
                     "delta": {k: results[engine][k] - first[k] for k, _, _ in METRICS}}
            out = outputs.get(engine)
            if out is not None:
                entry["outputs"] = {"max_abs": out.max_abs, "mean_abs": out.mean_abs, "ok": out.ok,
                                    "tolerance": str(out.tolerance), "checks": list(out.checks)}  # fmt: skip
            doc["compares"].append(entry)
        if doc["compares"]:  # the first comparison also at the top level, as before
            doc["compare"] = {k: v for k, v in doc["compares"][0].items() if k not in ("delta", "outputs")}
            doc["delta"] = doc["compares"][0]["delta"]
            if "outputs" in doc["compares"][0]:
                doc["outputs"] = doc["compares"][0]["outputs"]
        try:
            atomic.write_text(args.json, json.dumps(doc, indent=2) + "\n")
        except OSError as exc:
            print(f"error: --json {args.json}: cannot write: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"JSON: {args.json}")
    return 1 if report.n_problems else 0


if __name__ == "__main__":
    sys.exit(main())
