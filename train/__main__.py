"""Train U²-Net / U²-NetP with deep supervision; write checkpoints that ``python -m export`` reads.

One GPU or CPU:
    python -m train --data DUTS/DUTS-TR --val DUTS/DUTS-TE --model u2netp --out runs/u2netp --amp
A fixed hold-out of one folder instead of a separate validation set (every 5th pair by name):
    python -m train --data data/SOD --val-split 0.2 --model u2netp --out runs/sod --iters 2000
Several GPUs or nodes (one process per GPU; batch size is per process):
    torchrun --nproc_per_node 4 -m train --data DUTS/DUTS-TR --val DUTS/DUTS-TE --model u2net --out runs/u2net --amp
Continue an interrupted run:
    python -m train ... --out runs/u2netp --resume

Writes RUN_DIR/last.pth (every --save-every iterations, at each validation and at the end),
RUN_DIR/best.pth (best validation maxFβ) and RUN_DIR/log.jsonl (one JSON object per line).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from runtime.preprocess import PreprocessSpec, postprocess
from train import distributed
from train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from train.data import DataError, EvalDataset, Pair, TrainDataset, collate_eval, collect_pairs, split_pairs
from train.metrics import MAE, FMeasure, centred_prior
from train.model import MODEL_NAMES, build_model

log = logging.getLogger("train")
PAPER_ITERATIONS = 600_000  # the paper's loss converged after about 600k iterations at batch 12


class ConfigError(Exception):
    """Options that cannot work together; the message is one line."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train",
        description="Train U²-Net / U²-NetP (sum of BCE over the fused and six side outputs, Adam 1e-3).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, type=Path,
                   help="training data: images/ + masks/, DUTS-TR (NAME-Image/ + NAME-Mask/) or a DUTS/ parent")
    p.add_argument("--model", choices=MODEL_NAMES, default="u2net", help="network variant")
    p.add_argument("--out", required=True, type=Path, help="run directory for checkpoints and the log")
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val", type=Path, help="validation data (same layouts; a DUTS/ parent uses DUTS-TE)")
    val.add_argument("--val-split", type=float, default=0.0,
                     help="hold out this fraction of --data for validation by a fixed rule (0.2: every 5th pair by name)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iters", type=int, help=f"iterations to train (default {PAPER_ITERATIONS:,}, the paper's)")
    length.add_argument("--epochs", type=int, help="epochs to train instead of --iters")
    p.add_argument("--time-limit", type=float, metavar="MINUTES",
                   help="stop (validating and saving) once this much wall time has passed, whatever --iters says")
    p.add_argument("--batch-size", type=int, default=12, help="images per iteration per process")
    p.add_argument("--size", type=int, default=320, help="images are resized to size×size (also the inference size)")
    p.add_argument("--crop", type=int, default=288, help="random crop side used for training")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (betas 0.9/0.999, eps 1e-8)")
    p.add_argument("--amp", action="store_true", help="mixed precision: fp16 + loss scaling on GPU, bf16 on CPU")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pth (fresh start if absent)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="data-loading processes")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, shuffling and augmentation")
    p.add_argument("--val-every", type=int, default=2000, help="validate (and save) every N iterations and at the end")
    p.add_argument("--save-every", type=int, default=1000, help="write last.pth every N iterations")
    p.add_argument("--log-every", type=int, default=50, help="write a loss record every N iterations")
    p.add_argument("--strict", action="store_true", help="refuse to train when any data pair has a problem")
    p.add_argument("--sync-bn", action="store_true", help="synchronised batch norm across processes (DDP only)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="where to train")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------- data


def load_data(args: argparse.Namespace) -> tuple[list[Pair], list[Pair], str]:
    """Check the pairs (on rank 0 only) and return (train, validation, description for the checkpoint)."""

    def collect(root: Path, role: str) -> list[Pair]:
        report = collect_pairs(root, role=role, workers=max(1, args.workers))
        for line in report.summary():
            (log.warning if report.n_problems else log.info)("%s", line)
        if args.strict and report.n_problems:
            raise DataError(f"{root}: {report.n_problems} problem pairs and --strict was given (listed above)")
        return report.pairs

    train = collect(args.data, "train")
    if args.val is not None:
        val, how = collect(args.val, "val"), str(args.val)
    elif args.val_split > 0:
        train, val = split_pairs(train, args.val_split)
        how = f"{args.data} --val-split {args.val_split} (sorted names, fixed rule)"
    else:
        val, how = [], "none"
    return train, val, f"train: {args.data} ({len(train)} pairs); val: {how} ({len(val)} pairs)"


class SkipSampler(Sampler):
    """Skip the first ``skip`` indices of a sampler's epoch: resuming mid-epoch without loading them."""

    def __init__(self, base: Sampler, skip: int) -> None:
        self.base, self.skip = base, skip

    def __iter__(self):
        return islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


# --------------------------------------------------------------------------------- training pieces


def deep_supervision_loss(logits: tuple[torch.Tensor, ...], target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of BCE over the fused and six side maps, BCE of the fused map). Logits keep it safe in fp16."""
    losses = [F.binary_cross_entropy_with_logits(x.float(), target) for x in logits]
    return torch.stack(losses).sum(), losses[0].detach()


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, with_prior: bool = False
             ) -> dict[str, Any]:
    """maxFβ and MAE through the runtime's postprocess at each image's own resolution.

    With ``with_prior``, also the scores of the centred-ellipse prior on the same images.
    """
    was_training = model.training
    model.eval()  # forward returns sigmoid(fused)
    f, mae, prior_f, prior_mae = FMeasure(), MAE(), FMeasure(), MAE()
    for batch in loader:
        if batch is None:
            continue
        x, masks, _ = batch
        probs = model(x.to(device, non_blocking=True)).float().cpu().numpy()
        for prob, gt in zip(probs, masks, strict=True):
            pred = postprocess(prob, gt.shape)
            f.step(pred, gt)
            mae.step(pred, gt)
            if with_prior:
                prior = centred_prior(*gt.shape)
                prior_f.step(prior, gt)
                prior_mae.step(prior, gt)
    model.train(was_training)
    out: dict[str, Any] = {"max_f": f.results()["max_f"], "mae": mae.results()["mae"], "n_images": len(mae.values)}
    if with_prior:
        out["prior"] = {"max_f": prior_f.results()["max_f"], "mae": prior_mae.results()["mae"]}
    return out


def rng_state() -> dict[str, Any]:
    """Every RNG as tensors, numbers and lists, so ``weights_only`` loading accepts it."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                  "cached": cached},
        "python": [version, list(internal), gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def git_revision() -> str | None:
    """The code's commit, with ``-dirty`` when tracked files differ from it; None outside a checkout."""
    repo = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


class RunLog:
    """JSON-lines log, written by rank 0 only; each record is flushed so a crash loses nothing."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.file = path.open("a", encoding="utf-8") if enabled else None

    def write(self, **record: Any) -> None:
        if self.file is not None:
            self.file.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


# -------------------------------------------------------------------------------------------- main


def train(args: argparse.Namespace) -> int:
    if args.crop > args.size:
        raise ConfigError(f"--crop {args.crop} is larger than --size {args.size}")
    counts = {"--batch-size": args.batch_size, "--size": args.size, "--crop": args.crop, "--iters": args.iters,
              "--epochs": args.epochs, "--val-every": args.val_every, "--save-every": args.save_every,
              "--log-every": args.log_every, "--workers": args.workers + 1, "--time-limit": args.time_limit}
    bad = [name for name, value in counts.items() if value is not None and value <= 0]
    if bad:
        raise ConfigError(f"{', '.join(bad)} must be positive")
    if not 0 <= args.val_split < 1:
        raise ConfigError(f"--val-split must be at least 0 and below 1, got {args.val_split}")
    if args.resume is False and (args.out / "last.pth").exists():
        raise ConfigError(f"{args.out} already holds last.pth: pass --resume to continue it, or choose another --out")

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA GPU is available")
    device = distributed.setup(args.device)
    rank, world, main_process = distributed.get_rank(), distributed.get_world_size(), distributed.is_main()
    logging.getLogger().setLevel(logging.INFO if main_process else logging.WARNING)
    torch.manual_seed(args.seed)  # same initial weights everywhere (DDP also broadcasts rank 0's)
    np.random.seed(args.seed)
    random.seed(args.seed)

    # Data: checked once on rank 0, then shared, so every rank trains on the same list.
    found: tuple | str = ()
    if main_process:
        try:
            found = load_data(args)
        except DataError as exc:
            found = str(exc)
    found = distributed.broadcast(found)
    if isinstance(found, str):
        raise DataError(found)
    train_pairs, val_pairs, dataset_desc = found
    if len(train_pairs) < args.batch_size * world:
        raise DataError(f"{args.data}: {len(train_pairs)} training pairs, fewer than one batch "
                        f"({args.batch_size} × {world} processes)")
    spec = PreprocessSpec(size=args.size)
    train_set = TrainDataset(train_pairs, size=args.size, crop=args.crop, spec=spec, seed=args.seed)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed,
                                 drop_last=True)
    iters_per_epoch = len(sampler) // args.batch_size
    total = args.epochs * iters_per_epoch if args.epochs else (args.iters or PAPER_ITERATIONS)
    val_loader = None
    if val_pairs and main_process:
        val_loader = DataLoader(EvalDataset(val_pairs, spec), batch_size=args.batch_size, shuffle=False,
                                num_workers=args.workers, collate_fn=collate_eval)

    # Model, optimizer, precision: one autocast context and a scaler that is a no-op unless fp16.
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = build_model(args.model).to(device, memory_format=memory_format)
    torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    if args.sync_bn and world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    autocast: AbstractContextManager = torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and amp_dtype == torch.float16)

    # Resume: model, optimizer, scaler, iteration and RNG state from last.pth, through the safe loader.
    start, best, metrics = 0, -1.0, {}
    last_path, best_path = args.out / "last.pth", args.out / "best.pth"
    if args.resume and last_path.exists():
        ckpt = load_checkpoint(last_path, model=args.model)
        model.load_state_dict(ckpt.model.state_dict())
        optimizer.load_state_dict(ckpt.raw["optimizer"])
        scaler.load_state_dict(ckpt.raw.get("scaler") or {})
        start, best = int(ckpt.raw.get("iteration", 0)), float(ckpt.raw.get("best_max_f", -1.0))
        metrics = dict(ckpt.meta.get("metrics") or {})
        if "rng" in ckpt.raw:
            set_rng_state(ckpt.raw["rng"])
        log.info("resumed %s at iteration %d (best maxFβ %.4f)", last_path, start, best)
    elif args.resume:
        log.warning("%s not found: starting a fresh run", last_path)

    model_without_ddp = model
    if world > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    model.train()

    run_args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}  # JSON- and weights_only-safe
    if main_process:
        args.out.mkdir(parents=True, exist_ok=True)
    run_log = RunLog(args.out / "log.jsonl", enabled=main_process)
    if main_process:
        run_log.write(event="start", iteration=start, total=total, world_size=world, device=str(device),
                      args=run_args, dataset=dataset_desc, iters_per_epoch=iters_per_epoch)
        log.info("%s; %d iterations (%d per epoch), batch %d × %d process(es) on %s%s", dataset_desc, total,
                 iters_per_epoch, args.batch_size, world, device, ", mixed precision" if args.amp else "")
    revision = git_revision()
    prior_done = False

    def save(path: Path, iteration: int) -> None:
        meta = {
            "variant": args.model, "input_size": args.size, "mean": list(spec.mean), "std": list(spec.std),
            "divide_by_max": spec.divide_by_max, "iteration": iteration, "metrics": metrics,
            "dataset": dataset_desc, "git_revision": revision, "crop": args.crop,
            "batch_size": args.batch_size, "world_size": world,
        }
        save_checkpoint(path, model_without_ddp, args.model, meta=meta, optimizer=optimizer.state_dict(),
                        scaler=scaler.state_dict(), iteration=iteration, rng=rng_state(), best_max_f=best,
                        args=run_args)

    def validate_and_save(iteration: int) -> None:
        nonlocal best, metrics, prior_done
        if main_process and val_loader is not None:
            metrics = evaluate(model_without_ddp, val_loader, device, with_prior=not prior_done)
            prior = metrics.pop("prior", None)
            prior_done = True
            improved = metrics["max_f"] > best
            best = max(best, metrics["max_f"])
            run_log.write(event="val", iteration=iteration, **metrics, best_max_f=best,
                          **({"prior": prior} if prior else {}))
            log.info("iteration %d: val maxFβ %.4f, MAE %.4f (best %.4f)%s", iteration, metrics["max_f"],
                     metrics["mae"], best,
                     f"; centred prior maxFβ {prior['max_f']:.4f}, MAE {prior['mae']:.4f}" if prior else "")
            if improved:
                save(best_path, iteration)
        if main_process:
            save(last_path, iteration)
        distributed.barrier()  # other ranks wait for rank 0's validation and checkpoint

    # The loop: iteration-based, epochs only drive the sampler's shuffling.
    bar = tqdm(total=total, initial=start, unit="it", desc="train", disable=not main_process, dynamic_ncols=True)
    iteration, loss_sum, fused_sum, n_sum, t_last = start, 0.0, 0.0, 0, time.time()
    deadline = t_last + 60 * args.time_limit if args.time_limit else math.inf
    try:
        while iteration < total:
            epoch, done_in_epoch = divmod(iteration, iters_per_epoch)
            sampler.set_epoch(epoch)
            train_set.epoch = epoch  # read by the workers created for this epoch's loader
            loader = DataLoader(train_set, batch_size=args.batch_size, drop_last=True, num_workers=args.workers,
                                sampler=SkipSampler(sampler, done_in_epoch * args.batch_size),
                                pin_memory=device.type == "cuda")
            for x, y in loader:
                x = x.to(device, non_blocking=True, memory_format=memory_format)
                y = y.to(device, non_blocking=True)
                with autocast:
                    logits = model(x)  # train mode: fused + six side logits
                loss, fused = deep_supervision_loss(logits, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                iteration += 1
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise FloatingPointError(f"loss became {loss_value} at iteration {iteration}; try a lower --lr")
                loss_sum, fused_sum, n_sum = loss_sum + loss_value, fused_sum + fused.item(), n_sum + 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
                # All ranks must agree to stop at the same iteration, so rank 0's clock decides.
                if args.time_limit and distributed.broadcast(time.time() >= deadline):
                    log.warning("--time-limit %.1f min reached at iteration %d", args.time_limit, iteration)
                    total = bar.total = iteration  # the bar's ETA now reflects the real end
                if iteration % args.log_every == 0 or iteration == total:
                    now = time.time()
                    run_log.write(event="train", iteration=iteration, epoch=epoch,
                                  loss=distributed.all_reduce_mean(loss_sum / n_sum, device),
                                  loss_fused=distributed.all_reduce_mean(fused_sum / n_sum, device),
                                  lr=optimizer.param_groups[0]["lr"], it_per_s=n_sum / max(now - t_last, 1e-9))
                    loss_sum, fused_sum, n_sum, t_last = 0.0, 0.0, 0, now
                if iteration % args.val_every == 0 or iteration == total:
                    validate_and_save(iteration)
                elif iteration % args.save_every == 0 and main_process:
                    save(last_path, iteration)
                if iteration >= total:
                    break
    except KeyboardInterrupt:
        if main_process and iteration > start:
            save(last_path, iteration)
            log.warning("interrupted at iteration %d; saved %s (continue with --resume)", iteration, last_path)
        raise
    finally:
        bar.close()
        run_log.close()
    if main_process:
        log.info("done: %d iterations; checkpoints in %s", iteration, args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        return train(args)
    except (DataError, CheckpointError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    sys.exit(main())
