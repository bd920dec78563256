"""torch.distributed set-up for runs under torchrun: gloo on CPU, nccl on CUDA, with collective timeouts so a
dead rank makes the others exit with a message instead of hanging."""

from __future__ import annotations

import datetime
import os

from cifar10_classifier.train import DistributedContext

COLLECTIVE_TIMEOUT_SECONDS = int(os.environ.get("CIFAR10_DIST_TIMEOUT", "120"))


def distributed_context() -> DistributedContext:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1); a no-op otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    import torch
    import torch.distributed as torch_dist

    if not torch_dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch_dist.init_process_group(backend, timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_SECONDS))
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return DistributedContext(rank=torch_dist.get_rank(), world_size=torch_dist.get_world_size())


def shutdown_distributed() -> None:
    if "WORLD_SIZE" not in os.environ:
        return
    import torch.distributed as torch_dist

    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()
