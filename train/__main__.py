"""Train U²-Net / U²-NetP with deep supervision; write checkpoints that ``python -m export`` reads.

One GPU or CPU:
    python -m train --data DUTS/DUTS-TR --val DUTS/DUTS-TE --model u2netp --out runs/u2netp --amp
A fixed hold-out of one folder instead of a separate validation set (every 5th pair by name):
    python -m train --data data/SOD --val-split 0.2 --model u2netp --out runs/sod --iters 2000
Several GPUs or nodes (one process per GPU; batch size is per process):
    torchrun --nproc_per_node 4 -m train --data DUTS/DUTS-TR --val DUTS/DUTS-TE --model u2net --out runs/u2net --amp
Continue an interrupted run (SIGTERM and Ctrl-C save RUN_DIR/last.pth at the next step, then exit 143 / 130):
    python -m train ... --out runs/u2netp --resume
Score a checkpoint with the training validation (no training, nothing written):
    python -m train --data data/SOD --val-split 0.2 --eval-only runs/sod/best.pth

Writes RUN_DIR/last.pth (every --save-every iterations, at each validation, at the end and when stopped),
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
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from runtime.logs import setup_logging
from runtime.preprocess import PreprocessSpec, postprocess
from train import distributed
from train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from train.data import DataError, EvalDataset, Pair, TrainDataset, collate_eval, collect_pairs, split_pairs
from train.metrics import MAE, FMeasure, centred_prior
from train.model import MODEL_NAMES, U2Net, build_model
from train.stop import Interrupted, StopRequest, ignore_stop_signals

log = logging.getLogger("train")
PAPER_ITERATIONS = 600_000  # the paper's loss converged after about 600k iterations at batch 12


class ConfigError(Exception):
    """Options that cannot work together; the message is one line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train",
        description="Train U²-Net / U²-NetP (sum of BCE over the fused and six side outputs, Adam 1e-3).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", type=Path,
                   help="training data: images/ + masks/, DUTS-TR (NAME-Image/ + NAME-Mask/) or a DUTS/ parent")
    p.add_argument("--model", choices=MODEL_NAMES, default="u2net", help="network variant")
    p.add_argument("--out", type=Path, help="run directory for checkpoints and the log (required to train)")
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val", type=Path, help="validation data (same layouts; a DUTS/ parent uses DUTS-TE)")
    val.add_argument("--val-split", type=float, default=0.0,
                     help="hold out this fraction of --data for validation by a fixed rule (0.2: every 5th pair by name)")
    p.add_argument("--eval-only", type=Path, metavar="CHECKPOINT",
                   help="score this checkpoint on the validation set (--val or --data --val-split) and exit; "
                        "input size from the checkpoint, else --size")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iters", type=int, help=f"iterations to train (default {PAPER_ITERATIONS:,}, the paper's)")
    length.add_argument("--epochs", type=int, help="epochs to train instead of --iters")
    p.add_argument("--time-limit", type=float, metavar="MINUTES",
                   help="stop (validating and saving) once this much wall time has passed, checked every --log-every")
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
    p.add_argument("--log-every", type=int, default=50,
                   help="every N iterations: read the loss back from the device, log it, check --time-limit "
                        "(and, under torchrun, a stop signal)")
    p.add_argument("--strict", action="store_true", help="refuse to train when any data pair has a problem")
    p.add_argument("--sync-bn", action="store_true", help="synchronised batch norm across processes (DDP only)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="where to train")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Every option problem as one ConfigError line, before any data is read."""
    if args.eval_only is None and (args.data is None or args.out is None):
        raise ConfigError("--data and --out are required to train (or pass --eval-only CHECKPOINT)")
    if args.eval_only is not None and args.val is None and not (args.data and args.val_split > 0):
        raise ConfigError("--eval-only needs validation data: --val DIR, or --data DIR --val-split FRACTION")
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
    if args.eval_only is None and not args.resume and (args.out / "last.pth").exists():
        raise ConfigError(f"{args.out} already holds last.pth: pass --resume to continue it, or choose another --out")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA GPU is available")


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

    train = collect(args.data, "train") if args.data is not None else []
    if args.val is not None:
        val, how = collect(args.val, "val"), str(args.val)
    elif args.val_split > 0:
        train, val = split_pairs(train, args.val_split)
        how = f"{args.data} --val-split {args.val_split} (sorted names, fixed rule)"
    else:
        val, how = [], "none"
    return train, val, f"train: {args.data} ({len(train)} pairs); val: {how} ({len(val)} pairs)"


def shared_data(args: argparse.Namespace) -> tuple[list[Pair], list[Pair], str]:
    """``load_data`` on rank 0, broadcast, so every rank trains on the same list (and fails the same way)."""
    found: tuple | str = ()
    if distributed.is_main():
        try:
            found = load_data(args)
        except DataError as exc:
            found = str(exc)
    found = distributed.broadcast(found)
    if isinstance(found, str):
        raise DataError(found)
    return found


class SkipSampler(Sampler):
    """Skip the first ``skip`` indices of a sampler's epoch: resuming mid-epoch without loading them."""

    def __init__(self, base: Sampler, skip: int) -> None:
        self.base, self.skip = base, skip

    def __iter__(self):
        return islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


def epoch_loader(train_set: TrainDataset, sampler: DistributedSampler, epoch: int, skip_batches: int,
                 args: argparse.Namespace, device: torch.device) -> DataLoader:
    """This epoch's batches, the first ``skip_batches`` left out (a mid-epoch resume)."""
    sampler.set_epoch(epoch)
    train_set.epoch = epoch  # read by the workers created for this epoch's loader
    return DataLoader(train_set, batch_size=args.batch_size, drop_last=True, num_workers=args.workers,
                      sampler=SkipSampler(sampler, skip_batches * args.batch_size),
                      pin_memory=device.type == "cuda", worker_init_fn=ignore_stop_signals)


def val_loader_for(pairs: list[Pair], spec: PreprocessSpec, args: argparse.Namespace) -> DataLoader | None:
    if not pairs:
        return None
    return DataLoader(EvalDataset(pairs, spec), batch_size=args.batch_size, shuffle=False,
                      num_workers=args.workers, collate_fn=collate_eval, worker_init_fn=ignore_stop_signals)


# --------------------------------------------------------------------------------- training pieces


def deep_supervision_loss(logits: tuple[torch.Tensor, ...], target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of BCE over the fused and six side maps, BCE of the fused map). Logits keep it safe in fp16."""
    losses = [F.binary_cross_entropy_with_logits(x.float(), target) for x in logits]
    return torch.stack(losses).sum(), losses[0].detach()


@dataclass
class Precision:
    """One autocast context and a gradient scaler that is a no-op unless fp16; channels_last on GPUs."""

    autocast: AbstractContextManager
    scaler: torch.amp.GradScaler
    memory_format: torch.memory_format

    @classmethod
    def for_device(cls, device: torch.device, amp: bool) -> Precision:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        return cls(autocast=torch.autocast(device.type, dtype=dtype, enabled=amp),
                   scaler=torch.amp.GradScaler(device.type, enabled=amp and dtype == torch.float16),
                   memory_format=torch.channels_last if device.type == "cuda" else torch.contiguous_format)


def train_one_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, precision: Precision,
                   x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on one batch; returns (loss, fused-map BCE), detached and still on the device:
    reading them back is a host sync, left to the caller's --log-every boundaries."""
    with precision.autocast:
        logits = model(x)  # train mode: fused + six side logits
    loss, fused = deep_supervision_loss(logits, y)
    optimizer.zero_grad(set_to_none=True)
    precision.scaler.scale(loss).backward()
    precision.scaler.step(optimizer)
    precision.scaler.update()
    return loss.detach(), fused


class LossMeter:
    """Sums of the step losses, kept on the device until ``reduce`` reads them (with the stop flags)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        self.n, self.since = 0, time.time()

    def add(self, loss: torch.Tensor, fused: torch.Tensor) -> None:
        self.sums += torch.stack((loss, fused)).double()
        self.n += 1

    def reduce(self, time_up: bool, signalled: bool) -> tuple[float, float, float, bool, bool]:
        """(mean loss, mean fused loss, iterations/s, time up, signalled) over all ranks, then reset.

        One host sync and, under torchrun, one all-reduce: rank 0's clock decides the time limit (so every
        rank stops at the same iteration) and a signal seen by any rank stops them all."""
        flags = torch.tensor([self.n, time_up and distributed.is_main(), signalled], dtype=torch.float64,
                             device=self.device)
        total = distributed.all_reduce_sum(torch.cat((self.sums, flags))).tolist()
        loss_sum, fused_sum, n, time_votes, signal_votes = total
        rate = self.n / max(time.time() - self.since, 1e-9)
        self.reset()
        return loss_sum / n, fused_sum / n, rate, time_votes > 0, signal_votes > 0


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


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # same initial weights everywhere (DDP also broadcasts rank 0's)
    np.random.seed(seed)
    random.seed(seed)


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


# ------------------------------------------------------------------------------ the run and its state


@dataclass
class Run:
    """What the loop works with, fixed for the whole run (set up by ``main``)."""

    args: argparse.Namespace
    device: torch.device
    model: torch.nn.Module  # DDP-wrapped under torchrun
    net: U2Net  # the network itself: what is validated and saved
    optimizer: torch.optim.Optimizer
    precision: Precision
    spec: PreprocessSpec
    val_loader: DataLoader | None
    run_log: RunLog
    iters_per_epoch: int
    info: dict[str, Any]  # dataset description, git revision, batch layout: checkpoint meta


@dataclass
class Progress:
    """What changes as training goes; ``last.pth`` stores it, ``--resume`` restores it."""

    total: int  # iterations to reach; lowered when --time-limit ends the run early
    iteration: int = 0
    best_max_f: float = -1.0
    metrics: dict[str, Any] = field(default_factory=dict)
    prior_done: bool = False  # the centred prior is scored once per run, at the first validation


def plain_args(args: argparse.Namespace) -> dict[str, Any]:
    """The options as JSON- and weights_only-safe values."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def save(run: Run, progress: Progress, path: Path) -> None:
    meta = {"iteration": progress.iteration, "metrics": progress.metrics, **run.info}
    save_checkpoint(path, run.net, run.args.model, meta=meta, spec=run.spec,
                    optimizer=run.optimizer.state_dict(), scaler=run.precision.scaler.state_dict(),
                    iteration=progress.iteration, rng=rng_state(), best_max_f=progress.best_max_f,
                    args=plain_args(run.args))


def validate(run: Run, progress: Progress) -> None:
    """Score the validation set (rank 0), log it, and write best.pth when maxFβ improved."""
    metrics = evaluate(run.net, run.val_loader, run.device, with_prior=not progress.prior_done)
    prior = metrics.pop("prior", None)
    progress.prior_done = True
    improved = metrics["max_f"] > progress.best_max_f
    progress.metrics, progress.best_max_f = metrics, max(progress.best_max_f, metrics["max_f"])
    run.run_log.write(event="val", iteration=progress.iteration, **metrics, best_max_f=progress.best_max_f,
                      **({"prior": prior} if prior else {}))
    log.info("iteration %d: val maxFβ %.4f, MAE %.4f (best %.4f)%s", progress.iteration, metrics["max_f"],
             metrics["mae"], progress.best_max_f,
             f"; centred prior maxFβ {prior['max_f']:.4f}, MAE {prior['mae']:.4f}" if prior else "")
    if improved:
        save(run, progress, run.args.out / "best.pth")


def checkpoint(run: Run, progress: Progress, with_validation: bool) -> None:
    """Rank 0 validates (when asked and there is validation data) and writes last.pth; the others wait."""
    if distributed.is_main():
        if with_validation and run.val_loader is not None:
            validate(run, progress)
        save(run, progress, run.args.out / "last.pth")
    distributed.barrier()


def log_losses(run: Run, progress: Progress, meter: LossMeter, epoch: int, time_up: bool, signalled: bool,
               bar: tqdm) -> tuple[bool, bool]:
    """The --log-every boundary: read the losses back, refuse a non-finite one, log; return the agreed
    (time up, signalled)."""
    loss, fused, rate, time_up, signalled = meter.reduce(time_up, signalled)
    if not (math.isfinite(loss) and math.isfinite(fused)):
        raise FloatingPointError(f"loss became {loss} by iteration {progress.iteration}; try a lower --lr")
    run.run_log.write(event="train", iteration=progress.iteration, epoch=epoch, loss=loss, loss_fused=fused,
                      lr=run.optimizer.param_groups[0]["lr"], it_per_s=rate)
    bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
    return time_up, signalled


def after_step(run: Run, progress: Progress, meter: LossMeter, epoch: int, stop: StopRequest, deadline: float,
               bar: tqdm) -> bool:
    """Logging, stopping, validation and saving due after this iteration; True when a signal stopped the run."""
    it, args = progress.iteration, run.args
    # One process reads its stop flag every step (free); several agree on it at --log-every boundaries.
    if it % args.log_every == 0 or it == progress.total or (distributed.get_world_size() == 1 and stop.requested):
        time_up, signalled = log_losses(run, progress, meter, epoch, time.time() >= deadline, stop.requested, bar)
        if signalled:
            checkpoint(run, progress, with_validation=False)
            return True
        if time_up:
            log.warning("--time-limit %.1f min reached at iteration %d", args.time_limit, it)
            progress.total = bar.total = it  # validate and save below, as at a normal end
    if it % args.val_every == 0 or it == progress.total:
        checkpoint(run, progress, with_validation=True)
    elif it % args.save_every == 0:
        checkpoint(run, progress, with_validation=False)
    return False


def train_loop(run: Run, train_set: TrainDataset, sampler: DistributedSampler, progress: Progress,
               stop: StopRequest) -> bool:
    """Iterations from ``progress.iteration`` to ``progress.total``; epochs only drive the shuffling.
    Returns True when a stop signal ended it (after saving last.pth)."""
    meter = LossMeter(run.device)
    deadline = time.time() + 60 * run.args.time_limit if run.args.time_limit else math.inf
    bar = tqdm(total=progress.total, initial=progress.iteration, unit="it", desc="train",
               disable=not distributed.is_main(), dynamic_ncols=True)
    stop.armed = True  # from here a signal waits for the end of the step
    try:
        while progress.iteration < progress.total:
            epoch, done_in_epoch = divmod(progress.iteration, run.iters_per_epoch)
            for x, y in epoch_loader(train_set, sampler, epoch, done_in_epoch, run.args, run.device):
                x = x.to(run.device, non_blocking=True, memory_format=run.precision.memory_format)
                meter.add(*train_one_step(run.model, run.optimizer, run.precision, x,
                                          y.to(run.device, non_blocking=True)))
                progress.iteration += 1
                bar.update(1)
                if after_step(run, progress, meter, epoch, stop, deadline, bar):
                    return True
                if progress.iteration >= progress.total:
                    break
        return False
    finally:
        stop.armed = False
        bar.close()


# -------------------------------------------------------------------------------------------- set-up


def build_network(args: argparse.Namespace, device: torch.device, precision: Precision) -> U2Net:
    net = build_model(args.model).to(device, memory_format=precision.memory_format)
    torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    if args.sync_bn and distributed.get_world_size() > 1:
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return net


def resume(args: argparse.Namespace, net: U2Net, optimizer: torch.optim.Optimizer, precision: Precision,
           progress: Progress) -> None:
    """Model, optimizer, scaler, iteration, scores and RNG state from RUN_DIR/last.pth (the safe loader)."""
    last = args.out / "last.pth"
    if not args.resume:
        return
    if not last.exists():
        log.warning("%s not found: starting a fresh run", last)
        return
    ckpt = load_checkpoint(last, model=args.model)
    net.load_state_dict(ckpt.model.state_dict())
    optimizer.load_state_dict(ckpt.raw["optimizer"])
    precision.scaler.load_state_dict(ckpt.raw.get("scaler") or {})
    progress.iteration = int(ckpt.raw.get("iteration", 0))
    progress.best_max_f = float(ckpt.raw.get("best_max_f", -1.0))
    progress.metrics = dict(ckpt.meta.get("metrics") or {})
    if "rng" in ckpt.raw:
        set_rng_state(ckpt.raw["rng"])
    log.info("resumed %s at iteration %d (best maxFβ %.4f)", last, progress.iteration, progress.best_max_f)


def eval_only(args: argparse.Namespace, device: torch.device) -> int:
    """Score one checkpoint with the training validation; one JSON line on stdout."""
    ckpt = load_checkpoint(args.eval_only)
    spec = ckpt.spec or PreprocessSpec(size=args.size)
    _, val_pairs, dataset_desc = shared_data(args)
    if not val_pairs:
        raise DataError(f"{args.val or args.data}: no validation pairs")
    if distributed.is_main():
        scores = evaluate(ckpt.model.to(device), val_loader_for(val_pairs, spec, args), device, with_prior=True)
        log.info("%s: %s at %dx%d on %s", args.eval_only, ckpt.variant, spec.size, spec.size, dataset_desc)
        print(json.dumps({"checkpoint": str(args.eval_only), "variant": ckpt.variant, "size": spec.size, **scores}))
    distributed.barrier()
    return 0


def main(args: argparse.Namespace) -> int:
    """Data, sampler, model, optimizer, resume, loop. Returns the exit status (143/130 when stopped by a signal)."""
    check_args(args)
    device = distributed.setup(args.device)
    world, main_process = distributed.get_world_size(), distributed.is_main()
    logging.getLogger().setLevel(logging.INFO if main_process else logging.WARNING)
    seed_everything(args.seed)
    with StopRequest() as stop:
        if args.eval_only is not None:
            return eval_only(args, device)
        train_pairs, val_pairs, dataset_desc = shared_data(args)
        if len(train_pairs) < args.batch_size * world:
            raise DataError(f"{args.data}: {len(train_pairs)} training pairs, fewer than one batch "
                            f"({args.batch_size} × {world} processes)")
        spec = PreprocessSpec(size=args.size)
        train_set = TrainDataset(train_pairs, size=args.size, crop=args.crop, spec=spec, seed=args.seed)
        sampler = DistributedSampler(train_set, num_replicas=world, rank=distributed.get_rank(), shuffle=True,
                                     seed=args.seed, drop_last=True)
        iters_per_epoch = len(sampler) // args.batch_size
        progress = Progress(total=args.epochs * iters_per_epoch if args.epochs else (args.iters or PAPER_ITERATIONS))

        precision = Precision.for_device(device, args.amp)
        net = build_network(args, device, precision)
        optimizer = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
        resume(args, net, optimizer, precision, progress)
        model = net
        if world > 1:
            model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        model.train()

        if main_process:
            args.out.mkdir(parents=True, exist_ok=True)
        info = {"dataset": dataset_desc, "git_revision": git_revision(), "crop": args.crop,
                "batch_size": args.batch_size, "world_size": world}
        run = Run(args, device, model, net, optimizer, precision, spec,
                  val_loader_for(val_pairs, spec, args) if main_process else None,
                  RunLog(args.out / "log.jsonl", enabled=main_process), iters_per_epoch, info)
        run.run_log.write(event="start", iteration=progress.iteration, total=progress.total, world_size=world,
                          device=str(device), args=plain_args(args), dataset=dataset_desc,
                          iters_per_epoch=iters_per_epoch)
        log.info("%s; %d iterations (%d per epoch), batch %d × %d process(es) on %s%s", dataset_desc,
                 progress.total, iters_per_epoch, args.batch_size, world, device, ", mixed precision" if args.amp else "")
        try:
            stopped = train_loop(run, train_set, sampler, progress, stop)
        finally:
            run.run_log.close()
    if stopped:
        (log.warning if main_process else log.debug)("%s: stopped at iteration %d; saved %s (continue with --resume)", stop.name or "stop signal",
                    progress.iteration, args.out / "last.pth")
        return stop.exit_status if stop.requested else 128 + 15
    log.info("done: %d iterations; checkpoints in %s", progress.iteration, args.out)
    return 0


def cli(argv: list[str] | None = None) -> int:
    """``python -m train``: errors are one line on stderr with exit status 2 (1 for a diverged loss)."""
    args = parse_args(argv)
    setup_logging()
    try:
        return main(args)
    except (DataError, CheckpointError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"interrupted by {exc}: stopped at once (nothing saved since the last checkpoint)", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    sys.exit(cli())
