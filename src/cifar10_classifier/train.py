"""The training loop: epochs, progress, early stopping, atomic checkpoints, resume, and distributed data parallel.

Data stays in memory as one normalised tensor and is augmented by batch (augment.py). The test split is never
looked at here: early stopping and model selection use the validation split only.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cifar10_classifier import CLASSES, augment
from cifar10_classifier.atomic import atomic_path, atomic_write_text
from cifar10_classifier.data import Dataset, stratified_split
from cifar10_classifier.distributed import (
    DistributedContext,
    average_batchnorm_statistics,
    convert_sync_batchnorm,
    main_decides,
)
from cifar10_classifier.machine import cpu_has_native_bf16, machine_info
from cifar10_classifier.models import create_model
from cifar10_classifier.optimizers import MuonSGD
from cifar10_classifier.preprocess import IMAGE_SIZE, MEAN_RGB, RESIZE_FILTER, STD_RGB
from cifar10_classifier.recipes import Recipe
from cifar10_classifier.tensors import normalised_tensor

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"
HISTORY_NAME = "history.json"


class RunFolderError(Exception):
    """The run folder exists and would be overwritten, or a checkpoint cannot be resumed."""


@dataclass
class TrainState:
    """Everything a checkpoint needs to continue a run to the same result."""

    epoch: int = 0  # epochs completed
    history: list[dict] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    best_model_state: dict | None = None
    epochs_since_best: int = 0
    lr_scale: float = 1.0  # for the plateau schedule
    plateau_wait: int = 0
    train_seconds: float = 0.0
    lookahead_average: dict | None = None  # the running average of the weights, when the recipe uses lookahead


def choose_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def use_bf16(recipe: Recipe, device: torch.device) -> bool:
    if recipe.bf16 == "auto":
        # On CPUs without native bf16 (AVX2-only), autocast to bf16 runs ~20x slower than fp32: measured here.
        return device.type == "cuda" or cpu_has_native_bf16()
    return str(recipe.bf16).lower() in ("1", "true", "yes", "on")


def lr_multiplier(step: int, total_steps: int, recipe: Recipe) -> float:
    """Linear warmup from lr_start to 1, then linear decay to lr_end; constant otherwise."""
    if recipe.schedule != "linear":
        return 1.0
    warmup_steps = int(recipe.warmup_fraction * total_steps)
    if step < warmup_steps:
        return recipe.lr_start + (1.0 - recipe.lr_start) * step / max(1, warmup_steps)
    remaining = max(1, total_steps - warmup_steps)
    return 1.0 + (recipe.lr_end - 1.0) * (step - warmup_steps) / remaining


def build_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """Parameter groups: BN shifts (faster lr), the whitening layer's bias (frozen after a few epochs), the rest."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    norm_biases = [p for n, p in named if "norm" in n and n.endswith("bias")]
    whiten_biases = [p for n, p in named if n.startswith("whiten.") and n.endswith("bias")]
    # With Muon, the conv filter banks (4-D weights) get orthogonalised steps of their own.
    filters = [p for _, p in named if p.dim() == 4] if recipe.optimizer == "muon" else []
    special = {id(p) for p in norm_biases + whiten_biases + filters}
    others = [p for _, p in named if id(p) not in special]

    def group(name: str, params: list, lr: float, coupled_weight_decay: float) -> dict:
        if recipe.loss_reduction == "sum":
            # Summed loss (airbench's convention): weight_decay is the fraction of each weight removed per sample
            # at the schedule's peak, decoupled from the learning rate. PyTorch's SGD multiplies weight_decay by
            # the group's lr, so it is divided out; the batch size turns "per sample" into "per step".
            weight_decay = recipe.weight_decay * recipe.batch_size / lr
        else:
            weight_decay = coupled_weight_decay  # the usual decay, coupled to the lr (Adam/SGD on a mean loss)
        return {"params": params, "lr": lr, "base_lr": lr, "weight_decay": weight_decay, "name": name}

    groups = [group("weights", others, recipe.lr, recipe.weight_decay)]
    if norm_biases:
        scale = recipe.bias_lr_scale
        groups.append(group("norm_biases", norm_biases, recipe.lr * scale, recipe.weight_decay / scale))
    if whiten_biases:
        groups.append(group("whiten_bias", whiten_biases, recipe.lr, recipe.weight_decay))
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr)
    if recipe.optimizer == "sgd-nesterov":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    if recipe.optimizer == "muon":
        filter_group = {"params": filters, "lr": recipe.muon_lr, "base_lr": recipe.muon_lr, "name": "filters"}
        filter_group |= {"momentum": recipe.muon_momentum, "orthogonal": True}
        return MuonSGD([filter_group, *groups], momentum=recipe.momentum)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; use 'sgd-nesterov', 'muon' or 'adam'")


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    if recipe.label_format == "one-hot":
        # Keras' categorical cross-entropy over one-hot targets: the same value as the index form.
        targets = F.one_hot(labels, logits.size(1)).float()
        if recipe.label_smoothing:
            targets = targets * (1 - recipe.label_smoothing) + recipe.label_smoothing / logits.size(1)
        per_sample = -(targets * F.log_softmax(logits.float(), dim=1)).sum(1)
    else:
        per_sample = F.cross_entropy(logits.float(), labels, label_smoothing=recipe.label_smoothing, reduction="none")
    return per_sample.sum() if recipe.loss_reduction == "sum" else per_sample.mean()


