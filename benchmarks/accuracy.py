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
from export.verify import SOD_DIR
from runtime import atomic
from runtime.api import Remover
from runtime.backends import BackendError, add_backend_arguments
from runtime.logs import setup_logging
from runtime.preprocess import preprocess
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
    precision = second.artifact.precision
    result = compare((first, second), batches, TOLERANCES.get(precision, TOLERANCES["fp16"]),
                     labels=(first.label, second.label), inputs=f"{len(images)} images")  # fmt: skip
    print(f"outputs: {result.summary()}{'' if result.ok else ' (OUT OF TOLERANCE)'}")
    return result


def table(columns: dict[str, dict]) -> str:
    names = list(columns)
    lines = ["| metric | " + " | ".join(names) + (" | Δ (2nd − 1st) |" if len(names) > 2 else " |"),
             "|---|" + "---|" * (len(names) + (1 if len(names) > 2 else 0))]
    for key, label, _ in METRICS:
        cells = [f"{columns[n][key]:.4f}" for n in names]
        delta = f" | {columns[names[1]][key] - columns[names[0]][key]:+.4f}" if len(names) > 2 else ""
        lines.append(f"| {label} | " + " | ".join(cells) + delta + " |")
    lines.append("| images | " + " | ".join(str(columns[n]["n_images"]) for n in names) + (" | |" if len(names) > 2 else " |"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", required=True, type=Path, help=".onnx (ONNX Runtime) or .plan (TensorRT)")
    p.add_argument("--compare", type=Path, help="a second engine: both are printed with per-metric deltas")
    p.add_argument("--data", type=Path, help="images/+masks/ or DUTS layout (default: ../shared/data/SOD)")
    add_backend_arguments(p)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, help="evaluate only the first N pairs")
    p.add_argument("--json", type=Path, help="write the results as one JSON object")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    setup_logging(verbose=args.verbose, default=logging.WARNING)

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

    results: dict[str, dict] = {}
    removers: list[Remover] = []
    try:
        for engine in [e for e in (args.engine, args.compare) if e is not None]:
            try:
                removers.append(Remover(engine, backend=args.backend, provider=args.provider,
                                        batch_size=args.batch_size))  # fmt: skip
            except BackendError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"{engine}: {removers[-1].backend.describe()}")
            results[str(engine)] = evaluate(removers[-1], pairs, engine.name)
        outputs = compare_outputs(removers, pairs) if len(removers) == 2 else None
    finally:
        for remover in removers:
            remover.close()
    results["centred prior"] = evaluate(None, pairs, "prior")
    print(table(results))
    if args.json:
        first = results[str(args.engine)]
        doc = {"engine": str(args.engine), "data": str(data), **first, "prior": results["centred prior"]}
        if args.compare:
            second = results[str(args.compare)]
            doc["compare"] = {"engine": str(args.compare), **second}
            doc["delta"] = {k: second[k] - first[k] for k, _, _ in METRICS}
            if outputs is not None:
                doc["outputs"] = {"max_abs": outputs.max_abs, "mean_abs": outputs.mean_abs, "ok": outputs.ok,
                                  "tolerance": str(outputs.tolerance), "checks": list(outputs.checks)}  # fmt: skip
        atomic.write_text(args.json, json.dumps(doc, indent=2) + "\n")
        print(f"JSON: {args.json}")
    return 1 if report.n_problems else 0


if __name__ == "__main__":
    sys.exit(main())
