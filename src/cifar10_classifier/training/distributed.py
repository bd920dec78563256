"""torch.distributed for runs under torchrun: the process group (gloo on CPU, nccl on CUDA), collective timeouts so
a dead or stuck rank makes the others exit with one clear line instead of hanging, rank-0 decisions every rank
follows, and batch norm synchronised across ranks on CPU as well as on GPU.

Nothing here launches processes: torchrun does (`cifar10 train --nproc N` runs it for you).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

TIMEOUT_ENV = "CIFAR10_DIST_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 120

T = TypeVar("T")


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the rank within this machine: which GPU it drives

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


class DistributedFailure(Exception):
    """Another rank died or stopped answering: this rank cannot go on alone."""


def collective_timeout_seconds() -> int:
    """How long a collective waits for the slowest rank before failing ($CIFAR10_DIST_TIMEOUT, default 120 s)."""
    value = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_SECONDS))
    try:
        seconds = int(value)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={value!r}: expected a whole number of seconds") from None
    if seconds <= 0:
        raise ValueError(f"{TIMEOUT_ENV}={value!r}: expected a positive number of seconds")
    return seconds


def distributed_context() -> DistributedContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); a single-process context otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch_dist.is_initialized():
        use_cuda = torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local_rank)
        # Joining is the first collective: a rank that never shows up fails it after the same timeout.
        with collective_failures_explained(DistributedContext(int(os.environ.get("RANK", "0")), world_size)):
            torch_dist.init_process_group(
                "nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=collective_timeout_seconds())
            )
    return DistributedContext(torch_dist.get_rank(), torch_dist.get_world_size(), local_rank)


def shutdown_distributed() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def _is_collective_failure(error: BaseException) -> bool:
    # gloo reports a peer that went away, or one that stopped answering, as a plain RuntimeError from its transport.
    return isinstance(error, torch_dist.DistError) or (isinstance(error, RuntimeError) and "gloo" in str(error))


@contextlib.contextmanager
def collective_failures_explained(dist: DistributedContext) -> Iterator[None]:
    """Turn the transport error a rank gets when another rank dies or hangs into one DistributedFailure line."""
    try:
        yield
    except Exception as error:
        if not dist.enabled or not _is_collective_failure(error):
            raise
        # "[.../gloo/transport/tcp/pair.cc:537] Read error ...: Connection reset by peer. This is typically ..."
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        detail = re.sub(r"^\[[^\]]*\]\s*", "", first_line).split(". ")[0][:160]
        if "timed out" in detail.lower() or "timeout" in type(error).__name__.lower():
            cause = f"another rank stopped answering for {collective_timeout_seconds()} s ({TIMEOUT_ENV})"
        else:
            cause = "another rank died"
        raise DistributedFailure(
            f"rank {dist.rank} of {dist.world_size} stopped: {cause}; see that rank's output for why ({detail})"
        ) from error


def from_main(dist: DistributedContext, value: T) -> T:
    """Rank 0's `value` on every rank (any picklable object)."""
    if not dist.enabled:
        return value
    box: list[Any] = [value if dist.is_main else None]
    torch_dist.broadcast_object_list(box, src=0)
    received: T = box[0]
    return received


def main_decides(dist: DistributedContext, decide: Callable[[], T]) -> T:
    """Run `decide` on rank 0 only; every rank returns its result, or raises its error.

    For steps that touch the run folder (which lives on rank 0's machine) or that must come out the same
    everywhere. It is also a barrier: no rank goes on before rank 0 has finished deciding.
    """
    outcome: tuple[bool, object] | None = None
    if dist.is_main:
        try:
            outcome = (True, decide())
        except Exception as error:
            if not dist.enabled:
                raise
            outcome = (False, error)
    succeeded, result = from_main(dist, outcome)  # type: ignore[misc]  # rank 0 always sets it
    if not succeeded:
        raise result  # type: ignore[misc]
    return result  # type: ignore[return-value]


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) that autograd can see through: the gradient of a sum over ranks is the sum of the ranks'
    gradients, so the backward pass is the same collective."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        total = tensor.clone(memory_format=torch.contiguous_format)
        torch_dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        total = grad.clone(memory_format=torch.contiguous_format)
        torch_dist.all_reduce(total, group=ctx.group)
        return total, None