@torch.no_grad()
def evaluate_loss_accuracy(model, images, labels, batch_size: int, bf16: bool) -> tuple[float, float]:
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        batch, target = images[start : start + batch_size], labels[start : start + batch_size]
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch).float()
        total_loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(1) == target).sum().item()
    model.train()
    return total_loss / max(1, len(labels)), correct / max(1, len(labels))


class _DeferInterrupts:
    """Hold Ctrl-C while a checkpoint is written, then deliver it: an interrupt never cuts a save in half."""

    def __enter__(self):
        self.pending = False
        try:
            self.previous = signal.signal(signal.SIGINT, self._remember)
        except ValueError:  # not the main thread
            self.previous = None
        return self

    def _remember(self, *_):
        self.pending = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            if self.pending:
                raise KeyboardInterrupt


_TENSOR_STATE = ("best_model_state", "lookahead_average")  # TrainState fields that hold weights


def save_checkpoint(path: Path, model, optimizer, state: TrainState, generator: torch.Generator) -> None:
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "state": {k: v for k, v in state.__dict__.items() if k not in _TENSOR_STATE},
        **{k: getattr(state, k) for k in _TENSOR_STATE},
    }
    with _DeferInterrupts(), atomic_path(path) as temp_path:
        torch.save(payload, temp_path)


def _unresumable(path: Path, error: Exception) -> RunFolderError:
    return RunFolderError(f"{path}: cannot resume from this checkpoint ({error}); start again with --force")


def _read_checkpoint(path: Path) -> dict:
    try:
        # weights_only: a checkpoint is data, never code, even if someone else wrote it.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise _unresumable(path, error) from error


def load_checkpoint(
    path: Path, model, optimizer, generator: torch.Generator, dist: DistributedContext | None = None
) -> TrainState:
    # Rank 0 reads the file and sends it to the others: only its machine needs the run folder.
    payload = main_decides(dist or DistributedContext(), lambda: _read_checkpoint(path))
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        generator.set_state(payload["generator"])
        torch.set_rng_state(payload["torch_rng"])
        state = TrainState(**payload["state"])
        for key in _TENSOR_STATE:
            setattr(state, key, payload.get(key))
    except Exception as error:
        raise _unresumable(path, error) from error
    return state


def prepare_run_folder(out_dir: Path, resume: bool, force: bool) -> bool:
    """-> True when there is a checkpoint to resume from. Never overwrites a run without --resume or --force."""
    checkpoint = out_dir / CHECKPOINT_NAME
    if resume:
        if not checkpoint.is_file():
            raise RunFolderError(f"{out_dir}: nothing to resume (no {CHECKPOINT_NAME}); drop --resume to start anew")
        return True
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise RunFolderError(f"{out_dir}: run folder exists; pass --resume to continue it or --force to start over")
    if force and checkpoint.exists():
        checkpoint.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    return False


class Progress:
    """One line per epoch; a live bar within the epoch when attached to a terminal; quiet unless rank 0."""

    def __init__(self, enabled: bool, total_epochs: int):
        self.enabled = enabled
        self.live = enabled and sys.stderr.isatty() and not os.environ.get("CI")
        self.total_epochs = total_epochs

    def batch(self, epoch: int, done: int, total: int, started: float) -> None:
        if not self.live:
            return
        elapsed = time.perf_counter() - started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        width = 30
        filled = int(width * done / max(1, total))
        print(
            f"\repoch {epoch:>3} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
            f"{rate:,.0f} img/s eta {eta:4.0f}s",
            end="",
            file=sys.stderr,
            flush=True,
        )

    def epoch(self, row: dict, eta_seconds: float) -> None:
        if not self.enabled:
            return
        if self.live:
            print("\r\033[K", end="", file=sys.stderr)
        val = (
            f" val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.4f}"
            if row.get("val_loss") is not None
            else ""
        )
        print(
            f"epoch {row['epoch']:>3}/{self.total_epochs} train_loss {row['train_loss']:.4f} "
            f"train_acc {row['train_accuracy']:.4f}{val} lr {row['lr']:.3g} {row['images_per_second']:,.0f} img/s "
            f"elapsed {row['elapsed_seconds']:.0f}s eta {eta_seconds:.0f}s",
            flush=True,
        )


