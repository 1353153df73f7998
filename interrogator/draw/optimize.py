"""VQGAN+CLIP: optimise VQGAN latents so that CLIP scores crops of the decoded images close to each image's
include parts and extras and far from its exclude parts.

The reference's algorithm, step by step:
- the latent ``z`` (B, e, h, w) starts as random codebook vectors, or as the init image's encoding;
- ``synth``: ``z`` snapped to its nearest codebook vectors with a straight-through gradient, decoded, mapped
  to [0, 1] and clamped (the gradient passes where it pulls a value back into range);
- ``crops`` cutouts per image (augment.py), CLIP's image features of them;
- the loss: for each part, ``weight * (1 - cosine)`` averaged over the crops, summed over the parts, plus
  ``init_weight`` times the mean squared distance to the start latent;
- AdamW on ``z`` (lr 0.5, weight decay 0.1), then ``z`` clamped to the codebook's range per channel.

Each image has its own generator, seeded with ``seed + index``: its start and crops do not depend on the
other prompts of its batch, and rerunning one prompt alone with that seed repeats its randomness.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core.console import bar
from .augment import cutouts
from .prompts import Job, Settings, parse_prompt
from ..core.images import load_image
from pathlib import Path


class _ClampWithGrad(torch.autograd.Function):
    """Clamp whose gradient still flows where it would move a clamped value back into range."""

    @staticmethod
    def forward(ctx, x, low, high):
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (grad * (x - x.clamp(ctx.low, ctx.high)) >= 0), None, None


def snap(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """``z`` (B, e, h, w) with each position replaced by its nearest codebook vector; the gradient passes
    straight through to ``z``."""
    flat = z.movedim(1, -1)
    distance = flat.pow(2).sum(-1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.T
    nearest = codebook[distance.argmin(-1)].movedim(-1, 1)
    return z + (nearest - z).detach()


def clip_input(clip) -> Tuple[int, torch.Tensor, torch.Tensor]:
    """CLIP's input side and its normalisation (mean, std as (1, 3, 1, 1)), read from its preprocess."""
    size = mean = std = None
    for t in getattr(clip.preprocess, "transforms", []):
        if hasattr(t, "mean") and hasattr(t, "std"):
            mean, std = t.mean, t.std
        elif type(t).__name__ == "CenterCrop":
            size = t.size[0] if isinstance(t.size, (tuple, list)) else t.size
    if size is None:
        image_size = clip.model.visual.image_size
        size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    shape = (1, 3, 1, 1)
    return int(size), torch.tensor(mean, device=clip.device).view(shape), torch.tensor(std, device=clip.device).view(shape)


@dataclass
class Drawn:
    """One job's result: its final image, its start image and the latents kept at the saved steps."""

    job: Job
    image: Image.Image
    start: Image.Image
    saved: List[Tuple[int, torch.Tensor]]
    loss: float


def to_pil(images: torch.Tensor) -> List[Image.Image]:
    """(B, 3, H, W) in [0, 1] -> 8-bit RGB images (rounded, so the same tensor gives the same bytes)."""
    array = (images.detach().clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a, "RGB") for a in array]


