"""Muon for conv filters beside Nesterov SGD for everything else, in one optimizer (one state to checkpoint).

Muon (momentum, then orthogonalisation) replaces each filter bank's update by the nearest semi-orthogonal
matrix: every direction of the update moves by the same amount, so rarely-excited directions learn as fast as
dominant ones. Every conv in the fast nets is followed by a BatchNorm, so a filter bank's scale does not matter;
Muon keeps it fixed, and the learning rate is then simply the size of each step relative to the weights.

Also airbench's lookahead: a running average of the weights that the model is pulled back to now and then.
"""

from __future__ import annotations

import torch

# Coefficients of a quintic Newton-Schulz iteration that pushes all singular values towards ~1 in a few steps
# (Jordan et al., "Muon: an optimizer for hidden layers in neural networks", 2024).
_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """An approximation of U V^T for matrix = U S V^T (2-D), by Newton-Schulz iteration."""
    a, b, c = _NS_COEFFICIENTS
    x = matrix.float() / (matrix.norm() + 1e-7)  # singular values <= 1, where the iteration converges
    transposed = x.size(0) > x.size(1)
    if transposed:  # iterate on the smaller Gram matrix
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if transposed else x).to(matrix.dtype)


class MuonSGD(torch.optim.Optimizer):
    """Param groups with orthogonal=True take Muon steps; the others take Nesterov SGD steps (as torch.optim.SGD
    with nesterov=True, weight decay added to the gradient)."""

    def __init__(self, groups: list[dict], momentum: float):
        super().__init__(groups, {"lr": 0.0, "momentum": momentum, "weight_decay": 0.0, "orthogonal": False})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            momentum, lr = group["momentum"], group["lr"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if group["weight_decay"] and not group["orthogonal"]:
                    grad = grad.add(param, alpha=group["weight_decay"])
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = grad.clone()
                else:
                    state["momentum_buffer"].mul_(momentum).add_(grad)
                update = grad.add(state["momentum_buffer"], alpha=momentum)  # Nesterov
                if group["orthogonal"]:
                    param.mul_(len(param) ** 0.5 / (param.norm() + 1e-12))
                    update = orthogonalize(update.reshape(len(update), -1)).view_as(param)
                param.add_(update, alpha=-lr)


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