def model_card(recipe: Recipe, model_config: dict, dataset: Dataset, state: TrainState) -> dict:
    return {
        "name": f"cifar10-{recipe.name}",
        "version": time.strftime("%Y%m%d-%H%M%S"),
        "model": recipe.model,
        "model_config": model_config,
        "recipe": recipe.name,
        "seed": recipe.seed,
        "classes": list(CLASSES),
        "input": {
            "size": IMAGE_SIZE,
            "layout": "NCHW",
            "mean": list(MEAN_RGB),
            "std": list(STD_RGB),
            "resize_filter": RESIZE_FILTER,
        },
        "tta_level": recipe.tta_level,
        "data": {"source": dataset.source, "sha256": dataset.checksum},
        "epochs_trained": state.epoch,
        "best_epoch": state.best_epoch or state.epoch,
        "train_seconds": round(state.train_seconds, 1),
        "machine": machine_info(),
    }


@torch.no_grad()
def lookahead_step(model: torch.nn.Module, average: dict | None, decay: float) -> dict:
    """Move the running average of the weights (and BN statistics) towards the model by (1 - decay), then set
    the model to it. With no average yet, start one from the model."""
    current = model.state_dict()
    if average is None:
        return {k: v.detach().clone() for k, v in current.items() if v.is_floating_point()}
    for name, averaged in average.items():
        averaged.lerp_(current[name], 1.0 - decay)
        current[name].copy_(averaged)
    return average


def lookahead_decay(step: int, total_steps: int) -> float:
    """airbench's schedule: no averaging early on, rising to a 0.95^5 pull at the end of training."""
    return 0.95**5 * (step / max(1, total_steps)) ** 3


def augment_batch(
    images: torch.Tensor, flip_phase: torch.Tensor, epoch: int, recipe: Recipe, generator: torch.Generator
) -> torch.Tensor:
    """The recipe's augmentation of one batch (B, 3, 32, 32); draws come from `generator` in a fixed order."""
    if recipe.flip == "alternating":
        images = augment.alternating_flip(images, flip_phase, epoch)
    elif recipe.flip == "random":
        images = augment.random_flip(images, generator)
    images = augment.random_translate(images, generator, recipe.translate)
    images = augment.random_affine(images, generator, recipe.rotation_degrees, recipe.zoom, recipe.shift)
    images = augment.random_blur(images, generator, recipe.blur_probability, recipe.blur_strength)
    if epoch <= recipe.crop_epochs:
        images = augment.random_crop(images, generator, recipe.crop_size)
    return images


def track_validation(state: TrainState, val_loss: float, recipe: Recipe, model: torch.nn.Module) -> None:
    """Update the best epoch (keeping its weights when early stopping may restore them) and the plateau schedule."""
    if val_loss < state.best_val_loss:
        state.best_val_loss, state.best_epoch, state.epochs_since_best = val_loss, state.epoch, 0
        if recipe.early_stopping_patience:
            state.best_model_state = copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()})
    else:
        state.epochs_since_best += 1
    if recipe.schedule == "plateau":
        state.plateau_wait = 0 if state.epochs_since_best == 0 else state.plateau_wait + 1
        if state.plateau_wait >= recipe.plateau_patience:
            state.lr_scale *= recipe.plateau_factor
            state.plateau_wait = 0


