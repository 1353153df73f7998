"""The random crops CLIP scores each step: the reference's cutouts, as one affine resampling per step.

Each crop is a square of side ``s * min(W, H)`` with ``s`` uniform in ``crop_scale`` (0.43-1.9: a crop wider
than the image sees its border repeated), at a uniform position that keeps its centre within reach of every
part of the image, turned by up to 15 degrees, mirrored left-right half the time, resampled to CLIP's input
size, and given Gaussian noise of a standard deviation uniform in ``noise`` (0 0 for none). Every number comes
from one ``torch.Generator``, so a seed fixes the crops as it fixes the start.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

MAX_TURN = math.radians(15)


def crop_grids(batch: int, crops: int, width: int, height: int, size: int, crop_scale: Tuple[float, float],
               generator: torch.Generator, device) -> torch.Tensor:
    """Sampling grids (batch * crops, size, size, 2) in grid_sample's [-1, 1] coordinates."""
    n = batch * crops
    draw = lambda: torch.rand(n, generator=generator, device=device)  # noqa: E731
    low, high = crop_scale
    side = low + (high - low) * draw()
    sx, sy = side * min(width, height) / width, side * min(width, height) / height
    tx, ty = (2 * draw() - 1) * (1 - sx).abs(), (2 * draw() - 1) * (1 - sy).abs()
    turn = (2 * draw() - 1) * MAX_TURN
    flip = torch.where(draw() < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(turn), torch.sin(turn)
    theta = torch.stack([torch.stack([sx * cos * flip, -sx * sin, tx], 1),
                         torch.stack([sy * sin * flip, sy * cos, ty], 1)], 1)
    return F.affine_grid(theta, [n, 3, size, size], align_corners=False)


def cutouts(images: torch.Tensor, crops: int, size: int, crop_scale: Tuple[float, float],
            noise: Tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B * crops, 3, size, size), image by image, crops of one image together."""
    b, _, h, w = images.shape
    grids = crop_grids(b, crops, w, h, size, crop_scale, generator, images.device)
    source = images.repeat_interleave(crops, dim=0)
    out = F.grid_sample(source, grids.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    low, high = noise
    if high > 0:
        scale = low + (high - low) * torch.rand(out.shape[0], 1, 1, 1, generator=generator, device=images.device)
        out = out + scale * torch.randn(out.shape, generator=generator, device=images.device, dtype=out.dtype)
    return out
