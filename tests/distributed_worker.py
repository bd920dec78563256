"""One rank of a `cifar10 train` job for tests/test_distributed.py, run under torchrun.

It is the real CLI (`cifar10_classifier.cli.main`) with test hooks around it, so the package holds none:
the tiny synthetic dataset stands in for a data source, each rank works in its own folder (so a file that
rank 1 writes cannot hide among rank 0's), each rank's final weights are saved, and failures happen on demand.

Environment (all optional):
    WORKER_ROOT                   each rank runs in WORKER_ROOT/rank<RANK> (created here)
    WORKER_WEIGHTS_DIR            save the state dict train() returned as rank<RANK>.pt there
    WORKER_EXIT_AT_STEP           "RANK:STEP": that rank dies (os._exit(3)) at that global step
    WORKER_HANG_AT_STEP           "RANK:STEP": that rank stops answering at that global step
    WORKER_EVALUATE               "0": skip the final test-set evaluation, plots and report (they cost seconds)
    WORKER_VAL_LOSSES             "1.0,0.5,...": the validation losses rank 0 sees, epoch by epoch; any other rank
                                  that evaluated would see them falling forever (so it would never stop early)
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import torch
from support import tiny_dataset

import cifar10_classifier.data as data_module
from cifar10_classifier import jobs
from cifar10_classifier.cli import main
from cifar10_classifier.training import loop as train_module

RANK = int(os.environ.get("RANK", "0"))


def _rank_and_step(name: str) -> tuple[int, int] | None:
    value = os.environ.get(name)
    return tuple(int(part) for part in value.split(":")) if value else None  # type: ignore[return-value]


def install_hooks() -> None:
    data_module.load_dataset = lambda *args, **kwargs: tiny_dataset()
    if os.environ.get("WORKER_EVALUATE") == "0":
        jobs.TrainJob = functools.partial(jobs.TrainJob, evaluate=False)

    real_train = train_module.train

    def train_and_save_weights(*args, **kwargs):
        model, state, card = real_train(*args, **kwargs)
        if folder := os.environ.get("WORKER_WEIGHTS_DIR"):
            weights = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
            torch.save(weights, Path(folder) / f"rank{RANK}.pt")
        return model, state, card

    train_module.train = train_and_save_weights

    exit_at, hang_at = _rank_and_step("WORKER_EXIT_AT_STEP"), _rank_and_step("WORKER_HANG_AT_STEP")
    real_lr_multiplier = train_module.lr_multiplier

    def lr_multiplier_with_faults(step, total_steps, recipe):  # called once per step, on every rank
        if exit_at == (RANK, step):
            os._exit(3)
        if hang_at == (RANK, step):
            time.sleep(3600)
        return real_lr_multiplier(step, total_steps, recipe)

    train_module.lr_multiplier = lr_multiplier_with_faults

    if scripted := os.environ.get("WORKER_VAL_LOSSES"):
        losses = iter(float(value) for value in scripted.split(",")) if RANK == 0 else iter(range(100, 0, -1))
        train_module.evaluate_loss_accuracy = lambda *args, **kwargs: (float(next(losses)), 0.5)


if __name__ == "__main__":
    if root := os.environ.get("WORKER_ROOT"):
        folder = Path(root) / f"rank{RANK}"
        folder.mkdir(parents=True, exist_ok=True)
        os.chdir(folder)
    install_hooks()
    raise SystemExit(main(sys.argv[1:]))
