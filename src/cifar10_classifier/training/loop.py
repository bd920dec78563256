"""The training loop: epochs, early stopping, checkpoints and resume, and distributed data parallel.

Data stays in memory as one normalized tensor and is augmented by batch (augment.py). The test split is never
looked at here: early stopping and model selection use the validation split only.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cifar10_classifier import CLASSES
from cifar10_classifier.data import Dataset, stratified_split
from cifar10_classifier.machine import PrecisionChoice, choose_precision, machine_info
from cifar10_classifier.models import create_model
from cifar10_classifier.preprocess import IMAGE_SIZE, MEAN_RGB, RESIZE_FILTER, STD_RGB
from cifar10_classifier.runs import RunFolder
from cifar10_classifier.training import augment
from cifar10_classifier.training.checkpoints import TrainState, load_checkpoint, save_checkpoint
from cifar10_classifier.training.distributed import (
    DistributedContext,
    average_batchnorm_statistics,
    convert_sync_batchnorm,
    main_decides,
)
from cifar10_classifier.training.optimizers import MuonSGD, lookahead_decay, lookahead_step
from cifar10_classifier.training.progress import Progress
from cifar10_classifier.training.recipes import Recipe
from cifar10_classifier.training.tensorboard_log import TensorBoardLog
from cifar10_classifier.training.tensors import normalized_tensor


def choose_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def precision_for(recipe: Recipe, device: torch.device) -> PrecisionChoice:
    return choose_precision(recipe.precision, device.type)


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
    return augment.random_crop(images, generator, recipe.crop_size_for_epoch(epoch))


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


@dataclass(frozen=True)
class StepPlan:
    """How a run's epochs are cut into optimizer steps: the same on every rank."""

    steps_per_epoch: int
    global_batch: int  # the recipe's batch_size, split over the ranks
    per_rank: int
    total_steps: int
    loss_scale: float  # DDP averages gradients over ranks: a summed loss is scaled back to the global sum
    lookahead_period: int  # steps between lookahead pulls; 0: off


def plan_steps(recipe: Recipe, n_train: int, world_size: int) -> StepPlan:
    if recipe.batch_size % world_size:
        raise ValueError(f"batch_size {recipe.batch_size} is not divisible by the world size {world_size}")
    steps_per_epoch = n_train // recipe.batch_size  # drop the ragged last batch: every step has the same size
    lookahead = max(1, round(recipe.lookahead_samples / recipe.batch_size)) if recipe.lookahead_samples else 0
    return StepPlan(
        steps_per_epoch=steps_per_epoch,
        global_batch=recipe.batch_size,
        per_rank=recipe.batch_size // world_size,
        total_steps=steps_per_epoch * recipe.epochs,
        loss_scale=float(world_size) if recipe.loss_reduction == "sum" else 1.0,
        lookahead_period=lookahead,
    )


def whiten_bias_frozen(epoch: int, recipe: Recipe) -> bool:
    return 0 < recipe.whiten_bias_epochs < epoch


def freeze_whiten_bias(optimizer: torch.optim.Optimizer, epoch: int, recipe: Recipe, dist: DistributedContext) -> None:
    """Once the whitening layer's bias is frozen, one process stops computing its gradient: with the whitening
    filters fixed, that spares the whole input gradient of the first block's first conv (5-7% of a step of the
    fast net, measured here). Under DDP the set of gradients must stay the same every step, so there its zero
    lr freezes it."""
    if dist.enabled:
        return
    for group in optimizer.param_groups:
        if group.get("name") == "whiten_bias":
            for param in group["params"]:
                param.requires_grad_(not whiten_bias_frozen(epoch, recipe))


