"""Batched tensor augmentation: one op per batch, never a Python loop over images.

Every function takes a torch.Generator so the same seed gives the same draws, and is the identity at zero
strength (it returns its input unchanged).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_flip(images: torch.Tensor, generator: torch.Generator, probability: float = 0.5) -> torch.Tensor:
    """Mirror a random half of the batch left-right. images: (B, C, H, W)."""
    if probability <= 0:
        return images
    mask = torch.rand(images.size(0), generator=generator) < probability
    return torch.where(mask[:, None, None, None], images.flip(-1), images)


def alternating_flip(images: torch.Tensor, base_mask: torch.Tensor, epoch: int) -> torch.Tensor:
    """airbench's derandomised flip: each image is flipped on alternate epochs, starting from a random phase.

    Over two epochs the network sees every image both ways exactly once, instead of by chance.
    base_mask: (B,) bool, fixed per image for the whole run.
    """
    mask = base_mask ^ bool(epoch % 2)
    return torch.where(mask[:, None, None, None], images.flip(-1), images)


def random_translate(images: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Shift each image by up to max_shift pixels in x and y (reflect padding), by slicing one padded batch."""
    if max_shift <= 0:
        return images
    batch, _, height, width = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="reflect")  # (B, C, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, batch), generator=generator)
    codes = offsets[0] * (2 * max_shift + 1) + offsets[1]
    return _windows(padded, codes, 2 * max_shift + 1, height, width)


def random_crop(images: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    """A random size x size window of each image (no resampling: objects keep their scale), by slicing."""
    batch, _, height, width = images.shape
    if size >= min(height, width):
        return images
    span = min(height, width) - size + 1
    codes = torch.randint(0, span * span, (batch,), generator=generator)
    return _windows(images, codes, span, size, size)


def _windows(images: torch.Tensor, codes: torch.Tensor, span: int, height: int, width: int) -> torch.Tensor:
    """Image i's height x width window at (top, left) = divmod(codes[i], span): one slice per distinct offset,
    (span^2 at most per batch, whatever the batch size), not one per image."""
    out = images.new_empty(len(images), images.size(1), height, width)
    for code in torch.unique(codes).tolist():
        rows = (codes == code).nonzero().squeeze(1)
        top, left = divmod(code, span)
        out[rows] = images[rows, :, top : top + height, left : left + width]
    return out


def random_blur(
    images: torch.Tensor, generator: torch.Generator, probability: float, max_strength: float
) -> torch.Tensor:
    """Soften a random `probability` share of the batch with a 3-tap [a, 1 - 2a, a] filter in x and y,
    a ~ U(0, max_strength) per image (edges replicated).

    Why: a photo sent to the API reaches the net through an antialiased downscale, which is softer than a CIFAR
    tile; a net that never saw soft images loses about a point on them. Only the chosen images are filtered, by
    shifted adds: about a millisecond for a batch of 128 here, against ~230 ms for the training step.
    """
    if probability <= 0 or max_strength <= 0:
        return images
    # Both draws have the batch's size whatever is chosen, so later draws don't depend on this one's outcome.
    chosen = (torch.rand(len(images), generator=generator) < probability).nonzero().squeeze(1)
    strength = torch.rand(len(images), generator=generator)[chosen] * max_strength
    if len(chosen) == 0:
        return images
    chosen = chosen.to(images.device)
    side = strength.to(images.device, images.dtype).view(-1, 1, 1, 1)
    centre = 1 - 2 * side
    padded = F.pad(images[chosen], (1, 1, 1, 1), mode="replicate")  # (n, C, H + 2, W + 2)
    rows = side * (padded[:, :, :-2] + padded[:, :, 2:]) + centre * padded[:, :, 1:-1]  # (n, C, H, W + 2)
    softened = side * (rows[..., :-2] + rows[..., 2:]) + centre * rows[..., 1:-1]  # (n, C, H, W)
    out = images.clone()
    out[chosen] = softened
    return out


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    rotation_degrees: float = 0.0,
    zoom: float = 0.0,
    shift: float = 0.0,
) -> torch.Tensor:
    """Keras ImageDataGenerator-style rotation (±deg), zoom (±fraction) and width/height shift (±fraction),
    as one affine resample of the whole batch; edges are filled with the nearest pixel like Keras' default."""
    if rotation_degrees <= 0 and zoom <= 0 and shift <= 0:
        return images
    batch = images.size(0)

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(batch, generator=generator) * 2 - 1) * limit

    angle = uniform(math.radians(rotation_degrees))
    scale = 1 + uniform(zoom)  # >1 samples a larger area: zoom out, as Keras' zoom_range does
    shift_x, shift_y = uniform(2 * shift), uniform(2 * shift)  # grid units span 2 per image width
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], dim=1), torch.stack([sin, cos, shift_y], dim=1)], dim=1
    )  # (B, 2, 3)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def tta_views(images: torch.Tensor, level: int) -> list[tuple[torch.Tensor, float]]:
    """Test-time augmentation views and their weights. 0: none; 1: + mirror; 2: + 1-pixel translations."""
    if level <= 0:
        return [(images, 1.0)]
    if level == 1:
        return [(images, 0.5), (images.flip(-1), 0.5)]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    up_left = padded[:, :, :-2, :-2]
    down_right = padded[:, :, 2:, 2:]
    return [
        (images, 0.25),
        (images.flip(-1), 0.25),
        (up_left, 0.125),
        (up_left.flip(-1), 0.125),
        (down_right, 0.125),
        (down_right.flip(-1), 0.125),
    ]