def train(
    recipe: Recipe,
    dataset: Dataset,
    out_dir: Path,
    *,
    resume: bool = False,
    force: bool = False,
    dist: DistributedContext | None = None,
    show_progress: bool = True,
) -> tuple[torch.nn.Module, TrainState, dict]:
    """Train `recipe` on `dataset` into `out_dir` -> (model with final weights, state, card)."""
    dist = dist or DistributedContext()
    out_dir = Path(out_dir)
    # Rank 0 owns the run folder; the others wait for its verdict (and raise its error, if any).
    has_checkpoint = main_decides(dist, lambda: prepare_run_folder(out_dir, resume, force))
    device = choose_device()
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    bf16 = use_bf16(recipe, device)
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)

    train_indices, val_indices = stratified_split(dataset.train.labels, recipe.val_fraction, recipe.seed)
    all_images, all_labels = np.asarray(dataset.train.images_uint8), np.asarray(dataset.train.labels)
    train_images = normalised_tensor(all_images[train_indices], device, recipe.channels_last)
    train_labels = torch.from_numpy(all_labels[train_indices]).to(device)
    val_images = normalised_tensor(all_images[val_indices], device, recipe.channels_last)
    val_labels = torch.from_numpy(all_labels[val_indices]).to(device)

    model = create_model(recipe.model, **recipe.model_config)
    model_config = json.loads(json.dumps(model.config.__dict__))  # the resolved config, JSON-friendly
    if hasattr(model, "init_whitening"):
        model.init_whitening(train_images[: recipe.whiten_images].float().cpu())
    if recipe.sync_batchnorm and dist.enabled:
        model = convert_sync_batchnorm(model, device)
    model = model.to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, recipe)

    state = TrainState()
    if has_checkpoint:
        state = load_checkpoint(out_dir / CHECKPOINT_NAME, model, optimizer, generator, dist)
    trained_model = model
    if dist.enabled:
        trained_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False
        )

    if dist.is_main:
        atomic_write_text(
            out_dir / CONFIG_NAME,
            json.dumps(
                {
                    "recipe": recipe.to_dict(),
                    "model_config": model_config,
                    "data": {
                        "source": dataset.source,
                        "sha256": dataset.checksum,
                        "train": len(train_indices),
                        "val": len(val_indices),
                    },
                    "world_size": dist.world_size,
                    "bf16": bf16,
                    "device": str(device),
                },
                indent=2,
            ),
        )

    n_train = len(train_labels)
    global_batch = recipe.batch_size
    if global_batch % dist.world_size:
        raise ValueError(f"batch_size {global_batch} is not divisible by the world size {dist.world_size}")
    per_rank = global_batch // dist.world_size
    steps_per_epoch = n_train // global_batch  # drop the ragged last batch: every step has the same size
    total_steps = steps_per_epoch * recipe.epochs
    # Under DDP gradients are averaged over ranks; a summed loss must be scaled back to the global sum.
    loss_scale = float(dist.world_size) if recipe.loss_reduction == "sum" else 1.0
    # airbench's alternating flip: a fixed random phase per image, drawn once per run.
    flip_phase = torch.rand(n_train, generator=torch.Generator().manual_seed(recipe.seed + 1)) < 0.5
    progress = Progress(show_progress and dist.is_main, recipe.epochs)
    lookahead_period = max(1, round(recipe.lookahead_samples / global_batch)) if recipe.lookahead_samples else 0
    if lookahead_period and state.lookahead_average is None:
        state.lookahead_average = lookahead_step(model, None, 0.0)

    stopped_early = False
    while state.epoch < recipe.epochs:
        epoch = state.epoch + 1
        epoch_started = time.perf_counter()
        model.train()
        order = torch.randperm(n_train, generator=generator)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for step_in_epoch in range(steps_per_epoch):
            global_step = state.epoch * steps_per_epoch + step_in_epoch
            indices = order[step_in_epoch * global_batch : (step_in_epoch + 1) * global_batch]
            # Every rank draws the whole global batch's augmentation, then keeps its shard: the same draws as
            # one process would make, whatever the world size.
            images = augment_batch(
                train_images[indices.to(device)], flip_phase[indices].to(device), epoch, recipe, generator
            )
            shard = slice(dist.rank * per_rank, (dist.rank + 1) * per_rank)
            images, labels = images[shard], train_labels[indices.to(device)][shard]
            if recipe.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)

            multiplier = lr_multiplier(global_step, total_steps, recipe) * state.lr_scale
            for group in optimizer.param_groups:
                frozen = group.get("name") == "whiten_bias" and 0 < recipe.whiten_bias_epochs < epoch
                # A zero lr (not requires_grad=False) freezes it: DDP keeps the same set of gradients every step.
                group["lr"] = 0.0 if frozen else group["base_lr"] * multiplier
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = trained_model(images)
            loss = classification_loss(logits, labels, recipe)
            (loss * loss_scale).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if lookahead_period and (global_step + 1) % lookahead_period == 0:
                decay = lookahead_decay(global_step + 1, total_steps)
                state.lookahead_average = lookahead_step(model, state.lookahead_average, decay)

            with torch.no_grad():
                per_sample = loss.detach() if recipe.loss_reduction == "sum" else loss.detach() * len(labels)
                loss_sum += per_sample
                correct += (logits.detach().argmax(1) == labels).sum()
            seen += len(labels)
            progress.batch(epoch, (step_in_epoch + 1) * global_batch, steps_per_epoch * global_batch, epoch_started)

        if dist.enabled:
            totals = torch.stack([loss_sum.float(), correct.float(), torch.tensor(float(seen), device=device)])
            torch.distributed.all_reduce(totals)
            loss_sum, correct, seen = totals[0], totals[1], int(totals[2].item())
            average_batchnorm_statistics(model, dist)  # unsynchronised BN: every rank ends the epoch with one model
        epoch_seconds = time.perf_counter() - epoch_started
        state.train_seconds += epoch_seconds
        row = {
            "epoch": epoch,
            "train_loss": float(loss_sum) / max(1, seen),
            "train_accuracy": float(correct) / max(1, seen),
            "val_loss": None,
            "val_accuracy": None,
            "lr": next(g["lr"] for g in optimizer.param_groups if g.get("name") == "weights"),
            "images_per_second": seen / epoch_seconds,
            "epoch_seconds": epoch_seconds,
            "elapsed_seconds": state.train_seconds,
        }
        if len(val_labels):
            # Rank 0's numbers on every rank: early stopping and the plateau schedule decide the same everywhere.
            row["val_loss"], row["val_accuracy"] = main_decides(
                dist, lambda: evaluate_loss_accuracy(model, val_images, val_labels, recipe.eval_batch_size, bf16)
            )
        state.history.append(row)
        state.epoch = epoch

        if row["val_loss"] is not None:
            track_validation(state, row["val_loss"], recipe, model)
        stop = bool(recipe.early_stopping_patience and state.epochs_since_best >= recipe.early_stopping_patience)
        if dist.is_main:
            save_checkpoint(out_dir / CHECKPOINT_NAME, model, optimizer, state, generator)
            atomic_write_text(out_dir / HISTORY_NAME, json.dumps(state.history, indent=1))
        eta = (recipe.epochs - epoch) * state.train_seconds / max(1, epoch)
        progress.epoch(row, 0.0 if stop else eta)
        if stop:
            stopped_early = True
            if progress.enabled:
                print(
                    f"early stopping: no val_loss improvement for {recipe.early_stopping_patience} epochs; "
                    f"restoring epoch {state.best_epoch}",
                    flush=True,
                )
            break

    if state.best_model_state is not None and recipe.early_stopping_patience:
        model.load_state_dict(state.best_model_state)
    elif state.lookahead_average is not None:
        lookahead_step(model, state.lookahead_average, 1.0)  # the final model is the average
    card = model_card(recipe, model_config, dataset, state)
    card["stopped_early"] = stopped_early
    return model, state, card