class Drawer:
    """The drawing loop for one CLIP, one VQGAN and one set of settings; ``draw(jobs)`` draws a batch."""

    def __init__(self, clip, vqgan, settings: Settings, device: str, progress: bool = True):
        self.clip, self.vq, self.settings, self.device, self.progress = clip, vqgan, settings, device, progress
        self.clip.model.requires_grad_(False)
        self.size, self.mean, self.std = clip_input(clip)
        self.codebook = vqgan.quantize.embedding.weight.detach()
        self.z_min = self.codebook.min(0).values.view(1, -1, 1, 1)
        self.z_max = self.codebook.max(0).values.view(1, -1, 1, 1)
        factor = 2 ** (len(vqgan.config.block_out_channels) - 1)
        self.grid = (settings.height // factor, settings.width // factor)
        self.init = None if settings.init is None else self.encode_init(settings.init)

    # ---- pieces -----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_init(self, path: str) -> torch.Tensor:

        image = load_image(Path(path)).resize((self.settings.width, self.settings.height), Image.LANCZOS)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        latents = self.vq.encode(pixels.to(self.device) * 2 - 1).latents
        return snap(latents, self.codebook)

    def start(self, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """The start latents: the init image's, else random codebook vectors, one generator an image."""
        if self.init is not None:
            return self.init.repeat(len(generators), 1, 1, 1)
        h, w = self.grid
        codes = [torch.randint(self.codebook.shape[0], (h, w), generator=g, device=self.device) for g in generators]
        return self.codebook[torch.stack(codes)].movedim(-1, 1).contiguous()

    def synth(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1], differentiable in ``z``."""
        decoded = self.vq.decode(snap(z, self.codebook), force_not_quantize=True).sample
        return _ClampWithGrad.apply((decoded + 1) / 2, 0.0, 1.0)

    def texts(self, jobs: Sequence[Job]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Every distinct part text's CLIP features (T, D) and each image's weight of each (B, T)."""
        names = sorted({p.text for job in jobs for p in job.parts})
        features = self.clip.encode_labels(names).float().clone()
        weights = torch.zeros(len(jobs), len(names), device=self.device)
        for b, job in enumerate(jobs):
            for part in job.parts:
                weights[b, names.index(part.text)] += part.weight
        return features, weights

    def losses(self, z, z0, features, weights, generators) -> torch.Tensor:
        """Each image's loss (B,) for one step, its crops drawn from its own generator."""
        s = self.settings
        images = self.synth(z)
        crops = torch.cat([cutouts(images[b:b + 1], s.crops, self.size, s.crop_scale, s.noise, g)
                           for b, g in enumerate(generators)])
        pixels = ((crops - self.mean) / self.std).to(self.clip.dtype)
        feats = F.normalize(self.clip.model.encode_image(pixels).float(), dim=-1).view(len(generators), s.crops, -1)
        cosine = torch.einsum("bkd,td->bkt", feats, features)
        loss = ((1 - cosine).mean(1) * weights).sum(1)
        if s.init_weight:
            loss = loss + s.init_weight * (z - z0).pow(2).mean((1, 2, 3))
        return loss

    # ---- the loop ---------------------------------------------------------------------------------
    def draw(self, jobs: Sequence[Job]) -> List[Drawn]:
        """Draw a batch of jobs together (one latent each)."""
        s = self.settings
        generators = [torch.Generator(device=self.device).manual_seed(s.seed + job.index) for job in jobs]
        features, weights = self.texts(jobs)
        z = self.start(generators).requires_grad_(True)
        z0 = z.detach().clone()
        optimizer = torch.optim.AdamW([z], lr=s.lr, weight_decay=s.weight_decay)
        keep = set(s.saved_steps()) | {0}
        saved = {0: snap(z0, self.codebook)}
        progress = bar(s.steps, f"draw {len(jobs)} image{'s' * (len(jobs) > 1)}", "step", self.progress)
        loss = torch.zeros(len(jobs))
        for step in range(1, s.steps + 1):
            optimizer.zero_grad(set_to_none=True)
            loss = self.losses(z, z0, features, weights, generators)
            loss.sum().backward()
            loss = loss.detach()
            optimizer.step()
            with torch.no_grad():
                z.copy_(torch.maximum(torch.minimum(z, self.z_max), self.z_min))
            if step in keep:
                saved[step] = snap(z.detach(), self.codebook)
            progress.set_postfix(loss=f"{loss.mean().item():.4f}")
            progress.update(1)
        progress.close()
        with torch.no_grad():
            finals, starts = to_pil(self.synth(z.detach())), to_pil(self.synth(z0))
        return [Drawn(job, finals[b], starts[b], [(step, saved[step][b:b + 1].cpu()) for step in sorted(saved)],
                      float(loss[b])) for b, job in enumerate(jobs)]

    @torch.no_grad()
    def render(self, latents: torch.Tensor) -> List[Image.Image]:
        """Snapped latents (N, e, h, w), decoded without snapping again (so that blends between two are
        smooth), as images."""
        out = []
        for start in range(0, latents.shape[0], 8):
            chunk = latents[start:start + 8].to(self.device)
            out += to_pil((self.vq.decode(chunk, force_not_quantize=True).sample + 1) / 2)
        return out


def clip_similarity(clip, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
    """Cosine of each image (through CLIP's own preprocess, as the interrogator sees it) to each text: (N, T)."""
    pixels = torch.stack([clip.preprocess(image) for image in images])
    return (clip.encode_images(pixels).float() @ clip.encode_labels(list(texts)).float().T).cpu()


def include_similarity(clip, images: Sequence[Image.Image], job: Job) -> List[float]:
    """The weighted mean cosine of each image to the job's include prompt (its parts of positive weight)."""
    parts = [p for p in parse_prompt(job.prompt) if p.weight > 0] or list(parse_prompt(job.prompt))
    weights = torch.tensor([abs(p.weight) for p in parts])
    return (clip_similarity(clip, images, [p.text for p in parts]) @ weights / weights.sum()).tolist()