def run_epoch(
    epoch: int,
    *,
    trained_model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    state: TrainState,
    recipe: Recipe,
    plan: StepPlan,
    generator: torch.Generator,
    dist: DistributedContext,
    bf16: bool,
    progress: Progress,
    board: TensorBoardLog,
) -> tuple[float, float, int]:
    """Train one epoch (1-based) of plan.steps_per_epoch steps -> (summed loss, correct, images) over all ranks.

    batches: the training images (normalized), their labels and their flip phases. trained_model is the model,
    or its DDP wrapper.
    """
    images_all, labels_all, flip_phase = batches
    device = images_all.device
    model: torch.nn.Module = trained_model.module if dist.enabled else trained_model  # type: ignore[assignment]
    model.train()
    started = time.perf_counter()
    order = torch.randperm(len(labels_all), generator=generator)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    freeze_whiten_bias(optimizer, epoch, recipe, dist)
    for step_in_epoch in range(plan.steps_per_epoch):
        global_step = state.epoch * plan.steps_per_epoch + step_in_epoch
        indices = order[step_in_epoch * plan.global_batch : (step_in_epoch + 1) * plan.global_batch]
        # Every rank draws the whole global batch's augmentation, then keeps its shard: the same draws as
        # one process would make, whatever the world size.
        images = augment_batch(images_all[indices.to(device)], flip_phase[indices].to(device), epoch, recipe, generator)
        shard = slice(dist.rank * plan.per_rank, (dist.rank + 1) * plan.per_rank)
        images, labels = images[shard], labels_all[indices.to(device)][shard]
        if recipe.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)

        multiplier = lr_multiplier(global_step, plan.total_steps, recipe) * state.lr_scale
        for group in optimizer.param_groups:
            frozen = group.get("name") == "whiten_bias" and whiten_bias_frozen(epoch, recipe)
            group["lr"] = 0.0 if frozen else group["base_lr"] * multiplier
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = trained_model(images)
        loss = classification_loss(logits, labels, recipe)
        (loss * plan.loss_scale).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if plan.lookahead_period and (global_step + 1) % plan.lookahead_period == 0:
            decay = lookahead_decay(global_step + 1, plan.total_steps)
            state.lookahead_average = lookahead_step(model, state.lookahead_average, decay)

        with torch.no_grad():
            batch_loss_sum = loss.detach() if recipe.loss_reduction == "sum" else loss.detach() * len(labels)
            loss_sum += batch_loss_sum
            correct += (logits.detach().argmax(1) == labels).sum()
        seen += len(labels)
        board.step(global_step, batch_loss_sum, len(labels))
        done = (step_in_epoch + 1) * plan.global_batch
        progress.batch(epoch, done, plan.steps_per_epoch * plan.global_batch, started)

    if dist.enabled:
        totals = torch.stack([loss_sum.float(), correct.float(), torch.tensor(float(seen), device=device)])
        torch.distributed.all_reduce(totals)
        loss_sum, correct, seen = totals[0], totals[1], int(totals[2].item())
        average_batchnorm_statistics(model, dist)  # unsynchronised BN: every rank ends the epoch with one model
    return float(loss_sum), float(correct), seen


@dataclass
class TrainingRun:
    """What every epoch of one run shares, built once by set_up_run."""

    recipe: Recipe
    dataset: Dataset
    run: RunFolder
    dist: DistributedContext
    device: torch.device
    precision: PrecisionChoice
    model: torch.nn.Module  # the network itself
    trained_model: torch.nn.Module  # the network, or its DDP wrapper
    model_config: dict
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    state: TrainState
    plan: StepPlan
    batches: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # training images, labels, flip phases
    val_images: torch.Tensor
    val_labels: torch.Tensor
    progress: Progress
    board: TensorBoardLog  # rank 0's TensorBoard writer, or one that writes nothing
    stopped_early: bool = False


def set_up_run(
    recipe: Recipe,
    dataset: Dataset,
    run: RunFolder,
    *,
    resume: bool,
    force: bool,
    dist: DistributedContext,
    show_progress: bool,
    board: TensorBoardLog | None = None,
) -> TrainingRun:
    """Folder, device, precision, seeds, data tensors, model, optimizer and (when resuming) the checkpoint's state,
    in a fixed order: the same seed gives the same run."""
    # Rank 0 owns the run folder; the others wait for its verdict (and raise its error, if any).
    has_checkpoint = main_decides(dist, lambda: run.prepare(resume, force))
    device = choose_device()
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    precision = precision_for(recipe, device)
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)

    train_indices, val_indices = stratified_split(dataset.train.labels, recipe.val_fraction, recipe.seed)
    all_images, all_labels = np.asarray(dataset.train.images_uint8), np.asarray(dataset.train.labels)
    train_images = normalized_tensor(all_images[train_indices], device, recipe.channels_last)
    train_labels = torch.from_numpy(all_labels[train_indices]).to(device)
    val_images = normalized_tensor(all_images[val_indices], device, recipe.channels_last)
    val_labels = torch.from_numpy(all_labels[val_indices]).to(device)

    model = create_model(recipe.model, **recipe.model_config)
    model_config = json.loads(json.dumps(model.config.__dict__))  # the resolved config, JSON-friendly
    if hasattr(model, "init_whitening"):
        model.init_whitening(train_images[: recipe.whiten_images].float().cpu())  # type: ignore[operator]
    if recipe.sync_batchnorm and dist.enabled:
        model = convert_sync_batchnorm(model, device)
    model = model.to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = build_optimizer(model, recipe)

    state = TrainState()
    if has_checkpoint:
        state = load_checkpoint(run.checkpoint, model, optimizer, generator, dist, model_name=recipe.model)
    trained_model = model
    if dist.enabled:
        trained_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False
        )

    if dist.is_main:
        data = {
            "source": dataset.source,
            "path": str(Path(dataset.source).expanduser().resolve()),  # what --resume loads from any folder
            "sha256": dataset.checksum,
            "skip_bad_images": dataset.skip_bad_images,
            "train": len(train_indices),
            "val": len(val_indices),
        }
        run.write_config(
            {
                "recipe": recipe.to_dict(),
                "model_config": model_config,
                "data": data,
                "world_size": dist.world_size,
                "precision": precision.to_dict(),
                "device": str(device),
            }
        )

    plan = plan_steps(recipe, len(train_labels), dist.world_size)
    # airbench's alternating flip: a fixed random phase per image, drawn once per run.
    flip_phase = torch.rand(len(train_labels), generator=torch.Generator().manual_seed(recipe.seed + 1)) < 0.5
    if plan.lookahead_period and state.lookahead_average is None:
        state.lookahead_average = lookahead_step(model, None, 0.0)
    board = board or TensorBoardLog.off()  # TensorBoardLog.for_run already gives other ranks one that writes nothing
    board.start(state.epoch, plan.steps_per_epoch)
    return TrainingRun(
        recipe=recipe,
        dataset=dataset,
        run=run,
        dist=dist,
        device=device,
        precision=precision,
        model=model,
        trained_model=trained_model,
        model_config=model_config,
        optimizer=optimizer,
        generator=generator,
        state=state,
        plan=plan,
        batches=(train_images, train_labels, flip_phase),
        val_images=val_images,
        val_labels=val_labels,
        progress=Progress(show_progress and dist.is_main, recipe.epochs),
        board=board,
    )