@dataclass(frozen=True)
class TrainJob:
    """One `cifar10 train` invocation, resolved."""

    recipe: Recipe
    data: str | None
    out_dir: Path
    resume: bool = False
    force: bool = False
    download: bool = False
    cache_dir: Path | None = None
    skip_bad_images: bool = False
    show_progress: bool = True
    evaluate: bool = True


def run_training_job(job: TrainJob, dist: DistributedContext | None = None) -> dict:
    """Train, save weights + card, and (rank 0) evaluate on the test split and write the report."""
    from cifar10_classifier.data import load_dataset
    from cifar10_classifier.evaluate import evaluate_model
    from cifar10_classifier.weights import save_weights

    dist = dist or DistributedContext()
    dataset = load_dataset(
        job.data, cache_dir=job.cache_dir, download=job.download, skip_bad_images=job.skip_bad_images
    )
    started = time.perf_counter()
    model, state, card = train(
        job.recipe, dataset, job.out_dir, resume=job.resume, force=job.force, dist=dist, show_progress=job.show_progress
    )
    result = {"card": card, "history": state.history}
    if not dist.is_main:
        return result
    save_weights(model, job.out_dir, card)
    if job.evaluate:
        metrics = evaluate_model(
            model,
            dataset.test.images_uint8,
            dataset.test.labels,
            job.recipe.tta_level,
            job.out_dir,
            state.history,
            card,
            bf16=use_bf16(job.recipe, choose_device()),
        )
        card["accuracy"] = {
            "test": metrics["test_accuracy"],
            "test_tta": metrics["test_accuracy_tta"],
            "tta_level": job.recipe.tta_level,
        }
        card["train_and_eval_seconds"] = round(time.perf_counter() - started, 1)
        save_weights(model, job.out_dir, card)
        result["metrics"] = metrics
        if job.show_progress:
            print(
                f"test accuracy {metrics['test_accuracy']:.4f}, with TTA {metrics['test_accuracy_tta']:.4f}; "
                f"report: {job.out_dir / 'report.md'}",
                flush=True,
            )
    return result