class CpuSyncBatchNorm(_BatchNorm):
    """Batch norm synchronised over ranks on CPU with gloo, where torch.nn.SyncBatchNorm refuses to run.

    In training every rank all-gathers each channel's (count, mean, sum of squared deviations) with a
    differentiable collective, combines them with Chan et al.'s parallel-variance formula (no E[x²] - E[x]²
    cancellation), normalizes with the global statistics and updates the running statistics as BatchNorm does
    (unbiased variance in running_var). Gradients flow back through the collective, so every rank gets the
    gradient of the whole global batch's loss, as with one process.
    """

    def __init__(self, num_features: int, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, group=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        group = self.process_group or torch_dist.group.WORLD
        if not (self.training and torch_dist.is_initialized() and torch_dist.get_world_size(group) > 1):
            return super().forward(input)  # evaluation, or nobody to synchronise with: plain batch norm
        self._check_input_dim(input)
        world_size, rank = torch_dist.get_world_size(group), torch_dist.get_rank(group)
        reduce_dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)  # per-channel values broadcast over (B, C, ...)
        values = input.to(torch.promote_types(input.dtype, torch.float32))  # bf16 under autocast: stats in fp32
        local_var, local_mean = torch.var_mean(values, dim=reduce_dims, correction=0)  # (C,), (C,)
        count = input.numel() // input.size(1)
        local = torch.stack([torch.full_like(local_mean, count), local_mean, local_var * count])  # (3, C)
        # A differentiable all-gather from all_reduce: each rank fills its own row of zeros, the sum fills the rest.
        rows = [local if index == rank else torch.zeros_like(local) for index in range(world_size)]
        counts, means, squared_deviations = _SumOverRanks.apply(torch.stack(rows), group).unbind(1)  # (W, C)
        total = counts.sum(0)
        mean = (counts * means).sum(0) / total
        var = (squared_deviations + counts * (means - mean) ** 2).sum(0) / total

        if self.track_running_stats:
            assert self.num_batches_tracked is not None and self.running_mean is not None
            assert self.running_var is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                unbiased = var * total / (total - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)

        normalized = (values - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.weight is not None:
            normalized = normalized * self.weight.view(shape) + self.bias.view(shape)
        return normalized.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device, process_group=None) -> nn.Module:
    """Synchronise every batch-norm layer over ranks: torch.nn.SyncBatchNorm on GPU, CpuSyncBatchNorm on CPU.

    Either way the layers keep their parameters (the same Parameter objects move over, so frozen ones stay
    frozen), buffers and names, so checkpoints load into the plain model and back.
    """
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    converted = module
    if isinstance(module, _BatchNorm) and not isinstance(module, (nn.SyncBatchNorm, CpuSyncBatchNorm)):
        converted = CpuSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats, process_group
        )
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
    for name, child in module.named_children():
        converted.add_module(name, convert_sync_batchnorm(child, device, process_group))
    return converted


@torch.no_grad()
def average_batchnorm_statistics(model: nn.Module, dist: DistributedContext) -> None:
    """Average the running statistics of unsynchronised batch-norm layers over ranks (timm's distribute_bn).

    Without it each rank keeps statistics of its own shards only, and the ranks' models differ: validation,
    early stopping and the saved weights would depend on which rank looked.
    """
    if not dist.enabled:
        return
    for layer in model.modules():
        synchronised = isinstance(layer, (nn.SyncBatchNorm, CpuSyncBatchNorm))
        if isinstance(layer, _BatchNorm) and not synchronised and layer.track_running_stats:
            for buffer in (layer.running_mean, layer.running_var):
                assert buffer is not None
                torch_dist.all_reduce(buffer)
                buffer.div_(dist.world_size)