def train_epoch(setup: TrainingRun) -> bool:
    """The next epoch: its steps, validation, the checkpoint and history, progress -> True to stop early."""
    recipe, state, dist = setup.recipe, setup.state, setup.dist
    epoch = state.epoch + 1
    epoch_started = time.perf_counter()
    loss_sum, correct, seen = run_epoch(
        epoch,
        trained_model=setup.trained_model,
        optimizer=setup.optimizer,
        batches=setup.batches,
        state=state,
        recipe=recipe,
        plan=setup.plan,
        generator=setup.generator,
        dist=dist,
        bf16=setup.precision.bf16,
        progress=setup.progress,
        board=setup.board,
    )
    epoch_seconds = time.perf_counter() - epoch_started
    state.train_seconds += epoch_seconds
    row = {
        "epoch": epoch,
        "train_loss": loss_sum / max(1, seen),
        "train_accuracy": correct / max(1, seen),
        "val_loss": None,
        "val_accuracy": None,
        "lr": next(g["lr"] for g in setup.optimizer.param_groups if g.get("name") == "weights"),
        "images_per_second": seen / epoch_seconds,
        "epoch_seconds": epoch_seconds,
        "elapsed_seconds": state.train_seconds,
    }
    if len(setup.val_labels):
        # Rank 0's numbers on every rank: early stopping and the plateau schedule decide the same everywhere.
        row["val_loss"], row["val_accuracy"] = main_decides(
            dist,
            lambda: evaluate_loss_accuracy(
                setup.model, setup.val_images, setup.val_labels, recipe.eval_batch_size, setup.precision.bf16
            ),
        )
    state.history.append(row)
    state.epoch = epoch

    if row["val_loss"] is not None:
        track_validation(state, row["val_loss"], recipe, setup.model)
    stop = bool(recipe.early_stopping_patience and state.epochs_since_best >= recipe.early_stopping_patience)
    if dist.is_main:
        # The epoch's events before its checkpoint: interrupted in between, the resumed run redoes the epoch and
        # drops those events, where the other order would leave a checkpointed epoch without its events.
        setup.board.epoch_end(row)
        save_checkpoint(setup.run.checkpoint, setup.model, setup.optimizer, state, setup.generator)
        setup.run.write_history(state.history)
    eta = (recipe.epochs - epoch) * state.train_seconds / max(1, epoch)
    setup.progress.epoch(row, 0.0 if stop else eta)
    if stop and setup.progress.enabled:
        print(
            f"early stopping: no val_loss improvement for {recipe.early_stopping_patience} epochs; "
            f"restoring epoch {state.best_epoch}",
            flush=True,
        )
    return stop


def finish_run(setup: TrainingRun) -> tuple[torch.nn.Module, TrainState, dict]:
    """The final weights (the best epoch's under early stopping, the lookahead average with lookahead) and card."""
    recipe, state, model = setup.recipe, setup.state, setup.model
    if state.best_model_state is not None and recipe.early_stopping_patience:
        model.load_state_dict(state.best_model_state)
    elif state.lookahead_average is not None:
        lookahead_step(model, state.lookahead_average, 1.0)  # the final model is the average
    card = model_card(recipe, setup.model_config, setup.dataset, state)
    card["precision"] = setup.precision.to_dict()
    card["stopped_early"] = setup.stopped_early
    return model, state, card


def train(
    recipe: Recipe,
    dataset: Dataset,
    out_dir: Path | RunFolder,
    *,
    resume: bool = False,
    force: bool = False,
    dist: DistributedContext | None = None,
    show_progress: bool = True,
    board: TensorBoardLog | None = None,
) -> tuple[torch.nn.Module, TrainState, dict]:
    """Train `recipe` on `dataset` into the run folder `out_dir` -> (model with final weights, state, card).

    board: the run's TensorBoard log (none by default); the caller closes it, after logging the final results."""
    run = out_dir if isinstance(out_dir, RunFolder) else RunFolder(Path(out_dir))
    setup = set_up_run(
        recipe,
        dataset,
        run,
        resume=resume,
        force=force,
        dist=dist or DistributedContext(),
        show_progress=show_progress,
        board=board,
    )
    while setup.state.epoch < recipe.epochs:
        if train_epoch(setup):
            setup.stopped_early = True
            break
    return finish_run(setup)
